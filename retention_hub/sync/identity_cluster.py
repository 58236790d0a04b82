"""Grouping records into customers, and giving each group a unified id that stays put.

`Grouping` is a union-find over record positions that refuses a union which would break a
constraint: a "cannot" pair (a "not same" override, a record and its parent) or a label clash (two
companies named on one shared domain, two different pinned unified ids). `assign_ids` maps the new
groups onto the ids the records had before, so that a repeated run or a new record joining a
customer changes no id; merges keep the older id and splits keep the id for the larger part, each
recorded as an event.
"""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd


class Grouping:
    """Union-find with constraints: `union` answers "joined", "same" or "blocked"."""

    def __init__(self, n: int, labels: Mapping[int, Mapping[str, Any]] | None = None,
                 cannot: Iterable[tuple[int, int]] = ()) -> None:
        self.parent = list(range(n))
        self.size = [1] * n
        self.labels: dict[int, dict[str, Any]] = {p: dict(v) for p, v in (labels or {}).items() if v}
        self.forbid: dict[int, set[int]] = {}  # root -> positions its group may not hold
        self.held: dict[int, set[int]] = {}  # root -> its members named in some cannot pair
        for a, b in cannot:
            if a != b:
                self.forbid.setdefault(a, set()).add(b)
                self.forbid.setdefault(b, set()).add(a)
                self.held[a] = {a}
                self.held[b] = {b}

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def allowed(self, ra: int, rb: int) -> bool:
        """Whether the groups rooted at ra and rb may become one."""
        la, lb = self.labels.get(ra), self.labels.get(rb)
        if la and lb:
            small, big = (la, lb) if len(la) <= len(lb) else (lb, la)
            for key, value in small.items():
                if key in big and big[key] != value:
                    return False
        fa, fb = self.forbid.get(ra), self.forbid.get(rb)
        ha, hb = self.held.get(ra), self.held.get(rb)
        return not (fa and hb and not fa.isdisjoint(hb)) and not (fb and ha and not fb.isdisjoint(ha))

    def union(self, a: int, b: int) -> str:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return "same"
        labels, forbid = self.labels, self.forbid
        # most groups carry no constraint at all: check only when one could bite
        if ((ra in labels and rb in labels) or ra in forbid or rb in forbid) and not self.allowed(ra, rb):
            return "blocked"
        size = self.size
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        size[ra] += size[rb]
        for store in (labels, forbid, self.held):
            if rb in store:
                moved = store.pop(rb)
                mine = store.get(ra)
                if mine is None:
                    store[ra] = moved
                else:
                    mine.update(moved)
        return "joined"

    def roots(self) -> list[int]:
        return [self.find(x) for x in range(len(self.parent))]


# -- stable ids ----------------------------------------------------------------------------------

@dataclass
class IdPlan:
    """The unified id of every group and what happened to the ids known before."""

    ids: dict[int, str]  # group (root position) -> unified id
    events: list[dict[str, Any]] = field(default_factory=list)  # {event, unified_id, other_id, detail}
    merged: dict[str, str] = field(default_factory=dict)  # old id -> the id it now points to
    retired: list[str] = field(default_factory=list)


def new_id(seed: str, taken: set[str]) -> str:
    """An opaque id from a hash of the first member's key; never one used before."""
    for n in range(1000):
        digest = hashlib.sha1(f"{seed}#{n}".encode() if n else seed.encode()).hexdigest()
        uid = f"u_{digest[:12]}"
        if uid not in taken:
            taken.add(uid)
            return uid
    raise RuntimeError("could not mint a fresh unified id")  # pragma: no cover - 1000 sha1 collisions


