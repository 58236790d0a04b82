"""Playbook selection: which accounts get which playbook's tasks, within each CSM's alert budget,
with a stable holdout so uplift can be measured.

For every playbook (config order) and account, the `when` conditions are checked against the
account's scores. A matching account is either held out (a stable hash of its id below the
playbook's `holdout_share`: the same accounts every run, and an account held out of one playbook
with a given share is held out of every playbook with a larger share) or treated. A treated
account's steps become tasks with a stable key `unified_id:playbook:step:period`, where the period
is the episode's first day (`repeat: episode`: the trigger must clear before the same tasks come
again), the renewal date (`renewal`) or the calendar quarter (`quarter`). Keys seen before are
kept, not created again (writeback creates a CRM task once per key).

Alert budget: per CSM at most `scoring.tasks_per_csm_per_week` new budgeted tasks in 7 days,
counting those created in the past 6 days; the rest are deferred, ranked by ARR at risk
(churn probability x ARR), with the reason recorded, and come back on the next run.
Pure DataFrame functions: the caller passes the previous state and stores the result.
"""
from __future__ import annotations

import hashlib
import string
from datetime import timedelta
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..config.models import Playbook, When

TIER_RANK = {"red": 0, "yellow": 1, "green": 2}
EPISODE_COLUMNS = ["unified_id", "playbook", "episode_start", "last_matched"]
TASK_COLUMNS = ["task_key", "unified_id", "playbook", "step", "period", "subject", "description", "due_at",
                "priority", "owner_role", "owner_id", "arr_at_risk", "status", "deferred_reason", "created_at"]


def holdout_draw(unified_id: str) -> float:
    """A stable number in [0, 1) per account (blake2b of the id): the holdout draw."""
    return int.from_bytes(hashlib.blake2b(unified_id.encode(), digest_size=8).digest(), "big") / 2**64


def matches(when: When, scores: pd.DataFrame) -> np.ndarray:
    """Which rows of `scores` meet every condition of `when` (an unset condition holds; a condition
    on a value the account does not have, e.g. no renewal date, does not)."""
    ok = np.ones(len(scores), dtype=bool)

    def num(column: str) -> pd.Series:
        return pd.to_numeric(scores[column], errors="coerce") if column in scores \
            else pd.Series(np.nan, index=scores.index)

    def among(column: str, values: Sequence[str]) -> np.ndarray:
        return scores[column].isin(list(values)).to_numpy() if column in scores else np.zeros(len(scores), bool)

    if when.tier is not None:
        ok &= among("tier", when.tier)
    if when.reason is not None:
        ok &= among("churn_reason", when.reason)
    if when.segment is not None:
        ok &= among("segment", when.segment)
    if when.lifecycle is not None:
        ok &= among("lifecycle_stage", when.lifecycle)
    if when.days_to_renewal_lte is not None:
        ok &= (num("days_to_renewal") <= when.days_to_renewal_lte).to_numpy()
    if when.days_to_renewal_gte is not None:
        ok &= (num("days_to_renewal") >= when.days_to_renewal_gte).to_numpy()
    if when.score_lt is not None:
        ok &= (num("health_score") < when.score_lt).to_numpy()
    if when.score_drop_gte is not None:
        ok &= ((num("previous_score") - num("health_score")) >= when.score_drop_gte).to_numpy()
    if when.churn_probability_gte is not None:
        ok &= (num("churn_probability") >= when.churn_probability_gte).to_numpy()
    if when.tier_change is not None:
        now = scores["tier"].map(TIER_RANK) if "tier" in scores else pd.Series(np.nan, index=scores.index)
        before = scores["previous_tier"].map(TIER_RANK) if "previous_tier" in scores \
            else pd.Series(np.nan, index=scores.index)
        moved = (now < before) if when.tier_change == "down" else (now > before)
        ok &= moved.fillna(False).to_numpy(dtype=bool)
    return ok


