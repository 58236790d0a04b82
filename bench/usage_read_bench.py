"""Reading 100,000 accounts x 180 days of daily usage back out of the store, as scoring does.

    .venv/bin/python bench/usage_read_bench.py [--accounts 100000] [--days 180] [--keep DB]

Fills a temporary SQLite store with one warehouse-like usage record per account and day (four
metrics each) through `Store.upsert_records`, a day's records per call, as a sync would; then, in a
fresh child process (so its time and peak RSS are the read's own), times `Store.usage_frame` for the
180-day window, and the scoring side on top of it: `scoring.frames.usage_frame` (unified ids) and
`usage_features`. Prints seconds and peak RSS; asserts nothing (the machine is shared).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, time as clock, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from retention_hub.connectors.records import record  # noqa: E402
from retention_hub.sync.store import Store  # noqa: E402

LAST_DAY = date(2026, 10, 31)


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def fill(store: Store, accounts: int, days: int) -> None:
    rng = np.random.default_rng(7)
    names = [f"ws_{i:06d}" for i in range(accounts)]
    seats = rng.integers(1, 60, accounts)
    build = write = 0.0
    for n in range(days):
        day = LAST_DAY - timedelta(days=days - 1 - n)
        iso, end = day.isoformat(), datetime.combine(day + timedelta(days=1), clock(), timezone.utc)
        users = rng.binomial(seats, 0.6)
        sessions = rng.poisson(users * 2.5)
        events = rng.poisson(sessions * 22.0)
        features = rng.integers(0, 12, accounts)
        t0 = time.perf_counter()
        rows = [record("usage", "usage", f"{name}|{iso}", end, account_ref=name, day=iso,
                       metrics={"active_users": u, "sessions": s, "events": e, "features_used": f})
                for name, u, s, e, f in zip(names, users.tolist(), sessions.tolist(), events.tolist(),
                                            features.tolist())]
        t1 = time.perf_counter()
        store.upsert_records(rows, run_id=1)
        t2 = time.perf_counter()
        build, write = build + t1 - t0, write + t2 - t1
        if n % 30 == 29 or n == days - 1:
            print(f"  {n + 1} days: building records {build:.0f} s, upsert_records {write:.0f} s "
                  f"({(n + 1) * accounts / write:,.0f} rows/s)", flush=True)


def read(url: str, step: str, days: int, n_accounts: int) -> None:
    """The child: one step alone (its own peak RSS). Prints JSON."""
    from retention_hub.scoring.features import usage_features
    from retention_hub.scoring.frames import usage_frame

    as_of = pd.Timestamp(LAST_DAY, tz="UTC") + pd.Timedelta(hours=9)  # a morning after the last complete day
    start = LAST_DAY - timedelta(days=days)
    out: dict[str, float] = {"baseline_gb": peak_gb()}
    with Store(url) as store:
        if step == "store":
            t0 = time.perf_counter()
            raw = store.usage_frame(start, LAST_DAY)
            out.update(seconds=time.perf_counter() - t0, rows=len(raw), peak_gb=peak_gb(),
                       frame_mb=raw.memory_usage(deep=True).sum() / 1e6)
            return print(json.dumps(out))
        # the scoring side: an account map as identity gives it, then frames and features
        accounts = {("usage", f"ws_{i:06d}"): f"u_{i:08x}" for i in range(n_accounts)}
        out["baseline_gb"] = peak_gb()
        t0 = time.perf_counter()
        usage, missing = usage_frame(store, accounts, pd.Timestamp(start, tz="UTC"))
        out.update(seconds=time.perf_counter() - t0, rows=len(usage), unattributed=missing, frames_peak_gb=peak_gb(),
                   frame_mb=usage.memory_usage(deep=True).sum() / 1e6)
    ids = pd.Index(sorted(set(usage["unified_id"].cat.categories)), name="unified_id")
    t0 = time.perf_counter()
    features = usage_features(usage, as_of, ids)
    out.update(features_s=time.perf_counter() - t0, feature_rows=len(features), peak_gb=peak_gb())
    print(json.dumps(out))


def child(url: str, step: str, days: int, n_accounts: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", url, step, "--days", str(days),
                           "--accounts", str(n_accounts)],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--keep", type=Path, help="keep (or reuse, if it exists) the store file at this path")
    parser.add_argument("--child", nargs=2, metavar=("URL", "STEP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return read(*args.child, args.days, args.accounts)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "hub.db"
        url = f"sqlite:///{path}"
        if not path.exists():
            print(f"filling {args.accounts:,} accounts x {args.days} days = {args.accounts * args.days:,} usage rows")
            t0 = time.perf_counter()
            with Store(url) as store:
                fill(store, args.accounts, args.days)
            print(f"filled in {time.perf_counter() - t0:.0f} s; store {path.stat().st_size / 1e9:.2f} GB; "
                  f"peak RSS {peak_gb():.2f} GB")
        r = child(url, "store", args.days, args.accounts)
        print(f"Store.usage_frame, {args.days}-day window: {r['rows']:,} rows in {r['seconds']:.1f} s "
              f"({r['frame_mb']:.0f} MB frame); peak RSS {r['peak_gb']:.2f} GB "
              f"(process baseline {r['baseline_gb']:.2f} GB)")
        r = child(url, "scoring", args.days, args.accounts)
        print(f"frames.usage_frame (unified ids, {r['unattributed']} rows unattributed): {r['seconds']:.1f} s, "
              f"peak RSS {r['frames_peak_gb']:.2f} GB; then usage_features for {r['feature_rows']:,} accounts: "
              f"{r['features_s']:.1f} s, peak RSS {r['peak_gb']:.2f} GB (baseline with the account map "
              f"{r['baseline_gb']:.2f} GB)")

if __name__ == "__main__":
    main()
