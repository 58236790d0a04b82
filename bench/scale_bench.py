"""The scoring run at 100,000 accounts: time and peak memory (issue 5's last line).

    .venv/bin/python bench/scale_bench.py --workdir DIR [--copies 26] [--usage-days 200]

Syncing a 100,000-customer sandbox through the emulators takes hours on this machine, so this
benchmark scales a synced one instead: DIR is a world kept by `bench/scoring_bench.py --workdir DIR`
(5,000 customers: its store is synced, unified, and holds a trained model). Its store is copied
`--copies` times into DIR/scaled.db, every id suffixed with "~k" (records, their account and ticket
references, usage, identity links and unified accounts), so the copies are distinct accounts with the
same distribution. 26 copies of the 5,000 world give about 100,000 active accounts to score.

Then, each in a fresh child process (its time and peak RSS are its own):
1. the first load after the copy: the store builds its typed record tables from every record (paid
   once, when a store first meets this version, like a migration);
2. a day's sync: 1% of the records re-written (the next load re-reads only those);
3. `rhub score` as scheduled: load, features, health, churn model, reasons, lifecycle, playbooks, save.
Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from retention_hub.config import load_config  # noqa: E402
from retention_hub.sync import identity  # noqa: E402
from retention_hub.sync.store import Store, utcnow  # noqa: E402

REFS = ("account_id", "customer_id", "account_ref", "requester_id", "ticket_id")  # what frames attribute by
SUFFIXED = {  # table -> the columns that carry an id
    "records": ("source_id",),
    "identity_links": ("source_id", "unified_id"),
    "identity_people": ("source_id", "unified_id"),
    "identity_accounts": ("unified_id", "parent_unified_id", "redirect_to"),
}


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def replicate(db: Path, copies: int, usage_days: int, now: pd.Timestamp) -> None:
    """Copies 1..copies-1 of every row beside the original, ids suffixed "~k"."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    seq = conn.execute("SELECT value FROM sequences WHERE name = 'records'").fetchone()[0] + 1
    payload = "payload"
    for key in REFS:  # suffix each reference the payload has (text, whatever its type was)
        payload = (f"CASE WHEN json_extract({payload}, '$.{key}') IS NULL THEN {payload} ELSE "
                   f"json_set({payload}, '$.{key}', json_extract({payload}, '$.{key}') || :suffix) END")
    first_day = (now - pd.Timedelta(days=usage_days)).date().isoformat()
    for k in range(1, copies):
        params = {"suffix": f"~{k}"}
        for table, suffixed in SUFFIXED.items():
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            select = []
            for c in columns:
                if c in suffixed:
                    select.append(f"CASE WHEN {c} IS NULL THEN NULL ELSE {c} || :suffix END")
                elif table == "records" and c == "payload":
                    select.append(payload)
                elif table == "records" and c == "write_seq":
                    select.append(str(seq))
                else:
                    select.append(c)
            where = f"{suffixed[0]} NOT LIKE '%~%'"  # the original rows only
            if table == "records":
                where += " AND kind != 'user'"  # the CSMs (owners) are the same team for every copy
            conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(select)} FROM {table} "
                         f"WHERE {where}", params)
        columns = [row[1] for row in conn.execute("PRAGMA table_info(usage_days)")]
        select = [("account_ref || :suffix" if c == "account_ref" else c) for c in columns]
        conn.execute(f"INSERT INTO usage_days ({', '.join(columns)}) SELECT {', '.join(select)} FROM usage_days "
                     "WHERE day > :first AND account_ref NOT LIKE '%~%'", {**params, "first": first_day})
        conn.commit()
        print(f"  copy {k} of {copies - 1} written", flush=True)
    conn.execute("UPDATE sequences SET value = :seq WHERE name = 'records'", {"seq": seq})
    conn.execute("UPDATE usage_packed SET n_rows = NULL, metric_names = NULL, codes = NULL, metric_values = NULL "
                 "WHERE day > :first", {"first": first_day})
    conn.execute("DELETE FROM record_frames")  # built again from every record by the first load
    conn.commit()
    conn.close()


