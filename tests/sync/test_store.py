"""The state store on SQLite (always) and PostgreSQL (when RHUB_TEST_POSTGRES_URL is set)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, inspect

from retention_hub.log import register_secret
from retention_hub.sync import store as store_module
from retention_hub.sync.store import (RAW_LIMIT, SCHEMA_VERSION, Store, StoreError, metadata,
                                      schema_version_table)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)





def rec(source_id: str, updated: datetime | None = T0, kind: str = "account", source: str = "hubspot",
        **payload: object) -> dict:
    return {"source": source, "kind": kind, "source_id": source_id, "updated_at": updated,
            "payload": {"id": source_id, **payload}}


# -- schema --------------------------------------------------------------------------------------


def test_schema_is_created_and_matches_the_live_tables(store: Store) -> None:
    assert store.schema_version() == SCHEMA_VERSION == 6
    inspector = inspect(store.engine)
    tables = set(inspector.get_table_names())
    assert {"schema_version", "records", "cursors", "runs", "quarantine", "usage_days", "usage_packed", "usage_refs"} <= tables
    for name, table in metadata.tables.items():
        assert {c["name"] for c in inspector.get_columns(name)} == set(table.columns.keys()), name
    pk = inspector.get_pk_constraint("records")["constrained_columns"]
    assert pk == ["source", "kind", "source_id"]


def test_reopening_applies_nothing_twice(store_url: str) -> None:
    Store(store_url).close()
    with Store(store_url) as again:
        with again.engine.connect() as conn:
            assert conn.execute(schema_version_table.select()).fetchall()[0].version == 1
            assert len(conn.execute(schema_version_table.select()).fetchall()) == SCHEMA_VERSION


def test_newer_schema_is_a_clear_error(store_url: str) -> None:
    with Store(store_url) as s, s.engine.begin() as conn:
        conn.execute(schema_version_table.insert().values(version=SCHEMA_VERSION + 5, applied_at=T0))
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 5}, but this version of "
                                         rf"retention-hub knows only up to {SCHEMA_VERSION}; upgrade"):
        Store(store_url)


def test_later_migrations_run_in_order_once(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Store(store_url).close()  # a store at version 1
    calls: list[int] = []

    def v2(conn) -> None:
        calls.append(2)
        md = MetaData()
        Table("extra_v2", md, Column("id", Integer, primary_key=True)).create(conn)

    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, v2])
    with Store(store_url) as s:
        assert s.schema_version() == SCHEMA_VERSION + 1
        assert "extra_v2" in inspect(s.engine).get_table_names()
    Store(store_url).close()
    assert calls == [2]


def test_default_url_makes_the_directory_and_uses_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Store() as s:
        assert (tmp_path / ".rhub" / "hub.db").is_file()
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_repr_hides_the_password() -> None:
    s = Store.__new__(Store)  # no connection: only the repr is under test
    s.url = "postgresql+psycopg://rhub:pw-for-repr-1@127.0.0.1:1/x"
    assert "pw-for-repr-1" not in repr(s) and "***" in repr(s)


# -- records -------------------------------------------------------------------------------------


def test_upsert_is_idempotent(store: Store) -> None:
    rows = [rec(str(i), name=f"Acme {i}") for i in range(5)]
    assert store.upsert_records(rows, run_id=1) == 5
    first = list(store.iter_records(kind="account"))
    assert store.upsert_records(rows, run_id=2) == 5
    second = list(store.iter_records(kind="account"))
    assert len(second) == 5 == store.count_records()
    for a, b in zip(first, second):
        bookkeeping = ("last_seen_run", "write_seq")  # a replay is a write: cached tables re-read it
        assert {k: v for k, v in a.items() if k not in bookkeeping} == {k: v for k, v in b.items()
                                                                         if k not in bookkeeping}
        assert (a["first_seen_run"], a["last_seen_run"], b["last_seen_run"]) == (1, 1, 2)


def test_newer_version_wins_and_older_never_overwrites(store: Store) -> None:
    store.upsert_records([rec("1", T0, name="v1")], run_id=1)
    store.upsert_records([rec("1", T0 - timedelta(hours=1), name="stale")], run_id=2)
    row = store.get_record("hubspot", "account", "1")
    assert row["payload"]["name"] == "v1" and row["updated_at"] == T0 and row["last_seen_run"] == 2
    store.upsert_records([{**rec("1", T0 + timedelta(hours=1), name="v2"), "deleted": True}], run_id=3)
    row = store.get_record("hubspot", "account", "1")
    assert row["payload"]["name"] == "v2" and row["deleted"] is True and row["first_seen_run"] == 1
    assert store.count_records() == 0 and store.count_records(include_deleted=True) == 1


def test_duplicates_within_a_batch_keep_the_newest(store: Store) -> None:
    n = store.upsert_records([rec("1", T0, name="new"), rec("1", T0 - timedelta(days=1), name="old"),
                              rec("2", None, name="undated")])
    assert n == 2
    assert store.get_record("hubspot", "account", "1")["payload"]["name"] == "new"
    assert store.get_record("hubspot", "account", "2")["updated_at"] is None


def test_times_are_utc_and_naive_times_are_refused(store: Store) -> None:
    plus_two = datetime(2026, 11, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    store.upsert_records([rec("1", plus_two, seen=plus_two), rec("2", "2026-11-01T12:00:00Z")])
    for sid in ("1", "2"):
        row = store.get_record("hubspot", "account", sid)
        assert row["updated_at"] == T0 and row["updated_at"].utcoffset() == timedelta(0)
    assert store.get_record("hubspot", "account", "1")["payload"]["seen"] == plus_two.isoformat()
    with pytest.raises(ValueError, match="naive"):
        store.upsert_records([rec("3", datetime(2026, 1, 1))])


def test_iter_records_pages_and_filters(store: Store) -> None:
    store.upsert_records([rec(f"{i:02d}") for i in range(10)])
    store.upsert_records([rec("c1", kind="contact"), rec("s1", source="stripe", kind="account")])
    store.upsert_records([{**rec("gone"), "deleted": True}])
    ids = [r["source_id"] for r in store.iter_records(kind="account", source="hubspot", batch_size=3)]
    assert ids == [f"{i:02d}" for i in range(10)]
    assert len(list(store.iter_records(batch_size=4))) == 12
    assert len(list(store.iter_records(include_deleted=True, batch_size=5))) == 13
    assert store.count_records(kind="account") == 11 and store.count_records(source="stripe") == 1
    assert store.get_record("hubspot", "account", "missing") is None


# -- cursors, runs, quarantine -------------------------------------------------------------------


def test_cursors(store: Store) -> None:
    assert store.get_cursor("hubspot", "companies") is None
    store.set_cursor("hubspot", "companies", "2026-11-01T00:00:00Z")
    store.set_cursor("hubspot", "contacts", "a")
    store.set_cursor("hubspot", "companies", "2026-11-02T00:00:00Z")
    assert store.get_cursor("hubspot", "companies") == "2026-11-02T00:00:00Z"
    assert store.get_cursor("zendesk", "companies") is None
    assert store.all_cursors() == {("hubspot", "companies"): "2026-11-02T00:00:00Z",
                                   ("hubspot", "contacts"): "a"}


def test_runs(store: Store) -> None:
    register_secret("tok-run-secret-9")
    first = store.start_run("sync")
    second = store.start_run("score")
    run = store.get_run(first)
    assert run.status == "running" and run.finished_at is None and run.counts == {}
    assert run.started_at.tzinfo is not None
    store.finish_run(first, "partial", counts={"hubspot.companies": 120}, api_calls=7, writes=0, errors=2,
                     message="429 from hubspot with token tok-run-secret-9")
    run = store.get_run(first)
    assert (run.status, run.counts, run.api_calls, run.errors) == ("partial", {"hubspot.companies": 120}, 7, 2)
    assert run.finished_at >= run.started_at
    assert "tok-run-secret-9" not in run.message and "***" in run.message
    assert [r.id for r in store.list_runs()] == [second, first]
    assert [r.id for r in store.list_runs(job="sync")] == [first]
    assert len(store.list_runs(limit=1)) == 1
    with pytest.raises(ValueError):
        store.finish_run(second, "done")
    with pytest.raises(KeyError):
        store.finish_run(9999, "ok")
    assert store.get_run(9999) is None


def test_quarantine(store: Store) -> None:
    run = store.start_run("sync")
    store.add_quarantine(run, "stripe", "invoice", "in_1", "amount is not an integer", {"amount": "12.5"})
    store.add_quarantine(run, "zendesk", "ticket", None, "no id", {"blob": "x" * (RAW_LIMIT * 2)})
    store.add_quarantine(None, "usage", "usage", "w1", "bad day", {"day": datetime(2026, 1, 1)})
    items = store.list_quarantine(run_id=run)
    assert [q.source for q in items] == ["zendesk", "stripe"]
    big, small = items
    assert small.raw == '{"amount": "12.5"}' and small.reason == "amount is not an integer"
    assert len(big.raw) < RAW_LIMIT + 50 and big.raw.endswith("characters]") and big.source_id is None
    assert big.at.tzinfo is not None
    assert len(store.list_quarantine()) == 3


def test_two_stores_share_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with Store(url) as a, Store(url) as b:
        a.upsert_records([rec("1")])
        b.set_cursor("hubspot", "companies", "x")
        assert b.count_records() == 1 and a.get_cursor("hubspot", "companies") == "x"
