"""The CRM search language of HubSpot's `POST /crm/v3/objects/{type}/search`, evaluated in memory.

`parse_search` validates a request body the way HubSpot does (operators, filter caps, limit,
the 10,000-result window) and `matching_ids` evaluates it over records: filter groups are OR-ed,
filters inside a group AND-ed; number and date/datetime properties compare numerically (datetime
filter values may be epoch millis or ISO strings), everything else case-insensitively as text.
Results are cached per query so that paging does not re-scan the table.
"""
from __future__ import annotations

import fnmatch
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .hubspot_schema import to_millis

OPERATORS = ("EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY",
             "NOT_HAS_PROPERTY", "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN")
MAX_GROUPS, MAX_FILTERS_PER_GROUP, MAX_FILTERS = 5, 10, 25  # changelog of 2024-08-26
MAX_LIMIT, DEFAULT_LIMIT, MAX_WINDOW = 200, 10, 10_000


class SearchError(ValueError):
    """A search request HubSpot answers with 400 VALIDATION_ERROR."""


@dataclass(frozen=True)
class Filter:
    prop: str
    op: str
    value: Any = None
    high: Any = None
    values: tuple[Any, ...] = ()


@dataclass
class SearchQuery:
    groups: list[list[Filter]] = field(default_factory=list)
    sorts: list[tuple[str, bool]] = field(default_factory=list)  # (property, descending)
    query: str = ""
    properties: list[str] | None = None
    limit: int = DEFAULT_LIMIT
    after: int = 0

    def cache_key(self, object_type: str) -> str:
        return json.dumps([object_type, [[vars(f) for f in g] for g in self.groups], self.sorts, self.query],
                          default=str, sort_keys=True)


def _position(raw: bytes, needle: str) -> str:
    """`line L, column C` of `needle` in the raw body, as Jackson reports positions."""
    text = raw.decode("utf-8", "replace")
    at = max(text.find(needle), 0)
    line = text.count("\n", 0, at) + 1
    return f"line {line}, column {at - (text.rfind(chr(10), 0, at) + 1) + 1}"


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise SearchError(f"Invalid input JSON: {name} must be an integer")
    try:
        return int(str(value).strip())
    except ValueError:
        raise SearchError(f"Invalid input JSON: {name} must be an integer, got {value!r}") from None


def _filter(item: Any, raw: bytes) -> Filter:
    if not isinstance(item, dict) or not isinstance(item.get("propertyName"), str) or not item.get("operator"):
        raise SearchError("Invalid input JSON: each filter needs a propertyName and an operator")
    op = str(item["operator"])
    if op not in OPERATORS:
        raise SearchError(
            f"Invalid input JSON on {_position(raw, json.dumps(op))}: Cannot deserialize value of type "
            f"`com.hubspot.inbounddb.publicobject.core.v2.search.FilterOperator` from String \"{op}\": "
            f"not one of the values accepted for Enum class: [{', '.join(OPERATORS)}]")
    prop = item["propertyName"].strip().lower()
    if op in ("IN", "NOT_IN"):
        values = item.get("values")
        if not isinstance(values, list) or not values:
            raise SearchError(f"Operator {op} requires a non-empty `values` list (property {prop})")
        return Filter(prop, op, values=tuple(values))
    if op == "BETWEEN":
        if item.get("value") is None or item.get("highValue") is None:
            raise SearchError(f"Operator BETWEEN requires `value` and `highValue` (property {prop})")
        return Filter(prop, op, item["value"], item["highValue"])
    if op in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        return Filter(prop, op)
    if item.get("value") is None:
        raise SearchError(f"Operator {op} requires a `value` (property {prop})")
    return Filter(prop, op, item["value"])


def _sort(item: Any) -> tuple[str, bool]:
    if isinstance(item, str) and item.strip():  # the Python SDK types sorts as strings
        name = item.strip()
        return name.lstrip("-").lower(), name.startswith("-")
    if isinstance(item, dict) and isinstance(item.get("propertyName"), str):
        direction = str(item.get("direction") or "ASCENDING").upper()
        if direction not in ("ASCENDING", "DESCENDING"):
            raise SearchError(f"Invalid input JSON: sort direction must be ASCENDING or DESCENDING, "
                              f"got {direction}")
        return item["propertyName"].strip().lower(), direction == "DESCENDING"
    raise SearchError("Invalid input JSON: each sort needs a propertyName")


