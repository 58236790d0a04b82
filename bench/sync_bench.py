"""Sync benchmark: a full and a quiet incremental sync of an N-customer sandbox into a fresh store.

    .venv/bin/python bench/sync_bench.py [--accounts 5000] [--accounts 50000] [--with-warehouse]

Prints records per second, API calls per stream against the floor (ceil(records / max page size)),
and peak memory. Asserts nothing (machines are shared and noisy); API call counts are exact.
"""
from __future__ import annotations

import argparse
import math
import resource
import tempfile
import time
from pathlib import Path

from retention_hub.config import load_config
from retention_hub.connectors import build_connectors
from retention_hub.connectors.zendesk import ZendeskConnector
from retention_hub.sandbox.runner import start_sandbox
from retention_hub.sync.engine import sync
from retention_hub.sync.store import Store

# the largest page each vendor serves, per stream (the floor's denominator)
PAGE = {"salesforce": 2000, "hubspot": 100, "zendesk.tickets": 1000, "zendesk.users": 1000,
        "zendesk.organizations": 1000, "zendesk.satisfaction_ratings": 100, "stripe": 100}


def page_size(source: str, stream: str) -> int:
    return PAGE.get(f"{source}.{stream}", PAGE.get(source, 10_000))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, action="append")
    parser.add_argument("--with-warehouse", action="store_true", help="Also sync the usage warehouse.")
    args = parser.parse_args()
    for accounts in args.accounts or [5000]:
        with tempfile.TemporaryDirectory() as tmp:
            sandbox = start_sandbox(Path(tmp) / "sandbox", accounts=accounts, seed=7)
            config = load_config(Path(tmp) / "sandbox" / "hub.yaml")
            if not args.with_warehouse:
                config.sources.usage = None
            connectors = [ZendeskConnector(config.sources.zendesk, exports_per_minute=10)
                          if isinstance(c, ZendeskConnector) else c for c in build_connectors(config)]
            with Store(f"sqlite:///{tmp}/hub.db") as store:
                t0 = time.perf_counter()
                full = sync(store, connectors, until=sandbox.world.now())
                seconds = time.perf_counter() - t0
                total = sum(s.records for s in full.streams)
                calls = sum(s.calls for s in full.streams)
                print(f"accounts={accounts}: full sync {full.status} in {seconds:.1f} s, {total:,} records "
                      f"({total / seconds:,.0f}/s), {calls} API calls")
                floor_total = 0
                # meter event summaries come one call per metered customer, not in pages
                metered = {c for usage in sandbox.world.stripe_meter_usage.values() for c in usage}
                for s in full.streams:
                    floor = math.ceil(s.records / page_size(s.source, s.stream)) if s.records else 1
                    if (s.source, s.stream) == ("stripe", "usage"):
                        floor = max(1, len(metered))
                    floor_total += floor
                    print(f"  {s.source}.{s.stream:<22} {s.records:>9,} records {s.calls:>6} calls "
                          f"(floor {floor}) {s.seconds:6.1f} s")
                print(f"  calls / floor = {calls}/{floor_total} = {calls / floor_total:.2f} "
                      "(the excess is auth, describe, event-position and association calls)")
                fresh = [ZendeskConnector(config.sources.zendesk, exports_per_minute=1000)
                         if isinstance(c, ZendeskConnector) else type(c)(c.config) for c in connectors]
                quiet = sync(store, fresh, until=sandbox.world.now())
                print(f"  quiet second run: {sum(s.calls for s in quiet.streams)} calls over "
                      f"{len(quiet.streams)} streams, {sum(s.records for s in quiet.streams)} records")
            print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GB")
            sandbox.stop()


if __name__ == "__main__":
    main()
