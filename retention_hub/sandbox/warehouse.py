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
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS workspaces (workspace_id TEXT PRIMARY KEY, name TEXT, domain TEXT,
                                       stripe_customer_id TEXT, created_at TEXT);
CREATE TABLE IF NOT EXISTS usage_daily (workspace_id TEXT NOT NULL, day TEXT NOT NULL,
                                        active_users INTEGER, sessions INTEGER, events INTEGER,
                                        features_used INTEGER);
"""
_USAGE_WEIGHT = np.array([1.0 if c in ("low_adoption", "lost_champion") else 0.5 if c == "competitor" else 0.15
                          for c in CAUSES])


def day_usage(pop: Population, seed: int, anchor: datetime, d: int) -> tuple[np.ndarray, ...]:
    """(customer indexes active on day d, active users, sessions, events, features used)."""
    active = np.nonzero((pop.start_day <= d) & (pop.churn_day > d))[0]
    rng = np.random.default_rng([seed, 3, d])
    weight = np.where(pop.cause >= 0, _USAGE_WEIGHT[np.maximum(pop.cause, 0)], 0.0)[active]
    hu = pop.health[active, d] + pop.shock_on(d)[active] * (1 - weight)
    weekday = 0.35 if (anchor + timedelta(days=d - HISTORY_DAYS)).weekday() >= 5 else 1.0
    seats = pop.seats[active]
    share = sigmoid(0.4 + 1.2 * hu) * weekday * rng.lognormal(0, 0.15, active.size)
    users = np.minimum(seats, np.round(seats * np.clip(share, 0, 1))).astype(np.int64)
    sessions = rng.poisson(users * 2.5)
    events = rng.poisson(sessions * 22.0)
    features = np.clip(np.round(3 + 7 * sigmoid(hu) + rng.normal(0, 1, active.size)), 0, 12).astype(np.int64)
    return active, users, sessions, events, features


def create(path: Path, workspaces: list[tuple[str, str, str, str | None, str]]) -> None:
    """A fresh warehouse file with its workspaces."""
    if path.exists():
        path.unlink()
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.executemany("INSERT INTO workspaces VALUES (?,?,?,?,?)", workspaces)
    db.commit()
    db.close()


def write_days(path: Path, pop: Population, seed: int, anchor: datetime, workspace_ids: list[str],
               first: int, until: int) -> None:
    """Insert usage rows for days [first, until)."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous = OFF")
    for d in range(max(first, 0), min(until, pop.days)):
        active, users, sessions, events, features = day_usage(pop, seed, anchor, d)
        day = (anchor + timedelta(days=d - HISTORY_DAYS)).strftime("%Y-%m-%d")
        ids = [workspace_ids[k] for k in active.tolist()]
        db.executemany("INSERT INTO usage_daily VALUES (?,?,?,?,?,?)",
                       zip(ids, [day] * len(ids), users.tolist(), sessions.tolist(), events.tolist(),
                           features.tolist()))
    # built once after the bulk load: far faster than maintaining it row by row
    db.execute("CREATE INDEX IF NOT EXISTS usage_daily_day ON usage_daily (day, workspace_id)")
    db.commit()
    db.close()


def write_in_background(path: Path, pop: Population, seed: int, anchor: datetime, workspace_ids: list[str],
                        until: int) -> multiprocessing.process.BaseProcess:
    """Write the history in a forked process (the other core) while the caller builds records."""
    process = multiprocessing.get_context("fork").Process(
        target=write_days, args=(path, pop, seed, anchor, workspace_ids, 0, until), daemon=True)
    process.start()
    return process
