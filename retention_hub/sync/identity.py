"""Identity unification: one unified account per real customer across every source, with stable ids.

`unify(store, config.identity)` reads the account-level records (kind "account" of every source:
Salesforce accounts, HubSpot companies, Zendesk organizations, Stripe customers, warehouse
workspaces) and the contacts, finds the evidence that records are the same customer
(`identity_match`), groups them in order of trust under constraints (`identity_cluster`), keeps every
unified id that still describes the same customer, and writes only what changed to the identity
tables (schema in `store.py`). Links at or above `auto_accept` merge; those at or above
`review_threshold` go to the review queue, unmerged; overrides (`identity_overrides`) always win.
Deleted records are not matched, and their links are dropped (an "unlink" event).

Later stages read the result with `account_map` (any (source, account id) -> unified id: attribute
tickets, subscriptions, invoices, renewals, usage and activities by their account reference),
`people_map` / `email_map` (contacts and requesters), `unified_accounts` (with parent ids for
roll-ups) and `redirects` (ids merged away -> the id that replaced them).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config.models import Identity
from .identity_cluster import Grouping, assign_ids
from .identity_fuzzy import fuzzy_edges
from .identity_match import CONFIDENCE, Evidence, collect_evidence
from .identity_normalize import (ACCOUNT_FIELDS, CONTACT_FIELDS, account_frame, contact_accounts, contact_frame,
                                 domain_frame, free_mail_domains, record_positions)
from .identity_overrides import Overrides, load_overrides
from .identity_results import (best_links, conflict_rows, mark_review, people_links, review_rows, source_pairs,
                               unified_rows)
from .identity_write import LINK_COLUMNS, write_result
from .store import Store, utcnow

ALGORITHM = 1  # bump when matching changes: a stored marker from another version forces a new run


@dataclass
class IdentityResult:
    """What a unification found and did (`summary()` is what the CLI prints)."""

    records: int = 0
    unified: int = 0
    unmatched: int = 0  # records linked to nothing
    review: int = 0  # candidate pairs queued for review
    conflicts: int = 0
    conflict_kinds: dict[str, int] = field(default_factory=dict)
    matched_pairs: dict[str, int] = field(default_factory=dict)  # "salesforce+stripe": unified accounts holding both
    methods: dict[str, int] = field(default_factory=dict)  # link method -> records
    people: int = 0
    people_linked: int = 0
    events: dict[str, int] = field(default_factory=dict)
    written: int = 0
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)  # wall seconds per stage
    ran: bool = True  # False when nothing had changed since the last unification

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def current_marker(store: Store, config: Identity, overrides: Overrides | None = None) -> dict[str, Any]:
    """What a unification saw: records, overrides and settings. A different one means run again."""
    overrides = overrides or load_overrides(store, config.overrides_file)
    return {"records": store.records_marker(("account", "contact")), "overrides": overrides.fingerprint,
            "settings": [config.auto_accept, config.review_threshold, sorted(config.free_mail_domains)],
            "algorithm": ALGORITHM}


def ensure_unified(store: Store, config: Identity | None = None) -> IdentityResult:
    """Unify only when the records, the overrides or the settings changed since the last unification."""
    config = config or Identity()
    overrides = load_overrides(store, config.overrides_file)
    if store.identity_state("marker") == current_marker(store, config, overrides):
        last = store.identity_state("summary") or {}
        known = {f.name for f in fields(IdentityResult)}
        return IdentityResult(**{**{k: v for k, v in last.items() if k in known},
                                 "ran": False, "written": 0, "seconds": 0.0})
    return unify(store, config, overrides=overrides)


def unify(store: Store, config: Identity | None = None, now: datetime | None = None,
          overrides: Overrides | None = None) -> IdentityResult:
    """Unify every account-level record in the store and write what changed."""
    started = time.perf_counter()
    config = config or Identity()
    now = now or utcnow()
    clock = _Clock()
    overrides = overrides or load_overrides(store, config.overrides_file)
    marker = current_marker(store, config, overrides)  # taken first: a sync meanwhile means a new run later
    accounts = account_frame(store.iter_fields("account", ACCOUNT_FIELDS))
    clock.lap("read accounts")
    contacts = contact_frame(store.iter_fields("contact", CONTACT_FIELDS))
    clock.lap("read contacts")
    free = free_mail_domains(config.free_mail_domains)
    position = record_positions(accounts)
    contact_pos = contact_accounts(contacts, position)
    domains = domain_frame(accounts, contacts, contact_pos, free)
    parent_pos = parent_positions(accounts, position)
    clock.lap("domains")

    evidence = collect_evidence(accounts, domains, contacts, contact_pos, position, parent_pos, free)
    old_links = [row for batch in store.iter_identity("identity_links", LINK_COLUMNS) for row in batch]
    had = pd.Series([row[3] for row in old_links], index=[f"{row[0]}|{row[1]}|{row[2]}" for row in old_links],
                    dtype=object)
    previous = store.read_identity("identity_accounts", ["unified_id", "status", "redirect_to", "created_at"])
    pins = apply_overrides(position, overrides, evidence, had, {u: r for u, _, r, _ in previous if r})
    edges = evidence.frame()
    if pins:  # where a pinned record goes is the admin's decision alone: its other evidence is set aside
        pinned_pos = np.array(sorted(pins))
        other = edges["method"].to_numpy() != "override"
        edges = edges[~(other & (np.isin(edges["a"], pinned_pos) | np.isin(edges["b"], pinned_pos)))]
        edges = edges.reset_index(drop=True)
    clock.lap("evidence")
    grouping, edges, blocked = group(accounts, evidence, edges, domains, parent_pos, config.auto_accept, clock)

    keys = accounts["key"].tolist()
    plan = assign_ids(accounts["root"].to_numpy(), keys,
                      [u if isinstance(u, str) else None for u in had.reindex(keys).tolist()], set(had.tolist()),
                      {u: c for u, _, _, c in previous},
                      {int(accounts["root"].iat[pos]): uid for pos, uid in pins.items()}, {u for u, *_ in previous})
    del had
    accounts["unified_id"] = accounts["root"].map(plan.ids)
    clock.lap("stable ids")

    best = best_links(accounts, edges, config.auto_accept, set(pins))
    review = review_rows(accounts, edges, grouping, config.review_threshold, config.auto_accept)
    mark_review(best, position, review)
    decided = {p for pair in overrides_cannot(position, overrides) for p in pair} | set(pins)
    a, b = edges["a"].to_numpy(), edges["b"].to_numpy()
    blocked = [i for i in blocked if a[i] not in decided and b[i] not in decided]  # the admin already knows
    conflicts = conflict_rows(accounts, evidence.conflicts, edges, blocked, domains)
    unified = unified_rows(accounts, domains, parent_pos)
    root_uid = pd.Series(plan.ids)
    unified.insert(0, "unified_id", root_uid.reindex(unified.index).to_numpy())
    unified["parent_unified_id"] = root_uid.reindex(unified.pop("parent_root")).to_numpy()
    links = pd.DataFrame({"source": accounts["source"], "kind": np.full(len(accounts), "account", dtype=object),
                          "source_id": accounts["source_id"], "unified_id": accounts["unified_id"].astype(object),
                          "method": best["method"], "confidence": best["confidence"].round(4),
                          "status": best["status"]})
    clock.lap("results")
    people = people_links(accounts, contacts, contact_pos, domains, free)
    clock.lap("people")
    result = IdentityResult(
        records=len(accounts), unified=len(unified), unmatched=int((unified["members"] == 1).sum()),
        review=len(review), conflicts=len(conflicts),
        conflict_kinds=dict(sorted(Counter(k for k, _ in conflicts).items())), matched_pairs=source_pairs(accounts),
        methods=dict(sorted(Counter(best["method"].tolist()).items())), people=len(people),
        people_linked=int(people["unified_id"].notna().sum()))

    def state(events: list[dict[str, Any]]) -> dict[str, Any]:
        result.events = dict(sorted(Counter(e["event"] for e in events).items()))
        keep = {k: v for k, v in result.summary().items() if k not in ("written", "seconds", "ran", "stages")}
        return {"marker": marker, "summary": keep}

    result.written = write_result(store, now, links, old_links, people, unified, review, conflicts, plan, previous,
                                  state)
    clock.lap("write")
    result.stages = clock.stages
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def group(accounts: pd.DataFrame, evidence: Evidence, edges: pd.DataFrame, domains: pd.DataFrame,
          parent_pos: np.ndarray, accept: float, clock: _Clock) -> tuple[Grouping, pd.DataFrame, list[int]]:
    """Join the accepted edges best first, then give the records still alone a fuzzy look at the
    names in their blocks. Sets accounts["root"]; returns the grouping, all edges (fuzzy ones
    appended) and the rows of accepted edges a constraint refused."""
    grouping = Grouping(len(accounts), evidence.labels, evidence.cannot)
    blocked = join(grouping, edges, accept)
    clock.lap("grouping")
    roots = np.array(grouping.roots(), dtype=np.int64)
    alone = np.flatnonzero(np.bincount(roots, minlength=len(accounts))[roots] == 1) if len(roots) else roots
    parent_root = np.where(parent_pos >= 0, roots[np.maximum(parent_pos, 0)], -1) if len(roots) else roots
    fuzzy = fuzzy_edges(accounts, alone.tolist(), roots, domains, parent_root).frame()
    blocked += [len(edges) + i for i in join(grouping, fuzzy, accept)]
    accounts["root"] = np.array(grouping.roots(), dtype=np.int64)
    clock.lap("fuzzy names")
    return grouping, pd.concat([edges, fuzzy], ignore_index=True), blocked


class _Clock:
    """Wall seconds per stage, for the benchmark and the --json summary."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.stages: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name] = round(now - self.last, 3)
        self.last = now