def parse_search(body: Any, raw: bytes) -> SearchQuery:
    """Validate a search body; raise SearchError with HubSpot's kind of message when it is wrong."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise SearchError("Invalid input JSON: the request body must be a JSON object")
    groups_in = body.get("filterGroups") or []
    if not isinstance(groups_in, list):
        raise SearchError("Invalid input JSON: filterGroups must be a list")
    if isinstance(body.get("filters"), list) and body["filters"]:
        groups_in = [*groups_in, {"filters": body["filters"]}]  # a top-level list is one more group
    if len(groups_in) > MAX_GROUPS:
        raise SearchError(f"Too many filter groups: {len(groups_in)}. The maximum is {MAX_GROUPS}.")
    groups: list[list[Filter]] = []
    for group in groups_in:
        if not isinstance(group, dict) or not isinstance(group.get("filters"), list):
            raise SearchError("Invalid input JSON: each filter group needs a `filters` list")
        if len(group["filters"]) > MAX_FILTERS_PER_GROUP:
            raise SearchError(f"Too many filters in a filter group: {len(group['filters'])}. "
                              f"The maximum is {MAX_FILTERS_PER_GROUP}.")
        groups.append([_filter(f, raw) for f in group["filters"]])
    total = sum(len(g) for g in groups)
    if total > MAX_FILTERS:
        raise SearchError(f"Too many filters: {total}. The maximum is {MAX_FILTERS}.")
    sorts_in = body.get("sorts") or []
    if not isinstance(sorts_in, list):
        raise SearchError("Invalid input JSON: sorts must be a list")
    properties = body.get("properties")
    if properties is not None and (not isinstance(properties, list)
                                   or not all(isinstance(p, str) for p in properties)):
        raise SearchError("Invalid input JSON: properties must be a list of strings")
    limit = DEFAULT_LIMIT if body.get("limit") is None else _int(body["limit"], "limit")
    if not 1 <= limit <= MAX_LIMIT:
        raise SearchError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    after = 0 if body.get("after") in (None, "") else _int(body["after"], "after")
    if after < 0:
        raise SearchError(f"after must not be negative, got {after}")
    if after + limit > MAX_WINDOW:
        raise SearchError(f"The search endpoints are limited to {MAX_WINDOW:,} total results for any given "
                          f"query; paging beyond that is not supported (after={after}, limit={limit}).")
    query = body.get("query") or ""
    if not isinstance(query, str):
        raise SearchError("Invalid input JSON: query must be a string")
    return SearchQuery(groups, [_sort(s) for s in sorts_in], query.strip(),
                       [p.strip() for p in properties] if properties is not None else None, limit, after)


# -- evaluation -----------------------------------------------------------------------------------
def typed(kind: str, value: Any) -> Any:
    """A value in the comparable form of its property kind: number, time (millis) or text."""
    if value is None or value == "":
        return None
    if kind == "number":
        try:
            return float(value)
        except (TypeError, ValueError):
            return str(value).lower()
    if kind == "time":
        millis = to_millis(value)
        return millis if millis is not None else str(value).lower()
    return str(value).lower()


def _tokens(text: str) -> set[str]:
    return {text, *text.split(), *(t for t in re.split(r"[^\w]+", text) if t)}


def _contains_token(text: str, pattern: str) -> bool:
    tokens = _tokens(text)
    if "*" in pattern:
        return any(fnmatch.fnmatchcase(t, pattern) for t in tokens)
    return all(word in tokens for word in pattern.split()) if pattern.split() else False


def _compare(op: str, have: Any, want: Any) -> bool:
    try:
        return {"LT": have < want, "LTE": have <= want, "GT": have > want, "GTE": have >= want}[op]
    except TypeError:  # a number next to text: compare as text, as a string index would
        return _compare(op, str(have), str(want))


def _predicate(f: Filter, kind: str) -> Callable[[Any], bool]:
    """A test of one raw property value, with the filter's own values converted once."""
    op = f.op
    if op in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        want_value = op == "HAS_PROPERTY"
        return lambda raw: (raw is not None and raw != "") == want_value
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        pattern, positive = str(f.value).lower().strip(), op == "CONTAINS_TOKEN"
        return lambda raw: (raw is not None and raw != "" and _contains_token(str(raw).lower(), pattern)) == positive
    if op in ("IN", "NOT_IN"):
        wanted, positive = {typed(kind, v) for v in f.values}, op == "IN"
        return lambda raw: (typed(kind, raw) in wanted and raw not in (None, "")) == positive
    want = typed(kind, f.value)
    if op == "NEQ":  # a record without the value is "not equal" too
        return lambda raw: (have := typed(kind, raw)) is None or have != want
    if op == "EQ":
        return lambda raw: (have := typed(kind, raw)) is not None and have == want
    if op == "BETWEEN":
        high = typed(kind, f.high)
        return lambda raw: (have := typed(kind, raw)) is not None and _compare("GTE", have, want) \
            and _compare("LTE", have, high)
    return lambda raw: (have := typed(kind, raw)) is not None and _compare(op, have, want)


def matching_ids(records: Iterable[dict], q: SearchQuery, kind_of: Callable[[str], str],
                 value_of: Callable[[dict, str], Any], searchable: Iterable[str]) -> list[str]:
    """Ids of the (non-archived) records matching `q`, in the requested sort order."""
    needle = q.query.lower()
    searchable = tuple(searchable)
    groups = [[(f.prop, _predicate(f, kind_of(f.prop))) for f in group] for group in q.groups]
    hits: list[dict] = []
    for rec in records:
        if rec.get("archived"):
            continue
        if groups and not any(all(test(value_of(rec, prop)) for prop, test in group) for group in groups):
            continue
        if needle and not any(needle in str(value_of(rec, p) or "").lower() for p in searchable):
            continue
        hits.append(rec)
    hits.sort(key=lambda r: int(r["id"]))  # ties (and no sorts at all) go by id
    for prop, descending in q.sorts[:1]:  # HubSpot applies one sorting rule
        kind = kind_of(prop)
        keyed = [(typed(kind, value_of(r, prop)), r) for r in hits]
        present = [(v, r) for v, r in keyed if v is not None]
        present.sort(key=lambda item: _sort_key(item[0]), reverse=descending)
        # records without the value come last either way
        hits = [r for _, r in present] + [r for v, r in keyed if v is None]
    return [r["id"] for r in hits]


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


class SearchCache:
    """Matching id lists per query, valid while the table's `stamp` is unchanged (bounded LRU)."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[Any, list[str]]] = OrderedDict()

    def get(self, key: str, stamp: Any) -> list[str] | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != stamp:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: str, stamp: Any, ids: list[str]) -> None:
        self._entries[key] = (stamp, ids)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
