"""Identity benchmark: pairwise precision/recall against the sandbox's truth, time and peak memory.

    .venv/bin/python bench/identity_bench.py [--accounts 5000] [--accounts 50000] [--seed 7]
    .venv/bin/python bench/identity_bench.py --accounts 100000 --no-metrics   # the speed figure

For each size the sandbox is generated and synced once (the identity streams only) into
`bench/.cache/identity-<accounts>-<seed>/` (store file + a copy of truth/identity.csv); later runs reuse
it. Unification then runs in a fresh subprocess on a copy of that store (so the identity tables start
empty, as on a first run), which reports its wall time and peak RSS. A second, repeated run on the same
copy shows what an unchanged store costs. Asserts nothing (machines are shared and noisy).
"""
from __future__ import annotations

import argparse
import csv
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"
# what identity reads; the usage source's huge per-day stream is left out
STREAMS = {"salesforce": ["accounts", "contacts"], "hubspot": ["companies", "contacts"],
           "zendesk": ["organizations", "users"], "stripe": ["customers", "subscriptions"], "usage": ["accounts"]}


def prepare(accounts: int, seed: int) -> Path:
    """The cached directory holding hub.db and identity.csv for this world, made once."""
    target = CACHE / f"identity-{accounts}-{seed}"
    if (target / "done").exists():
        return target
    from retention_hub.config import load_config
    from retention_hub.connectors import build_connectors
    from retention_hub.connectors.zendesk import ZendeskConnector
    from retention_hub.sandbox.runner import start_sandbox
    from retention_hub.sync.engine import sync
    from retention_hub.sync.store import Store

    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sandbox = start_sandbox(Path(tmp) / "sb", accounts=accounts, seed=seed)
        print(f"  world of {accounts:,} generated in {time.perf_counter() - t0:.0f} s", flush=True)
        try:
            config = load_config(sandbox.directory / "hub.yaml")
            connectors = [ZendeskConnector(config.sources.zendesk, exports_per_minute=1000)
                          if isinstance(c, ZendeskConnector) else c for c in build_connectors(config)]
            (target / "hub.db").unlink(missing_ok=True)
            t0 = time.perf_counter()
            with Store(f"sqlite:///{target / 'hub.db'}") as store:
                result = sync(store, connectors, STREAMS, until=sandbox.world.now())
            print(f"  synced ({result.status}) in {time.perf_counter() - t0:.0f} s", flush=True)
            if result.status != "ok":
                raise SystemExit(f"sync failed: {[(s.source, s.stream, s.error) for s in result.streams if s.error]}")
            for name in ("identity.csv", "customers.csv"):  # customers.csv: for looking into misses
                shutil.copy(sandbox.directory / "truth" / name, target / name)
        finally:
            sandbox.stop()
    (target / "done").write_text("ok\n")
    return target


def unify_child(db: str, out: str) -> None:
    """Runs in the fresh subprocess: unify, write links and figures to `out` as JSON."""
    from retention_hub.config.models import Identity
    from retention_hub.sync.identity import links_frame, unify
    from retention_hub.sync.store import Store

    t0 = time.perf_counter()
    with Store(f"sqlite:///{db}") as store:
        result = unify(store, Identity())
        seconds = time.perf_counter() - t0
        links = links_frame(store)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(out).write_text(json.dumps({
        "seconds": seconds, "peak_rss_gb": usage.ru_maxrss / 1024**2, "cpu": usage.ru_utime + usage.ru_stime,
        "summary": result.summary(),
        "links": links[["source", "source_id", "unified_id", "status"]].values.tolist()}))


def pairwise(truth_csv: Path, links: list[list[str]]) -> tuple[float, float, int, int]:
    """Precision and recall over pairs of truth records (same unified id = predicted same)."""
    unified = {(s, i): u for s, i, u, status in links if status != "review"}
    by_key: dict[str, list[str]] = defaultdict(list)
    with open(truth_csv) as f:
        for row in csv.DictReader(f):
            by_key[row["customer_key"]].append(unified.get((row["source"], row["source_id"]),
                                                           f"missing:{row['source']}:{row['source_id']}"))
    true_pairs = sum(len(v) * (len(v) - 1) // 2 for v in by_key.values())
    both: dict[str, int] = defaultdict(int)  # per unified id: truth records it holds
    same = 0
    for members in by_key.values():
        counts: dict[str, int] = defaultdict(int)
        for u in members:
            counts[u] += 1
            both[u] += 1
        same += sum(n * (n - 1) // 2 for n in counts.values())
    predicted = sum(n * (n - 1) // 2 for n in both.values())
    precision = same / predicted if predicted else 1.0
    recall = same / true_pairs if true_pairs else 1.0
    return precision, recall, predicted, true_pairs


def run_child(db: Path) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, __file__, "--child", str(db), out.name], check=True)
        return json.loads(Path(out.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, action="append")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-metrics", action="store_true", help="Time only (skip precision/recall).")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        unify_child(*args.child)
        return
    for accounts in args.accounts or [5000]:
        print(f"accounts={accounts:,} seed={args.seed}", flush=True)
        cached = prepare(accounts, args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "hub.db"
            shutil.copy(cached / "hub.db", db)
            first = run_child(db)
            s = first["summary"]
            print(f"  first unification: {first['seconds']:.1f} s wall ({first['cpu']:.1f} s CPU), peak RSS "
                  f"{first['peak_rss_gb']:.2f} GB; {s['records']:,} account records -> {s['unified']:,} unified "
                  f"accounts, {s['review']:,} in review, {s['conflicts']:,} conflicts, {s['unmatched']:,} unmatched")
            print("    stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in s["stages"].items()))
            for pair, n in sorted(s["matched_pairs"].items()):
                print(f"    matched {pair:<22} {n:>8,}")
            if not args.no_metrics:
                precision, recall, predicted, true_pairs = pairwise(cached / "identity.csv", first["links"])
                print(f"  pairwise precision {precision:.4f}  recall {recall:.4f}  "
                      f"({predicted:,} predicted pairs, {true_pairs:,} true pairs); in review: {s['review']:,}")
            again = run_child(db)
            print(f"  repeat on the unchanged store: {again['seconds']:.1f} s wall ({again['cpu']:.1f} s CPU), "
                  f"peak RSS {again['peak_rss_gb']:.2f} GB, {again['summary']['written']:,} rows written")
        print(flush=True)


if __name__ == "__main__":
    main()
