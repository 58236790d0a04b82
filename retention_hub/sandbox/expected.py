"""What a faithful sync of a sandbox world must hold: the canonical record keys, per (source, kind).

The oracle the sync tests and benchmark hold the store against. For every record a connector should
emit it gives a version (a digest of the world's record) and whether the record is deleted, so that
two snapshots taken around `World.advance` tell exactly which records changed. It reads the world's
native records, never the connectors, so it checks them rather than repeats them.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime, timezone
from typing import Any, Iterator

from .records import parse_time, unix
from .world import World
from .zendesk_api import EXPORT_LAG_SECONDS

DAY = 86_400
# (source, kind) -> world collection, as the connectors map them
SALESFORCE = {"account": "Account", "contact": "Contact", "user": "User", "renewal": "Opportunity",
              "ticket": "Case", "activity": "Task"}
HUBSPOT = {"account": "companies", "contact": "contacts", "renewal": "deals", "ticket": "tickets",
           "activity": "tasks"}
STRIPE = {"account": "customer", "subscription": "subscription", "invoice": "invoice"}
STRIPE_USAGE_LOOKBACK_DAYS = 90  # the Stripe connector's first read reaches this far back

Entry = tuple[str, bool]  # (version digest, deleted)
Snapshot = dict[tuple[str, str], dict[str, Entry]]


def _digest(rec: Any) -> str:
    raw = json.dumps(rec, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()


def snapshot(world: World, until: datetime | None = None, usage: bool = True) -> Snapshot:
    """Every record the connectors should have read by `until` (default: the world's now).

    `usage` includes the usage warehouse's accounts and daily rows (large: off for big worlds).
    """
    until = until or world.now()
    out: Snapshot = {}
    with world.lock:
        for kind, sobject in SALESFORCE.items():
            out[("salesforce", kind)] = {i: (_digest(r), bool(r.get("IsDeleted")))
                                        for i, r in world.salesforce.get(sobject, {}).items()}
        for kind, object_type in HUBSPOT.items():
            out[("hubspot", kind)] = {i: (_digest(r), bool(r.get("archived")))
                                     for i, r in world.hubspot.get(object_type, {}).items()}
        out[("hubspot", "user")] = {i: (_digest(r), bool(r.get("archived"))) for i, r in world.hs_owners.items()}
        out.update(_zendesk(world, until))
        for kind, table in STRIPE.items():
            out[("stripe", kind)] = {i: (_digest(r), bool(r.get("_deleted")))
                                    for i, r in world.stripe.get(table, {}).items()}
        out[("stripe", "usage")] = dict(_stripe_usage(world, until))
    if usage and world.usage_db is not None:
        out.update(_warehouse(world))
    return out


def _zendesk(world: World, until: datetime) -> Snapshot:
    """End-users are contacts, agents and admins users; a deleted ticket has status "deleted". The
    incremental exports (organizations, users, tickets) hold back the last minute: what changed then
    is not expected yet (the next run reads it)."""
    z, cutoff = world.zendesk, unix(until) - EXPORT_LAG_SECONDS

    def shown(r: dict, stamp: str = "updated_at") -> bool:
        value = r.get(stamp)
        return (value if isinstance(value, int) else unix(parse_time(value))) <= cutoff

    out: Snapshot = {
        ("zendesk", "account"): {str(i): (_digest(r), bool(r.get("deleted_at")))
                                 for i, r in z.get("organizations", {}).items() if shown(r)},
        ("zendesk", "ticket"): {str(i): (_digest(r), r.get("status") == "deleted")
                                for i, r in z.get("tickets", {}).items() if shown(r, "generated_timestamp")},
        ("zendesk", "satisfaction"): {str(i): (_digest(r), False)
                                      for i, r in z.get("satisfaction_ratings", {}).items()},
        ("zendesk", "contact"): {}, ("zendesk", "user"): {}}
    for i, r in z.get("users", {}).items():
        if not shown(r):
            continue
        kind = "contact" if (r.get("role") or "end-user") == "end-user" else "user"
        out[("zendesk", kind)][str(i)] = (_digest(r), r.get("active") is False)
    return out


def _stripe_usage(world: World, until: datetime) -> Iterator[tuple[str, Entry]]:
    """One record per customer and complete day within the look-back: the day's non-zero meter sums
    by event name (a day with none is no record)."""
    stop = int(until.timestamp()) // DAY * DAY
    start = stop - STRIPE_USAGE_LOOKBACK_DAYS * DAY
    days_seen: dict[tuple[str, int], dict[str, Any]] = {}
    for meter_id, customers in world.stripe_meter_usage.items():
        event = world.stripe["billing.meter"][meter_id]["event_name"]
        for customer, days in customers.items():
            for day, value in days.items():
                if start <= day < stop and value:
                    metrics = days_seen.setdefault((customer, day), {})
                    metrics[event] = metrics.get(event, 0) + value
    for (customer, day), metrics in days_seen.items():
        when = datetime.fromtimestamp(day, timezone.utc).date().isoformat()
        yield f"{customer}|{when}", (_digest(metrics), False)


def _warehouse(world: World) -> Snapshot:
    with sqlite3.connect(f"file:{world.usage_db}?mode=ro", uri=True) as conn:
        accounts = {str(r[0]): (_digest(list(r)), False) for r in conn.execute("SELECT * FROM workspaces")}
        cursor = conn.execute("SELECT * FROM usage_daily")
        metrics = [d[0] for d in cursor.description][2:]
        rows: dict[str, Entry] = {}
        for workspace, day, *values in cursor:  # one record per workspace and day with any metric
            present = {metric: value for metric, value in zip(metrics, values) if value is not None}
            if present:
                rows[f"{workspace}|{day}"] = (_digest(present), False)
    return {("usage", "account"): accounts, ("usage", "usage"): rows}


def live_keys(snap: Snapshot) -> dict[tuple[str, str], set[str]]:
    """The ids not deleted, per (source, kind)."""
    return {key: {i for i, (_, deleted) in entries.items() if not deleted} for key, entries in snap.items()}


def changed(before: Snapshot, after: Snapshot) -> dict[tuple[str, str], set[str]]:
    """Per (source, kind): ids new, changed or deleted between two snapshots."""
    out: dict[tuple[str, str], set[str]] = {}
    for key, entries in after.items():
        old = before.get(key, {})
        out[key] = {i for i, entry in entries.items() if old.get(i) != entry}
    return out
