"""UsageConnector against a hand-built SQLite warehouse and the same data as CSV files."""
from __future__ import annotations

import csv
import json
import math
import sqlite3
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from retention_hub.config.models import UsageSource
from retention_hub.connectors.http import AuthError, Policy, RequestError, TransientError
from retention_hub.connectors.records import Page
from retention_hub.connectors.usage import UsageConnector

UNTIL = datetime(2026, 11, 1, 9, 30, tzinfo=timezone.utc)  # days before 2026-11-01 are complete
FIRST = date(2026, 10, 1)
N_WS = 9
METRICS = ("active_users", "sessions", "events")
FAST = Policy(rate_per_second=1000, burst=1000, backoff_initial=0.001, backoff_max=0.01)


def day(n: int) -> str:
    return (FIRST + timedelta(days=n)).isoformat()


def usage_rows(days: range) -> list[tuple]:
    """Workspace k is active from day k; sessions are null on some rows (no record for them)."""
    return [(f"ws_{k:02d}", day(d), k + d, None if (k + d) % 10 == 0 else 2 * (k + d), 30 * k + d)
            for d in days for k in range(N_WS) if d >= k]


WORKSPACES = [(f"ws_{k:02d}", f"Workspace {k}", f"ws{k}.example.com", f"cus_{k:04d}" if k % 3 else None,
               "2026-01-0{}T00:00:00+00:00".format(1 + k % 9)) for k in range(N_WS)]


def make_db(path: Path, days: range = range(0, 31)) -> Path:
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE workspaces (workspace_id TEXT PRIMARY KEY, name TEXT, domain TEXT, stripe_customer_id TEXT,
                                 created_at TEXT);
        CREATE TABLE usage_daily (workspace_id TEXT NOT NULL, day TEXT NOT NULL, active_users INTEGER,
                                  sessions INTEGER, events INTEGER, note TEXT);""")
    db.executemany("INSERT INTO workspaces VALUES (?,?,?,?,?)", WORKSPACES)
    db.executemany("INSERT INTO usage_daily VALUES (?,?,?,?,?,'x')", usage_rows(days))
    db.commit()
    db.close()
    return path


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(header)
        out.writerows(["" if v is None else v for v in r] for r in rows)
    return path


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return make_db(tmp_path / "warehouse.db")


def connector(path: Path, kind: str = "sqlite", **kwargs: Any) -> UsageConnector:
    settings = {k: kwargs.pop(k) for k in ("metrics", "accounts_table", "table", "history_days") if k in kwargs}
    con = UsageConnector(UsageSource(kind=kind, path=path, **settings), FAST, **kwargs)
    con.caller.sleep = lambda seconds: None
    return con


def read(con: UsageConnector, stream: str, cursor: str | None = None, until: datetime = UNTIL,
         full_refresh: bool = False) -> list[Page]:
    return list(con.read(stream, cursor, until, full_refresh=full_refresh))


def records(pages: list[Page]) -> list[dict]:
    return [r for p in pages for r in p.records]


def values(pages: list[Page]) -> dict[str, Any]:
    """{account|day: {metric: value}} of the records read."""
    return {r["source_id"]: r["payload"]["metrics"] for r in records(pages)}


def last_cursor(pages: list[Page], previous: str | None = None) -> str | None:
    for page in pages:
        previous = page.cursor or previous
    return previous


def expected(rows: list[tuple], before: str = "2026-11-01", since: str = "") -> dict[str, Any]:
    """One record per workspace and day, with the day's non-null metrics."""
    out = {f"{ws}|{d}": {m: v for m, v in zip(METRICS, vals) if v is not None} for ws, d, *vals in rows
           if since <= d < before}
    return {key: metrics for key, metrics in out.items() if metrics}


# -- full reads -------------------------------------------------------------------------------------
def test_full_read_maps_both_streams(db):
    con = connector(db)
    assert con.streams() == ["accounts", "usage"]
    usage = read(con, "usage")
    assert values(usage) == expected(usage_rows(range(0, 31)))
    recs = records(usage)
    assert len({r["source_id"] for r in recs}) == len(recs)
    first = next(r["payload"] for r in recs if r["source_id"] == f"ws_03|{day(5)}")
    assert first == {"source": "usage", "kind": "usage", "source_id": f"ws_03|{day(5)}",
                     "updated_at": "2026-10-07T00:00:00+00:00", "deleted": False, "account_ref": "ws_03",
                     "day": day(5), "metrics": {"active_users": 8, "sessions": 16, "events": 95}}
    # a null metric is left out of its day's record
    assert values(usage)[f"ws_05|{day(5)}"] == {"active_users": 10, "events": 155}
    assert json.loads(usage[-1].cursor)["resume"] == day(30)

    accounts = {r["source_id"]: r["payload"] for r in records(read(con, "accounts"))}
    assert set(accounts) == {w[0] for w in WORKSPACES}
    assert accounts["ws_01"]["external_ids"] == {"stripe": "cus_0001"} and accounts["ws_03"]["external_ids"] == {}
    assert (accounts["ws_01"]["name"], accounts["ws_01"]["domain"]) == ("Workspace 1", "ws1.example.com")
    assert records(read(con, "accounts"))[0]["updated_at"].tzinfo is not None