def rewrite_one_percent(db: Path) -> int:
    """What a day's sync does to the record tables: 1% of the records written again."""
    conn = sqlite3.connect(db)
    seq = conn.execute("SELECT value FROM sequences WHERE name = 'records'").fetchone()[0] + 1
    n = conn.execute("UPDATE records SET write_seq = :seq WHERE abs(random()) % 100 = 0", {"seq": seq}).rowcount
    conn.execute("UPDATE sequences SET value = :seq WHERE name = 'records'", {"seq": seq})
    conn.commit()
    conn.close()
    return n


def child(step: str, config_path: str, url: str, as_of: str) -> None:
    from retention_hub.scoring.run import USAGE_DAYS_FOR_SCORING, load, score

    config = load_config(config_path)
    t0 = time.perf_counter()
    with Store(url) as store:
        if step == "load":
            frames = load(store, config, pd.Timestamp(as_of) - pd.Timedelta(days=USAGE_DAYS_FOR_SCORING))
            out = {"accounts": len(frames.accounts), "tickets": len(frames.tickets), "usage_rows": len(frames.usage)}
        else:
            done = score(store, config, as_of)
            out = {"accounts": len(done.result.scores), "parts": done.seconds,
                   "tasks": done.result.tasks["status"].value_counts().to_dict()}
    print(json.dumps({**out, "seconds": time.perf_counter() - t0, "peak_rss_gb": peak_gb()}))


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, required=False, help="a world kept by scoring_bench.py --workdir")
    parser.add_argument("--copies", type=int, default=26)
    parser.add_argument("--usage-days", type=int, default=200, help="days of usage copied (scoring reads 200)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    if args.workdir is None or not (args.workdir / "synced_at.txt").exists():
        sys.exit("--workdir must name a world kept by bench/scoring_bench.py --workdir DIR")
    now = pd.Timestamp((args.workdir / "synced_at.txt").read_text().strip())
    config_path = str(args.workdir / "sandbox" / "hub.yaml")
    config = load_config(config_path)
    source, scaled = args.workdir / "hub.db", args.workdir / "scaled.db"
    url = f"sqlite:///{scaled.resolve()}"
    with Store(f"sqlite:///{source.resolve()}") as store:  # the original: unified and modelled by scoring_bench
        if store.latest_model() is None:
            sys.exit(f"no churn model in {source}: run bench/scoring_bench.py --workdir {args.workdir} first")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{scaled}{suffix}").unlink(missing_ok=True)
    shutil.copy(source, scaled)
    t0 = time.perf_counter()
    replicate(scaled, args.copies, args.usage_days, now)
    with Store(url) as store:
        marker = identity.current_marker(store, config.identity)
        store.write_identity(upserts={"identity_state": [{"name": "marker", "value": marker, "updated_at": utcnow()}]})
        print(f"{args.copies} copies of {source} in {time.perf_counter() - t0:.0f} s: "
              f"{store.count_records():,} records, {len(identity.unified_accounts(store)):,} unified accounts")
        t0 = time.perf_counter()
        packed = store.pack_usage()
        print(f"usage packed (a sync's last step): {packed:,} days in {time.perf_counter() - t0:.0f} s")
    first = run_child("load", config_path, url, now.isoformat())
    print(f"first load (builds the typed record tables): {first['seconds']:.1f} s, peak RSS {first['peak_rss_gb']:.2f} GB;"
          f" {first['accounts']:,} accounts, {first['tickets']:,} tickets, {first['usage_rows']:,} usage rows")
    print(f"a day's sync: {rewrite_one_percent(scaled):,} records re-written")
    done = run_child("score", config_path, url, now.isoformat())
    print(f"score run: {done['accounts']:,} accounts in {done['seconds']:.1f} s "
          f"({', '.join(f'{k} {v:.1f} s' for k, v in done['parts'].items())}), peak RSS {done['peak_rss_gb']:.2f} GB; "
          f"tasks {done['tasks']}")


if __name__ == "__main__":
    main()
