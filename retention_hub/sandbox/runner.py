"""Bring a whole sandbox up: generate the world, serve the emulators, write hub.yaml, .env,
sandbox.json and truth/, and summarise what is in it."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .generator import generate_world
from .server import Sandbox, start
from .world import Knobs


@dataclass
class TruthSummary:
    customers: int
    active_now: int
    churn_90d: int
    oracle_auc: float
    monthly_logo_churn: float
    arr_minor: int


def start_sandbox(directory: str | Path, accounts: int = 2000, seed: int = 7, knobs: Knobs | None = None,
                  anchor: datetime | None = None, ports: dict[str, int] | None = None,
                  store_url: str | None = None) -> Sandbox:
    """Generate a world of `accounts` customers and serve it; the hub config lands in `directory`."""
    from ..config.loader import sandbox_config  # config depends on nothing in the sandbox

    directory = Path(directory).resolve()
    world = generate_world(accounts, seed, directory, anchor=anchor)
    sandbox = start(world, directory, knobs=knobs, ports=ports)
    store_url = store_url or f"sqlite:///{directory / 'hub.db'}"
    hub_yaml, env_text = sandbox_config(sandbox.info(), store_url)
    (directory / "hub.yaml").write_text(hub_yaml)
    env_path = directory / ".env"
    env_path.write_text(env_text)
    os.chmod(env_path, 0o600)
    return sandbox


def truth_summary(truth_dir: str | Path) -> TruthSummary:
    """Headline numbers of the ground truth, including the oracle's ROC AUC on 90-day churn."""
    from sklearn.metrics import roc_auc_score

    truth_dir = Path(truth_dir)
    with open(truth_dir / "outcomes.csv") as f:
        outcomes = list(csv.DictReader(f))
    with open(truth_dir / "customers.csv") as f:
        customers = list(csv.DictReader(f))
    labels = [int(r["churns_90d"]) for r in outcomes]
    scores = [float(r["p_true"]) for r in outcomes]
    auc = roc_auc_score(labels, scores) if 0 < sum(labels) < len(labels) else float("nan")
    # monthly logo churn over the 90 days after now: churners / active / 3 months
    monthly = sum(labels) / max(1, len(labels)) / 3
    return TruthSummary(customers=len(customers), active_now=len(outcomes), churn_90d=sum(labels),
                        oracle_auc=float(auc), monthly_logo_churn=monthly,
                        arr_minor=sum(int(r["arr_minor"]) for r in outcomes))


def record_counts(sandbox: Sandbox) -> dict[str, dict[str, int]]:
    """How many records each emulated system holds, per object (deleted ones included)."""
    w = sandbox.world
    with w.lock:
        return {
            "salesforce": {k: len(v) for k, v in w.salesforce.items()},
            "hubspot": {k: len(v) for k, v in w.hubspot.items()},
            "zendesk": {k: len(v) for k, v in w.zendesk.items()},
            "stripe": {k: len(v) for k, v in w.stripe.items() if k in ("customer", "subscription", "invoice")}
            | {"event": len(w.stripe_events)},
        }


def describe(sandbox: Sandbox) -> dict[str, Any]:
    """Everything `rhub sandbox up` prints, as data (also for --json)."""
    truth = truth_summary(sandbox.directory / "truth")
    return {"directory": str(sandbox.directory), "urls": dict(sandbox.urls), "now": sandbox.world.now().isoformat(),
            "records": record_counts(sandbox), "truth": vars(truth),
            "files": {"config": str(sandbox.directory / "hub.yaml"),
                      "sandbox_json": str(sandbox.directory / "sandbox.json"),
                      "truth": str(sandbox.directory / "truth"),
                      "usage_db": str(sandbox.world.usage_db)}}


def serve_until_stopped(sandbox: Sandbox) -> None:
    """Block until SIGINT or SIGTERM, then stop the emulators."""
    import signal
    import threading

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sandbox.stop()