def test_only_complete_days_are_read(db):
    more = make_db(db.parent / "more.db", range(0, 33))  # rows for 2026-11-01 and 02 exist already
    assert max(r["payload"]["day"] for r in records(read(connector(more), "usage"))) == day(30)
    assert values(read(connector(db), "usage", until=UNTIL - timedelta(days=10))) == expected(
        usage_rows(range(0, 31)), before=day(21))


def test_small_pages_paginate_and_calls_match_the_floor(db):
    rows = len(usage_rows(range(0, 31)))
    con = connector(db, page_size=7)
    pages = read(con, "usage")
    assert values(pages) == expected(usage_rows(range(0, 31)))
    # the table description, then one query per page (plus an empty one when the last page is full)
    assert con.api_calls()["usage"] == 1 + rows // 7 + 1 and len(pages) >= math.ceil(rows / 7)
    big = connector(db)
    read(big, "usage")
    read(big, "accounts")
    assert big.api_calls() == {"usage": 2, "accounts": 2}  # one page each, and the description


def test_resuming_from_any_page_cursor_loses_nothing(db):
    full = read(connector(db, page_size=25), "usage")
    everything = expected(usage_rows(range(0, 31)))
    assert sum(p.cursor is not None for p in full) > 5
    for k, page in enumerate(full[:-1]):
        if page.cursor is None:
            continue
        rest = read(connector(db, page_size=25), "usage", page.cursor)
        seen = {r["source_id"]: r["payload"]["metrics"] for p in full[:k + 1] for r in p.records}
        seen.update(values(rest))
        assert seen == everything
        # at most the day of the cursor is read again
        again = set(values(rest)) & {r["source_id"] for p in full[:k + 1] for r in p.records}
        assert {key.split("|")[1] for key in again} <= {json.loads(page.cursor)["resume"]}


# -- incremental runs -------------------------------------------------------------------------------
def test_second_run_with_nothing_changed_yields_nothing(db):
    first = connector(db)
    cursors = {s: last_cursor(read(first, s)) for s in first.streams()}
    con = connector(db)
    for stream in con.streams():
        assert records(read(con, stream, cursors[stream])) == []
    assert all(n <= 2 for n in con.api_calls().values())


def test_next_day_yields_exactly_the_new_rows_and_a_changed_last_day(db):
    con = connector(db)
    cursor = last_cursor(read(con, "usage"))
    accounts_cursor = last_cursor(read(con, "accounts"))
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO usage_daily VALUES (?,?,?,?,?,'x')", usage_rows(range(31, 32)))
    nxt = UNTIL + timedelta(days=1)
    pages = read(connector(db), "usage", cursor, until=nxt)
    assert values(pages) == expected(usage_rows(range(31, 32)), before=day(32))
    cursor = last_cursor(pages)
    # a late row and a correction for the last day read: that day comes again, whole
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE usage_daily SET events = 1 WHERE workspace_id = 'ws_02' AND day = ?", (day(31),))
        conn.execute("INSERT INTO usage_daily VALUES ('ws_99', ?, 1, 1, 1, 'x')", (day(31),))
    pages = read(connector(db), "usage", cursor, until=nxt)
    rows = [(ws, d, a, s, 1 if ws == "ws_02" else e) for ws, d, a, s, e in usage_rows(range(31, 32))]
    assert values(pages) == expected(rows + [("ws_99", day(31), 1, 1, 1)], before=day(32))
    # the accounts table did not change: nothing
    assert records(read(connector(db), "accounts", accounts_cursor)) == []


def test_a_warehouse_behind_the_clock_loses_no_day(db):
    con = connector(db)
    cursor = last_cursor(read(con, "usage", until=UNTIL + timedelta(days=5)))  # the last rows: day 30
    assert json.loads(cursor)["resume"] == day(30)
    with sqlite3.connect(db) as conn:  # the load for day 31 lands four days late
        conn.executemany("INSERT INTO usage_daily VALUES (?,?,?,?,?,'x')", usage_rows(range(31, 32)))
    pages = read(connector(db), "usage", cursor, until=UNTIL + timedelta(days=6))
    assert values(pages) == expected(usage_rows(range(31, 32)), before=day(32))