def follow(redirect: dict[str, str], uid: str) -> str:
    """The live id a merged id now stands for (itself when it was not merged)."""
    seen = {uid}
    while uid in redirect and redirect[uid] not in seen:
        uid = redirect[uid]
        seen.add(uid)
    return uid


def apply_overrides(position: dict[str, int], overrides: Overrides, evidence: Evidence, prev_uid: pd.Series,
                    redirect: dict[str, str]) -> dict[int, str]:
    """Overrides as evidence: "same" edges at confidence 1, "not same" and different pins as constraints.
    A record pinned to a unified id joins the records that id holds (a merged id: its survivor).
    Overrides naming records not in the store are reported as conflicts. Returns {position: pinned id}."""

    def find(key: tuple[str, str], what: str) -> int | None:
        pos = position.get(f"{key[0]}|account|{key[1]}")
        if pos is None:
            evidence.conflicts.append(("override_unknown_record", f"{key[0]}:{key[1]}", {"override": what}))
        return pos

    for left, right in overrides.same:
        a, b = find(left, "same"), find(right, "same")
        if a is not None and b is not None:
            evidence.add(a, b, CONFIDENCE["override"], "override", "override: same customer")
    for left, right in overrides.not_same:
        a, b = find(left, "not_same"), find(right, "not_same")
        if a is not None and b is not None:
            evidence.cannot.append((a, b))
    for pair in {frozenset(p) for p in overrides.same} & {frozenset(p) for p in overrides.not_same}:
        left, right = sorted(pair)
        evidence.conflicts.append(("override_contradiction", f"{left[0]}:{left[1]} ~ {right[0]}:{right[1]}",
                                   {"same": True, "not_same": True, "applied": "not_same"}))
    pins: dict[int, str] = {}
    for key, uid in sorted(overrides.pins.items()):
        pos = find(key, f"pin to {uid}")
        if pos is not None:
            pins[pos] = follow(redirect, uid)
    holders: dict[str, int] = {}  # pinned id -> a record it held before (not pinned elsewhere)
    wanted = set(pins.values())
    for key, uid in prev_uid.items():
        pos = position.get(key)
        uid = follow(redirect, uid)
        if uid in wanted and pos is not None and uid not in holders and pins.get(pos, uid) == uid:
            holders[uid] = pos
    first_of: dict[str, int] = {}
    for pos, uid in sorted(pins.items()):
        evidence.labels.setdefault(pos, {})["pin"] = uid
        anchor = first_of.setdefault(uid, holders.get(uid, pos))
        if anchor != pos:
            evidence.add(pos, anchor, CONFIDENCE["override"], "override", f"override: pinned to {uid}")
    return pins


