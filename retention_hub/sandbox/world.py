"""The one shared sandbox world: every emulated system's records, its clock and its future.

`World` is a container. `generator.py` fills it (history up to "now" plus a precomputed future);
the emulators read and write it under `world.lock`; `advance(days)` plays the future forward.
Writes go through the ``*_put`` helpers so modification timestamps move the way the real systems
move them (Salesforce SystemModstamp, HubSpot hs_lastmodifieddate, Zendesk updated_at, Stripe events).
Record formats are described in `records.py`.
"""
from __future__ import annotations

import copy
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

from .records import IdMint, STRIPE_API_VERSION, hs_millis, hs_time, sf_time, unix, utc, zd_time

SF_OBJECTS = ("Account", "Contact", "Opportunity", "Case", "User", "Task")
HS_OBJECTS = ("companies", "contacts", "deals", "tickets", "tasks")
ZD_OBJECTS = ("organizations", "users", "tickets", "satisfaction_ratings")
STRIPE_OBJECTS = ("customer", "subscription", "invoice", "product", "price", "billing.meter")
STRIPE_EVENT_DAYS = 30  # Stripe lists events of the last 30 days only
STRIPE_EVENT_PREFIX = {"subscription": "customer.subscription"}

# HubSpot v4 default ("HUBSPOT_DEFINED") association type ids, (from, to) -> type id.
HS_ASSOC_TYPES: dict[tuple[str, str], int] = {
    ("contacts", "companies"): 279, ("companies", "contacts"): 280,
    ("deals", "companies"): 341, ("companies", "deals"): 342,
    ("tickets", "companies"): 339, ("companies", "tickets"): 340,
    ("tasks", "companies"): 192, ("companies", "tasks"): 191,
    ("tasks", "contacts"): 204, ("contacts", "tasks"): 203,
    ("deals", "contacts"): 3, ("contacts", "deals"): 4,
    ("tickets", "contacts"): 16, ("contacts", "tickets"): 15,
    # parent company -> child company is 13, child -> parent is 14
}
HS_PARENT_TO_CHILD, HS_CHILD_TO_PARENT = 13, 14


