"""The scoring stage on the sandbox, against the generator's ground truth (issue 5's figures).

    .venv/bin/python bench/scoring_bench.py [--accounts 5000] [--seed 7] [--months 12] [--usage-days N]
                                            [--workdir DIR]

Generates a sandbox, syncs everything (warehouse usage included; `--usage-days` limits its history,
as `sources.usage.history_days` does), unifies identities, trains the churn model on `--months`
monthly point-in-time snapshots (`rhub model train`) and scores "now" (`rhub score`) in a fresh child
process, so its time and peak RSS are the scoring run's own: load the frames from the store,
features, health, churn probability and drivers, reasons, lifecycle, playbooks, save.
Then, against `truth/outcomes.csv` (who really churns in the next 90 days, and why):
- the model's ROC AUC next to the oracle's (the generator's own probability: the ceiling), and ECE;
- the observed churn rate per health tier of the default scorecard, and the backtest's AUC;
- how often the likely churn reason is the true reason, over the accounts that churn.
With `--workdir`, the sandbox and the synced store are kept there, and a later run with the same
directory skips generation and sync (a 100,000-customer sync takes over an hour).
Prints figures; asserts nothing (the machine is shared and timings are noisy).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from retention_hub.config import load_config  # noqa: E402
from retention_hub.connectors import build_connectors  # noqa: E402
from retention_hub.connectors.zendesk import ZendeskConnector  # noqa: E402
from retention_hub.sandbox.truth import outcomes_by_unified  # noqa: E402
from retention_hub.scoring.evaluation import evaluate  # noqa: E402
from retention_hub.sync import identity  # noqa: E402
from retention_hub.sync.engine import sync  # noqa: E402
from retention_hub.sync.store import Store  # noqa: E402


def child_score(config_path: str, as_of: str) -> None:
    """The scoring run alone, in this process: prints JSON with its timings and peak RSS."""
    from retention_hub.scoring.run import score

    config = load_config(config_path)
    t0 = time.perf_counter()
    with Store(config.store.url) as store:
        done = score(store, config, as_of)
    print(json.dumps({"seconds": time.perf_counter() - t0, "parts": done.seconds, "accounts": len(done.result.scores),
                      "tasks": done.result.tasks["status"].value_counts().to_dict(),
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))


def generate_and_sync(work: Path, args: argparse.Namespace) -> tuple[Any, pd.Timestamp]:
    """A fresh sandbox in `work`/sandbox, synced into `work`/hub.db (warehouse usage included)."""
    from retention_hub.sandbox.runner import start_sandbox

    t0 = time.perf_counter()
    sandbox = start_sandbox(work / "sandbox", accounts=args.accounts, seed=args.seed)
    sandbox.world.freeze_clock()
    now = pd.Timestamp(sandbox.world.now())
    print(f"sandbox of {args.accounts:,} customers in {time.perf_counter() - t0:.0f} s")
    path = sandbox.directory / "hub.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["store"] = {"url": f"sqlite:///{work.resolve()}/hub.db"}
    if args.usage_days:
        raw["sources"]["usage"]["history_days"] = args.usage_days
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    # the emulators are local: no Zendesk export pacing
    connectors = [ZendeskConnector(c.config, exports_per_minute=100_000) if isinstance(c, ZendeskConnector) else c
                  for c in build_connectors(config)]
    with Store(config.store.url) as store:
        t0 = time.perf_counter()
        synced = sync(store, connectors, until=sandbox.world.now())
        print(f"sync {synced.status}: {sum(s.records for s in synced.streams):,} records in "
              f"{time.perf_counter() - t0:.0f} s")
    sandbox.stop()
    return config, now


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--months", type=int, default=12, help="monthly snapshots to train on")
    parser.add_argument("--usage-days", type=int, default=None, help="days of warehouse usage history to sync")
    parser.add_argument("--workdir", type=Path, default=None, help="keep (or reuse) the sandbox and store here")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "AS_OF"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_score(*args.child)
    from retention_hub.scoring.run import load, run_backtest, train_and_store

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        path, synced_at = work / "sandbox" / "hub.yaml", work / "synced_at.txt"
        if synced_at.exists():  # a kept world, synced by an earlier run
            now = pd.Timestamp(synced_at.read_text().strip())
            config = load_config(path)
            print(f"reusing the sandbox and store synced in {work} (now = {now})")
        else:
            config, now = generate_and_sync(work, args)
            synced_at.write_text(now.isoformat())
        with Store(config.store.url) as store:
            t0 = time.perf_counter()
            packed = store.pack_usage()  # what a sync does at its end (none to do after this code's sync)
            if packed:
                print(f"packed {packed:,} days of usage in {time.perf_counter() - t0:.0f} s")
            t0 = time.perf_counter()
            identity.unify(store, config.identity)
            accounts = identity.account_map(store)
            print(f"identity in {time.perf_counter() - t0:.0f} s")
            t0 = time.perf_counter()
            frames = load(store, config)
            trained = train_and_store(store, config, now, frames, months=args.months)
            m = trained.model
            v = m.validation_ or {}
            print(f"model trained in {time.perf_counter() - t0:.0f} s (frames included) on {m.n_rows_:,} snapshot rows "
                  f"({m.n_positives_:,} churned); validation on {v.get('validation_time')}: ROC AUC "
                  f"{v.get('roc_auc', float('nan')):.3f}, ECE {v.get('ece', float('nan')):.3f}")
            backtest = run_backtest(store, config, now, args.months)
            del frames
        out = subprocess.run([sys.executable, __file__, "--child", str(path), now.isoformat()],
                             capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr)
        child = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"score run: {child['accounts']:,} accounts in {child['seconds']:.1f} s "
              f"({', '.join(f'{k} {v:.1f} s' for k, v in child['parts'].items())}), peak RSS "
              f"{child['peak_rss_gb']:.2f} GB; tasks {child['tasks']}")
        with Store(config.store.url) as store:
            _, scores = store.latest_scores()
        scores = scores.set_index("unified_id")
        truth = outcomes_by_unified(work / "sandbox", accounts)
        common = scores.index.intersection(truth.index)
        actual = truth.loc[common, "churns_90d"].astype(int).to_numpy()
        report = evaluate(actual, scores.loc[common, "churn_probability"].to_numpy())
        oracle = roc_auc_score(actual, truth.loc[common, "p_true"])
        print(f"now: {len(common):,} scored accounts matched to truth ({len(truth):,} active in truth), "
              f"{actual.sum()} churn within 90 days")
        print(f"  model ROC AUC {report['roc_auc']:.3f} vs oracle {oracle:.3f}: ratio {report['roc_auc'] / oracle:.3f}; "
              f"ECE {report['ece']:.4f}; PR AUC {report['pr_auc']:.3f}; top-decile lift {report['lift_top_decile']:.1f}")
        tiers = pd.DataFrame({"tier": scores.loc[common, "tier"], "churned": actual})
        print("  default scorecard, observed 90-day churn by tier: " + ", ".join(
            f"{t} {g['churned'].mean():.1%} (n={len(g)})" for t, g in tiers.groupby("tier")))
        print(f"  scorecard backtest ({args.months} monthly snapshots): ROC AUC {backtest['auc'].iloc[-1]:.3f}; per "
              "snapshot " + ", ".join(f"{a:.2f}" for a in backtest["auc"].iloc[:-1]))
        churners = truth.loc[common][truth.loc[common, "churns_90d"] == 1]
        guess = scores.loc[churners.index, "churn_reason"]
        hit = guess == churners["reason"]
        print(f"  churn reason = true reason for {hit.mean():.1%} of {len(churners)} accounts that churn")
        confusion = pd.crosstab(churners["reason"], guess.replace("", "(none)"))
        print("  " + confusion.to_string().replace("\n", "\n  "))


if __name__ == "__main__":
    main()
