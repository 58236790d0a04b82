"""The product-usage warehouse: where real companies keep usage (a table in their warehouse).

`usage_daily` has one row per workspace and complete day while the customer is active. Usage is drawn
from the customer's latent health, seeing the cause's shock only as far as the cause is about
usage (low adoption and a lost champion fully, a competitor half, billing or support barely).
Each day's draw has its own seeded generator, so any day can be (re)computed on its own: the
history is written by a separate process while the records are built.
"""
from __future__ import annotations

import multiprocessing
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from .population import CAUSES, HISTORY_DAYS, Population, sigmoid

SCHEMA = """
PRAGMA page_size = 16384;
CREATE TABLE IF NOT EXISTS workspaces (workspace_id TEXT PRIMARY KEY, name TEXT, domain TEXT,
                                       stripe_customer_id TEXT, created_at TEXT);
CREATE TABLE IF NOT EXISTS usage_daily (workspace_id TEXT NOT NULL, day TEXT NOT NULL,
                                        active_users INTEGER, sessions INTEGER, events INTEGER,
                                        features_used INTEGER);
"""
INDEX = "CREATE INDEX IF NOT EXISTS usage_daily_day ON usage_daily (day, workspace_id)"
ROWS_PER_INSERT = 500  # multi-row INSERTs: SQLite does the per-row work in C, ~3x executemany's rate
_USAGE_WEIGHT = np.array([1.0 if c in ("low_adoption", "lost_champion") else 0.5 if c == "competitor" else 0.15
                          for c in CAUSES])


def day_usage(pop: Population, seed: int, anchor: datetime, d: int) -> tuple[np.ndarray, ...]:
    """(customer indexes active on day d, active users, sessions, events, features used)."""
    active, users, hu, rng = _day_users(pop, seed, anchor, d)
    sessions = rng.poisson(users * 2.5)
    events = rng.poisson(sessions * 22.0)
    features = np.clip(np.round(3 + 7 * sigmoid(hu) + rng.normal(0, 1, active.size)), 0, 12).astype(np.int64)
    return active, users, sessions, events, features


def day_users(pop: Population, seed: int, anchor: datetime, d: int) -> tuple[np.ndarray, np.ndarray]:
    """(customer indexes active on day d, active users): `day_usage`'s first two, at a third of the cost."""
    active, users, _, _ = _day_users(pop, seed, anchor, d)
    return active, users


def _day_users(pop: Population, seed: int, anchor: datetime,
               d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.random.Generator]:
    active = np.nonzero((pop.start_day <= d) & (pop.churn_day > d))[0]
    rng = np.random.default_rng([seed, 3, d])
    weight = np.where(pop.cause >= 0, _USAGE_WEIGHT[np.maximum(pop.cause, 0)], 0.0)[active]
    hu = pop.health_on(d, active) + pop.shock_on(d)[active] * (1 - weight)
    weekday = 0.35 if (anchor + timedelta(days=d - HISTORY_DAYS)).weekday() >= 5 else 1.0
    seats = pop.seats[active]
    share = sigmoid(0.4 + 1.2 * hu) * weekday * rng.lognormal(0, 0.15, active.size)
    users = np.minimum(seats, np.round(seats * np.clip(share, 0, 1))).astype(np.int64)
    return active, users, hu, rng


def create(path: Path, workspaces: list[tuple[str, str, str, str | None, str]]) -> None:
    """A fresh warehouse file with its workspaces."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.executemany("INSERT INTO workspaces VALUES (?,?,?,?,?)", workspaces)
    db.commit()
    db.close()


def write_days(path: Path, pop: Population, seed: int, anchor: datetime, workspace_ids: list[str],
               first: int, until: int, bulk: bool = False) -> None:
    """Insert usage rows for days [first, until).

    Rows arrive in index order (day, then workspace), so the index only ever grows at its end: kept
    up to date while inserting, it costs less than sorting 40M rows into it afterwards. `bulk` is the
    one-off history load: nobody else has the file open yet, so it runs without a rollback journal in
    one exclusive transaction and leaves the file in WAL mode for readers.
    """
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    if bulk:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        db.execute("PRAGMA cache_size = -65536")  # 64 MiB
    else:
        db.execute("PRAGMA journal_mode = WAL")
    db.execute(INDEX)
    db.execute("BEGIN")
    for d in range(max(first, 0), min(until, pop.days)):
        _insert_day(db, pop, seed, anchor, workspace_ids, d)
    db.execute("COMMIT")
    if bulk:
        db.execute("PRAGMA locking_mode = NORMAL")
        db.execute("PRAGMA journal_mode = WAL")
    db.close()


def _insert_day(db: sqlite3.Connection, pop: Population, seed: int, anchor: datetime,
                workspace_ids: list[str], d: int) -> None:
    active, users, sessions, events, features = day_usage(pop, seed, anchor, d)
    n = int(active.size)
    if not n:
        return
    # one flat parameter list, ROWS_PER_INSERT rows per statement; the day is a literal of the statement
    flat: list[object] = [None] * (5 * n)
    flat[0::5] = [workspace_ids[k] for k in active.tolist()]
    flat[1::5] = users.tolist()
    flat[2::5] = sessions.tolist()
    flat[3::5] = events.tolist()
    flat[4::5] = features.tolist()
    day = (anchor + timedelta(days=d - HISTORY_DAYS)).strftime("%Y-%m-%d")
    row = f"(?,'{day}',?,?,?,?)"
    full, rest = divmod(n, ROWS_PER_INSERT)
    if full:
        sql = "INSERT INTO usage_daily VALUES " + ",".join([row] * ROWS_PER_INSERT)
        step = 5 * ROWS_PER_INSERT
        for start in range(0, full * step, step):
            db.execute(sql, flat[start:start + step])
    if rest:
        db.execute("INSERT INTO usage_daily VALUES " + ",".join([row] * rest), flat[full * 5 * ROWS_PER_INSERT:])


def write_in_background(path: Path, pop: Population, seed: int, anchor: datetime, workspace_ids: list[str],
                        until: int) -> multiprocessing.process.BaseProcess:
    """Write the history in a forked process (the other core) while the caller builds records."""
    process = multiprocessing.get_context("fork").Process(
        target=write_days, args=(path, pop, seed, anchor, workspace_ids, 0, until, True), daemon=True)
    process.start()
    return process
