"""The generated world: deterministic, messy the way real systems are, with truth that matches it."""
from __future__ import annotations

import csv
import sqlite3
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pytest

from retention_hub.sandbox.generator import generate_world
from retention_hub.sandbox.runner import truth_summary

ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("world")
    return generate_world(1500, seed=11, directory=directory, anchor=ANCHOR), directory


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_same_seed_same_world(generated, tmp_path: Path) -> None:
    _, directory = generated
    generate_world(1500, seed=11, directory=tmp_path, anchor=ANCHOR)
    for name in ("identity.csv", "outcomes.csv", "customers.csv"):
        assert (tmp_path / "truth" / name).read_text() == (directory / "truth" / name).read_text()


def test_identity_truth_covers_every_account_level_record(generated) -> None:
    world, directory = generated
    rows = read_csv(directory / "truth" / "identity.csv")
    by_source = defaultdict(set)
    for r in rows:
        by_source[r["source"]].add(r["source_id"])
    assert by_source["salesforce"] == set(world.salesforce["Account"])
    assert by_source["hubspot"] == set(world.hubspot["companies"])
    assert by_source["zendesk"] == {str(i) for i in world.zendesk["organizations"]}
    assert by_source["stripe"] == set(world.stripe["customer"])
    # duplicates inside one CRM exist: one customer with two Salesforce accounts
    per_customer = Counter((r["customer_key"], r["source"]) for r in rows)
    assert any(n == 2 and src == "salesforce" for (_, src), n in per_customer.items())
    assert any(n == 2 and src == "hubspot" for (_, src), n in per_customer.items())


def test_realistic_mess(generated) -> None:
    world, directory = generated
    accounts = list(world.salesforce["Account"].values())
    assert 0.05 < sum(a["Website"] is None for a in accounts) / len(accounts) < 0.4
    assert any(a["ParentId"] for a in accounts)
    contacts = [c["Email"] for c in world.salesforce["Contact"].values()]
    free = sum(e.split("@")[1] in ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com",
                                   "proton.me") for e in contacts)
    assert 0.03 < free / len(contacts) < 0.2
    stripe_with_crm_id = [c for c in world.stripe["customer"].values() if c["metadata"].get("salesforce_account_id")]
    # cross-system ids exist on some records only
    orgs_with_ext = [o for o in world.zendesk["organizations"].values() if o.get("external_id")]
    assert 0 < len(orgs_with_ext) < len(world.zendesk["organizations"]) / 2
    hs_with_sf = [c for c in world.hubspot["companies"].values() if c["properties"].get("salesforceaccountid")]
    assert 0 < len(hs_with_sf) < len(world.hubspot["companies"])
    assert stripe_with_crm_id == [] or len(stripe_with_crm_id) < len(world.stripe["customer"])
    # legal suffix variants differ across systems for the same customer
    customers = read_csv(directory / "truth" / "customers.csv")
    assert any(c["parent_key"] for c in customers)


def test_churn_rates_and_oracle_auc_in_range(generated) -> None:
    _, directory = generated
    summary = truth_summary(directory / "truth")
    print(f"monthly logo churn {summary.monthly_logo_churn:.4f}, oracle AUC {summary.oracle_auc:.3f}")
    assert 0.01 <= summary.monthly_logo_churn <= 0.03
    assert 0.80 <= summary.oracle_auc <= 0.92
    outcomes = read_csv(directory / "truth" / "outcomes.csv")
    reasons = Counter(r["reason"] for r in outcomes if r["churns_90d"] == "1")
    assert set(reasons) <= {"price", "competitor", "low_adoption", "support", "payment_failure", "lost_champion"}
    assert len(reasons) >= 4


def test_signals_carry_information(generated) -> None:
    """Churned customers' Stripe subscriptions say why; failed payments and bad CSAT exist."""
    world, _ = generated
    canceled = [s for s in world.stripe["subscription"].values() if s["status"] == "canceled"]
    assert canceled and all(s["canceled_at"] and s["cancellation_details"]["reason"] for s in canceled)
    failed = [i for i in world.stripe["invoice"].values() if i["attempted"] and not i["paid"]]
    assert failed
    scores = Counter(r["score"] for r in world.zendesk["satisfaction_ratings"].values())
    assert scores["good"] > scores["bad"] > 0
    assert any("escalated" in t["tags"] for t in world.zendesk["tickets"].values())


def test_usage_warehouse(generated) -> None:
    world, _ = generated
    db = sqlite3.connect(world.usage_db)
    days = db.execute("SELECT COUNT(DISTINCT day), MIN(day), MAX(day) FROM usage_daily").fetchone()
    assert days[0] >= 540
    assert days[2] == "2026-10-31"  # the last complete day before "now"
    bad = db.execute("SELECT COUNT(*) FROM usage_daily u JOIN workspaces w USING (workspace_id) "
                     "WHERE u.active_users < 0").fetchone()[0]
    assert bad == 0
    assert db.execute("SELECT COUNT(*) FROM workspaces WHERE stripe_customer_id IS NOT NULL").fetchone()[0] > 0


def test_advance_moves_the_world(tmp_path: Path) -> None:
    world = generate_world(300, seed=3, directory=tmp_path, anchor=ANCHOR)
    before_tickets = len(world.zendesk["tickets"])
    stamps = {k: r["SystemModstamp"] for k, r in world.salesforce["Account"].items()}
    world.advance(20)
    assert len(world.zendesk["tickets"]) > before_tickets
    changed = [k for k, r in world.salesforce["Account"].items() if r["SystemModstamp"] != stamps.get(k)]
    assert changed or len(world.salesforce["Task"]) > 0
    db = sqlite3.connect(world.usage_db)
    assert db.execute("SELECT MAX(day) FROM usage_daily").fetchone()[0] == "2026-11-20"
    recent = [e for e in world.stripe_events if e["created"] >= int(ANCHOR.timestamp())]
    assert recent, "advancing creates Stripe events"
    with pytest.raises(ValueError, match="simulated only"):
        world.advance(400)


def test_the_world_catches_up_with_its_clock_on_each_request(tmp_path: Path) -> None:
    """Time passing (not only `advance`) plays the generated future, and every emulator request
    catches the world up first, so no change is ever stamped before a read that already happened."""
    from retention_hub.sandbox.server import start
    from retention_hub.sandbox.smoke import salesforce_client

    world = generate_world(200, seed=3, directory=tmp_path, anchor=ANCHOR)
    tickets, version = len(world.zendesk["tickets"]), world.version
    world._started -= 5 * 86_400  # five days of wall time go by
    sandbox = start(world, tmp_path, vendors=("salesforce",))
    try:
        sf = salesforce_client(sandbox.info()["salesforce"])
        sf.query("SELECT Id FROM Account LIMIT 1")
    finally:
        sandbox.stop()
    assert world.version > version and len(world.zendesk["tickets"]) > tickets
    latest = max(r["SystemModstamp"] for r in world.salesforce["Task"].values())
    assert latest <= world.now().strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    world.freeze_clock()
    world.catch_up()
    frozen = world.version
    world._started -= 5 * 86_400  # a frozen clock ignores wall time: nothing more happens
    world.catch_up()
    assert world.version == frozen
