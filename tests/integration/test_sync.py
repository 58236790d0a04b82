"""A whole sync of the sandbox into the store: every source, incremental, under faults."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from retention_hub.config import load_config
from retention_hub.connectors import build_connectors
from retention_hub.connectors.zendesk import ZendeskConnector
from retention_hub.sandbox import expected
from retention_hub.sandbox.runner import start_sandbox
from retention_hub.sync.engine import sync
from retention_hub.sync.store import Store

pytestmark = pytest.mark.slow
ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)


def connectors_for(config):
    """The configured connectors; Zendesk's export pacing lifted (the sandbox runs without limits)."""
    out = []
    for c in build_connectors(config):
        if isinstance(c, ZendeskConnector):
            c = ZendeskConnector(config.sources.zendesk, exports_per_minute=1000)
        out.append(c)
    return out


def contents(store: Store) -> dict:
    return {(r["source"], r["kind"], r["source_id"]): (r["deleted"], r["payload"])
            for r in store.iter_records(include_deleted=True)}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    running = start_sandbox(tmp_path_factory.mktemp("sync"), accounts=120, seed=5, anchor=ANCHOR)
    running.world.freeze_clock()  # the world changes only when a test advances it
    yield running
    running.stop()


def by_kind(store: Store) -> dict[tuple[str, str], dict[str, tuple]]:
    """The store per (source, kind): id -> (updated_at, deleted, payload)."""
    out: dict[tuple[str, str], dict[str, tuple]] = {}
    for r in store.iter_records(include_deleted=True):
        out.setdefault((r["source"], r["kind"]), {})[r["source_id"]] = (r["updated_at"], r["deleted"], r["payload"])
    return out


def delete_one_of_each(world) -> None:
    """Deletions as users make them in each vendor's UI, so the next sync must carry them."""
    with world.lock:
        for sobject in ("Account", "Contact"):
            world.sf_delete(sobject, next(i for i, r in world.salesforce[sobject].items() if not r["IsDeleted"]))
        for object_type in ("companies", "deals"):
            world.hs_archive(object_type, next(i for i, r in world.hubspot[object_type].items() if not r["archived"]))
        ticket = next(i for i, r in world.zendesk["tickets"].items() if r["status"] != "deleted")
        world.zd_put("tickets", {"id": ticket, "status": "deleted"})
        org = next(i for i, r in world.zendesk["organizations"].items() if not r.get("deleted_at"))
        world.zd_put("organizations", {"id": org, "deleted_at": world.zendesk["organizations"][org]["updated_at"]})
        customer = next(i for i, r in world.stripe["customer"].items() if not r.get("_deleted"))
        world.stripe_put("customer", {"id": customer, "_deleted": True}, "customer.deleted")


def test_full_then_incremental_sync(sandbox, tmp_path: Path) -> None:
    config = load_config(sandbox.directory / "hub.yaml")
    world = sandbox.world
    with Store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        until = world.now()
        want = expected.snapshot(world, until)
        first = sync(store, connectors_for(config), until=until)
        assert first.status == "ok", first.errors
        # every stream of every source: the store holds exactly the live records the world holds
        # (deleted ones only as far as the vendor still shows them)
        got = by_kind(store)
        assert set(got) == set(want)
        for key, live in expected.live_keys(want).items():
            assert {i for i, v in got[key].items() if not v[1]} == live, key
            assert {i for i, v in got[key].items() if v[1]} <= set(want[key]) - live, key
        before = contents(store)

        quiet = sync(store, connectors_for(config), until=world.now())
        assert quiet.status == "ok", quiet.errors
        assert all(s.calls <= 2 for s in quiet.streams), [(s.source, s.stream, s.calls) for s in quiet.streams]
        assert contents(store) == before

        # a day later, with a deletion in each system: the next run changes exactly what the world changed
        delete_one_of_each(world)
        world.advance(1)
        until = world.now()
        later_want = expected.snapshot(world, until)
        later = sync(store, connectors_for(config), until=until)
        assert later.status == "ok", later.errors
        later_got = by_kind(store)
        changed = expected.changed(want, later_want)
        for key in changed:
            moved = {i for i, v in later_got[key].items() if got[key].get(i) != v}
            assert moved == changed[key], (key, sorted(moved ^ changed[key])[:5])
        deleted = {key: {i for i in changed[key] if later_want[key][i][1]} for key in changed}
        assert all(deleted[key] for key in [("salesforce", "account"), ("salesforce", "contact"),
                                            ("hubspot", "account"), ("hubspot", "renewal"),
                                            ("zendesk", "ticket"), ("zendesk", "account"), ("stripe", "account")])
        assert all(later_got[key][i][1] for key, ids in deleted.items() for i in ids)
        assert sum(len(ids) for ids in changed.values()) > sum(len(ids) for ids in deleted.values())


def test_faults_end_with_the_same_store_as_a_clean_run(sandbox, tmp_path: Path) -> None:
    """10% 5xx and 5% 429 from every vendor API (the warehouse is not behind one, so it sits out)."""
    config = load_config(sandbox.directory / "hub.yaml")
    until = sandbox.world.now()
    config.sources.usage = None
    with Store(f"sqlite:///{tmp_path / 'clean.db'}") as clean:
        assert sync(clean, connectors_for(config), until=until).status == "ok"
        expected = contents(clean)
    for emulator in sandbox.emulators.values():
        emulator.knobs.update({"error_rate": 0.10, "throttle_rate": 0.05})
    try:
        with Store(f"sqlite:///{tmp_path / 'faulty.db'}") as faulty:
            result = sync(faulty, connectors_for(config), until=until)
            assert result.status == "ok", result.errors
            assert contents(faulty) == expected
    finally:
        for emulator in sandbox.emulators.values():
            emulator.knobs.update({"error_rate": 0.0, "throttle_rate": 0.0})
