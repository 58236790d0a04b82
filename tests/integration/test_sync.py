"""A whole sync of the sandbox into the store: every source, incremental, under faults."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from retention_hub.config import load_config
from retention_hub.connectors import build_connectors
from retention_hub.connectors.zendesk import ZendeskConnector
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
    yield running
    running.stop()


def test_full_then_incremental_sync(sandbox, tmp_path: Path) -> None:
    config = load_config(sandbox.directory / "hub.yaml")
    world = sandbox.world
    with Store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        first = sync(store, connectors_for(config), until=world.now())
        assert first.status == "ok", first.errors
        # the store holds every account-level record of every system
        assert store.count_records(source="salesforce", kind="account", include_deleted=True) == \
            len(world.salesforce["Account"])
        assert store.count_records(source="hubspot", kind="account", include_deleted=True) == \
            len(world.hubspot["companies"])
        assert store.count_records(source="zendesk", kind="account", include_deleted=True) == \
            len(world.zendesk["organizations"])
        assert store.count_records(source="stripe", kind="subscription", include_deleted=True) == \
            len(world.stripe["subscription"])
        assert store.count_records(source="zendesk", kind="ticket", include_deleted=True) == \
            len(world.zendesk["tickets"])
        before = contents(store)

        quiet = sync(store, connectors_for(config), until=world.now())
        assert quiet.status == "ok", quiet.errors
        assert all(s.calls <= 2 for s in quiet.streams), [(s.source, s.stream, s.calls) for s in quiet.streams]
        assert contents(store) == before

        world.advance(1)
        later = sync(store, connectors_for(config), until=world.now())
        assert later.status == "ok", later.errors
        assert sum(s.records for s in later.streams) > 0
        assert contents(store) != before


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