def test_changed_accounts_come_again_by_bucket(db):
    con = connector(db)
    cursor = last_cursor(read(con, "accounts"))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE workspaces SET stripe_customer_id = 'cus_new' WHERE workspace_id = 'ws_03'")
        conn.execute("INSERT INTO workspaces VALUES ('ws_50', 'New', 'new.example.com', NULL, NULL)")
    got = {r["source_id"]: r["payload"] for r in records(read(connector(db), "accounts", cursor))}
    assert {"ws_03", "ws_50"} <= set(got) and len(got) < N_WS  # the two buckets touched, not the table
    assert got["ws_03"]["external_ids"] == {"stripe": "cus_new"} and got["ws_50"]["name"] == "New"


def test_full_refresh_ignores_the_cursor(db):
    con = connector(db)
    cursor = last_cursor(read(con, "usage"))
    assert values(read(connector(db), "usage", cursor, full_refresh=True)) == expected(usage_rows(range(0, 31)))


def test_history_days_bounds_the_first_read_only(db, tmp_path):
    con = connector(db, history_days=5)
    pages = read(con, "usage")
    assert values(pages) == expected(usage_rows(range(0, 31)), since=day(26))  # 2026-10-27 to 31
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO usage_daily VALUES (?,?,?,?,?,'x')", usage_rows(range(31, 32)))
    later = read(connector(db, history_days=5), "usage", last_cursor(pages), until=UNTIL + timedelta(days=1))
    assert values(later) == expected(usage_rows(range(31, 32)), before=day(32))
    again = read(connector(db, history_days=2), "usage", last_cursor(pages), until=UNTIL + timedelta(days=1),
                 full_refresh=True)
    assert values(again) == expected(usage_rows(range(0, 32)), since=day(30), before=day(32))
    path = write_csv(tmp_path / "usage.csv", ["workspace_id", "day", *METRICS], usage_rows(range(0, 31)))
    assert values(read(connector(path, "csv", history_days=5), "usage")) == values(pages)


def test_a_row_without_any_metric_is_no_record(db):
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO usage_daily VALUES ('ws_77', ?, NULL, NULL, NULL, 'x')", (day(3),))
    assert not any(key.startswith("ws_77") for key in values(read(connector(db), "usage")))


# -- CSV --------------------------------------------------------------------------------------------
def test_csv_reads_the_same_records_in_any_row_order(tmp_path):
    rows = usage_rows(range(0, 31))
    rows = rows[::2] + rows[1::2]  # not ordered by day
    path = write_csv(tmp_path / "usage.csv", ["workspace_id", "day", *METRICS], rows)
    write_csv(tmp_path / "workspaces.csv", ["workspace_id", "name", "domain", "stripe_customer_id", "created_at"],
              WORKSPACES)
    con = connector(path, "csv", page_size=50)
    pages = read(con, "usage")
    assert values(pages) == expected(usage_rows(range(0, 31)))
    assert con.api_calls()["usage"] == 1 + math.ceil(len(rows) / 50) + 1  # open, chunks, the end
    accounts = {r["source_id"]: r["payload"] for r in records(read(con, "accounts"))}
    assert accounts["ws_02"]["external_ids"] == {"stripe": "cus_0002"} and accounts["ws_00"]["external_ids"] == {}
    cursor = last_cursor(pages)
    assert records(read(connector(path, "csv"), "usage", cursor)) == []
    with open(path, "a", newline="") as f:
        csv.writer(f).writerows(usage_rows(range(31, 32)))
    new = read(connector(path, "csv"), "usage", cursor, until=UNTIL + timedelta(days=1))
    assert values(new) == expected(usage_rows(range(31, 32)), before=day(32))


def test_csv_without_an_accounts_file_reads_no_accounts(tmp_path):
    path = write_csv(tmp_path / "usage.csv", ["workspace_id", "day", *METRICS], usage_rows(range(0, 3)))
    assert records(read(connector(path, "csv"), "accounts")) == []


# -- configuration and errors -----------------------------------------------------------------------
def test_metrics_can_be_chosen(db):
    con = connector(db, metrics=["events"], accounts_table=None)
    assert con.streams() == ["usage"]
    assert {m for metrics in values(read(con, "usage")).values() for m in metrics} == {"events"}


