"""StripeConnector against the Stripe emulator (stripe-python unmodified), plus offline unit checks.

The world's clock is frozen (anchor + whole days advanced), so every "changed since" set is exact.
"""
from __future__ import annotations

import json
import logging
import math
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import stripe

from retention_hub.config.models import StripeSource
from retention_hub.connectors.http import AuthError, Policy, RequestError, TransientError
from retention_hub.connectors.records import Page
from retention_hub.connectors import stripe as stripe_connector
from retention_hub.connectors.stripe import (SPECS, StripeConnector, _bucket, _map_all, classify, email_domain,
                                             monthly_minor)
from retention_hub.sandbox import server
from retention_hub.sandbox.records import unix
from retention_hub.sandbox.world import World

ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)
T0 = ANCHOR - timedelta(days=20)
DAY = 86400
N_CUSTOMERS = 130
FAST = Policy(rate_per_second=1000, burst=1000, backoff_initial=0.001, backoff_max=0.01, max_attempts=10)
OBJECT_STREAMS = ("customers", "subscriptions", "invoices")
KIND = {"customers": "account", "subscriptions": "subscription", "invoices": "invoice", "usage": "usage"}
WORLD_KIND = {"customers": "customer", "subscriptions": "subscription", "invoices": "invoice"}


def freeze(world: World) -> World:
    world.now = lambda: world.anchor + timedelta(days=world.days_advanced)  # type: ignore[method-assign]
    return world


