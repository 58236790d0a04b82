"""Writing a unification's result: a diff against the stored identity tables, so a repeated run over
an unchanged store writes (almost) nothing, all in one transaction.

The people table (the largest) is compared with its stored rows read in batches, so its previous
state is never held in memory whole.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

from .store import IDENTITY_TABLES, Store

LINK_COLUMNS = ["source", "kind", "source_id", "unified_id", "method", "confidence", "status"]
PEOPLE_COLUMNS = ["source", "kind", "source_id", "unified_id", "email", "method"]
ACCOUNT_COLUMNS = ["unified_id", "name", "domain", "country", "parent_unified_id", "sources", "members", "status",
                   "redirect_to"]
KEY = ["source", "kind", "source_id"]


def _with(frame: pd.DataFrame, **constants: Any) -> pd.DataFrame:
    """`frame` plus constant columns kept as plain objects (a datetime stays a datetime)."""
    out = frame.copy()
    for name, value in constants.items():
        out[name] = pd.Series([value] * len(out), index=out.index, dtype=object)
    return out


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise equality of two object or float arrays, missing equal to missing."""
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        a, b = np.asarray(a, dtype=float).round(4), np.asarray(b, dtype=float).round(4)
        return (a == b) | (np.isnan(a) & np.isnan(b))
    return (a == b) | (pd.isna(a) & pd.isna(b))


def diff_rows(new: pd.DataFrame, old_batches: Iterable[list[tuple]],
              columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple]]:
    """(added rows, changed rows, stored rows gone) of `new` against the stored rows, which arrive in
    batches of tuples in `columns` order (the key columns first).

    Both sides usually come in the same key order (the store's), so a batch is first compared with
    the new rows at the same place; only a batch that does not line up is looked up key by key."""
    width = len(KEY)
    new_key_cols = [new[c].to_numpy(dtype=object) for c in KEY]
    new_values = {c: new[c].to_numpy() for c in columns[width:]}
    seen = np.zeros(len(new), dtype=bool)
    changed = np.zeros(len(new), dtype=bool)
    gone: list[tuple] = []
    at_row = 0
    new_keys: pd.Index | None = None  # built only if a batch does not line up
    for batch in old_batches:
        if not batch:
            continue
        cols = [np.fromiter(map(itemgetter(i), batch), dtype=object, count=len(batch)) for i in range(len(columns))]
        n = len(batch)
        if at_row + n <= len(new) and all((cols[i] == new_key_cols[i][at_row:at_row + n]).all() for i in range(width)):
            found, rows = np.ones(n, dtype=bool), np.arange(at_row, at_row + n)
        else:
            if new_keys is None:
                new_keys = pd.Index([f"{a}|{b}|{c}" for a, b, c in zip(*new_key_cols)])
            at = new_keys.get_indexer([f"{a}|{b}|{c}" for a, b, c in zip(cols[0], cols[1], cols[2])])
            found = at >= 0
            rows = at[found]
        if len(rows):
            at_row = int(rows[-1]) + 1
        seen[rows] = True
        same = np.ones(len(rows), dtype=bool)
        for i, column in enumerate(columns[width:], start=width):
            same &= _same(new_values[column][rows], cols[i][found])
        changed[rows[~same]] = True
        if not found.all():
            gone.extend(batch[i] for i in np.flatnonzero(~found).tolist())
    return new[~seen], new[changed], gone


