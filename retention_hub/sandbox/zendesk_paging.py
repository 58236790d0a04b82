"""Pagination for the Zendesk emulator: sorted key indexes cached per query, cursor codecs, and the
four ways Zendesk pages (cursor pagination, offset pagination, cursor-based and time-based
incremental exports).

Every collection is paged over a sorted list of keys ``(sort value, id)``. Building that list is
O(N log N), so it is cached per query and reused while the table's fingerprint is unchanged; a page
is then a bisect plus a slice. A cursor is a position in key space, not an offset, so records that
share a sort value are never lost or repeated across pages.
"""
from __future__ import annotations

import base64
import binascii
import json
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Callable, Hashable, Iterable

Key = tuple[int, int]
_UPDATED_AT = itemgetter("updated_at")
_GENERATED = itemgetter("generated_timestamp")
_INF = float("inf")


class CursorError(ValueError):
    """A cursor that this emulator did not issue (or that was mangled on the way)."""


def fingerprint(table: dict[int, dict]) -> tuple:
    """Cheap change detector for a Zendesk table (C-speed O(N), no sorting, no parsing).

    Writes go through `World.zd_put`, which re-stamps `updated_at` (and tickets'
    `generated_timestamp`), so count + the sums of those values change whenever a record is added
    or updated (a rewrite within the same second leaves sort keys unchanged anyway).
    """
    values = table.values()
    try:
        stamps = sum(map(hash, map(_UPDATED_AT, values)))
    except KeyError:
        stamps = sum(hash(r.get("updated_at")) for r in values)
    try:
        generated = sum(map(_GENERATED, values))
    except (KeyError, TypeError):
        generated = sum(r.get("generated_timestamp") or 0 for r in values)
    return len(table), stamps, generated


class IndexCache:
    """LRU cache of sorted key lists, each valid for one fingerprint of its source table."""

    def __init__(self, maxsize: int = 64) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[Hashable, tuple[tuple, list[Key]]] = OrderedDict()

    def keys(self, query: Hashable, table_fingerprint: tuple,
             build: Callable[[], Iterable[Key]]) -> list[Key]:
        entry = self._entries.get(query)
        if entry is not None and entry[0] == table_fingerprint:
            self._entries.move_to_end(query)
            return entry[1]
        keys = sorted(build())
        self._entries[query] = (table_fingerprint, keys)
        self._entries.move_to_end(query)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return keys


# -- cursor codecs -------------------------------------------------------------------------------
def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    text = text.strip().replace("+", "-").replace("/", "_").replace(" ", "-")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise CursorError(str(exc)) from None


def encode_export_cursor(key: Key, before: bool = False) -> str:
    """Incremental-export cursor in Zendesk's own layout: base64 of ``"<ts>.0|<dir>|<id>|"``."""
    return _b64encode(f"{key[0]}.0|{'b' if before else ''}|{key[1]}|".encode())


def decode_export_cursor(cursor: str) -> tuple[Key, bool]:
    """-> ((timestamp, id), before?)"""
    try:
        ts, direction, rec_id, rest = _b64decode(cursor).decode().split("|")
        key = (int(float(ts)), int(rec_id))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CursorError(str(exc)) from None
    if direction not in ("", "b") or rest != "":
        raise CursorError("bad cursor layout")
    return key, direction == "b"


def encode_list_cursor(order: str, key: Key) -> str:
    """List cursor: base64 JSON naming the sort order and the position (like Zendesk's)."""
    return _b64encode(json.dumps({"o": order, "v": list(key)}, separators=(",", ":")).encode())


def decode_list_cursor(cursor: str, order: str) -> Key:
    try:
        data = json.loads(_b64decode(cursor))
        key = (int(data["v"][0]), int(data["v"][1]))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise CursorError(str(exc)) from None
    if data.get("o") != order:
        raise CursorError("cursor was issued for another sort order")
    return key


# -- pages ---------------------------------------------------------------------------------------
@dataclass
class Page:
    keys: list[Key]
    has_more: bool  # more records beyond this page in the direction of travel
    has_previous: bool = False


def cursor_page(keys: list[Key], size: int, after: Key | None = None,
                before: Key | None = None) -> Page:
    """Cursor pagination (`page[size]`, `page[after]`, `page[before]`)."""
    if before is not None:
        end = bisect_left(keys, before)
        start = max(0, end - size)
        return Page(keys[start:end], has_more=start > 0, has_previous=end < len(keys))
    start = bisect_right(keys, after) if after is not None else 0
    return Page(keys[start:start + size], has_more=start + size < len(keys), has_previous=start > 0)


def offset_page(keys: list[Key], page: int, per_page: int) -> Page:
    """Offset pagination (`page`, `per_page`)."""
    start = (page - 1) * per_page
    return Page(keys[start:start + per_page], has_more=start + per_page < len(keys),
                has_previous=page > 1)


@dataclass
class ExportPage:
    keys: list[Key]
    end_of_stream: bool


def export_page(keys: list[Key], position: Key, before: bool, cutoff: int, per_page: int,
                keep: Callable[[int], bool] = lambda _id: True) -> ExportPage:
    """Cursor-based incremental export: records after (or before) `position`, never past `cutoff`.

    `keep(id)` drops records (exclude_deleted) without breaking the key order.
    """
    limit = bisect_right(keys, (cutoff, _INF))
    chunk: list[Key] = []
    if before:
        i = min(bisect_left(keys, position), limit) - 1
        while i >= 0 and len(chunk) < per_page:
            if keep(keys[i][1]):
                chunk.append(keys[i])
            i -= 1
        chunk.reverse()
        while i >= 0 and not keep(keys[i][1]):
            i -= 1
        return ExportPage(chunk, end_of_stream=i < 0)  # nothing further back
    i = bisect_right(keys, position)
    while i < limit and len(chunk) < per_page:
        if keep(keys[i][1]):
            chunk.append(keys[i])
        i += 1
    while i < limit and not keep(keys[i][1]):  # so end_of_stream is exact when the rest is skipped
        i += 1
    return ExportPage(chunk, end_of_stream=i >= limit)


@dataclass
class TimePage:
    keys: list[Key]
    end_time: int
    end_of_stream: bool


def time_page(keys: list[Key], start_time: int, cutoff: int, per_page: int) -> TimePage:
    """Time-based incremental export (`start_time` -> `end_time`, `next_page`).

    As Zendesk documents, a page may run past `per_page` so that it holds every record sharing its
    last timestamp; the next page starts at `end_time` again, so those records may repeat. When a
    whole page is one timestamp, `end_time` moves one second on so an export cannot loop forever.
    """
    start = bisect_left(keys, (start_time, -1))
    limit = bisect_right(keys, (cutoff, _INF))
    end = min(start + per_page, limit)
    if start < end < limit:
        last_ts = keys[end - 1][0]
        while end < limit and keys[end][0] == last_ts:
            end += 1
    chunk = keys[start:end] if start < limit else []
    eos = end >= limit or not chunk
    if not chunk:
        return TimePage([], start_time, True)
    end_time = chunk[-1][0]
    if not eos and chunk[0][0] == end_time:
        end_time += 1
    return TimePage(chunk, end_time, eos)


def parse_int(value: Any) -> int | None:
    """An integer query parameter, or None when absent or not an integer."""
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None
