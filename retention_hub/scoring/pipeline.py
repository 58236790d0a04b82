"""One scoring pass: features -> health -> churn probability and drivers -> reason -> lifecycle ->
playbooks, for every active account as of a date. Pure: the caller (`scoring/run.py`) loads the
frames, the model and the history from the store and saves what comes out.

The score table (one row per account) is what writeback maps to CRM fields and what
`rhub score export` writes; its columns are SCORE_COLUMNS.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from ..config.models import Playbook, Scoring
from .churn import ChurnModel
from .features import LABELS, active_accounts
from .frames import Frames
from .health import explain
from .lifecycle import lifecycle
from .playbooks import select
from .reasons import churn_reasons
from .training import model_table

DAY = pd.Timedelta(days=1)
SCORE_COLUMNS = ["unified_id", "scored_at", "name", "segment", "owner_id", "health_score", "tier", "previous_score",
                 "previous_tier", "change_30d", "change_60d", "change_90d", "churn_probability", "churn_reason",
                 "reason_evidence", "drivers", "explanation", "playbook", "held_out", "lifecycle_stage", "milestones",
                 "expansion_signal", "next_best_action", "days_to_renewal", "renewal_date", "arr", "scorecard",
                 "missing", "components", "model"]


@dataclass
class ScoreRun:
    as_of: pd.Timestamp
    scores: pd.DataFrame  # SCORE_COLUMNS, index unified_id
    assignments: pd.DataFrame  # unified_id, playbook, held_out, primary
    tasks: pd.DataFrame  # playbooks.TASK_COLUMNS + budgeted
    episodes: pd.DataFrame  # the open playbook episodes after this run
    notes: list[str] = field(default_factory=list)


def _history_columns(scores: pd.DataFrame, history: pd.DataFrame | None, as_of: pd.Timestamp) -> pd.DataFrame:
    """previous_score / previous_tier (the last earlier score) and change_Nd (now minus the latest
    score at least N days old, NaN without one). `history`: unified_id, scored_at, health_score, tier."""
    out = pd.DataFrame(index=scores.index)
    if history is None or history.empty:
        for column in ("previous_score", "previous_tier", "change_30d", "change_60d", "change_90d"):
            out[column] = np.nan if column != "previous_tier" else None
        return out
    h = history[pd.to_datetime(history["scored_at"], utc=True) < as_of].copy()
    h["scored_at"] = pd.to_datetime(h["scored_at"], utc=True)
    h = h.sort_values("scored_at")
    last = h.groupby("unified_id").last()
    out["previous_score"] = last["health_score"].reindex(scores.index).astype(float)
    out["previous_tier"] = last["tier"].reindex(scores.index)
    for n in (30, 60, 90):
        old = h[h["scored_at"] <= as_of - n * DAY].groupby("unified_id")["health_score"].last()
        out[f"change_{n}d"] = (scores["health_score"] - old.reindex(scores.index).astype(float)).round(1)
    return out


def _previous_components(history: pd.DataFrame | None, as_of: pd.Timestamp) -> dict[str, dict]:
    """unified_id -> the last earlier score's health_score and component scores (c_*)."""
    if history is None or history.empty or "components" not in history:
        return {}
    h = history[pd.to_datetime(history["scored_at"], utc=True) < as_of]
    last = h.sort_values("scored_at").groupby("unified_id").last()
    return {uid: {"health_score": score, **json.loads(comps or "{}")}
            for uid, score, comps in zip(last.index, last["health_score"], last["components"])}


def _driver_text(model: ChurnModel, X: pd.DataFrame) -> list[str]:
    if model.fallback_:
        return [""] * len(X)
    return ["; ".join(d.text for d in row) for row in model.drivers(X, labels=LABELS)]


def compute(frames: Frames, model: ChurnModel, scoring: Scoring, playbooks: Sequence[Playbook],
            as_of: pd.Timestamp, history: pd.DataFrame | None = None, episodes: pd.DataFrame | None = None,
            recent_tasks: pd.DataFrame | None = None) -> ScoreRun:
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    ids = active_accounts(frames, as_of)
    table, health = model_table(frames, as_of, scoring, ids)
    features = table.drop(columns=["health_score"])
    accounts = frames.accounts.set_index("unified_id").reindex(ids)
    notes = []
    X = table.reindex(columns=list(model.feature_names_in_))
    if len(X):
        prob = model.predict_proba(X)[:, 1]
    else:
        prob = np.zeros(0)
    if model.fallback_:
        notes.append(model.fallback_reason_)
    scores = pd.DataFrame(index=ids)
    scores["scored_at"] = as_of
    scores["name"] = accounts["name"]
    scores["segment"] = accounts["segment"]
    scores["owner_id"] = accounts["owner_id"]
    scores["health_score"] = health["health_score"]
    scores["tier"] = health["tier"]
    scores = scores.join(_history_columns(scores, history, as_of))
    scores["churn_probability"] = np.round(prob, 4)
    reasons = churn_reasons(features)
    scores["churn_reason"] = reasons["churn_reason"]
    scores["reason_evidence"] = reasons["reason_evidence"]
    scores["drivers"] = _driver_text(model, X) if len(X) else []
    comp_cols = [c for c in health if c.startswith(("c_", "w_"))]
    before = _previous_components(history, as_of)
    scores["explanation"] = [explain(row, before.get(uid)) for uid, row in
                             zip(ids, health[["health_score", *comp_cols]].to_dict("records"))]
    scores["days_to_renewal"] = features["days_to_renewal"].round(0) if "days_to_renewal" in features else np.nan
    renewal = as_of + pd.to_timedelta(scores["days_to_renewal"], unit="D")
    scores["renewal_date"] = renewal.dt.strftime("%Y-%m-%d").where(scores["days_to_renewal"].notna(), None)
    scores["arr"] = (features["mrr"] * 12).round(2) if "mrr" in features else np.nan
    scores["scorecard"] = health["scorecard"]
    scores["missing"] = [",".join(m) for m in health["missing"]]
    scores["components"] = [json.dumps({k: (None if pd.isna(v) else float(v)) for k, v in row.items()})
                            for row in health[comp_cols].to_dict("records")]
    scores["model"] = "fallback" if model.fallback_ else "model"
    life = lifecycle(features, scores, ids)
    for column in ("lifecycle_stage", "milestones", "expansion_signal", "next_best_action"):
        scores[column] = life[column]
    assignments, tasks, open_episodes = select(scores, playbooks, as_of, scoring.tasks_per_csm_per_week,
                                               episodes, recent_tasks)
    primary = assignments[assignments["primary"]].set_index("unified_id")["playbook"]
    held = assignments.groupby("unified_id")["held_out"].any() if len(assignments) else pd.Series(dtype=bool)
    scores["playbook"] = primary.reindex(ids)
    scores["held_out"] = held.reindex(ids).fillna(False).astype(bool) & scores["playbook"].isna()
    scores.index.name = "unified_id"
    scores = scores.reset_index()[SCORE_COLUMNS].set_index("unified_id", drop=False)
    scores.index.name = None
    return ScoreRun(as_of, scores, assignments, tasks, open_episodes, notes)
