"""Stripe list semantics over the world: newest first, cursors, ``created`` ranges, cached indexes.

Every Stripe list is ordered by ``created`` descending (ties by id, events by creation order).
Each filtered query is computed once into an ascending key list ``[(created, tiebreak), ...]`` and
cached until the world's Stripe data changes; ``created`` bounds and the ``starting_after`` /
``ending_before`` cursors are then bisections, so a page costs O(log N + limit) under the lock.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict, defaultdict
from typing import Any, Callable, Hashable

from .world import World

Key = tuple[int, Any]


def world_version(world: World) -> tuple[int, int, int, int]:
    """Changes whenever Stripe data is added or changed through `World.stripe_put` (which records an
    event for every recent change), the generator's timeline changes records (`World.version`)
    or the event list is replaced (the generator drops events older than 30 days)."""
    return (sum(len(t) for t in world.stripe.values()), len(world.stripe_events), id(world.stripe_events),
            world.version)


def page(keys: list[Key], limit: int, *, low: int | None = None, high: int | None = None,
         after: Key | None = None, before: Key | None = None) -> tuple[list[Key], bool]:
    """One page of `keys` (ascending) newest first: ``created`` within [low, high], strictly older than
    `after` (starting_after) or strictly newer than `before` (ending_before); and whether more remain
    beyond the page in the direction of travel."""
    start = 0 if low is None else bisect_left(keys, (low,))
    end = len(keys) if high is None else bisect_left(keys, (high + 1,))
    if after is not None:
        end = min(end, bisect_left(keys, after))
    if before is not None:
        start = max(start, bisect_right(keys, before))
    if end <= start:
        return [], False
    if before is not None:  # walking back towards newer objects: the ones right above the cursor
        chosen = keys[start:min(end, start + limit)]
    else:
        chosen = keys[max(start, end - limit):end]
    return chosen[::-1], end - start > limit


class WorldIndex:
    """Derived facts and sorted query results, rebuilt when `world_version` changes.

    Holds at most `max_queries` cached query results (least recently used dropped first)."""

    def __init__(self, world: World, max_queries: int = 64) -> None:
        self.world = world
        self.max_queries = max_queries
        self._version: tuple[int, int, int, int] | None = None
        self._queries: OrderedDict[Hashable, list[Key]] = OrderedDict()
        self._facts: dict[str, Any] | None = None
        self._event_seq: dict[str, int] | None = None

    def _fresh(self) -> None:
        version = world_version(self.world)
        if version != self._version:
            self._version = version
            self._queries.clear()
            self._facts = None
            self._event_seq = None

    # -- sorted queries ----------------------------------------------------------------------
    def keys(self, kind: str, query: Hashable, predicate: Callable[[dict], bool]) -> list[Key]:
        """Ascending (created, id) keys of the `kind` records matching `predicate` (cached by `query`)."""
        self._fresh()
        cache_key = (kind, query)
        found = self._queries.get(cache_key)
        if found is None:
            records = self.world.stripe.get(kind, {}).values()
            found = sorted((r["created"], r["id"]) for r in records if predicate(r))
            self._remember(cache_key, found)
        else:
            self._queries.move_to_end(cache_key)
        return found

    def event_keys(self, query: Hashable, predicate: Callable[[dict], bool]) -> list[Key]:
        """Ascending (created, position) keys of the matching events; position breaks ties in
        creation order, as Stripe lists events of the same second."""
        self._fresh()
        cache_key = ("event", query)
        found = self._queries.get(cache_key)
        if found is None:
            found = sorted((e["created"], i) for i, e in enumerate(self.world.stripe_events) if predicate(e))
            self._remember(cache_key, found)
        else:
            self._queries.move_to_end(cache_key)
        return found

    def event_position(self, event_id: str) -> int | None:
        self._fresh()
        if self._event_seq is None:
            self._event_seq = {e["id"]: i for i, e in enumerate(self.world.stripe_events)}
        return self._event_seq.get(event_id)

    def _remember(self, key: Hashable, value: list[Key]) -> None:
        self._queries[key] = value
        while len(self._queries) > self.max_queries:
            self._queries.popitem(last=False)

    # -- facts the renderer needs ----------------------------------------------------------------
    def _build_facts(self) -> dict[str, Any]:
        self._fresh()
        if self._facts is not None:
            return self._facts
        latest: dict[str, tuple[int, str]] = {}
        by_customer: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for inv in self.world.stripe.get("invoice", {}).values():
            key = (inv["created"], inv["id"])
            sub = inv.get("subscription")
            if sub and (sub not in latest or latest[sub] < key):
                latest[sub] = key
            if inv.get("customer") and inv.get("status", "draft") != "draft":
                by_customer[inv["customer"]].append(key)
        sequence = {}
        for keys in by_customer.values():
            for n, (_, inv_id) in enumerate(sorted(keys), start=1):
                sequence[inv_id] = n
        subs: dict[str, list[str]] = defaultdict(list)
        for sub in self.world.stripe.get("subscription", {}).values():
            if sub.get("customer"):
                subs[sub["customer"]].append(sub["id"])
        self._facts = {"latest": {s: k[1] for s, k in latest.items()}, "sequence": sequence,
                       "count": {c: len(k) for c, k in by_customer.items()}, "subs": subs}
        return self._facts

    def latest_invoice(self, subscription_id: str) -> str | None:
        return self._build_facts()["latest"].get(subscription_id)

    def invoice_sequence(self, invoice_id: str) -> int:
        return self._build_facts()["sequence"].get(invoice_id, 1)

    def invoice_count(self, customer_id: str) -> int:
        return self._build_facts()["count"].get(customer_id, 0)

    def customer_subscriptions(self, customer_id: str) -> list[str]:
        return list(self._build_facts()["subs"].get(customer_id, []))


# -- filters shared by the list endpoints ------------------------------------------------------------


def items_of(sub: dict) -> list[dict]:
    items = sub.get("items") or {}
    return items.get("data", []) if isinstance(items, dict) else list(items)


def price_id(item: dict) -> str | None:
    price = item.get("price")
    return price.get("id") if isinstance(price, dict) else price


def within(value: int | None, bounds: tuple[int | None, int | None]) -> bool:
    low, high = bounds
    if low is None and high is None:
        return True
    return value is not None and (low is None or value >= low) and (high is None or value <= high)


def type_matches(pattern: str, event_type: str) -> bool:
    """``customer.*`` matches every customer event, as Stripe's type filter does."""
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type
