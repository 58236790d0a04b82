"""Sandbox benchmark: world generation time and memory, and the time of a 2,000-row Salesforce page.

    .venv/bin/python bench/sandbox_bench.py [--accounts 5000] [--accounts 100000]

Prints its figures; asserts nothing (machines are shared and noisy).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from retention_hub.sandbox.generator import generate_world
from retention_hub.sandbox.server import start
from retention_hub.sandbox.smoke import salesforce_client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, action="append")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    for accounts in args.accounts or [5000]:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            world = generate_world(accounts, args.seed, Path(tmp))
            gen_s = time.perf_counter() - t0
            rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
            n_records = sum(len(v) for v in world.salesforce.values()) + sum(len(v) for v in world.hubspot.values()) \
                + sum(len(v) for v in world.zendesk.values()) + sum(len(v) for v in world.stripe.values())
            print(f"accounts={accounts}: generated in {gen_s:.1f} s, peak RSS {rss_gb:.2f} GB, "
                  f"{n_records} records")
            t0 = time.perf_counter()
            sandbox = start(world, Path(tmp))
            print(f"  emulators up in {time.perf_counter() - t0:.2f} s")
            sf = salesforce_client(sandbox.info()["salesforce"])
            first, pages = [], []
            for _ in range(5):
                t0 = time.perf_counter()
                res = sf.query("SELECT Id, AccountId, FirstName, LastName, Email, Title, OwnerId, "
                               "HasOptedOutOfEmail, SystemModstamp FROM Contact")
                first.append(time.perf_counter() - t0)
                assert len(res["records"]) == 2000
                t0 = time.perf_counter()
                sf.query_more(res["nextRecordsUrl"], identifier_is_url=True)
                pages.append(time.perf_counter() - t0)
            print(f"  Salesforce 2,000-row page: first page median {statistics.median(first) * 1000:.0f} ms, "
                  f"next page median {statistics.median(pages) * 1000:.0f} ms (over {len(first)} queries)")
            sandbox.stop()


if __name__ == "__main__":
    main()