def write_result(store: Store, now: datetime, links: pd.DataFrame, old_links: list[tuple], people: pd.DataFrame,
                 unified: pd.DataFrame, review: list[dict[str, Any]], conflicts: dict[tuple[str, str], dict[str, Any]],
                 plan: Any, previous: list[tuple], state: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> int:
    """Write what changed, with the events and `state(events)` ({name: value} for identity_state);
    returns the rows written."""
    inserts: dict[str, Any] = {}
    upserts: dict[str, Any] = {}
    deletes: dict[str, Any] = {}
    events = [dict(e) for e in plan.events]

    added, changed, gone = diff_rows(links[LINK_COLUMNS], [old_links], LINK_COLUMNS)
    # new rows are upserted too: a unification running at the same time may have written them first
    upserts["identity_links"] = pd.concat([_with(added, updated_at=now), _with(changed, updated_at=now)])
    deletes["identity_links"] = [dict(zip(KEY, row[:3])) for row in gone]
    events += [{"event": "unlink", "unified_id": row[3], "other_id": None,
                "detail": {"record": f"{row[0]}:{row[2]}", "reason": "deleted or gone from the source"}}
               for row in gone]

    added, changed, gone = diff_rows(people[PEOPLE_COLUMNS], store.iter_identity("identity_people", PEOPLE_COLUMNS),
                                     PEOPLE_COLUMNS)
    upserts["identity_people"] = pd.concat([_with(added, updated_at=now), _with(changed, updated_at=now)])
    deletes["identity_people"] = [dict(zip(KEY, row[:3])) for row in gone]

    # unified accounts: live ones from this run; merged and retired ones keep their row, pointing on
    created = {row[0]: row[3] for row in previous}
    redirect_now = dict(plan.merged)
    for uid, _, target, _ in previous:  # ids merged earlier follow their survivor when it merges now
        if target and target in redirect_now:
            redirect_now[uid] = redirect_now[target]
    live = unified.assign(status="live", redirect_to=None)
    old = pd.DataFrame(store.read_identity("identity_accounts", ACCOUNT_COLUMNS), columns=ACCOUNT_COLUMNS)
    ending = [(u, "merged", t) for u, t in redirect_now.items()] + [(u, "retired", None) for u in plan.retired]
    if ending:
        retiring = pd.DataFrame(ending, columns=["unified_id", "status", "redirect_to"]).merge(
            old.drop(columns=["status", "redirect_to"]), on="unified_id")
        retiring["members"] = 0
        live = pd.concat([live[ACCOUNT_COLUMNS], retiring[ACCOUNT_COLUMNS]], ignore_index=True)
    live = live[ACCOUNT_COLUMNS].astype(object)
    live = live.where(live.notna(), None)
    live["members"] = live["members"].astype(np.int64)
    merged = live.merge(old, on="unified_id", how="left", suffixes=("", "__old"), indicator=True)
    is_new = (merged["_merge"] == "left_only").to_numpy()
    differs = np.zeros(len(merged), dtype=bool)
    for column in ACCOUNT_COLUMNS[1:]:
        a, b = merged[column], merged[column + "__old"]
        differs |= ~((a == b) | (a.isna() & b.isna())).to_numpy()
    changed = _with(live[~is_new & differs], updated_at=now)
    changed["created_at"] = pd.Series([created.get(u, now) for u in changed["unified_id"].tolist()],
                                      index=changed.index, dtype=object)
    upserts["identity_accounts"] = pd.concat([_with(live[is_new], created_at=now, updated_at=now), changed])

    old_review = {r[:4]: r for r in store.read_identity("identity_review")}
    columns = [c.name for c in IDENTITY_TABLES["identity_review"].columns]
    keep = []
    for row in review:
        key = (row["left_source"], row["left_id"], row["right_source"], row["right_id"])
        before = old_review.pop(key, None)
        full = {**row, "created_at": before[columns.index("created_at")] if before else now}
        if before is None or any(_differs(full[c], before[i]) for i, c in enumerate(columns) if c != "created_at"):
            keep.append(full)
    upserts["identity_review"] = keep
    deletes["identity_review"] = [dict(zip(("left_source", "left_id", "right_source", "right_id"), k))
                                  for k in old_review]

    old_conflicts = {(k, s): (d, first) for k, s, d, first in
                     store.read_identity("identity_conflicts", ["kind", "subject", "detail", "first_seen_at"])}
    current = {(k, s[:512]): d for (k, s), d in conflicts.items()}
    upserts["identity_conflicts"] = [
        {"kind": k, "subject": s, "detail": d, "first_seen_at": old_conflicts.get((k, s), (None, now))[1],
         "updated_at": now} for (k, s), d in current.items() if old_conflicts.get((k, s), (None,))[0] != d]
    deletes["identity_conflicts"] = [{"kind": k, "subject": s} for k, s in old_conflicts if (k, s) not in current]

    inserts["identity_events"] = [{**e, "at": now} for e in events]
    saved = state(events)
    upserts["identity_state"] = [{"name": name, "value": value, "updated_at": now} for name, value in saved.items()]
    return store.write_identity(inserts=inserts, upserts=upserts, deletes=deletes) - len(saved)


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is None or b is None or round(float(a), 4) != round(float(b), 4)
    return a != b
