"""Manual identity decisions: the overrides file the admin edits, and review decisions imported back.

The overrides file (`identity.overrides_file`) is a CSV with a header; each row either pins a record
to a unified id or relates two records (lines whose source starts with "#" are skipped):

    source,source_id,unified_id,relation,other_source,other_source_id
    stripe,cus_123,u_1a2b3c4d5e6f,,,
    zendesk,360000000123,,same,salesforce,0015g00000AbC
    hubspot,1000000456,,not_same,salesforce,0015g00000XyZ

The first row puts the Stripe customer in unified account u_1a2b3c4d5e6f (it joins the records that
id holds, whatever its other evidence says; an id no account has yet names a new one); the second
says two records are one customer, the third that two never are. A file with only the columns
source,source_id,unified_id is fine too. Records pinned to different ids are never one customer.
Review decisions imported with `rhub identity review --import` are kept in the store as same /
not_same pairs; when the file and a stored decision disagree, the file wins. Overrides always win
over every other evidence.
"""
from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import ConfigError
from .store import Store, utcnow

Key = tuple[str, str]  # (source, source_id) of an account-level record
RELATIONS = {"same": "same", "same as": "same", "same_as": "same", "merge": "same",
             "not_same": "not_same", "not same": "not_same", "not same as": "not_same", "not_same_as": "not_same",
             "different": "not_same", "split": "not_same"}
DECISIONS = {"accept": "same", "accepted": "same", "yes": "same", "y": "same", "same": "same", "merge": "same",
             "reject": "not_same", "rejected": "not_same", "no": "not_same", "n": "not_same",
             "not_same": "not_same", "different": "not_same"}
REVIEW_COLUMNS = ["left_source", "left_id", "left_name", "left_unified_id", "right_source", "right_id",
                  "right_name", "right_unified_id", "method", "confidence", "reason", "decision"]


@dataclass
class Overrides:
    same: list[tuple[Key, Key]] = field(default_factory=list)
    not_same: list[tuple[Key, Key]] = field(default_factory=list)
    pins: dict[Key, str] = field(default_factory=dict)
    fingerprint: str = ""  # changes whenever the file or the stored decisions change


def read_overrides_file(path: Path | None) -> tuple[Overrides, str]:
    """The file's overrides and a hash of its bytes; a malformed row is a ConfigError naming its line."""
    out = Overrides()
    if path is None:
        return out, ""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(path, f"cannot read the overrides file: {exc}") from None
    problems: list[tuple[str, str]] = []
    reader = csv.DictReader(data.decode("utf-8-sig").splitlines())
    header = {h.strip() for h in reader.fieldnames or []}
    if not {"source", "source_id"} <= header or not ({"unified_id"} & header or {"relation"} & header):
        raise ConfigError(path, "the header must have source, source_id and unified_id and/or "
                                "relation, other_source, other_source_id")
    for line, row in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        if not any(row.values()) or row.get("source", "").startswith("#"):
            continue
        key = (row.get("source", "").lower(), row.get("source_id", ""))
        if not all(key):
            problems.append((f"line {line}", "source and source_id are required"))
            continue
        relation = row.get("relation", "").lower()
        if relation:
            other = (row.get("other_source", "").lower(), row.get("other_source_id", ""))
            if relation not in RELATIONS or not all(other):
                problems.append((f"line {line}", "relation must be same or not_same, with other_source and "
                                                 "other_source_id"))
                continue
            (out.same if RELATIONS[relation] == "same" else out.not_same).append((key, other))
        if row.get("unified_id"):
            out.pins[key] = row["unified_id"]
        elif not relation:
            problems.append((f"line {line}", "give a unified_id or a relation"))
    if problems:
        raise ConfigError(path, problems)
    return out, hashlib.sha1(data).hexdigest()


def load_overrides(store: Store, path: Path | None) -> Overrides:
    """The file's overrides plus the stored review decisions the file does not contradict."""
    out, digest = read_overrides_file(path)
    decided = store.read_identity("identity_decisions", ["left_source", "left_id", "right_source", "right_id",
                                                         "relation", "decided_at"])
    in_file = {frozenset(p) for p in out.same + out.not_same}
    for ls, li, rs, ri, relation, _ in sorted(decided):
        pair = ((ls, li), (rs, ri))
        if frozenset(pair) not in in_file:
            (out.same if relation == "same" else out.not_same).append(pair)
    stamp = max((str(d[-1]) for d in decided), default="")
    out.fingerprint = hashlib.sha1(f"{digest}|{len(decided)}|{stamp}".encode()).hexdigest()
    return out


# -- the review loop -------------------------------------------------------------------------------

def write_review_csv(store: Store, path: Path) -> int:
    """Export the review queue (best first) with an empty decision column; returns the row count."""
    rows = store.read_identity("identity_review", ["left_source", "left_id", "left_name", "left_unified_id",
                                                   "right_source", "right_id", "right_name", "right_unified_id",
                                                   "method", "confidence", "reason"])
    rows.sort(key=lambda r: (-r[9], r[0], r[1], r[4], r[5]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(REVIEW_COLUMNS)
        for r in rows:
            out.writerow([*r[:9], f"{r[9]:.3f}", r[10] or "", ""])
    return len(rows)


def read_decisions(path: Path) -> list[tuple[Key, Key, str]]:
    """(left, right, "same" | "not_same") for every row of a review CSV with a decision filled in."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(path, f"cannot read the decisions file: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    needed = {"left_source", "left_id", "right_source", "right_id", "decision"}
    missing = needed - {h.strip() for h in reader.fieldnames or []}
    if missing:
        raise ConfigError(path, f"missing columns: {', '.join(sorted(missing))} (export one with "
                                "rhub identity review --out)")
    out, problems = [], []
    for line, row in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        decision = row.get("decision", "").lower()
        if not decision:
            continue  # undecided: stays in the queue
        if decision not in DECISIONS:
            problems.append((f"line {line}", f"decision {decision!r}: use accept or reject"))
            continue
        left, right = (row["left_source"], row["left_id"]), (row["right_source"], row["right_id"])
        if not all(left + right):
            problems.append((f"line {line}", "left_source, left_id, right_source and right_id are required"))
            continue
        out.append((left, right, DECISIONS[decision]))
    if problems:
        raise ConfigError(path, problems)
    return out


def save_decisions(store: Store, decisions: Iterable[tuple[Key, Key, str]], origin: str = "review",
                   now: datetime | None = None) -> int:
    """Store decisions as overrides for the next unification (a later decision on a pair replaces)."""
    now = now or utcnow()
    rows: dict[tuple[Key, Key], dict[str, Any]] = {}
    for left, right, relation in decisions:
        left, right = sorted((left, right))
        rows[(left, right)] = {"left_source": left[0], "left_id": left[1], "right_source": right[0],
                               "right_id": right[1], "relation": relation, "origin": origin, "decided_at": now}
    store.write_identity(upserts={"identity_decisions": list(rows.values())})
    return len(rows)