def overrides_cannot(position: dict[str, int], overrides: Overrides) -> list[tuple[int, int]]:
    """The "not same" overrides as position pairs (records not in the store left out)."""
    pairs = [(position.get(f"{l[0]}|account|{l[1]}"), position.get(f"{r[0]}|account|{r[1]}"))
             for l, r in overrides.not_same]
    return [(a, b) for a, b in pairs if a is not None and b is not None]


def join(grouping: Grouping, edges: pd.DataFrame, accept: float) -> list[int]:
    """Union the accepted edges best first; returns the row numbers of edges a constraint refused."""
    blocked = []
    sure = np.flatnonzero(edges["confidence"].to_numpy() >= accept)
    union = grouping.union
    for row, a, b in zip(sure.tolist(), edges["a"].to_numpy()[sure].tolist(), edges["b"].to_numpy()[sure].tolist()):
        if union(a, b) == "blocked":
            blocked.append(row)
    return blocked


def parent_positions(accounts: pd.DataFrame, position: dict[str, int]) -> np.ndarray:
    """Position of each record's parent record (-1 when it has none, or it is not loaded)."""
    keys = accounts["source"] + "|account|" + accounts["parent_id"].fillna("")
    return keys.map(position).fillna(-1).to_numpy(dtype=np.int64)