def build_world() -> World:
    """130 customers (pairs share a created second), 60 subscriptions (monthly, annual, discounted,
    canceled, some with a metered item), 120 invoices, one meter with daily usage."""
    w = freeze(World(seed=3, anchor=ANCHOR))
    product = w.stripe_put("product", {"name": "Team", "active": True, "metadata": {}, "type": "service"}, at=T0)
    meter = w.stripe_put("billing.meter", {
        "display_name": "API calls", "event_name": "api_call", "status": "active",
        "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        "default_aggregation": {"formula": "sum"}, "value_settings": {"event_payload_key": "value"}}, at=T0)

    def price(amount: int, interval: str, usage: str = "licensed") -> dict:
        return w.stripe_put("price", {
            "product": product["id"], "unit_amount": amount, "currency": "usd", "active": True, "type": "recurring",
            "nickname": f"{interval} {usage}", "metadata": {},
            "recurring": {"interval": interval, "interval_count": 1, "usage_type": usage,
                          "meter": meter["id"] if usage == "metered" else None}}, at=T0)

    monthly, annual, metered = price(2500, "month"), price(24000, "year"), price(2, "month", "metered")
    customers = []
    for i in range(N_CUSTOMERS):
        email = f"ada{i}@gmail.com" if i % 10 == 3 else f"billing@Company{i}.example.com"
        customers.append(w.stripe_put("customer", {
            "email": email, "name": f"Company {i}", "description": None, "currency": "usd", "delinquent": False,
            "balance": 0, "address": {"country": "DE" if i % 2 else "US"},
            "metadata": {"salesforce_account_id": f"001{i:015d}"} if i % 4 == 0 else {}},
            at=T0 + timedelta(hours=i // 2)))
    for i, cus in enumerate(customers[:60]):
        at = T0 + timedelta(days=2, hours=i)
        status = "canceled" if i % 7 == 6 else "past_due" if i % 11 == 5 else "active"
        items = [{"id": f"si_{i:04d}a", "object": "subscription_item", "price": dict(annual if i % 3 == 0 else monthly),
                  "quantity": 3 + i % 5, "created": unix(at), "metadata": {}}]
        if i % 5 == 0:
            items.append({"id": f"si_{i:04d}m", "object": "subscription_item", "price": dict(metered),
                          "created": unix(at), "metadata": {}})
        sub = w.stripe_put("subscription", {
            "customer": cus["id"], "status": status, "items": {"object": "list", "data": items},
            "current_period_start": unix(at), "current_period_end": unix(at) + 30 * DAY, "start_date": unix(at),
            "cancel_at": None, "canceled_at": unix(at) if status == "canceled" else None,
            "cancel_at_period_end": False, "ended_at": unix(at) if status == "canceled" else None,
            "cancellation_details": {"comment": None, "feedback": "too_expensive" if status == "canceled" else None,
                                     "reason": "cancellation_requested" if status == "canceled" else None},
            "discount": {"coupon": {"percent_off": 20.0}} if i % 4 == 1 else None,
            "metadata": {}, "collection_method": "charge_automatically", "currency": "usd"}, at=at)
        for n, state in enumerate(("paid", "open")):
            when = at + timedelta(minutes=n)
            w.stripe_put("invoice", {
                "customer": cus["id"], "subscription": sub["id"], "status": state, "amount_due": 7500,
                "amount_paid": 7500 if state == "paid" else 0, "amount_remaining": 0 if state == "paid" else 7500,
                "total": 7500, "subtotal": 7500, "paid": state == "paid", "attempted": True,
                "attempt_count": 1 if state == "paid" else 2, "currency": "usd", "period_start": unix(when),
                "period_end": unix(when) + 30 * DAY, "billing_reason": "subscription_cycle",
                "next_payment_attempt": None,
                "status_transitions": {"paid_at": unix(when) if state == "paid" else None}},
                event_type="invoice.paid" if state == "paid" else "invoice.payment_failed", at=when)
    today = unix(ANCHOR)
    for i in range(0, 60, 5):  # the customers with the metered item (no usage once canceled)
        for back in range(1, 6 if i % 7 != 6 else 1):
            if (i + back) % 4:  # some days without usage
                w.stripe_meter_usage[meter["id"]][customers[i]["id"]][today - back * DAY] = float(10 * i + back)
    # usage of a customer on no metered price is not read (the meter has a price)
    w.stripe_meter_usage[meter["id"]][customers[1]["id"]][today - DAY] = 99.0
    return w


@pytest.fixture
def world() -> World:
    return build_world()


@pytest.fixture
def sb(world: World, tmp_path: Path) -> Iterator[Any]:
    sandbox = server.start(world, tmp_path, vendors=("stripe",))
    yield sandbox
    sandbox.stop()


def connector(sandbox: Any, key: str | None = None, policy: Policy | None = None, **kwargs: Any) -> StripeConnector:
    config = StripeSource(api_key=key or sandbox.credentials["stripe"]["api_key"], base_url=sandbox.urls["stripe"])
    con = StripeConnector(config, policy or FAST, **kwargs)
    con.caller.sleep = lambda seconds: None
    return con


def read_all(con: StripeConnector, stream: str, cursor: str | None, world: World,
             full_refresh: bool = False) -> list[Page]:
    return list(con.read(stream, cursor, world.now(), full_refresh=full_refresh))


def records(pages: list[Page]) -> list[dict]:
    return [r for p in pages for r in p.records]


def by_id(pages: list[Page]) -> dict[str, dict]:
    return {r["source_id"]: r for r in records(pages)}


def last_cursor(pages: list[Page], previous: str | None = None) -> str | None:
    for page in pages:
        previous = page.cursor or previous
    return previous


def served(sandbox: Any) -> Counter:
    return Counter({(r["path"], r["status"]): r["count"] for r in sandbox.emulators["stripe"].stats()["requests"]})


def company(world: World, i: int) -> dict:
    """The world record of customer "Company i"."""
    return next(c for c in world.stripe["customer"].values() if c["name"] == f"Company {i}")


def expected_usage(world: World, since: int, until: int) -> dict[str, dict[str, float]]:
    """{customer|day: {event name: value}}: non-zero daily meter values in [since, until) of (not
    deleted) customers on the metered price."""
    subs = world.stripe["subscription"].values()
    metered = {s["customer"] for s in subs if any(i["price"]["recurring"]["meter"] for i in s["items"]["data"])}
    metered -= {c for c, rec in world.stripe["customer"].items() if rec.get("_deleted")}
    out = {}
    for customers in world.stripe_meter_usage.values():
        for customer, days in customers.items():
            for start, value in days.items():
                if customer in metered and since <= start < until and value:
                    day = datetime.fromtimestamp(start, timezone.utc).date().isoformat()
                    out[f"{customer}|{day}"] = {"api_call": value}
    return out


def metrics(pages: list[Page]) -> dict[str, dict[str, float]]:
    return {r["source_id"]: r["payload"]["metrics"] for r in records(pages)}


def full_run(sandbox: Any, world: World, **kwargs: Any) -> tuple[StripeConnector, dict[str, list[Page]]]:
    con = connector(sandbox, **kwargs)
    return con, {s: read_all(con, s, None, world) for s in con.streams()}


# -- full reads -------------------------------------------------------------------------------------
def test_full_read_maps_every_stream(sb, world):
    con, pages = full_run(sb, world)
    for stream in con.streams():
        recs = records(pages[stream])
        assert recs, stream
        assert all(r["kind"] == KIND[stream] and r["source"] == "stripe" for r in recs)
        assert len({r["source_id"] for r in recs}) == len(recs), f"{stream}: a source_id repeats"
        assert not any(p.quarantined for p in pages[stream])
    for stream in OBJECT_STREAMS:
        assert set(by_id(pages[stream])) == set(world.stripe[WORLD_KIND[stream]]), stream

    customers = by_id(pages["customers"])
    c0, c3 = (customers[company(world, i)["id"]]["payload"] for i in (0, 3))
    assert c0["domain"] == "company0.example.com" and c0["external_ids"] == {"salesforce": "001" + "0" * 15}
    assert c0["name"] == "Company 0" and c0["country"] == "US"
    assert c3["domain"] is None and c3["email"] == "ada3@gmail.com"  # free mail names no company

    subs = {r["payload"]["customer_id"]: r["payload"] for r in records(pages["subscriptions"])}
    s0, s1, s2, s6 = (subs[company(world, i)["id"]] for i in (0, 1, 2, 6))
    prices = {p["nickname"]: p["id"] for p in world.stripe["price"].values()}
    assert (s0["quantity"], s0["mrr_minor"], s0["interval"]) == (3, 3 * 24000 // 12, "year")  # annual / 12
    assert s0["meters"] and s0["price_id"] == prices["year licensed"]  # the metered item: no seats, no MRR
    assert s1["mrr_minor"] == round(4 * 2500 * 0.8)  # 20 % off
    assert (s2["mrr_minor"], s2["status"], s2["price_id"]) == (5 * 2500, "active", prices["month licensed"])
    assert (s6["status"], s6["mrr_minor"], s6["contract_mrr_minor"]) == ("canceled", 0, 4 * 24000 // 12)
    assert s6["cancellation_reason"] == "cancellation_requested" and s6["cancellation_feedback"] == "too_expensive"
    assert s6["canceled_at"] and s6["current_period_end"] and s6["start"]

    invoices = records(pages["invoices"])
    failed = [r["payload"] for r in invoices if r["payload"]["status"] == "open"]
    assert failed and all(p["payment_failed"] and not p["paid"] and p["attempt_count"] == 2 for p in failed)
    assert all(p["amount_minor"] == 7500 and p["customer_id"] and p["subscription_id"]
               for p in (r["payload"] for r in invoices))

    assert metrics(pages["usage"]) == expected_usage(world, unix(ANCHOR) - 90 * DAY, unix(ANCHOR))
    meter_id = next(iter(world.stripe["billing.meter"]))
    for r in records(pages["usage"]):  # one record per customer and day
        p = r["payload"]
        assert r["source_id"] == f"{p['account_ref']}|{p['day']}" and p["meter_ids"] == [meter_id]


def test_a_customer_day_holds_every_meter(sb, world, caplog):
    with world.lock:  # a second meter, on no price: read for every subscribed customer
        exports = world.stripe_put("billing.meter", {
            "display_name": "Exports", "event_name": "exports", "status": "active",
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "default_aggregation": {"formula": "sum"}, "value_settings": {"event_payload_key": "value"}}, at=T0)
        customer = company(world, 0)["id"]
        world.stripe_meter_usage[exports["id"]][customer][unix(ANCHOR) - 2 * DAY] = 4.0
        world.stripe_meter_usage[exports["id"]][customer][unix(ANCHOR) - 4 * DAY] = 1.0
    with caplog.at_level(logging.WARNING, logger="retention_hub.connectors.stripe"):
        got = by_id(read_all(connector(sb), "usage", None, world))
    api_calls = next(m for m in world.stripe["billing.meter"] if m != exports["id"])
    both = got[f"{customer}|{(ANCHOR - timedelta(days=2)).date()}"]["payload"]
    assert both["metrics"] == {"api_call": 2.0, "exports": 4.0}
    assert both["meter_ids"] == sorted([api_calls, exports["id"]])
    alone = got[f"{customer}|{(ANCHOR - timedelta(days=4)).date()}"]["payload"]  # no api calls that day
    assert alone["metrics"] == {"exports": 1.0} and alone["meter_ids"] == [exports["id"]]
    assert len(got) == len({(r["payload"]["account_ref"], r["payload"]["day"]) for r in got.values()})


def test_small_pages_paginate_and_calls_match_the_floor(sb, world):
    con, pages = full_run(sb, world, page_size=7)
    for stream in OBJECT_STREAMS:
        n = len(world.stripe[WORLD_KIND[stream]])
        assert len(pages[stream]) == math.ceil(n / 7) > 1
        assert con.api_calls()[stream] == 1 + math.ceil(n / 7)  # one look at the newest event, then the floor


def test_max_page_sizes_make_the_floor_of_calls(sb, world):
    con, pages = full_run(sb, world)
    calls = served(sb)
    assert calls[("/v1/customers", 200)] == math.ceil(N_CUSTOMERS / 100) == 2
    assert calls[("/v1/subscriptions", 200)] == 1 + 1  # the listing, and the metered price's subscribers
    assert calls[("/v1/invoices", 200)] == 2
    assert calls[("/v1/events", 200)] == 3  # one per object stream
    # usage: the meters, the metered prices, then one summary call per metered customer
    assert calls[("/v1/billing/meters/{id}/event_summaries", 200)] == 12
    assert con.api_calls() == {"customers": 3, "subscriptions": 2, "invoices": 3, "usage": 1 + 1 + 1 + 12}


def test_resuming_from_any_page_cursor_loses_and_repeats_nothing(sb, world):
    full = read_all(connector(sb, page_size=9), "customers", None, world)
    every = [r["source_id"] for r in records(full)]
    for k in range(len(full) - 1):
        rest = read_all(connector(sb, page_size=9), "customers", full[k].cursor, world)
        seen = [r["source_id"] for p in full[:k + 1] for r in p.records] + [r["source_id"] for r in records(rest)]
        assert sorted(seen) == sorted(every)


# -- incremental runs -------------------------------------------------------------------------------
def test_second_run_with_nothing_changed_yields_nothing(sb, world):
    _, first = full_run(sb, world)
    con = connector(sb)
    again = {s: read_all(con, s, last_cursor(first[s]), world) for s in con.streams()}
    assert all(not records(p) for p in again.values())
    assert all(con.api_calls().get(s, 0) <= 2 for s in con.streams())
    assert con.api_calls().get("usage", 0) == 0  # no day completed since


def test_next_run_yields_exactly_what_changed_including_deletions(sb, world):
    _, first = full_run(sb, world)
    cursors = {s: last_cursor(first[s]) for s in first}
    client = stripe.StripeClient(sb.credentials["stripe"]["api_key"], base_addresses={"api": sb.urls["stripe"]},
                                 max_network_retries=0)
    ordered = {i: company(world, i) for i in (0, 5, 10, 21, 22, 100)}
    world.advance(1)
    client.v1.customers.update(ordered[100]["id"], params={"name": "Renamed"})
    client.v1.customers.delete(ordered[10]["id"])  # cancels its subscription too
    sub = next(s for s in world.stripe["subscription"].values() if s["customer"] == ordered[22]["id"])
    client.v1.subscriptions.update(sub["id"], params={"cancel_at_period_end": True})
    with world.lock:
        invoice = world.stripe_put("invoice", {"customer": ordered[21]["id"], "status": "open", "amount_due": 900,
                                               "paid": False, "attempted": False, "currency": "usd"})
        usage = world.stripe_meter_usage[next(iter(world.stripe["billing.meter"]))]
        usage[ordered[0]["id"]][unix(ANCHOR)] = 5.0  # the day that completed
        usage[ordered[5]["id"]][unix(ANCHOR) - DAY] += 1  # a late event for the day re-read
    con = connector(sb)
    second = {s: read_all(con, s, cursors[s], world) for s in con.streams()}
    got = {s: by_id(second[s]) for s in second}
    assert set(got["customers"]) == {ordered[100]["id"], ordered[10]["id"]}
    assert got["customers"][ordered[10]["id"]]["deleted"] is True
    assert got["customers"][ordered[100]["id"]]["payload"]["name"] == "Renamed"
    canceled = next(s["id"] for s in world.stripe["subscription"].values() if s["customer"] == ordered[10]["id"])
    assert set(got["subscriptions"]) == {canceled, sub["id"]}
    assert got["subscriptions"][canceled]["payload"]["status"] == "canceled"
    assert got["subscriptions"][canceled]["deleted"] is False  # canceled, not gone
    assert got["subscriptions"][sub["id"]]["payload"]["cancel_at_period_end"] is True
    assert set(got["invoices"]) == {invoice["id"]}
    day0 = ANCHOR.date().isoformat()
    yesterday = (ANCHOR - timedelta(days=1)).date().isoformat()
    # the re-read day changed for one customer: its bucket of customers comes again
    meter_id = next(iter(world.stripe["billing.meter"]))
    bucket = _bucket(ordered[5]["id"])
    again = {k: v for k, v in expected_usage(world, unix(ANCHOR) - DAY, unix(ANCHOR)).items()
             if _bucket(k.split("|")[0]) == bucket}
    assert {k: r["payload"]["metrics"] for k, r in got["usage"].items()} == {
        f"{ordered[0]['id']}|{day0}": {"api_call": 5.0}, **again}
    assert again[f"{ordered[5]['id']}|{yesterday}"]["api_call"] == world.stripe_meter_usage[meter_id][
        ordered[5]["id"]][unix(ANCHOR) - DAY]
    # a later event always wins over the listing's state in the store: later updated_at
    listed = by_id(first["customers"])[ordered[100]["id"]]["updated_at"]
    assert got["customers"][ordered[100]["id"]]["updated_at"] > listed


def test_usage_resumes_after_any_bucket_without_loss(sb, world, monkeypatch):
    monkeypatch.setattr(stripe_connector, "USAGE_PAGE_PAIRS", 1)  # a resumable page per bucket
    first = read_all(connector(sb), "usage", None, world)
    assert len(first) > 5 and all("partial" in json.loads(p.cursor) for p in first[:-1])
    everything = by_id(first)
    for k, page in enumerate(first[:-1]):
        rest = read_all(connector(sb), "usage", page.cursor, world)
        seen = [r["source_id"] for p in first[:k + 1] + rest for r in p.records]
        assert sorted(seen) == sorted(everything)  # nothing lost, nothing twice
        assert json.loads(rest[-1].cursor) == json.loads(first[-1].cursor)  # the same fingerprints at the end
    # a day later, with a correction to the re-read day: a crash anywhere still yields the same records
    world.advance(1)
    meter_id = next(iter(world.stripe["billing.meter"]))
    customer = company(world, 5)["id"]
    world.stripe_meter_usage[meter_id][customer][unix(ANCHOR) - DAY] += 7
    cursor = first[-1].cursor
    clean = read_all(connector(sb), "usage", cursor, world)
    assert f"{customer}|{(ANCHOR - timedelta(days=1)).date()}" in by_id(clean)
    for k, page in enumerate(clean[:-1]):
        rest = read_all(connector(sb), "usage", page.cursor, world)
        assert sorted(r["source_id"] for p in clean[:k + 1] + rest for r in p.records) == sorted(
            r["source_id"] for r in records(clean))


def test_cursors_never_go_backwards(sb, world):
    cursors: dict[str, str | None] = {s: None for s in connector(sb).streams()}
    positions: dict[str, list[tuple]] = {s: [] for s in cursors}
    event_index = lambda eid: next((i for i, e in enumerate(world.stripe_events) if e["id"] == eid), -1)  # noqa: E731
    for day in range(3):
        if day:
            world.advance(1)
            for c in list(world.stripe["customer"].values())[day * 3: day * 3 + 3]:
                world.stripe_put("customer", {"id": c["id"], "name": f"{c['name']} v{day}"})
        con = connector(sb)
        for stream in cursors:
            for page in con.read(stream, cursors[stream], world.now()):
                if page.cursor:
                    cursors[stream] = page.cursor
                    state = json.loads(page.cursor)
                    if stream == "usage":
                        positions[stream].append((state.get("end", 0),))
                    else:
                        positions[stream].append((state["checked"] if state["phase"] == "events" else 0,
                                                  event_index(state.get("event"))))
    for stream, seen in positions.items():
        assert seen == sorted(seen), stream
        assert seen[-1][0] <= unix(world.now())  # never past until


def test_events_older_than_30_days_fall_back_to_a_full_refresh(sb, world, caplog):
    _, first = full_run(sb, world)
    stale = json.loads(last_cursor(first["customers"]))
    stale["checked"] -= 31 * DAY
    con = connector(sb)
    with caplog.at_level(logging.WARNING, logger="retention_hub.connectors.stripe"):
        pages = read_all(con, "customers", json.dumps(stale), world)
    assert set(by_id(pages)) == {c["id"] for c in world.stripe["customer"].values()}
    assert any("full refresh" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    final = json.loads(pages[-1].cursor)
    assert final["refresh"] == "events_expired" and final["phase"] == "events"
    assert final["checked"] == unix(world.now())


def test_an_expired_saved_event_reads_every_retained_event_instead(sb, world):
    _, first = full_run(sb, world)
    state = json.loads(last_cursor(first["invoices"]))
    state["event"] = "evt_long_gone"  # expired, but the stream was confirmed up to date yesterday
    con = connector(sb)
    pages = read_all(con, "invoices", json.dumps(state), world)
    retained = {e["data"]["object"]["id"] for e in world.stripe_events if e["type"].startswith("invoice.")}
    assert set(by_id(pages)) == retained
    assert served(sb)[("/v1/invoices", 200)] == 2  # from the first run only: no listing again
    assert json.loads(pages[-1].cursor)["event"] == [e for e in world.stripe_events
                                                      if e["type"].startswith("invoice.")][-1]["id"]


def test_full_refresh_ignores_the_cursor(sb, world):
    _, first = full_run(sb, world)
    pages = list(connector(sb).read("subscriptions", last_cursor(first["subscriptions"]), world.now(),
                                    full_refresh=True))
    assert set(by_id(pages)) == set(world.stripe["subscription"])


def test_unpriced_meter_reads_every_subscribed_customer_and_says_so(sb, world, caplog):
    for sub in world.stripe["subscription"].values():  # nobody is on the metered price any more
        sub["items"]["data"] = [i for i in sub["items"]["data"] if not i["price"]["recurring"]["meter"]]
    world.stripe["price"] = {k: p for k, p in world.stripe["price"].items() if not p["recurring"]["meter"]}
    con = connector(sb)
    with caplog.at_level(logging.WARNING, logger="retention_hub.connectors.stripe"):
        pages = read_all(con, "usage", None, world)
    got = {r["source_id"] for r in records(pages)}
    assert any(k.startswith(company(world, 1)["id"]) for k in got)  # a customer on no metered price
    assert served(sb)[("/v1/billing/meters/{id}/event_summaries", 200)] == 60  # every subscribed customer
    assert sum("no price uses meter" in r.getMessage() for r in caplog.records) == 1


# -- faults -----------------------------------------------------------------------------------------
def test_survives_429_and_5xx(sb, world):
    _, clean = full_run(sb, world, page_size=20)
    sb.emulators["stripe"].knobs.update({"throttle_rate": 0.2, "error_rate": 0.2})
    con, faulty = full_run(sb, world, page_size=20)
    assert {s: by_id(p) for s, p in faulty.items()} == {s: by_id(p) for s, p in clean.items()}
    statuses = Counter(status for (_, status) in served(sb).elements())
    assert statuses[429] > 0 and sum(statuses[s] for s in (500, 502, 503)) > 0
    assert sum(con.caller.retries.values()) == statuses[429] + statuses[500] + statuses[502] + statuses[503]


def test_401_stops_at_once_with_a_clear_auth_error(sb, world):
    bad = "sk_test_" + "x" * 30
    con = connector(sb, key=bad)
    with pytest.raises(AuthError) as info:
        read_all(con, "customers", None, world)
    message = str(info.value)
    assert message.startswith("stripe: the API key was rejected (401)") and "sources.stripe.api_key" in message
    assert bad not in message and "xxxx" not in message
    assert con.api_calls() == {"customers": 1}


# -- offline ----------------------------------------------------------------------------------------
def _err(cls: type, status: int, headers: dict | None = None, **kwargs: Any) -> Exception:
    return cls(message="boom", http_status=status, headers=headers, **kwargs)


@pytest.mark.parametrize("exc, cls, retry_after", [
    (_err(stripe.AuthenticationError, 401), AuthError, None),
    (_err(stripe.PermissionError, 403), AuthError, None),
    (_err(stripe.RateLimitError, 429, {"Retry-After": "7"}), TransientError, 7.0),
    (_err(stripe.RateLimitError, 429), TransientError, None),
    (stripe.APIConnectionError("connection reset"), TransientError, None),
    (_err(stripe.APIError, 503, {"retry-after": "2"}), TransientError, 2.0),
    (_err(stripe.APIError, 409), RequestError, None),
    (stripe.InvalidRequestError("No such customer", "id", http_status=404), RequestError, None),
])
def test_classify(exc, cls, retry_after):
    mapped = classify(exc)
    assert type(mapped) is cls and str(mapped).startswith("stripe: ")
    assert getattr(mapped, "retry_after", None) == retry_after
    assert classify(ValueError("not stripe's")) is None


def test_unmappable_objects_are_quarantined_and_the_rest_go_on():
    good = {"id": "sub_1", "status": "active", "customer": "cus_1", "items": {"data": []}}
    bad = {"id": "sub_2", "status": "active", "items": {"data": [{"price": "price_1", "quantity": 1}]}}
    recs, quarantined = _map_all(SPECS["subscriptions"], [(good, 1, False), (bad, 1, False)])
    assert [r["source_id"] for r in recs] == ["sub_1"]
    assert quarantined[0].source_id == "sub_2" and "cannot map" in quarantined[0].reason


def test_monthly_revenue_and_domains():
    item = lambda amount, interval, n, qty: {"price": {"unit_amount": amount, "recurring": {  # noqa: E731
        "interval": interval, "interval_count": n, "usage_type": "licensed"}}, "quantity": qty}
    assert monthly_minor({"items": {"data": [item(1000, "month", 3, 3)]}}) == 1000
    assert monthly_minor({"items": {"data": [item(5200, "week", 1, 1)]}}) == round(5200 * 52 / 12)
    assert monthly_minor({"items": {"data": [item(12000, "year", 1, 2)]},
                          "discount": {"coupon": {"amount_off": 1200}}}) == 2000 - 100
    assert monthly_minor({"items": {"data": [{"price": {"unit_amount": None}, "quantity": 1}]}}) is None
    assert email_domain("Ops@Acme.IO") == "acme.io" and email_domain("x@gmail.com") is None
    assert email_domain(None) is None and email_domain("not-an-email") is None


def test_a_foreign_cursor_is_refused_with_what_to_do():
    con = StripeConnector(StripeSource(api_key="sk_test_x", base_url="http://127.0.0.1:9"))
    with pytest.raises(RequestError, match="--full-refresh"):
        next(con.read("customers", '{"start_time": 5}', ANCHOR))
    with pytest.raises(RequestError, match="--full-refresh"):  # another stream's cursor
        next(con.read("invoices", '{"v": 1, "end": 1785715200, "days": {}}', ANCHOR))
    with pytest.raises(RequestError, match="unknown stream"):
        con.read("charges", None, ANCHOR)
    assert con.api_calls() == {}


# -- a generated world ------------------------------------------------------------------------------
def test_generated_world_full_read_at_the_floor_then_one_day_of_changes(tmp_path):
    from retention_hub.sandbox.generator import generate_world

    world = freeze(generate_world(200, seed=5, directory=tmp_path, anchor=ANCHOR))
    sandbox = server.start(world, tmp_path / "sb", vendors=("stripe",))
    try:
        con, first = full_run(sandbox, world)
        counts = {s: len(world.stripe[WORLD_KIND[s]]) for s in OBJECT_STREAMS}
        for s in OBJECT_STREAMS:
            assert set(by_id(first[s])) == set(world.stripe[WORLD_KIND[s]]), s
        floor = {s: math.ceil(n / 100) for s, n in counts.items()}
        assert {s: con.api_calls()[s] for s in OBJECT_STREAMS} == {s: f + 1 for s, f in floor.items()}
        meter = next(iter(world.stripe_meter_usage.values()))
        usage = {f"{c}|{datetime.fromtimestamp(d, timezone.utc).date()}": {"api_calls": v}
                 for c, days in meter.items() for d, v in days.items() if unix(ANCHOR) - 90 * DAY <= d and v}
        assert metrics(first["usage"]) == usage
        print(f"\nstripe, 200 customers: records {counts} usage {len(usage)}, calls {con.api_calls()}, "
              f"floor {floor} (+1 event look per stream)")

        seen_events = {e["id"] for e in world.stripe_events}
        world.advance(1)
        new = [e for e in world.stripe_events if e["id"] not in seen_events]
        con2 = connector(sandbox)
        for s in OBJECT_STREAMS:
            pages = read_all(con2, s, last_cursor(first[s]), world)
            expected = {e["data"]["object"]["id"] for e in new
                        if e["data"]["object"]["object"] == WORLD_KIND[s]}
            assert set(by_id(pages)) == expected and len(records(pages)) == len(expected), s
            assert con2.api_calls()[s] == 1
        pages = read_all(con2, "usage", last_cursor(first["usage"]), world)
        day = unix(ANCHOR)
        assert metrics(pages) == {
            f"{c}|{ANCHOR.date()}": {"api_calls": days[day]} for c, days in meter.items() if days.get(day)}
    finally:
        sandbox.stop()
