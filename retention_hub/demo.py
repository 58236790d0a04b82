"""`rhub demo`: start the sandbox, run what exists of the pipeline against it, show what happened.

Until identity, scoring and writeback land, the pipeline is: generate and serve the world, validate
the hub.yaml written for it, open the state store, read through each vendor's official SDK exactly
as a real client would, and sync every vendor API into the store.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .config import HubConfig, load_config
from .sandbox.runner import describe, start_sandbox
from .sandbox.server import Sandbox
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
            synced = demo_sync(store, config, sandbox, say)
            unified = demo_identity(store, config, say)
            scored = demo_score(store, config, sandbox, say)
        say(f"API calls of the SDK reads: {calls}")
        say("Pipeline stage still to come: writeback into the CRMs (issue 6). "
            "Review queue: rhub identity review --out review.csv; scores: rhub score export --out scores.csv")
        say(f"Keep a sandbox running with: rhub sandbox up --dir {directory}")
        return {"sandbox": info, "sdk": answers, "api_calls": calls, "sync": synced, "identity": unified,
                "scoring": scored, "seconds": time.perf_counter() - t0}
    finally:
        sandbox.stop()


def demo_sync(store: Store, config: HubConfig, sandbox: Sandbox, say: Callable[[str], None]) -> dict:
    """A full sync of the vendor APIs and the usage warehouse into the store."""
    from .connectors import build_connectors
    from .connectors.zendesk import ZendeskConnector
    from .sync.engine import sync

    t0 = time.perf_counter()
    connectors = [ZendeskConnector(c.config, exports_per_minute=1000)  # the sandbox runs without limits
                  if isinstance(c, ZendeskConnector) else c
                  for c in build_connectors(config)]
    result = sync(store, connectors, until=sandbox.world.now())
    records = sum(s.records for s in result.streams)
    calls = sum(s.calls for s in result.streams)
    say(f"Synced {records:,} records from {len(connectors)} sources in {len(result.streams)} streams with "
        f"{calls:,} API calls in {time.perf_counter() - t0:.1f} s (run {result.run_id}: {result.status})")
    for source in sorted({s.source for s in result.streams}):
        parts = [f"{s.stream} {s.records:,}" for s in result.streams if s.source == source]
        say(f"  {source:<10} " + ", ".join(parts))
    for error in result.errors:
        say(f"  error: {error}")
    return {"run_id": result.run_id, "status": result.status, "records": records, "api_calls": calls}


def demo_identity(store: Store, config: HubConfig, say: Callable[[str], None]) -> dict:
    """Unify the synced accounts and say how the systems matched."""
    from .sync.identity import unify

    result = unify(store, config.identity)
    pairs = ", ".join(f"{k} {v:,}" for k, v in sorted(result.matched_pairs.items(), key=lambda kv: -kv[1])[:6])
    say(f"Unified {result.records:,} account records into {result.unified:,} customers in {result.seconds:.1f} s "
        f"({result.review:,} candidate pairs in review, {result.conflicts:,} conflicts, {result.unmatched:,} "
        f"records alone); people linked {result.people_linked:,} of {result.people:,}")
    say(f"  customers held by several systems: {pairs}")
    return {"records": result.records, "unified": result.unified, "review": result.review,
            "conflicts": result.conflicts}


def demo_score(store: Store, config: HubConfig, sandbox: Sandbox, say: Callable[[str], None]) -> dict:
    """Train the churn model, score every active customer, and compare with the sandbox's truth."""
    from sklearn.metrics import roc_auc_score

    from .sandbox.truth import outcomes_by_unified
    from .scoring.run import score
    from .sync.identity import account_map

    t0 = time.perf_counter()
    done = score(store, config, sandbox.world.now())
    scores, tasks = done.result.scores, done.result.tasks
    n = max(len(scores), 1)
    tiers = {t: int((scores["tier"] == t).sum()) for t in ("green", "yellow", "red")}
    at_risk = float((scores["churn_probability"] * scores["arr"]).sum())
    say(f"Scored {len(scores):,} active customers in {time.perf_counter() - t0:.1f} s (model trained on the "
        f"history first): " + ", ".join(f"{t} {c:,} ({c / n:.0%})" for t, c in tiers.items())
        + f"; ARR at risk ${at_risk:,.0f}")
    say(f"  playbook tasks planned: {int((tasks['status'] == 'new').sum()):,} new, "
        f"{int((tasks['status'] == 'deferred').sum()):,} deferred by the alert budget")
    # the sandbox knows who really churns in the next 90 days: how well did the hub rank them?
    truth = outcomes_by_unified(sandbox.directory, account_map(store))
    joined = truth.merge(scores[["unified_id", "churn_probability"]], left_index=True, right_on="unified_id")
    figures = {"accounts": len(scores), "tiers": tiers, "arr_at_risk": round(at_risk, 2), "run_id": done.run_id}
    if joined["churns_90d"].nunique() == 2:
        model_auc = roc_auc_score(joined["churns_90d"], joined["churn_probability"])
        oracle_auc = roc_auc_score(joined["churns_90d"], joined["p_true"])
        say(f"  against the truth: churn model ROC AUC {model_auc:.3f} vs the generator's own {oracle_auc:.3f} "
            f"on {len(joined):,} customers ({int(joined['churns_90d'].sum())} churn within 90 days)")
        figures.update(model_auc=round(model_auc, 4), oracle_auc=round(oracle_auc, 4))
    return figures
