"""`rhub demo`: start the sandbox, run what exists of the pipeline against it, show what happened.

Until the connectors, identity, scoring and writeback stages land, the pipeline is: generate and
serve the world, validate the hub.yaml written for it, open the state store, and read through each
vendor's official SDK exactly as a real client would.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .config import load_config
from .sandbox.runner import describe, start_sandbox
from .sandbox.smoke import smoke
from .sync.store import Store


def run_demo(directory: Path, accounts: int, seed: int, say: Callable[[str], None]) -> dict:
    """Run the demo; `say` prints a line. Returns the summary (also for --json)."""
    t0 = time.perf_counter()
    say(f"Generating a sandbox world of {accounts:,} customers (seed {seed}) in {directory} ...")
    sandbox = start_sandbox(directory, accounts=accounts, seed=seed)
    try:
        info = describe(sandbox)
        truth = info["truth"]
        say(f"  generated and serving in {time.perf_counter() - t0:.1f} s")
        for vendor, url in sandbox.urls.items():
            counts = ", ".join(f"{n:,} {k}" for k, n in info["records"][vendor].items() if n)
            say(f"  {vendor:<10} {url}  {counts}")
        say(f"  truth: {truth['customers']:,} customers, {truth['active_now']:,} active now, "
            f"{truth['churn_90d']} churn within 90 days (monthly logo churn {truth['monthly_logo_churn']:.1%}), "
            f"ARR ${truth['arr_minor'] / 100:,.0f}; the generator's own churn probability has ROC AUC "
            f"{truth['oracle_auc']:.3f} (the ceiling for any model)")

        config_path = directory / "hub.yaml"
        config = load_config(config_path)
        say(f"Configuration {config_path}: valid ({len(config.sources.enabled())} sources, "
            f"targets: {', '.join(n for n in ('salesforce', 'hubspot') if getattr(config.targets, n))})")
        with Store(config.store.url) as store:
            run_id = store.start_run("demo")
            say(f"State store {config.store.safe_url}: schema version {store.schema_version()}, run {run_id}")
            say("Reading through the official SDKs (simple-salesforce, hubspot-api-client, zenpy, stripe):")
            answers = smoke(sandbox.info())
            for vendor, line in answers.items():
                say(f"  {vendor:<10} {line}")
            calls = {v: e.stats()["total"] for v, e in sandbox.emulators.items()}
            store.finish_run(run_id, "ok", counts={"sdk_reads": len(answers)}, api_calls=sum(calls.values()))
        say(f"API calls made: {calls}")
        say("Pipeline stages still to come: sync, identity, scoring, writeback (issues 3-6).")
        say(f"Keep a sandbox running with: rhub sandbox up --dir {directory}")
        return {"sandbox": info, "sdk": answers, "api_calls": calls, "seconds": time.perf_counter() - t0}
    finally:
        sandbox.stop()
