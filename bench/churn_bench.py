"""Churn model benchmark: fit, predict_proba and drivers at the hub's scale, on synthetic data.

    .venv/bin/python bench/churn_bench.py [--accounts 100000] [--features 40] [--snapshots 4]
                                          [--model hgb|logistic] [--threads 1]
                                          [--calibration auto|isotonic|sigmoid]

Training data: `--snapshots` monthly snapshots of every account (a row per account per month, the
label drawn from a known churn probability); scoring data: one fresh snapshot of every account (the
month after), as `rhub score` would see it. Prints fit time, validation AUC/ECE against the true
probability's AUC (the ceiling), predict_proba and drivers time on the scoring rows, and the peak RSS
of this process. Asserts nothing: the machine is shared and timings are noisy.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.metrics import log_loss, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from retention_hub.scoring.churn import ChurnModel  # noqa: E402
from retention_hub.scoring.evaluation import calibration_table, evaluate, render_text  # noqa: E402

INFORMATIVE = ["usage_trend_30d", "active_users_per_seat", "tickets_90d", "failed_payments_90d",
               "days_to_renewal", "csat_90d", "days_since_last_activity", "mrr_change_90d"]
LABELS = {"usage_trend_30d": "Usage {fell_rose} {abs_value:.0%} over 30 days",
          "active_users_per_seat": "active users per paid seat",
          "tickets_90d": "support tickets in the last 90 days",
          "failed_payments_90d": "failed payments in the last 90 days",
          "days_to_renewal": "days to the next renewal", "health_score": "health score"}


def snapshots(n_accounts: int, n_snapshots: int, n_features: int, seed: int = 0) -> pd.DataFrame:
    """Rows per (account, month): features, health_score, segment, time, p_true and the label y.

    Account health is an AR(1) process, so an account's snapshots are correlated; churn risk is
    logistic in the observed features with a renewal-window interaction; 5% of usage and 30% of
    CSAT are missing. Columns past the informative ones are noise (some correlated with health).
    """
    rng = np.random.default_rng(seed)
    fit = rng.normal(size=n_accounts)
    h = rng.normal(size=n_accounts)
    renew = rng.integers(0, 365, n_accounts)
    segment = rng.choice(np.array(["smb", "mid", "ent"]), n_accounts, p=[0.6, 0.3, 0.1])
    frames = []
    for t, when in enumerate(pd.date_range("2026-01-01", periods=n_snapshots, freq="MS")):
        h = 0.8 * h + 0.6 * rng.normal(size=n_accounts)
        noise = lambda: rng.normal(size=n_accounts)  # noqa: E731
        cols = {
            "usage_trend_30d": np.maximum(0.3 * h + 0.15 * fit + 0.1 * noise(), -0.95),
            "active_users_per_seat": expit(fit + 0.5 * noise()),
            "tickets_90d": rng.poisson(np.exp(0.5 - 0.5 * h)).astype(float),
            "failed_payments_90d": rng.poisson(expit(-2.5 - h)).astype(float),
            "days_to_renewal": ((renew - 30 * t) % 365).astype(float),
            "csat_90d": expit(1.5 + 0.8 * h + 0.5 * noise()),
            "days_since_last_activity": rng.exponential(20 * np.exp(-0.3 * fit)),
            "mrr_change_90d": 0.05 * h + 0.05 * noise(),
        }
        logit = (-4.2 - 2.5 * cols["usage_trend_30d"] - 1.5 * (cols["active_users_per_seat"] - 0.5)
                 + 0.2 * np.minimum(cols["tickets_90d"], 6) + 0.8 * cols["failed_payments_90d"]
                 + 1.2 * (cols["days_to_renewal"] < 90) - 1.5 * (cols["csat_90d"] - 0.8)
                 + 0.01 * np.minimum(cols["days_since_last_activity"], 90) - 4 * cols["mrr_change_90d"])
        p = expit(logit)
        df = pd.DataFrame(cols)
        df["health_score"] = np.clip(60 + 30 * cols["usage_trend_30d"] + 20 * (cols["csat_90d"] - 0.8)
                                     - 3 * cols["tickets_90d"] + 5 * noise(), 0, 100)
        for k in range(n_features - len(cols) - 1):
            df[f"signal_{k}"] = (0.3 * h if k % 3 == 0 else 0) + noise()
        df.loc[rng.random(n_accounts) < 0.05, "usage_trend_30d"] = np.nan
        df.loc[rng.random(n_accounts) < 0.30, "csat_90d"] = np.nan
        df["account"], df["segment"], df["time"] = np.arange(n_accounts), segment, when
        df["p_true"], df["y"] = p, (rng.random(n_accounts) < p).astype(int)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=40)
    ap.add_argument("--snapshots", type=int, default=4)
    ap.add_argument("--model", default="hgb")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calibration", default="auto")
    args = ap.parse_args()

    t = time.perf_counter()
    data = snapshots(args.accounts, args.snapshots + 1, args.features)
    last = data["time"].max()
    train, score = data[data["time"] < last], data[data["time"] == last]
    features = [c for c in data.columns if c not in ("account", "segment", "time", "p_true", "y")]
    print(f"data: {len(train):,} training rows, {len(score):,} scoring rows, {len(features)} features, "
          f"churn rate {train['y'].mean():.1%} ({time.perf_counter() - t:.1f} s to generate)")

    model = ChurnModel(model=args.model, n_threads=args.threads, calibration=args.calibration)
    t = time.perf_counter()
    model.fit(train[features], train["y"], time=train["time"], groups=train["account"],
              segments=train["segment"])
    fit_s = time.perf_counter() - t
    v = model.validation_
    val_rows = train["time"] >= v["validation_time"][0]
    ceiling = roc_auc_score(train.loc[val_rows, "y"], train.loc[val_rows, "p_true"])
    print(f"fit: {fit_s:.1f} s ({getattr(model.base_model_, 'n_iter_', '-')} boosting rounds); validation "
          f"{v['validation_time'][0]:%Y-%m} on {v['n_validation']:,} rows, calibration {v['calibration_method']}")
    print(f"validation: ROC AUC {v['roc_auc']:.4f} vs ceiling {ceiling:.4f} (ratio {v['roc_auc'] / ceiling:.3f}), "
          f"ECE {v['ece']:.4f}")
    print(render_text(v))

    X = score[features]
    t = time.perf_counter()
    proba = model.predict_proba(X)[:, 1]
    predict_s = time.perf_counter() - t
    t = time.perf_counter()
    drivers = model.drivers(X, top=3, labels=LABELS)
    drivers_s = time.perf_counter() - t
    explained = sum(1 for d in drivers if d)
    out = evaluate(score["y"], proba)
    print(f"scoring {len(X):,} accounts: predict_proba {predict_s:.2f} s, drivers {drivers_s:.2f} s "
          f"({explained:,} rows at or above the {model.base_rate_:.1%} churn rate explained)")
    # the same bins with the true probability in place of the outcome: calibration error without label noise
    true_ece = sum(r["count"] * abs(r["mean_predicted"] - r["observed_rate"])
                   for r in calibration_table(score["p_true"].to_numpy(), proba)) / len(proba)
    print(f"next month (unseen): ROC AUC {out['roc_auc']:.4f} vs ceiling "
          f"{roc_auc_score(score['y'], score['p_true']):.4f}, ECE {out['ece']:.4f} "
          f"(against the true probability {true_ece:.4f}), log loss {log_loss(score['y'], proba):.4f}")
    top = int(np.argmax(proba))
    print(f"riskiest account ({proba[top]:.1%}, true {score['p_true'].iloc[top]:.1%}): " + "; ".join(
        f"{d.text} [+{d.contribution * 100:.1f} pts]" for d in drivers[top]))
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
