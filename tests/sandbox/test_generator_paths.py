"""The generator's fast paths give exactly what the slow, obvious ones give.

- History before Stripe's event window is written straight into the records (tickets solved and
  invoices paid before it are created in their final state); `generate_world(fold=False)` applies
  every event through the world's ``*_put`` helpers instead. Both must give the same world, down to
  ids, key order, timestamps, Stripe events and what `advance` does afterwards.
- `Stamps` formats times like `sf_time`/`hs_time`/`zd_time`/`unix`; `IdMint`'s fast Salesforce id
  equals the general construction; block-wise health simulation equals the day-by-day recursion.
"""
from __future__ import annotations

import random
import weakref
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from retention_hub.sandbox import population, warehouse
from retention_hub.sandbox.generator import generate_world
from retention_hub.sandbox.records import IdMint, Stamps, _b62, hs_time, sf_date, sf_id_checksum, sf_time, unix, zd_time
from retention_hub.sandbox.world import World

ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)
VENDORS = ("salesforce", "hubspot", "zendesk", "stripe")


def assert_same_world(a: World, b: World) -> None:
    for vendor in VENDORS:
        tables_a, tables_b = getattr(a, vendor), getattr(b, vendor)
        assert list(tables_a) == list(tables_b)
        for kind, table in tables_a.items():
            other = tables_b[kind]
            assert list(table) == list(other), f"{vendor} {kind}: ids or their order differ"
            for rec_id, rec in table.items():
                assert rec == other[rec_id], f"{vendor} {kind} {rec_id}"
                assert list(rec) == list(other[rec_id]), f"{vendor} {kind} {rec_id}: key order"
    assert a.stripe_events == b.stripe_events
    assert a.stripe_meter_usage == b.stripe_meter_usage
    assocs = [{k: {t: dict(v) for t, v in d.items()} for k, d in w.hs_assoc.items()} for w in (a, b)]
    assert assocs[0] == assocs[1]
    # the id factories continue from the same place
    assert a.ids.salesforce("Task") == b.ids.salesforce("Task")
    assert a.ids.hubspot() == b.ids.hubspot()
    assert a.ids.zendesk("tickets") == b.ids.zendesk("tickets")
    assert a.ids.stripe("in") == b.ids.stripe("in")


def test_direct_history_equals_applying_every_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a clock frozen at the anchor: Stripe keeps exactly the events of the last 30 days in both paths
    monkeypatch.setattr(World, "now", lambda self: self.anchor + timedelta(days=self.days_advanced))
    fast = generate_world(400, seed=5, directory=tmp_path / "fast", anchor=ANCHOR)
    slow = generate_world(400, seed=5, directory=tmp_path / "slow", anchor=ANCHOR, fold=False)
    assert len(fast.zendesk["tickets"]) > 1000 and len(fast.stripe["invoice"]) > 2000
    assert any(t["status"] == "solved" for t in fast.zendesk["tickets"].values())
    assert any(t["status"] != "solved" for t in fast.zendesk["tickets"].values())
    assert any(i["status"] == "uncollectible" for i in fast.stripe["invoice"].values())
    assert len(fast.stripe_events) > 100
    assert_same_world(fast, slow)
    for name in ("identity.csv", "outcomes.csv", "customers.csv"):
        assert (tmp_path / "fast" / "truth" / name).read_text() == (tmp_path / "slow" / "truth" / name).read_text()
    fast.advance(20)
    slow.advance(20)
    assert_same_world(fast, slow)


def test_same_seed_same_world_with_a_running_clock(tmp_path: Path) -> None:
    """The wall clock runs during the build; the Stripe event window must not depend on it."""
    a = generate_world(200, seed=9, directory=None, anchor=ANCHOR)
    b = generate_world(200, seed=9, directory=None, anchor=ANCHOR)
    assert_same_world(a, b)
    horizon = int((ANCHOR - timedelta(days=30)).timestamp())
    assert a.stripe_events and min(e["created"] for e in a.stripe_events) >= horizon