@pytest.mark.parametrize("settings, message", [
    ({"metrics": ["clicks"]}, "no column clicks: fix sources.usage.metrics"),
    ({"table": "nope"}, "no table nope"),
    ({"metrics": ["note"]}, "column note of .* is not numeric"),
])
def test_configuration_mistakes_name_the_setting(db, settings, message):
    con = connector(db, **settings)
    with pytest.raises(RequestError, match=message):
        read(con, "usage")


def test_missing_file_is_an_error_and_is_not_created(tmp_path):
    path = tmp_path / "absent.db"
    with pytest.raises(RequestError, match="file not found"):
        read(connector(path), "usage")
    assert not path.exists()
    with pytest.raises(RequestError, match="file not found"):
        read(connector(tmp_path / "absent.csv", "csv"), "usage")


def flaky_engine(path: Path | None, failures: int, message: str) -> Any:
    """An engine whose first `failures` connection attempts fail with the DB-API error `message`."""
    left = [failures]

    def connect() -> sqlite3.Connection:
        if left[0]:
            left[0] -= 1
            raise sqlite3.OperationalError(message)
        return sqlite3.connect(path)
    return create_engine("sqlite://", creator=connect)


def test_a_locked_database_is_retried(db):
    clean = values(read(connector(db, page_size=40), "usage"))
    con = connector(db, page_size=40)
    con._engine = flaky_engine(db, 3, "database is locked")
    assert values(read(con, "usage")) == clean
    assert con.caller.retries["usage"] == 3


def test_refused_credentials_stop_at_once():
    con = UsageConnector(UsageSource(kind="sqlite", url="postgresql://hub:s3cret@db.example.com/warehouse"), FAST)
    con._engine = flaky_engine(None, 1, 'FATAL:  password authentication failed for user "hub"')
    with pytest.raises(AuthError) as info:
        read(con, "usage")
    assert "s3cret" not in str(info.value) and str(info.value).startswith("usage: ")
    assert con.caller.retries["usage"] == 0


def test_classify_other_errors():
    con = UsageConnector(UsageSource(kind="sqlite", url="postgresql://hub:s3cret@db/x"), FAST)
    assert isinstance(con._classify(OperationalError("x", {}, Exception("could not connect to server"))),
                      TransientError)
    mapped = con._classify(OperationalError("x", {}, Exception("syntax error at or near")))
    assert isinstance(mapped, RequestError) and "***" in str(mapped) and "s3cret" not in str(mapped)
    assert con._classify(KeyError("x")) is None


def test_a_foreign_cursor_is_refused_with_what_to_do(db):
    with pytest.raises(RequestError, match="--full-refresh"):
        read(connector(db), "usage", '{"end": 5}')
    with pytest.raises(RequestError, match="--full-refresh"):  # the other stream's cursor
        read(connector(db), "usage", '{"v": 1, "buckets": {}}')
    with pytest.raises(RequestError, match="unknown stream"):
        read(connector(db), "tickets")


# -- a generated world ------------------------------------------------------------------------------
def test_generated_world_warehouse_then_one_day(tmp_path):
    from retention_hub.sandbox.generator import generate_world

    anchor = datetime(2026, 11, 1, tzinfo=timezone.utc)
    world = generate_world(200, seed=5, directory=tmp_path, anchor=anchor)
    world.now = lambda: anchor + timedelta(days=world.days_advanced)  # type: ignore[method-assign]
    con = connector(world.usage_db, metrics=["active_users"])
    first = read(con, "usage", until=world.now())
    with sqlite3.connect(world.usage_db) as conn:
        rows = conn.execute("SELECT workspace_id, day, active_users FROM usage_daily WHERE day < ?",
                            (anchor.date().isoformat(),)).fetchall()
        n_ws = conn.execute("SELECT count(*) FROM workspaces").fetchone()[0]
    assert values(first) == {f"{w}|{d}": {"active_users": v} for w, d, v in rows if v is not None}
    accounts = records(read(con, "accounts"))
    assert len(accounts) == n_ws and any(r["payload"]["external_ids"] for r in accounts)
    floor = math.ceil(len(rows) / 10_000)
    print(f"\nusage, 200 customers: {len(rows)} rows, calls {con.api_calls()}, floor {floor} + 1 description")
    assert con.api_calls()["usage"] <= floor + 2

    world.advance(1)
    pages = read(connector(world.usage_db, metrics=["active_users"]), "usage", last_cursor(first), until=world.now())
    with sqlite3.connect(world.usage_db) as conn:
        new = conn.execute("SELECT workspace_id, day, active_users FROM usage_daily WHERE day = ?",
                           (anchor.date().isoformat(),)).fetchall()
    assert new and values(pages) == {f"{w}|{d}": {"active_users": v} for w, d, v in new if v is not None}