def assign_ids(roots: np.ndarray, keys: Sequence[str], previous: Sequence[str | None], known: Iterable[str],
               created: Mapping[str, datetime], pins: Mapping[int, str], taken: set[str]) -> IdPlan:
    """Ids for the groups (`roots[pos]` = group of each record) given each record's previous id.

    An old id goes to the group holding most of its former records (a split keeps it for the larger
    part); a group that inherits several old ids keeps the oldest and the others merge into it; a
    pinned group (an override naming its unified id) takes that id. Everything else gets a new id.
    `known` is every id records had before (including records now gone); ids left with no record
    are retired. A group whose records all had one id that no other group holds keeps it untouched
    (the usual case, done in bulk).
    """
    prev = pd.Series(previous, dtype=object)
    has = prev.notna().to_numpy()
    pairs = pd.DataFrame({"root": roots[has], "prev": prev[has].to_numpy()}).drop_duplicates()
    prevs_per_root = pairs.groupby("root")["prev"].agg(["size", "first"])
    roots_per_prev = pairs.groupby("prev")["root"].size()
    pinned_ids = set(pins.values())
    one = prevs_per_root[prevs_per_root["size"] == 1]
    simple = one[(roots_per_prev.reindex(one["first"]).to_numpy() == 1) & ~one["first"].isin(pinned_ids).to_numpy()
                 & ~one.index.isin(list(pins))]
    plan = IdPlan(ids=dict(zip(simple.index.tolist(), simple["first"].tolist())))
    # each group's records, by position (in key order), for the groups not simply kept
    order = np.argsort(roots, kind="mergesort")
    r = roots[order]
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]]) if len(r) else np.zeros(0, dtype=np.int64)
    bounds = np.r_[starts, len(r)]
    had_any = set(prevs_per_root.index.tolist())
    groups: dict[int, list[int]] = {}
    fresh: list[tuple[str, int, int]] = []  # (first key, root, size) of groups no record was in before
    for root, start, end in zip(r[starts].tolist(), bounds[:-1].tolist(), bounds[1:].tolist()):
        if root in plan.ids:
            continue
        if root not in had_any and root not in pins:
            fresh.append((keys[int(order[start])], root, end - start))
        else:
            groups[root] = order[start:end].tolist()
    members_prev = {keys[p]: previous[p] for members in groups.values() for p in members
                    if isinstance(previous[p], str)}
    rest = _assign_groups(groups, keys, members_prev, created, pins, taken)
    plan.ids.update(rest.ids)
    plan.events, plan.merged = rest.events, rest.merged
    for first_key, root, size in sorted(fresh):
        plan.ids[root] = new_id(first_key, taken)
        plan.events.append({"event": "new", "unified_id": plan.ids[root], "other_id": None,
                            "detail": {"records": size}})
    used = set(plan.ids.values())
    plan.retired = sorted(set(known) - used - set(plan.merged))
    plan.events += [{"event": "retire", "unified_id": old, "other_id": None, "detail": {"reason": "no records left"}}
                    for old in plan.retired]
    return plan


def _assign_groups(groups: Mapping[int, Sequence[int]], keys: Sequence[str], previous: Mapping[str, str],
                   created: Mapping[str, datetime], pins: Mapping[int, str], taken: set[str]) -> IdPlan:
    """`assign_ids` for the groups that are not simply kept: new, merged, split or pinned."""
    counts: dict[int, Counter[str]] = {}
    spread: dict[str, list[tuple[int, int]]] = defaultdict(list)  # old id -> [(group, members it has)]
    for root, members in groups.items():
        c = Counter(previous[keys[m]] for m in members if keys[m] in previous)
        if c:
            counts[root] = c
            for uid, n in c.items():
                spread[uid].append((root, n))
    # the heir of an old id: most of its records; ties to the group whose first record sorts first
    heir = {uid: min(parts, key=lambda p: (-p[1], keys[groups[p[0]][0]]))[0] for uid, parts in spread.items()}
    plan = IdPlan(ids={})
    used: set[str] = set()
    for root, uid in sorted(pins.items(), key=lambda item: keys[groups[item[0]][0]]):
        if uid not in used:
            plan.ids[root] = uid
            used.add(uid)
            taken.add(uid)

    def age(uid: str) -> tuple[float, str]:
        when = created.get(uid)
        return (when.timestamp() if when else float("inf"), uid)

    ordered = sorted(groups, key=lambda r: keys[groups[r][0]])
    for root in ordered:
        if root in plan.ids:
            continue
        inherited = sorted((u for u in counts.get(root, ()) if heir[u] == root and u not in used), key=age)
        if inherited:
            plan.ids[root] = inherited[0]
            used.add(inherited[0])
    for root in ordered:
        members = groups[root]
        if root not in plan.ids:
            plan.ids[root] = new_id(keys[members[0]], taken)
            if root not in counts:
                plan.events.append({"event": "new", "unified_id": plan.ids[root], "other_id": None,
                                    "detail": {"records": len(members)}})
        uid = plan.ids[root]
        for old in sorted(counts.get(root, ())):
            if old != uid and old not in used and heir[old] == root:
                # every other part of `old` is smaller: it ends here, merged into this group's id
                plan.merged[old] = uid
                plan.events.append({"event": "merge", "unified_id": uid, "other_id": old,
                                    "detail": {"records_moved": counts[root][old]}})
    for old, parts in sorted(spread.items()):
        if len(parts) > 1:
            survivor = plan.ids[heir[old]] if old in used else plan.merged.get(old)
            for root, n in sorted(parts, key=lambda p: keys[groups[p[0]][0]]):
                if root != heir[old]:
                    plan.events.append({"event": "split", "unified_id": plan.ids[root], "other_id": old,
                                        "detail": {"records_moved": n, "kept_by": survivor}})
    return plan