class _Blank(string.Formatter):
    """str.format where a missing value prints as "n/a" whatever its format spec."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "n/a"
        try:
            return super().format_field(value, format_spec)
        except (ValueError, TypeError):
            return str(value)


def render(template: str, row: Mapping[str, Any]) -> str:
    return _Blank().vformat(template, (), dict(row))


def _period(playbook: Playbook, row: Mapping[str, Any], episode_start: pd.Timestamp, as_of: pd.Timestamp) -> str:
    if playbook.repeat == "renewal":
        renewal = row.get("renewal_date")
        return str(renewal)[:10] if renewal not in (None, "") and pd.notna(renewal) else as_of.date().isoformat()
    if playbook.repeat == "quarter":
        return f"{as_of.year}Q{(as_of.month - 1) // 3 + 1}"
    return episode_start.date().isoformat()


def _template_row(row: Mapping[str, Any], playbook: str) -> dict[str, Any]:
    out = dict(row)
    out["playbook"] = playbook
    out["churn_reason"] = row.get("churn_reason") or "none found"
    out["evidence"] = row.get("reason_evidence") or "no specific signal"
    out["drivers"] = row.get("drivers") or "none above the base rate"
    arr = row.get("arr")
    out["arr"] = f"{arr:,.0f} ARR" if isinstance(arr, (int, float)) and not np.isnan(arr) else None
    return out


def select(scores: pd.DataFrame, playbooks: Sequence[Playbook], as_of: pd.Timestamp, tasks_per_week: int,
           episodes: pd.DataFrame | None = None, recent_tasks: pd.DataFrame | None = None,
           ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(assignments, tasks, episodes).

    `scores`: one row per account (index unified_id) with tier, health_score, churn_probability,
    churn_reason, days_to_renewal, renewal_date, arr, owner_id and the template fields.
    `episodes`: the previous run's open episodes (EPISODE_COLUMNS); `recent_tasks`: tasks already
    created (task_key, owner_id, created_at, budgeted) to count against the budget and not repeat.
    assignments: unified_id, playbook, held_out, primary (the first treated playbook: the CRM field).
    """
    as_of = pd.Timestamp(as_of)
    prev = {(r.unified_id, r.playbook): pd.Timestamp(r.episode_start)
            for r in (episodes if episodes is not None else pd.DataFrame(columns=EPISODE_COLUMNS)).itertuples()}
    recent = recent_tasks if recent_tasks is not None else pd.DataFrame(columns=["task_key", "owner_id",
                                                                                 "created_at", "budgeted"])
    known_keys = set(recent["task_key"])
    draw = pd.Series([holdout_draw(str(u)) for u in scores.index], index=scores.index)
    records = scores.to_dict("index")
    assign, tasks, open_eps = [], [], []
    for book in playbooks:
        hit = scores.index[matches(book.when, scores)]
        for uid in hit:
            start = prev.get((uid, book.name), as_of.normalize())
            open_eps.append({"unified_id": uid, "playbook": book.name, "episode_start": start, "last_matched": as_of})
            held = bool(draw[uid] < book.holdout_share)
            assign.append({"unified_id": uid, "playbook": book.name, "held_out": held})
            if held:
                continue
            row = _template_row(records[uid], book.name)
            period = _period(book, records[uid], start, as_of)
            for step in book.steps:
                key = f"{uid}:{book.name}:{step.key}:{period}"
                if key in known_keys:
                    continue
                due = as_of + (timedelta(hours=step.due_in_hours) if step.due_in_hours is not None
                               else timedelta(days=step.due_in_days or 0))
                prob, arr = records[uid].get("churn_probability"), records[uid].get("arr")
                risk = float(prob) * float(arr) if prob is not None and arr is not None \
                    and pd.notna(prob) and pd.notna(arr) else 0.0
                tasks.append({"task_key": key, "unified_id": uid, "playbook": book.name, "step": step.key,
                              "period": period, "subject": render(step.subject, row)[:255],
                              "description": render(step.description, row), "due_at": due,
                              "priority": step.priority, "owner_role": step.owner,
                              "owner_id": records[uid].get("owner_id"), "arr_at_risk": round(risk, 2),
                              "status": "new", "deferred_reason": None, "created_at": as_of,
                              "budgeted": book.budgeted})
    assignments = pd.DataFrame(assign, columns=["unified_id", "playbook", "held_out"])
    treated = assignments[~assignments["held_out"]].drop_duplicates("unified_id")
    assignments["primary"] = assignments.index.isin(treated.index)
    task_frame = pd.DataFrame(tasks, columns=[*TASK_COLUMNS, "budgeted"])
    task_frame = _apply_budget(task_frame, recent, as_of, tasks_per_week)
    return assignments, task_frame, pd.DataFrame(open_eps, columns=EPISODE_COLUMNS)


def _apply_budget(tasks: pd.DataFrame, recent: pd.DataFrame, as_of: pd.Timestamp, per_week: int) -> pd.DataFrame:
    """Defer budgeted tasks beyond each CSM's weekly allowance, the least ARR at risk first."""
    if tasks.empty:
        return tasks
    week = recent[(pd.to_datetime(recent["created_at"], utc=True) > as_of - pd.Timedelta(days=7))
                  & recent["budgeted"].astype(bool)] if len(recent) else recent
    used = week.groupby(week["owner_id"].fillna(""))["task_key"].size() if len(week) else pd.Series(dtype=int)
    budgeted = tasks[tasks["budgeted"]].sort_values(["arr_at_risk", "task_key"], ascending=[False, True])
    owner = budgeted["owner_id"].fillna("")
    rank = budgeted.groupby(owner).cumcount() + owner.map(used).fillna(0).astype(int).to_numpy()
    over = budgeted.index[rank.to_numpy() >= per_week]
    tasks.loc[over, "status"] = "deferred"
    tasks.loc[over, "deferred_reason"] = (f"alert budget: the CSM already has {per_week} new tasks this week; "
                                          "ranked lower by ARR at risk")
    return tasks
