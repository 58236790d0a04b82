"""The scoring stage against the store: load the frames, get the churn model (the stored one, or
train one), score every active account, and save scores, playbook assignments, tasks and episodes.

The model lives in the store (table `models`), so every process that opens the store scores with the
same model; `rhub model train` replaces it. Without a stored model, `score` trains one first.
"""
from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from ..config.models import HubConfig
from ..sync import identity
from ..sync.store import Store
from .churn import ChurnModel
from .frames import Frames, load_frames
from .pipeline import ScoreRun, compute
from .training import TrainingSet, backtest, train, training_set

log = logging.getLogger(__name__)
USAGE_DAYS_FOR_SCORING = 200  # the features look back 180 days; a little more for late rows
TRAINING_MONTHS = 12


def utc(ts: Any = None) -> pd.Timestamp:
    ts = pd.Timestamp.now(tz="UTC") if ts is None else pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def load(store: Store, config: HubConfig, usage_since: pd.Timestamp | None = None) -> Frames:
    """The frames of every unified account (identity unified first if the records changed)."""
    identity.ensure_unified(store, config.identity)
    return load_frames(store, identity.map_frame(store), identity.map_frame(store, people=True),
                       identity.live_parents(store), usage_since=usage_since)


@dataclass
class Trained:
    model: ChurnModel
    model_id: int
    data: TrainingSet
    seconds: float


def train_and_store(store: Store, config: HubConfig, as_of: pd.Timestamp, frames: Frames | None = None,
                    months: int = TRAINING_MONTHS) -> Trained:
    """Train on monthly snapshots of the history before `as_of` and store the model."""
    t0 = time.perf_counter()
    frames = frames if frames is not None else load(store, config)
    data = training_set(frames, as_of, config.scoring, months=months)
    model = train(data, horizon_days=config.scoring.horizon_days)
    buffer = io.BytesIO()
    model.save(buffer)
    model_id = store.save_model(buffer.getvalue(), model_summary(model))
    return Trained(model, model_id, data, time.perf_counter() - t0)


def model_summary(model: ChurnModel) -> dict[str, Any]:
    window = model.training_window_
    return {"features": list(model.feature_names_in_), "n_rows": model.n_rows_, "n_positives": model.n_positives_,
            "training_window": [str(w) for w in window] if window else None, "fallback": bool(model.fallback_),
            "fallback_reason": model.fallback_reason_, "validation": model.validation_}


def stored_model(store: Store) -> tuple[int, ChurnModel] | None:
    found = store.latest_model()
    if found is None:
        return None
    model_id, blob = found
    return model_id, ChurnModel.load(io.BytesIO(blob))


@dataclass
class Scored:
    run_id: int
    result: ScoreRun
    model_id: int
    trained: bool
    seconds: dict[str, float] = field(default_factory=dict)


def score(store: Store, config: HubConfig, as_of: Any = None, retrain: bool = False,
          say: Callable[[str], None] = lambda _: None) -> Scored:
    """Score every active account as of `as_of` (default now) and save the results."""
    as_of = utc(as_of)
    seconds: dict[str, float] = {}
    run_id = store.start_run("score")
    try:
        t0 = time.perf_counter()
        found = None if retrain else stored_model(store)
        # scoring needs only the features' look-back of usage; training needs all of it
        frames = load(store, config, None if found is None else as_of - pd.Timedelta(days=USAGE_DAYS_FOR_SCORING))
        if found is None:
            say("no churn model stored yet: training one on the history")
            trained = train_and_store(store, config, as_of, frames)
            model_id, model, was_trained = trained.model_id, trained.model, True
        else:
            (model_id, model), was_trained = found, False
        seconds["load"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        history = store.score_history(as_of, days=(0, 30, 60, 90))
        # tasks already created never come again; deferred ones are offered again (within budget)
        tasks = store.read_tasks(since=as_of - pd.Timedelta(days=400))
        result = compute(frames, model, config.scoring, config.playbooks, as_of, history,
                         store.read_episodes(), tasks[tasks["status"] != "deferred"])
        seconds["score"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.save_scores(run_id, result.scores, result.assignments, result.tasks, result.episodes)
        seconds["save"] = time.perf_counter() - t0
    except Exception as exc:
        store.finish_run(run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    tiers = result.scores["tier"].value_counts().to_dict()
    store.finish_run(run_id, "ok", {"accounts": len(result.scores), "tiers": tiers, "model_id": model_id,
                                    "tasks_new": int((result.tasks["status"] == "new").sum()),
                                    "tasks_deferred": int((result.tasks["status"] == "deferred").sum()),
                                    "as_of": str(as_of), "notes": result.notes})
    return Scored(run_id, result, model_id, was_trained, seconds)


def run_backtest(store: Store, config: HubConfig, as_of: Any = None, months: int = TRAINING_MONTHS) -> pd.DataFrame:
    frames = load(store, config)
    return backtest(training_set(frames, utc(as_of), config.scoring, months=months), config.scoring)
