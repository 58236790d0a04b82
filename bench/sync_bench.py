"""Sync benchmark: a full, a quiet and a one-day-later sync of an N-customer sandbox into a fresh store.

    .venv/bin/python bench/sync_bench.py [--accounts 5000] [--accounts 50000] [--with-warehouse]
                                         [--zendesk-exports-per-minute 10]

The sandbox runs in this process; each sync runs in a fresh child process, so the peak RSS printed is
the sync's own. Prints records per second, API calls per stream against the floor
(ceil(records / max page size); for Stripe usage one call per metered customer), whether the store
equals the world for every stream (`sandbox/expected.py`), and after `advance(1)` whether the next run
changed exactly the records the world changed. Zendesk allows 10 incremental-export pages a minute;
the default paces the sync that way, as against the real vendor (at 50,000 customers that alone takes
most of an hour: pass a higher figure to measure the rest). Asserts nothing (machines are shared and
noisy); API call counts are exact.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

# the largest page each vendor serves, per stream (the floor's denominator)
PAGE = {"salesforce": 2000, "hubspot": 100, "hubspot.owners": 500, "zendesk.tickets": 1000, "zendesk.users": 1000,
        "zendesk.organizations": 1000, "zendesk.satisfaction_ratings": 100, "stripe": 100}


def page_size(source: str, stream: str) -> int:
    return PAGE.get(f"{source}.{stream}", PAGE.get(source, 10_000))


def child(config_path: str, store_url: str, until: str, exports_per_minute: int, warehouse: bool) -> None:
    """One sync in this (fresh) process; prints its result as JSON."""
    from retention_hub.config import load_config
    from retention_hub.connectors import build_connectors
    from retention_hub.connectors.zendesk import ZendeskConnector
    from retention_hub.sync.engine import sync
    from retention_hub.sync.store import Store

    config = load_config(Path(config_path))
    if not warehouse:
        config.sources.usage = None
    connectors = [ZendeskConnector(config.sources.zendesk, exports_per_minute=exports_per_minute)
                  if isinstance(c, ZendeskConnector) else c for c in build_connectors(config)]
    with Store(store_url) as store:
        t0 = time.perf_counter()
        result = sync(store, connectors, until=datetime.fromisoformat(until))
        seconds = time.perf_counter() - t0
    print(json.dumps({"status": result.status, "errors": result.errors, "seconds": seconds,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
                      "streams": [{"source": s.source, "stream": s.stream, "records": s.records,
                                   "calls": s.calls, "seconds": s.seconds} for s in result.streams]}))


def run_child(config: Path, store_url: str, until: datetime, exports_per_minute: int, warehouse: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", str(config), store_url, until.isoformat(),
           str(exports_per_minute)] + (["--with-warehouse"] if warehouse else [])
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def by_kind(store_url: str) -> dict[tuple[str, str], dict[str, tuple]]:
    from retention_hub.sync.store import Store

    out: dict[tuple[str, str], dict[str, tuple]] = {}
    with Store(store_url) as store:
        for r in store.iter_records(include_deleted=True):
            out.setdefault((r["source"], r["kind"]), {})[r["source_id"]] = (r["updated_at"], r["deleted"],
                                                                           json.dumps(r["payload"], sort_keys=True))
    return out


def bench(accounts: int, exports_per_minute: int, warehouse: bool) -> None:
    from retention_hub.sandbox import expected
    from retention_hub.sandbox.runner import start_sandbox

    with tempfile.TemporaryDirectory() as tmp:
        sandbox = start_sandbox(Path(tmp) / "sandbox", accounts=accounts, seed=7)
        world, config, url = sandbox.world, sandbox.directory / "hub.yaml", f"sqlite:///{tmp}/hub.db"
        world.freeze_clock()  # nothing changes but by advance, so each sync can be held to a snapshot
        try:
            until = world.now()
            want = expected.snapshot(world, until, usage=warehouse)
            full = run_child(config, url, until, exports_per_minute, warehouse)
            total = sum(s["records"] for s in full["streams"])
            calls = sum(s["calls"] for s in full["streams"])
            print(f"accounts={accounts}: full sync {full['status']} in {full['seconds']:.1f} s, {total:,} records "
                  f"({total / full['seconds']:,.0f}/s), {calls} API calls, peak RSS {full['peak_rss_gb']:.2f} GB "
                  f"(Zendesk exports paced at {exports_per_minute}/min)")
            floor_total = 0
            metered = {c for usage in world.stripe_meter_usage.values() for c in usage}
            for s in full["streams"]:
                floor = math.ceil(s["records"] / page_size(s["source"], s["stream"])) if s["records"] else 1
                if (s["source"], s["stream"]) == ("stripe", "usage"):
                    floor = max(1, len(metered))  # event summaries: one call per metered customer
                floor_total += floor
                print(f"  {s['source']}.{s['stream']:<22} {s['records']:>9,} records {s['calls']:>6} calls "
                      f"(floor {floor}) {s['seconds']:6.1f} s")
            print(f"  calls / floor = {calls}/{floor_total} = {calls / floor_total:.3f} "
                  "(the excess is auth, describe, event-position and association calls)")
            got = by_kind(url)
            live = expected.live_keys(want)
            bad = [key for key in live if {i for i, v in got.get(key, {}).items() if not v[1]} != live[key]]
            print(f"  store equals the world for {len(live) - len(bad)} of {len(live)} (source, kind) streams"
                  + (f"; differ: {bad}" if bad else ""))

            quiet = run_child(config, url, world.now(), 1000, warehouse)
            print(f"  quiet second run: {sum(s['calls'] for s in quiet['streams'])} calls over "
                  f"{len(quiet['streams'])} streams (at most {max(s['calls'] for s in quiet['streams'])} in one), "
                  f"{sum(s['records'] for s in quiet['streams'])} records re-read, store unchanged: "
                  f"{by_kind(url) == got}")
            for s in quiet["streams"]:
                if s["calls"] > 2:
                    print(f"    {s['source']}.{s['stream']}: {s['calls']} calls, {s['records']} records")

            world.advance(1)
            until = world.now()
            later_want = expected.snapshot(world, until, usage=warehouse)
            later = run_child(config, url, until, 1000, warehouse)
            later_got = by_kind(url)
            changed = expected.changed(want, later_want)
            moved = {key: {i for i, v in later_got.get(key, {}).items() if got.get(key, {}).get(i) != v}
                     for key in changed}
            exact = [key for key in changed if moved[key] == changed[key]]
            deletions = sum(1 for key, ids in changed.items() for i in ids if later_want[key][i][1])
            print(f"  after advance(1): {sum(len(v) for v in changed.values()):,} records changed in the world "
                  f"({deletions} deletions), {sum(len(v) for v in moved.values()):,} changed in the store, "
                  f"exact for {len(exact)} of {len(changed)} streams; "
                  f"{sum(s['calls'] for s in later['streams'])} calls in {later['seconds']:.1f} s")
            for key in sorted(set(changed) - set(exact)):
                print(f"    {key}: missed {sorted(changed[key] - moved[key])[:5]}, "
                      f"extra {sorted(moved[key] - changed[key])[:5]}")
        finally:
            sandbox.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), "--with-warehouse" in sys.argv)
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, action="append")
    parser.add_argument("--with-warehouse", action="store_true", help="Also sync the usage warehouse.")
    parser.add_argument("--zendesk-exports-per-minute", type=int, default=10)
    args = parser.parse_args()
    for accounts in args.accounts or [5000]:
        bench(accounts, args.zendesk_exports_per_minute, args.with_warehouse)


if __name__ == "__main__":
    main()