@dataclass
class Knobs:
    """Fault and pace settings of the emulators; changeable at run time via /__sandbox/knobs."""

    latency_ms: float = 0.0
    rate_limits: str = "off"  # "off" or "real" (each vendor's documented limits)
    error_rate: float = 0.0  # share of requests answered with a 5xx in the vendor's format
    throttle_rate: float = 0.0  # share of requests answered with the vendor's 429
    timeout_rate: float = 0.0  # share of requests that hang for `timeout_seconds` then get a 503
    drop_rate: float = 0.0  # share of requests whose connection is closed without an answer
    timeout_seconds: float = 30.0
    seed: int = 0

    def update(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if not hasattr(self, key):
                raise ValueError(f"unknown knob {key!r}")
            setattr(self, key, type(getattr(self, key))(value))


@dataclass
class World:
    """All four systems' records plus the clock. Hold `lock` while reading or writing records."""

    seed: int
    anchor: datetime  # the world's "now" when it was generated (UTC)
    lock: threading.RLock = field(default_factory=threading.RLock)
    ids: IdMint = field(init=False)
    salesforce: dict[str, dict[str, dict]] = field(default_factory=lambda: {o: {} for o in SF_OBJECTS})
    # custom fields defined in the org: sobject -> API name -> describe field dict
    sf_custom_fields: dict[str, dict[str, dict]] = field(default_factory=lambda: defaultdict(dict))
    hubspot: dict[str, dict[str, dict]] = field(default_factory=lambda: {o: {} for o in HS_OBJECTS})
    # (from_type, from_id) -> to_type -> to_id -> set of association type ids
    hs_assoc: dict[tuple[str, str], dict[str, dict[str, set[int]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict)))
    # custom properties and groups created through the API: object type -> name -> definition
    hs_custom_properties: dict[str, dict[str, dict]] = field(default_factory=lambda: defaultdict(dict))
    hs_property_groups: dict[str, dict[str, dict]] = field(default_factory=lambda: defaultdict(dict))
    hs_owners: dict[str, dict] = field(default_factory=dict)
    zendesk: dict[str, dict[int, dict]] = field(default_factory=lambda: {o: {} for o in ZD_OBJECTS})
    stripe: dict[str, dict[str, dict]] = field(default_factory=lambda: {o: {} for o in STRIPE_OBJECTS})
    stripe_events: list[dict] = field(default_factory=list)
    # billing meter id -> customer id -> {unix day start: aggregated value}
    stripe_meter_usage: dict[str, dict[str, dict[int, float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict)))
    usage_db: Path | None = None
    # set by the generator: plays the precomputed future forward until the given time
    play_until: Callable[["World", datetime], None] | None = None
    days_advanced: int = 0
    version: int = 0  # bumped whenever the generator's timeline changes records (caches key on it)
    _started: float = field(default_factory=time.monotonic)
    _frozen_elapsed: float | None = None  # set by freeze_clock

    def __post_init__(self) -> None:
        self.anchor = utc(self.anchor)
        self.ids = IdMint(self.seed)

    # -- the clock ---------------------------------------------------------------------------
    def now(self) -> datetime:
        """The world's current time: the anchor, plus days advanced, plus wall time since start."""
        elapsed = self._frozen_elapsed if self._frozen_elapsed is not None else time.monotonic() - self._started
        return self.anchor + timedelta(days=self.days_advanced, seconds=elapsed)

    def freeze_clock(self) -> None:
        """Stop the wall-clock part of `now()`: time then moves only by `advance`. Tests and benchmarks
        that compare a sync with a snapshot of the world use it, so nothing happens in between.
        The world first catches up to the frozen time, so a snapshot taken now is what the
        emulators will serve."""
        self._frozen_elapsed = time.monotonic() - self._started
        self.catch_up()

    def catch_up(self) -> None:
        """Apply whatever the generated future holds up to `now()`: the emulators call it on every
        request, so records change as time passes and are never stamped earlier than a read that
        already happened."""
        if self.play_until is not None:
            with self.lock:
                self.play_until(self, self.now())

    def advance(self, days: int) -> datetime:
        """Move the world forward `days` days: new tickets, usage, invoices, renewals and churn."""
        if days < 0:
            raise ValueError("days must be >= 0")
        with self.lock:
            self.days_advanced += days
            self.version += 1
            if self.play_until is not None:
                self.play_until(self, self.now())
            return self.now()

    # -- Salesforce ----------------------------------------------------------------------------
    def sf_put(self, sobject: str, fields: dict[str, Any], at: datetime | None = None) -> dict:
        """Create (no Id, or unknown Id) or update a Salesforce record; stamps audit fields."""
        at = at or self.now()
        table = self.salesforce.setdefault(sobject, {})
        rec_id = fields.get("Id")
        rec = table.get(rec_id) if rec_id else None
        if rec is None:
            rec_id = rec_id or self.ids.salesforce(sobject)
            rec = {"Id": rec_id, "IsDeleted": False, "CreatedDate": sf_time(at)}
            table[rec_id] = rec
        rec.update({k: v for k, v in fields.items() if k != "Id"})
        rec["LastModifiedDate"] = rec["SystemModstamp"] = sf_time(at)
        return rec

    def sf_delete(self, sobject: str, rec_id: str, at: datetime | None = None) -> None:
        """Soft-delete: the record stays visible to queryAll with IsDeleted = true."""
        rec = self.salesforce[sobject][rec_id]
        rec["IsDeleted"] = True
        rec["LastModifiedDate"] = rec["SystemModstamp"] = sf_time(at or self.now())

    # -- HubSpot -------------------------------------------------------------------------------
    def hs_put(self, object_type: str, properties: dict[str, Any], rec_id: str | None = None,
               at: datetime | None = None) -> dict:
        """Create or update a HubSpot object; property values are stored as strings."""
        at = at or self.now()
        table = self.hubspot.setdefault(object_type, {})
        rec = table.get(rec_id) if rec_id else None
        if rec is None:
            rec_id = rec_id or self.ids.hubspot()
            rec = {"id": rec_id, "properties": {"hs_object_id": rec_id, "createdate": hs_time(at)},
                   "createdAt": hs_time(at), "updatedAt": hs_time(at), "archived": False}
            table[rec_id] = rec
        props = rec["properties"]
        for key, value in properties.items():
            props[key] = None if value is None else str(value)
        props["hs_lastmodifieddate"] = hs_time(at)
        rec["updatedAt"] = hs_time(at)
        return rec

    def hs_archive(self, object_type: str, rec_id: str, at: datetime | None = None) -> None:
        rec = self.hubspot[object_type][rec_id]
        rec["archived"] = True
        rec["archivedAt"] = rec["updatedAt"] = hs_time(at or self.now())

    def hs_associate(self, a_type: str, a_id: str, b_type: str, b_id: str,
                     a_to_b: int | None = None, b_to_a: int | None = None) -> None:
        """Associate two HubSpot objects in both directions (default type ids unless given)."""
        a_to_b = a_to_b if a_to_b is not None else HS_ASSOC_TYPES[(a_type, b_type)]
        b_to_a = b_to_a if b_to_a is not None else HS_ASSOC_TYPES[(b_type, a_type)]
        self.hs_assoc[(a_type, a_id)][b_type].setdefault(b_id, set()).add(a_to_b)
        self.hs_assoc[(b_type, b_id)][a_type].setdefault(a_id, set()).add(b_to_a)

    def hs_associations(self, from_type: str, from_id: str, to_type: str) -> dict[str, set[int]]:
        return self.hs_assoc.get((from_type, from_id), {}).get(to_type, {})

    # -- Zendesk -------------------------------------------------------------------------------
    def zd_put(self, kind: str, obj: dict[str, Any], at: datetime | None = None) -> dict:
        """Create (no id) or update a Zendesk object; stamps created_at / updated_at."""
        at = at or self.now()
        table = self.zendesk.setdefault(kind, {})
        rec = table.get(obj.get("id")) if obj.get("id") is not None else None
        if rec is None:
            rec = {"id": obj.get("id") or self.ids.zendesk(kind), "created_at": zd_time(at)}
            table[rec["id"]] = rec
        rec.update({k: v for k, v in obj.items() if k != "id"})
        rec["updated_at"] = zd_time(at)
        if kind == "tickets":
            rec["generated_timestamp"] = unix(at)
        return rec

    # -- Stripe --------------------------------------------------------------------------------
    def stripe_put(self, kind: str, obj: dict[str, Any], event_type: str | None = None,
                   at: datetime | None = None) -> dict:
        """Create or update a Stripe object and record the event Stripe would emit for it."""
        at = at or self.now()
        table = self.stripe.setdefault(kind, {})
        rec = table.get(obj.get("id")) if obj.get("id") else None
        keep_event = at >= self.now() - timedelta(days=STRIPE_EVENT_DAYS)
        previous: dict[str, Any] = {}
        if rec is None:
            prefix = {"customer": "cus", "subscription": "sub", "invoice": "in", "product": "prod",
                      "price": "price", "billing.meter": "mtr"}.get(kind, kind[:4])
            rec = {"id": obj.get("id") or self.ids.stripe(prefix), "object": kind, "created": unix(at),
                   "livemode": False}
            table[rec["id"]] = rec
            event_type = event_type or f"{STRIPE_EVENT_PREFIX.get(kind, kind)}.created"
        else:
            if keep_event:  # the diff is only needed for the event's previous_attributes
                previous = {k: _json_copy(rec.get(k)) for k, v in obj.items() if rec.get(k) != v}
            event_type = event_type or f"{STRIPE_EVENT_PREFIX.get(kind, kind)}.updated"
        rec.update({k: v for k, v in obj.items() if k != "id"})
        if keep_event and (previous or not event_type.endswith(".updated")):
            self.stripe_event(event_type, rec, previous, at)
        return rec

    def stripe_event(self, event_type: str, obj: dict, previous: dict | None, at: datetime) -> dict | None:
        """Record the event Stripe emits; events older than Stripe's 30 days are not kept at all."""
        if at < self.now() - timedelta(days=STRIPE_EVENT_DAYS):
            return None
        data: dict[str, Any] = {"object": _json_copy(obj)}
        if previous:
            data["previous_attributes"] = previous
        event = {"id": self.ids.stripe("evt"), "object": "event", "api_version": STRIPE_API_VERSION,
                 "created": unix(at), "data": data, "livemode": False, "pending_webhooks": 0,
                 "request": {"id": None, "idempotency_key": None}, "type": event_type}
        self.stripe_events.append(event)
        return event


def _json_copy(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars): Stripe event snapshots.

    Several times faster than `copy.deepcopy`, which the Stripe event window would otherwise spend
    most of its time in; anything else is handed to `copy.deepcopy`."""
    cls = type(value)
    if cls is dict:
        return {k: v if type(v) in _SCALARS else _json_copy(v) for k, v in value.items()}
    if cls is list:
        return [v if type(v) in _SCALARS else _json_copy(v) for v in value]
    if cls in _SCALARS:
        return value
    return copy.deepcopy(value)


_SCALARS = frozenset((str, int, float, bool, type(None)))


def hubspot_date_value(dt: datetime) -> str:
    """HubSpot date properties take midnight UTC as epoch milliseconds."""
    return hs_millis(utc(dt).replace(hour=0, minute=0, second=0, microsecond=0))
