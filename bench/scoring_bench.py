"""Scoring on the sandbox (work in progress, issue 5): the churn model and the default scorecard
against the generator's ground truth.

    .venv/bin/python bench/scoring_bench.py [--accounts 1000] [--seed 7]

Generates a sandbox, syncs it (warehouse usage included), unifies identities, builds point-in-time
features at 12 monthly snapshots (labels: churn within 90 days) and trains `ChurnModel` on them; then
scores "now" and prints the model's ROC AUC and ECE on who really churns in the next 90 days
(`truth/outcomes.csv`) next to the oracle's AUC (the generator's own probability: the ceiling), and
the observed churn rate per health tier of the default scorecard. Asserts nothing. The warehouse's
usage is stored one record per account, day and metric, so keep --accounts small (~1,000) until usage
gets its own table.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from retention_hub.config import load_config
from retention_hub.connectors import build_connectors
from retention_hub.connectors.zendesk import ZendeskConnector
from retention_hub.sandbox.runner import start_sandbox
from retention_hub.scoring.churn import ChurnModel
from retention_hub.scoring.evaluation import evaluate
from retention_hub.scoring.features import LABELS, build_features, churn_labels
from retention_hub.scoring.frames import load_frames
from retention_hub.scoring.health import score_health
from retention_hub.sync import identity
from retention_hub.sync.engine import sync
from retention_hub.sync.store import Store


def truth_by_unified(directory: Path, accounts: dict) -> pd.DataFrame:
    """outcomes.csv indexed by unified id (each truth customer -> the id most of its records got)."""
    ident = pd.read_csv(directory / "truth" / "identity.csv", dtype=str)
    ident["uid"] = [accounts.get((s, i)) for s, i in zip(ident["source"], ident["source_id"])]
    key_uid = ident.dropna().groupby("customer_key")["uid"].agg(lambda s: s.mode()[0])
    out = pd.read_csv(directory / "truth" / "outcomes.csv", dtype={"customer_key": str})
    out["uid"] = out["customer_key"].map(key_uid)
    return out.dropna(subset=["uid"]).drop_duplicates("uid").set_index("uid")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = start_sandbox(Path(tmp) / "sandbox", accounts=args.accounts, seed=args.seed)
        sandbox.world.freeze_clock()
        now = pd.Timestamp(sandbox.world.now())
        config = load_config(sandbox.directory / "hub.yaml")
        connectors = [ZendeskConnector(c.config, exports_per_minute=1000) if isinstance(c, ZendeskConnector) else c
                      for c in build_connectors(config)]
        with Store(f"sqlite:///{tmp}/hub.db") as store:
            t0 = time.perf_counter()
            synced = sync(store, connectors, until=sandbox.world.now())
            print(f"sync {synced.status}: {sum(s.records for s in synced.streams):,} records in "
                  f"{time.perf_counter() - t0:.0f} s")
            sandbox.stop()
            identity.unify(store, config.identity)
            accounts = identity.account_map(store)
            t0 = time.perf_counter()
            frames = load_frames(store, accounts, identity.people_map(store), identity.unified_accounts(store))
            print(f"frames in {time.perf_counter() - t0:.1f} s; unattributed rows: {frames.unattributed}")
        t0 = time.perf_counter()
        rows, labels, times = [], [], []
        for months in range(3, 15):  # the last 90 days have no label yet
            as_of = now - pd.Timedelta(days=30 * months)
            snap = build_features(frames, as_of)
            rows.append(snap)
            labels.append(churn_labels(frames, as_of, snap.index))
            times += [as_of] * len(snap)
        train = pd.concat(rows).astype(float).replace([np.inf, -np.inf], np.nan)
        y = pd.concat(labels)
        keep = [c for c in train if train[c].notna().any() and train[c].nunique() > 1]
        model = ChurnModel().fit(train[keep].reset_index(drop=True), y.reset_index(drop=True),
                                 time=pd.Series(times), groups=pd.Series(train.index))
        print(f"trained on {len(train):,} snapshot rows ({int(y.sum())} churned) in {time.perf_counter() - t0:.1f} s; "
              f"validation AUC {model.validation_['roc_auc']:.3f}")
        features = build_features(frames, now).astype(float).replace([np.inf, -np.inf], np.nan)
        truth = truth_by_unified(sandbox.directory, accounts)
        common = features.index.intersection(truth.index)
        actual = truth.loc[common, "churns_90d"].astype(int).to_numpy()
        p = model.predict_proba(features.loc[common, keep])[:, 1]
        report = evaluate(actual, p)
        oracle = roc_auc_score(actual, truth.loc[common, "p_true"])
        print(f"now: {len(common):,} active accounts scored of {len(truth):,} in truth, {actual.sum()} churn in 90 days")
        print(f"  model ROC AUC {report['roc_auc']:.3f} vs oracle {oracle:.3f} (ratio {report['roc_auc'] / oracle:.3f}), "
              f"ECE {report['ece']:.3f}, top-decile lift {report['lift_top_decile']:.1f}")
        health = score_health(features, config.scoring)
        tiers = pd.DataFrame({"tier": health.loc[common, "tier"], "churned": actual})
        print("  default scorecard, observed 90-day churn by tier: " + ", ".join(
            f"{t} {g['churned'].mean():.1%} (n={len(g)})" for t, g in tiers.groupby("tier")))
        print("  drivers of the riskiest account: " + "; ".join(
            d.text for d in model.drivers(features.loc[common, keep].iloc[[int(np.argmax(p))]], labels=LABELS)[0]))


if __name__ == "__main__":
    main()
