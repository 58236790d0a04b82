"""The scoring stage's tables in the state store: stored churn models, score history, playbook
assignments (for holdout uplift), open playbook episodes and playbook tasks.

`define(md)` declares the tables (the store's migration creates them); `ScoreTables` is mixed into
`Store` and holds the methods that read and write them. Frames in, frames out: the scoring stage
works in pandas.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sqlalchemy import (Boolean, Column, Float, Index, Integer, LargeBinary, MetaData, String, Table, Text, delete,
                        func, select)

UID = 32


def define(md: MetaData, json_type: Any, datetime_type: Any) -> dict[str, Table]:
    """The scoring tables bound to `md` (the store passes its JSON and UTC datetime column types)."""
    return {
        "models": Table(
            "models", md,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("trained_at", datetime_type, nullable=False),
            Column("summary", json_type, nullable=False),  # features, rows, window, validation report
            Column("blob", LargeBinary, nullable=False)),  # joblib of the fitted ChurnModel
        "scores": Table(
            "scores", md,
            Column("run_id", Integer, primary_key=True),
            Column("unified_id", String(UID), primary_key=True),
            Column("scored_at", datetime_type, nullable=False),
            Column("name", Text), Column("segment", String(64)), Column("owner_id", String(64)),
            Column("health_score", Float), Column("tier", String(8)), Column("previous_score", Float),
            Column("previous_tier", String(8)), Column("change_30d", Float), Column("change_60d", Float),
            Column("change_90d", Float), Column("churn_probability", Float), Column("churn_reason", String(32)),
            Column("reason_evidence", Text), Column("drivers", Text), Column("explanation", Text),
            Column("playbook", String(64)), Column("held_out", Boolean), Column("lifecycle_stage", String(32)),
            Column("milestones", Text), Column("expansion_signal", String(32)), Column("next_best_action", Text),
            Column("days_to_renewal", Float), Column("renewal_date", String(10)), Column("arr", Float),
            Column("scorecard", String(64)), Column("missing", Text), Column("components", Text),
            Column("model", String(16)),
            Index("scores_account", "unified_id", "run_id")),
        "playbook_assignments": Table(
            "playbook_assignments", md,
            Column("run_id", Integer, primary_key=True),
            Column("unified_id", String(UID), primary_key=True),
            Column("playbook", String(64), primary_key=True),
            Column("held_out", Boolean, nullable=False),
            Column("is_primary", Boolean, nullable=False)),
        "playbook_episodes": Table(
            "playbook_episodes", md,
            Column("unified_id", String(UID), primary_key=True),
            Column("playbook", String(64), primary_key=True),
            Column("episode_start", datetime_type, nullable=False),
            Column("last_matched", datetime_type, nullable=False)),
        "playbook_tasks": Table(
            "playbook_tasks", md,
            Column("task_key", String(255), primary_key=True),  # unified_id:playbook:step:period
            Column("unified_id", String(UID), nullable=False),
            Column("playbook", String(64), nullable=False), Column("step", String(64), nullable=False),
            Column("period", String(32), nullable=False), Column("subject", String(255), nullable=False),
            Column("description", Text), Column("due_at", datetime_type), Column("priority", String(8)),
            Column("owner_role", String(16)), Column("owner_id", String(64)), Column("arr_at_risk", Float),
            Column("status", String(16), nullable=False),  # new | deferred (writeback adds its own states)
            Column("deferred_reason", Text), Column("created_at", datetime_type, nullable=False),
            Column("budgeted", Boolean, nullable=False), Column("run_id", Integer, nullable=False),
            Index("playbook_tasks_account", "unified_id")),
    }


def _none(value: Any) -> Any:
    """numpy scalars and NaN to plain Python values for the driver."""
    if value is None:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
        return None if isinstance(value, float) and np.isnan(value) else value
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


def _rows(frame: pd.DataFrame, columns: Sequence[str], **extra: Any) -> list[dict[str, Any]]:
    data = frame.reindex(columns=list(columns))
    return [{**{c: _none(v) for c, v in zip(columns, row)}, **extra} for row in data.itertuples(index=False)]


class ScoreTables:
    """Store methods for the scoring tables (mixed into `sync.store.Store`)."""

    engine: Any
    tables: dict[str, Table]

    def save_model(self, blob: bytes, summary: dict[str, Any]) -> int:
        t = self.tables["models"]
        from .store import utcnow

        with self.engine.begin() as conn:
            return int(conn.execute(t.insert().values(trained_at=utcnow(), summary=summary, blob=blob)
                                    ).inserted_primary_key[0])

    def latest_model(self, summary: bool = False) -> tuple[int, Any] | None:
        """(id, joblib bytes) of the newest model, or (id, summary + trained_at) with summary=True."""
        t = self.tables["models"]
        cols = [t.c.id, t.c.summary, t.c.trained_at] if summary else [t.c.id, t.c.blob]
        with self.engine.connect() as conn:
            row = conn.execute(select(*cols).order_by(t.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        return (int(row[0]), {**row[1], "trained_at": row[2]}) if summary else (int(row[0]), bytes(row[1]))

    def save_scores(self, run_id: int, scores: pd.DataFrame, assignments: pd.DataFrame, tasks: pd.DataFrame,
                    episodes: pd.DataFrame) -> None:
        """One scoring run's results, in one transaction: its scores and assignments, the tasks (new
        ones inserted; a task deferred before and created now is updated; created ones are never
        rewritten), and the open episodes (replacing the previous set)."""
        s, a, e, k = (self.tables[n] for n in ("scores", "playbook_assignments", "playbook_episodes",
                                               "playbook_tasks"))
        score_cols = [c.name for c in s.columns if c.name != "run_id"]
        task_cols = [c.name for c in k.columns if c.name != "run_id"]
        with self.engine.begin() as conn:
            for chunk in _chunked(_rows(scores, score_cols, run_id=run_id)):
                conn.execute(s.insert(), chunk)
            rows = _rows(assignments.rename(columns={"primary": "is_primary"}),
                         ["unified_id", "playbook", "held_out", "is_primary"], run_id=run_id)
            for chunk in _chunked(rows):
                conn.execute(a.insert(), chunk)
            conn.execute(delete(e))
            for chunk in _chunked(_rows(episodes, [c.name for c in e.columns])):
                conn.execute(e.insert(), chunk)
            if len(tasks):
                keys = list(tasks["task_key"])
                existing = set()
                for chunk in _chunked(keys, 5000):
                    existing |= {r[0] for r in conn.execute(select(k.c.task_key).where(k.c.task_key.in_(chunk)))}
                fresh = tasks[~tasks["task_key"].isin(existing)]
                for chunk in _chunked(_rows(fresh, task_cols, run_id=run_id)):
                    conn.execute(k.insert(), chunk)
                # deferred before: now either created or still deferred (with today's reason)
                for row in _rows(tasks[tasks["task_key"].isin(existing)], task_cols, run_id=run_id):
                    conn.execute(k.update().where(k.c.task_key == row["task_key"], k.c.status == "deferred")
                                 .values(**{c: row[c] for c in task_cols if c != "task_key"}, run_id=run_id))

    def score_runs(self) -> list[tuple[int, datetime]]:
        """(run id, scored_at) of every scoring run with scores, oldest first."""
        s = self.tables["scores"]
        with self.engine.connect() as conn:
            return [(int(r), at) for r, at in conn.execute(
                select(s.c.run_id, func.max(s.c.scored_at)).group_by(s.c.run_id).order_by(s.c.run_id))]

    def read_scores(self, run_id: int, columns: Sequence[str] | None = None) -> pd.DataFrame:
        s = self.tables["scores"]
        cols = [s.c[c] for c in columns] if columns else [c for c in s.columns if c.name != "run_id"]
        with self.engine.connect() as conn:
            rows = conn.execute(select(*cols).where(s.c.run_id == run_id)).fetchall()
        return pd.DataFrame(rows, columns=[c.name for c in cols])

    def latest_scores(self) -> tuple[int, pd.DataFrame] | None:
        runs = self.score_runs()
        return None if not runs else (runs[-1][0], self.read_scores(runs[-1][0]))

    def score_history(self, as_of: pd.Timestamp, days: Sequence[int] = (0, 30, 60, 90)) -> pd.DataFrame:
        """For each N in `days`, the scores of the latest run scored at least N days before `as_of`
        (0: strictly before): unified_id, scored_at, health_score, tier, components. Enough for the
        previous score and the 30/60/90-day changes without reading the whole history."""
        runs = [(r, pd.Timestamp(at).tz_localize("UTC") if pd.Timestamp(at).tzinfo is None else pd.Timestamp(at))
                for r, at in self.score_runs()]
        chosen = set()
        for n in days:
            before = [r for r, at in runs if (at < as_of if n == 0 else at <= as_of - pd.Timedelta(days=n))]
            if before:
                chosen.add(before[-1])
        parts = [self.read_scores(r, ["unified_id", "scored_at", "health_score", "tier", "components"])
                 for r in sorted(chosen)]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            columns=["unified_id", "scored_at", "health_score", "tier", "components"])

    def read_episodes(self) -> pd.DataFrame:
        e = self.tables["playbook_episodes"]
        with self.engine.connect() as conn:
            rows = conn.execute(select(*e.columns)).fetchall()
        return pd.DataFrame(rows, columns=[c.name for c in e.columns])

    def read_tasks(self, since: pd.Timestamp | None = None, status: str | None = None) -> pd.DataFrame:
        """Playbook tasks (created_at after `since`; status "new" by default excludes nothing)."""
        k = self.tables["playbook_tasks"]
        query = select(*k.columns)
        if since is not None:
            query = query.where(k.c.created_at > since.to_pydatetime())
        if status is not None:
            query = query.where(k.c.status == status)
        with self.engine.connect() as conn:
            rows = conn.execute(query).fetchall()
        return pd.DataFrame(rows, columns=[c.name for c in k.columns])


def _chunked(items: list[Any], size: int = 2000) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