def test_stamps_match_the_record_formats() -> None:
    rng = random.Random(3)
    for origin in (datetime(2025, 5, 1, tzinfo=timezone.utc),
                   datetime(2025, 5, 1, 13, 7, 9, 123000, tzinfo=timezone.utc)):
        stamps = Stamps(origin)
        for _ in range(20_000):
            ms = rng.randint(-1600 * 86_400_000, 1000 * 86_400_000)
            dt = origin + timedelta(milliseconds=ms)
            assert stamps.at(ms) == dt
            assert (stamps.sf(ms), stamps.hs(ms), stamps.zd(ms), stamps.unix(ms), stamps.date(ms)) == (
                sf_time(dt), hs_time(dt), zd_time(dt), unix(dt), sf_date(dt))
            midnight = stamps.at(stamps.midnight(ms))
            assert midnight == dt.replace(hour=0, minute=0, second=0, microsecond=0)
    with pytest.raises(ValueError):
        Stamps(datetime(2025, 5, 1, 0, 0, 0, 1, tzinfo=timezone.utc))


def test_fast_salesforce_ids_equal_the_general_form() -> None:
    mint = IdMint(1)
    for sobject, prefix in (("Task", "00T"), ("Account", "001"), ("Invoice__c", "a00")):
        for n in [*range(1, 5000), 3843, 3844, 3845, 3844**2 - 1, 3844**2, 62**6 - 2, 62**6 - 1, 62**6, 62**6 + 1]:
            mint._sf_counter[sobject] = n - 1
            id15 = (prefix + "5g0000" + _b62(n).rjust(6, "0"))[:15]
            assert mint.salesforce(sobject) == id15 + sf_id_checksum(id15)


def test_blockwise_health_equals_the_daily_recursion() -> None:
    pop = population.simulate(300, 4)
    rng = np.random.default_rng([4, 1])
    n, days = pop.n, pop.days
    # replay simulate()'s draws up to the health process, then the plain day-by-day recursion
    segment = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    rng.normal(np.array([2.4, 4.0, 5.8])[segment], 0.45)
    for draw in (lambda: rng.random(n), lambda: rng.random(n), lambda: rng.random(n)):
        draw()
    rng.integers(1, 1500, n), rng.integers(0, population.HISTORY_DAYS - 20, n)
    rng.random(n), rng.choice([0.1, 0.15, 0.2, 0.3], n), rng.random(n)
    mu = rng.normal(0.15, 0.55, n) + 0.15 * segment
    has_cause = rng.random(n) < 0.5
    rng.choice(len(population.CAUSES), size=n, p=population.CAUSE_SHARE)
    rng.integers(-60, days, n), rng.uniform(0.8, 2.2, n), rng.random(n), rng.integers(90, 240, n)
    assert np.array_equal(mu, pop.mu) and np.array_equal(has_cause, pop.cause >= 0)
    sigma = population.SIGMA_STATIONARY * np.sqrt(1 - population.PHI**2)
    h = mu + rng.normal(0, population.SIGMA_STATIONARY, n)
    expected = np.empty((n, days), dtype=np.float32)
    for d in range(days):
        h = mu + population.PHI * (h - mu) + rng.normal(0, sigma, n)
        expected[:, d] = h - population.shock(d, pop.onset, pop.depth, pop.recovers_at)
    assert np.array_equal(expected, pop.health)


def test_day_users_is_day_usage_without_the_rest() -> None:
    pop = population.simulate(500, 2)
    for d in (0, 200, population.HISTORY_DAYS - 1, population.HISTORY_DAYS + 30):
        active, users, *_ = warehouse.day_usage(pop, 2, ANCHOR, d)
        got = warehouse.day_users(pop, 2, ANCHOR, d)
        assert np.array_equal(active, got[0]) and np.array_equal(users, got[1])
    pop.forget_health_before(300)
    with pytest.raises(ValueError):
        warehouse.day_users(pop, 2, ANCHOR, 100)
    assert np.array_equal(warehouse.day_users(pop, 2, ANCHOR, 400)[1],
                          warehouse.day_users(population.simulate(500, 2), 2, ANCHOR, 400)[1])


def test_a_dropped_world_is_freed_without_the_collector(tmp_path: Path) -> None:
    """generate_world freezes the world out of the cyclic collector, so it must hold no cycles."""
    world = generate_world(150, seed=2, directory=tmp_path, anchor=ANCHOR)
    world.advance(3)
    ref = weakref.ref(world)
    del world
    assert ref() is None
