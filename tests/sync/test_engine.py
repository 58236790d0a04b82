"""The sync engine with fake connectors: cursors after pages, crashes, failures per source."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

from retention_hub.connectors.http import AuthError, TransientError
from retention_hub.connectors.records import Page, Quarantined, record
from retention_hub.sync.engine import sync
from retention_hub.sync.store import Store

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


class FakeConnector:
    """Serves `n` accounts in pages of `size`; the cursor is the index of the next record."""

    def __init__(self, source: str = "fake", n: int = 25, size: int = 10, fail_at: int | None = None,
                 error: Exception | None = None) -> None:
        self.source, self.n, self.size, self.fail_at, self.error = source, n, size, fail_at, error
        self.calls: dict[str, int] = {}
        self.seen_until: datetime | None = None

    def streams(self) -> list[str]:
        return ["accounts", "tickets"]

    def api_calls(self) -> dict[str, int]:
        return dict(self.calls)

    def read(self, stream: str, cursor: str | None, until: datetime, full_refresh: bool = False) -> Iterator[Page]:
        self.seen_until = until
        start = int(cursor or 0)
        for i in range(start, self.n, self.size):
            self.calls[stream] = self.calls.get(stream, 0) + 1
            if self.fail_at is not None and i >= self.fail_at:
                raise self.error or RuntimeError("boom")
            recs = [record(self.source, "account" if stream == "accounts" else "ticket", f"{stream}-{k}",
                           T0 + timedelta(minutes=k), name=f"n{k}") for k in range(i, min(i + self.size, self.n))]
            bad = [Quarantined("account", f"bad-{i}", "no Id", {"x": 1})] if i == 0 else []
            yield Page(recs, str(min(i + self.size, self.n)), bad)


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    with Store(f"sqlite:///{tmp_path / 'hub.db'}") as s:
        yield s


def test_full_sync_stores_every_page_and_saves_cursors(store: Store) -> None:
    fake = FakeConnector()
    result = sync(store, [fake])
    assert result.status == "ok"
    assert store.count_records(source="fake") == 50
    assert store.get_cursor("fake", "accounts") == "25"
    assert {(r.stream, r.records, r.pages, r.quarantined) for r in result.streams} == {
        ("accounts", 25, 3, 1), ("tickets", 25, 3, 1)}
    assert len(store.list_quarantine(result.run_id)) == 2
    assert fake.seen_until is not None and fake.seen_until <= datetime.now(timezone.utc)
    run = store.get_run(result.run_id)
    assert run.status == "ok" and run.api_calls == 6


def test_second_run_resumes_from_the_cursor(store: Store) -> None:
    sync(store, [FakeConnector()])
    again = FakeConnector()
    result = sync(store, [again])
    assert sum(r.records for r in result.streams) == 0 and again.calls == {}
    full = sync(store, [FakeConnector()], full_refresh=True)
    assert sum(r.records for r in full.streams) == 50
    assert store.count_records(source="fake") == 50  # stored once, however often seen


def test_a_crash_mid_stream_keeps_the_pages_already_stored(store: Store) -> None:
    result = sync(store, [FakeConnector(fail_at=20, error=TransientError("fake", "5xx after retries"))])
    assert result.status == "failed"  # both streams failed (after storing what they could)
    assert store.get_cursor("fake", "accounts") == "20"
    assert store.count_records(source="fake", kind="account") == 20
    sync(store, [FakeConnector()])
    assert store.count_records(source="fake", kind="account") == 25


def test_auth_error_stops_only_that_source(store: Store) -> None:
    bad = FakeConnector("bad", fail_at=0, error=AuthError("bad", "the token was rejected; set BAD_TOKEN"))
    good = FakeConnector("good")
    result = sync(store, [bad, good])
    assert result.status == "partial"
    bad_streams = [r for r in result.streams if r.source == "bad"]
    assert len(bad_streams) == 1 and "token was rejected" in bad_streams[0].error  # tickets never tried
    assert store.count_records(source="good") == 50
    assert "bad.accounts" in (store.get_run(result.run_id).message or "")


def test_stop_event_ends_after_the_stored_page(store: Store) -> None:
    import threading

    stop = threading.Event()
    stop.set()
    result = sync(store, [FakeConnector()], stop=stop)
    assert all(r.error for r in result.streams)
    assert store.count_records(source="fake") == 0
