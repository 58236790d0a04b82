"""The contract between connectors and the rest: canonical records, pages, and the connector shape.

A connector reads one source through its vendor's SDK and yields `Page`s of canonical records for
one stream at a time. Each page carries the cursor to resume *after* it; the sync engine stores the
page and only then saves the cursor, so a crash re-reads at most one page (upserts make that
harmless). Canonical kinds and their fields are listed in DESIGN.md ("Canonical records"); every
record has source, kind, source_id, updated_at (aware UTC) and deleted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator, Protocol

KINDS = ("account", "contact", "user", "renewal", "ticket", "satisfaction", "subscription", "invoice", "usage",
         "activity")


@dataclass
class Quarantined:
    """A record the connector could not turn into a canonical one, kept with the reason."""

    kind: str
    source_id: str | None
    reason: str
    raw: Any


@dataclass
class Page:
    records: list[dict[str, Any]]
    cursor: str | None  # where to resume after this page; None keeps the stored cursor
    quarantined: list[Quarantined] = field(default_factory=list)


class Connector(Protocol):
    """What the sync engine needs from a connector."""

    source: str

    def streams(self) -> list[str]:
        """Stream names this connector can read (e.g. "accounts", "tickets")."""
        ...

    def read(self, stream: str, cursor: str | None, until: datetime, full_refresh: bool = False) -> Iterator[Page]:
        """Pages of `stream` changed since `cursor` and not after `until` (the run's start)."""
        ...

    def api_calls(self) -> dict[str, int]:
        """Calls made so far, per stream (auth and metadata calls under their own names)."""
        ...


def record(source: str, kind: str, source_id: Any, updated_at: datetime | None, deleted: bool = False,
           **fields: Any) -> dict[str, Any]:
    """A canonical record as the store takes it: key columns plus the full record as payload."""
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}")
    if updated_at is not None and updated_at.tzinfo is None:
        raise ValueError("updated_at must be timezone-aware (UTC)")
    when = updated_at.astimezone(timezone.utc) if updated_at else None
    payload = {"source": source, "kind": kind, "source_id": str(source_id),
               "updated_at": when.isoformat() if when else None, "deleted": deleted, **fields}
    return {"source": source, "kind": kind, "source_id": str(source_id), "updated_at": when,
            "deleted": deleted, "payload": payload}


def dump_cursor(state: dict[str, Any]) -> str:
    """A connector's cursor state as the versioned JSON string the store keeps."""
    import json

    return json.dumps({"v": 1, **state}, separators=(",", ":"), sort_keys=True)


def load_cursor(source: str, cursor: str | None, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """A saved cursor, which must hold one of `keys` (a cursor of another stream or version does not)."""
    import json

    from .http import RequestError

    if not cursor:
        return None
    try:
        state = json.loads(cursor)
    except ValueError:
        state = None
    if not isinstance(state, dict) or state.get("v") != 1 or not any(k in state for k in keys):
        raise RequestError(source, f"unreadable saved cursor {cursor[:80]!r}; run once with --full-refresh")
    return state
