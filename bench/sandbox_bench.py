"""Sandbox benchmark: world generation time and peak memory, and the time of a 2,000-row Salesforce page.

    .venv/bin/python bench/sandbox_bench.py [--accounts 5000] [--accounts 100000] [--repeat 2] [--no-pages]

The goal (see the issue): 100,000 accounts generate in under 2 minutes and under 4 GB on a 2-core
machine. Each generation runs in a fresh Python process, so the peak RSS reported is that
generation's own: `ru_maxrss` of the generating process (RUSAGE_SELF) and, separately, of the
warehouse writer it forks (its RUSAGE_CHILDREN, which covers only waited-for children). The writer
shares the generator's pages copy-on-write at the fork, so the two peaks overlap and do not add up;
the figure to hold against the memory goal is therefore the peak of the summed PSS (proportional
set size: shared pages split between the processes sharing them) of the generator and its children,
sampled every 50 ms from /proc/PID/smaps_rollup (Linux only; omitted elsewhere).
Prints its figures; asserts nothing (machines are shared and noisy).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _pss_kb(pid: int | str) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[str]:
    out: list[str] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += (task / "children").read_text().split()
        except OSError:
            pass
    return out


class PssSampler(threading.Thread):
    """Peak of the summed PSS of this process and its direct children, sampled in the background."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak_kb, self._halt = interval, 0, threading.Event()

    def run(self) -> None:
        import os
        me = os.getpid()
        while not self._halt.is_set():
            total = _pss_kb(me) + sum(_pss_kb(c) for c in _children(me))
            self.peak_kb = max(self.peak_kb, total)
            self._halt.wait(self.interval)

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return self.peak_kb / 1024


def measure(accounts: int, seed: int, pages: bool) -> dict:
    """Generate one world in this (fresh) process and measure it."""
    from retention_hub.sandbox.generator import generate_world

    out: dict = {"accounts": accounts}
    with tempfile.TemporaryDirectory() as tmp:
        sampler = PssSampler()
        if Path("/proc/self/smaps_rollup").exists():
            sampler.start()
        t0 = time.perf_counter()
        world = generate_world(accounts, seed, Path(tmp))
        out["generate_s"] = time.perf_counter() - t0
        if sampler.is_alive():
            out["peak_pss_total_mb"] = sampler.stop()
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["writer_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        out["records"] = {vendor: sum(len(t) for t in getattr(world, vendor).values())
                          for vendor in ("salesforce", "hubspot", "zendesk", "stripe")}
        out["stripe_events"] = len(world.stripe_events)
        out["warehouse_mb"] = (Path(tmp) / "warehouse.db").stat().st_size / 2**20
        t0 = time.perf_counter()
        world.advance(1)
        out["advance_1d_s"] = time.perf_counter() - t0
        if pages:
            out.update(salesforce_pages(world, Path(tmp)))
    return out


def salesforce_pages(world, directory: Path) -> dict:
    from retention_hub.sandbox.server import start
    from retention_hub.sandbox.smoke import salesforce_client

    t0 = time.perf_counter()
    sandbox = start(world, directory)
    out = {"emulators_up_s": time.perf_counter() - t0}
    try:
        sf = salesforce_client(sandbox.info()["salesforce"])
        first, more = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            res = sf.query("SELECT Id, AccountId, FirstName, LastName, Email, Title, OwnerId, "
                           "HasOptedOutOfEmail, SystemModstamp FROM Contact")
            first.append(time.perf_counter() - t0)
            assert len(res["records"]) == 2000
            t0 = time.perf_counter()
            sf.query_more(res["nextRecordsUrl"], identifier_is_url=True)
            more.append(time.perf_counter() - t0)
        out["sf_first_page_ms"] = statistics.median(first) * 1000
        out["sf_next_page_ms"] = statistics.median(more) * 1000
    finally:
        sandbox.stop()
    return out


def report(m: dict) -> str:
    records = sum(m["records"].values())
    line = (f"accounts={m['accounts']}: generated in {m['generate_s']:.1f} s, "
            f"peak RSS {m['peak_rss_mb'] / 1024:.2f} GB "
            f"(warehouse writer {m['writer_peak_rss_mb'] / 1024:.2f} GB"
            + (f"; peak PSS of both together {m['peak_pss_total_mb'] / 1024:.2f} GB" if "peak_pss_total_mb" in m else "")
            + f"), {records:,} records "
            f"({', '.join(f'{k} {v:,}' for k, v in m['records'].items())}), {m['stripe_events']:,} Stripe events, "
            f"warehouse {m['warehouse_mb']:.0f} MB; advance 1 day {m['advance_1d_s']:.2f} s")
    if "sf_first_page_ms" in m:
        line += (f"\n  emulators up in {m['emulators_up_s']:.2f} s; Salesforce 2,000-row page: first page median "
                 f"{m['sf_first_page_ms']:.0f} ms, next page median {m['sf_next_page_ms']:.0f} ms")
    return line


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, action="append")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (each in a fresh process)")
    parser.add_argument("--no-pages", action="store_true", help="skip the Salesforce page timing")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.seed, not args.no_pages)))
        return
    for accounts in args.accounts or [5000]:
        for _ in range(args.repeat):
            cmd = [sys.executable, __file__, "--one", str(accounts), "--seed", str(args.seed)]
            done = subprocess.run(cmd + (["--no-pages"] if args.no_pages else []), check=True,
                                  stdout=subprocess.PIPE, text=True)
            print(report(json.loads(done.stdout.strip().splitlines()[-1])), flush=True)


if __name__ == "__main__":
    main()