# -- reading the result (for later stages) ---------------------------------------------------------

def account_map(store: Store) -> dict[tuple[str, str], str]:
    """(source, source_id) of every account-level record -> its unified id. Tickets, subscriptions,
    invoices, renewals, usage and activities carry such an account reference (account_id,
    customer_id, account_ref)."""
    return {(s, i): u for s, i, u in store.read_identity("identity_links", ["source", "source_id", "unified_id"])}


def people_map(store: Store) -> dict[tuple[str, str], str]:
    """(source, source_id) of every linked contact (Zendesk requesters included) -> unified id."""
    return {(s, i): u for s, i, u in store.read_identity("identity_people", ["source", "source_id", "unified_id"])
            if u is not None}


def map_frame(store: Store, people: bool = False) -> pd.DataFrame:
    """`account_map` (or `people_map`) as a frame: source, ref (the source_id), unified_id; the fast
    form for joining whole tables."""
    table = "identity_people" if people else "identity_links"
    rows = [row for batch in store.iter_identity(table, ["source", "source_id", "unified_id"]) for row in batch]
    frame = pd.DataFrame(rows, columns=["source", "ref", "unified_id"])
    return frame[frame["unified_id"].notna()].reset_index(drop=True) if people else frame


def live_parents(store: Store) -> pd.DataFrame:
    """unified_id and parent_unified_id of every live unified account."""
    columns = ["unified_id", "parent_unified_id", "status"]
    rows = [row for batch in store.iter_identity("identity_accounts", columns) for row in batch]
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    return frame[frame["status"] == "live"].drop(columns="status").reset_index(drop=True)


def email_map(store: Store) -> dict[str, str]:
    """Lower-case e-mail -> unified id, for e-mails whose contacts all belong to one unified account
    (attributes tickets that carry only a requester e-mail)."""
    found: dict[str, set[str]] = {}
    for email, uid in store.read_identity("identity_people", ["email", "unified_id"]):
        if email and uid:
            found.setdefault(email, set()).add(uid)
    return {e: next(iter(u)) for e, u in found.items() if len(u) == 1}


def redirects(store: Store) -> dict[str, str]:
    """Unified ids merged away -> the live id that now stands for them (chains followed)."""
    direct = {u: r for u, r in store.read_identity("identity_accounts", ["unified_id", "redirect_to"]) if r}
    return {u: follow(direct, u) for u in direct}


def unified_accounts(store: Store, live_only: bool = True) -> pd.DataFrame:
    """The unified accounts (unified_id, name, domain, country, parent_unified_id, sources, members,
    status, redirect_to, created_at, updated_at)."""
    columns = ["unified_id", "name", "domain", "country", "parent_unified_id", "sources", "members", "status",
               "redirect_to", "created_at", "updated_at"]
    frame = pd.DataFrame(store.read_identity("identity_accounts", columns), columns=columns, dtype=object)
    frame["members"] = frame["members"].astype(np.int64)
    frame = frame.sort_values("unified_id", ignore_index=True)
    return frame[frame["status"] == "live"].reset_index(drop=True) if live_only else frame


def export_links(store: Store, path: Path) -> int:
    """Write links.csv: unified_id, source, source_id, method, confidence (one row per account-level record)."""
    frame = links_frame(store)[["unified_id", "source", "source_id", "method", "confidence"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, float_format="%.4f")
    return len(frame)


def links_frame(store: Store) -> pd.DataFrame:
    """One row per account-level record: unified_id, source, source_id, method, confidence, status."""
    columns = ["unified_id", "source", "source_id", "method", "confidence", "status"]
    frame = pd.DataFrame(store.read_identity("identity_links", columns), columns=columns, dtype=object)
    frame["confidence"] = frame["confidence"].astype(float)
    return frame.sort_values(["unified_id", "source", "source_id"], ignore_index=True)
