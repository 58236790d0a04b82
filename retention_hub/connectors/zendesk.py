"""Zendesk Support connector: organizations, users, tickets and satisfaction ratings through zenpy.

How zenpy is used, and where it is bypassed (and why):
- zenpy builds the authenticated session (`{email}/token` basic auth), knows the endpoint paths and
  parameters (`client.<api>.endpoint...`), and performs every request through its own request layer
  (`BaseApi._get(..., raw_response=True)`: its timeout and its `_check_response`, which raises
  `APIException` / `RecordNotFoundException` carrying the response).
- Pages are read as raw JSON, not through zenpy's result generators: the generators hide page
  boundaries and the export cursors (`after_cursor`, `end_time`) that must be saved after each
  page, and they drop the `metric_sets` side-load (solved time). zenpy also forgets `per_page` when
  resuming from a cursor. So each stream requests its next page from its saved position.
- zenpy builds URLs from `ZENPY_FORCE_SCHEME` / `ZENPY_FORCE_NETLOC`, read from os.environ on every
  call (process-global, and other code in this process sets them). The connector never calls that
  URL builder and never touches os.environ: it joins zenpy's endpoint paths to the configured
  `base_url` itself, the way zenpy itself follows the absolute `after_url`s Zendesk sends.
- zenpy sleeps on a 429 for as long as `Retry-After` says, without limit. A response hook raises
  zenpy's own `APIException` on a 429 before that loop runs (and `ratelimit_budget=0` would stop it
  anyway), so the `Caller`'s policy does the waiting, bounded, honouring `Retry-After`.

Streams and cursors (opaque JSON strings saved by the sync engine after each stored page):
- tickets: cursor-based incremental export, 1,000 per page, `include=metric_sets`; the cursor is
  Zendesk's `after_cursor` (authoritative: the export already withholds the last minute).
- users: cursor-based incremental export; end-users become contacts, agents and admins users.
- organizations: time-based incremental export (Zendesk has no cursor export for them); the cursor
  is `start_time` plus the ids already read at that second, because the next page (and the next
  run) starts *at* `end_time` again and would repeat them.
- satisfaction_ratings: the list filtered by `start_time` (creation time) with cursor pagination,
  100 per page; the cursor is the newest creation time read plus the ids read at that second.
  Time cursors are never saved past `until`, the run's start.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import requests
from zenpy import Zenpy
from zenpy.lib.api import BaseApi
from zenpy.lib.endpoint import Url
from zenpy.lib.exception import APIException, RatelimitBudgetExceeded, ZenpyException

from ..config.models import ZendeskSource
from .http import (VENDOR_POLICIES, AuthError, Caller, Policy, RequestError, TransientError,
                   retry_after_seconds, session)
from .records import Page, Quarantined, record

log = logging.getLogger(__name__)

SOURCE = "zendesk"
STREAMS = ("organizations", "users", "tickets", "satisfaction_ratings")
EXPORT_PAGE_MAX = 1000  # per_page limit of the incremental exports
LIST_PAGE_MAX = 100  # page[size] limit of cursor-paginated lists
EXPORTS_PER_MINUTE = 10  # Zendesk's own limit on incremental export requests
PRIORITIES = ("low", "normal", "high", "urgent")
SATISFACTION_KIND = "satisfaction"
_SALESFORCE_ID = re.compile(r"^[0-9A-Za-z]{3}[0-9A-Za-z]{12}(?:[0-9A-Za-z]{3})?$")


class WindowLimiter:
    """At most `limit` calls in any `window` seconds: Zendesk counts incremental export requests
    per rolling minute, so a token bucket (which adds its burst on top of the rate) would overshoot.
    `margin` absorbs the difference between when a request leaves here and when it arrives."""

    def __init__(self, limit: int, window: float = 60.0, margin: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit, self.window, self.margin = limit, window, margin
        self.clock, self.sleep = clock, sleep
        self._slots: deque[float] = deque(maxlen=limit)  # start times of the last `limit` calls
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Reserve the next free slot and sleep until it; returns the seconds waited."""
        with self._lock:
            now = self.clock()
            at = now
            if len(self._slots) == self.limit:
                at = max(now, self._slots[0] + self.window + self.margin)
            self._slots.append(at)
        wait = at - now
        if wait > 0:
            self.sleep(wait)
        return max(0.0, wait)


class ZendeskConnector:
    """Reads Zendesk Support through zenpy under the shared HTTP policy."""

    source = SOURCE

    def __init__(self, config: ZendeskSource, policy: Policy | None = None, *,
                 export_page_size: int = EXPORT_PAGE_MAX, list_page_size: int = LIST_PAGE_MAX,
                 exports_per_minute: int = EXPORTS_PER_MINUTE) -> None:
        """`export_page_size` / `list_page_size` default to Zendesk's maxima (smaller only in tests);
        `exports_per_minute` paces the incremental exports under Zendesk's 10 per minute."""
        if not 1 <= export_page_size <= EXPORT_PAGE_MAX or not 1 <= list_page_size <= LIST_PAGE_MAX:
            raise ValueError(f"page sizes must be 1..{EXPORT_PAGE_MAX} (exports) and 1..{LIST_PAGE_MAX} (lists)")
        self.config = config
        self.policy = policy or VENDOR_POLICIES[SOURCE]
        self.base_url = str(config.url).rstrip("/")
        self.export_page_size, self.list_page_size = export_page_size, list_page_size
        self.caller = Caller(SOURCE, classify, self.policy)
        self.export_limiter = WindowLimiter(exports_per_minute)
        http = session(self.policy)
        http.hooks["response"].append(_raise_on_429)
        # ratelimit_budget=0: should a 429 ever reach zenpy, it raises instead of sleeping
        self.client = Zenpy(subdomain=config.subdomain, email=config.email,
                            token=config.api_token.get_secret_value(), session=http,
                            timeout=self.policy.timeout, ratelimit_budget=0, disable_cache=True)

    # -- the Connector protocol ------------------------------------------------------------------
    def streams(self) -> list[str]:
        return list(STREAMS)

    def api_calls(self) -> dict[str, int]:
        return dict(self.caller.calls)

    def read(self, stream: str, cursor: str | None, until: datetime, full_refresh: bool = False) -> Iterator[Page]:
        """Pages of `stream` changed since `cursor` (everything when None or `full_refresh`)."""
        if stream not in STREAMS:
            raise ValueError(f"unknown zendesk stream {stream!r} (streams: {', '.join(STREAMS)})")
        if until.tzinfo is None:
            raise ValueError("until must be timezone-aware")
        state = {} if full_refresh or not cursor else _load_cursor(stream, cursor)
        until_ts = int(until.timestamp())
        if stream in ("tickets", "users"):
            return self._read_export(stream, state, cursor)
        if stream == "organizations":
            return self._read_organizations(state, until_ts, cursor)
        return self._read_ratings(state, until_ts, cursor)

    # -- requests ----------------------------------------------------------------------------------
    def _fetch(self, stream: str, api: BaseApi, url: Url, extra: dict[str, Any] | None = None,
               export: bool = False) -> dict[str, Any]:
        """GET one page through zenpy's request layer under the policy; returns the JSON body."""
        target = f"{self.base_url}/api/v2/{url.path}"
        params = {**url.params, **(extra or {})}

        def call() -> Any:
            if export:  # every attempt, retries included, counts against the export limit
                self.export_limiter.acquire()
            return api._get(target, raw_response=True, params=params).json()

        body = self.caller.call(call, stream=stream)
        if not isinstance(body, dict):
            raise RequestError(SOURCE, f"{url.path} answered with something other than a JSON object")
        return body

    @staticmethod
    def _rows(body: dict[str, Any], key: str, path: str) -> list[dict[str, Any]]:
        rows = body.get(key)
        if not isinstance(rows, list):
            raise RequestError(SOURCE, f"{path} answered without a {key!r} list")
        return rows

    # -- tickets and users: cursor-based incremental exports ---------------------------------------
    def _read_export(self, stream: str, state: dict[str, Any], given: str | None) -> Iterator[Page]:
        api = self.client.tickets if stream == "tickets" else self.client.users
        include = ["metric_sets"] if stream == "tickets" else None
        after: str | None = state.get("after_cursor")
        while True:
            if after:
                url = api.endpoint.incremental.cursor(cursor=after, include=include)
            else:  # first run: the whole account from the beginning of time
                url = api.endpoint.incremental.cursor_start(start_time=0, include=include)
            body = self._fetch(stream, api, url, {"per_page": self.export_page_size}, export=True)
            rows = self._rows(body, stream, url.path)
            if stream == "tickets":
                metrics = {m.get("ticket_id"): m for m in body.get("metric_sets") or [] if isinstance(m, dict)}
                records, bad = _map(rows, lambda t: _ticket_record(t, metrics.get(t.get("id"))), "ticket")
            else:
                records, bad = _map(rows, _user_record, "contact")
            new_after = body.get("after_cursor") or after
            cursor = _dump({"after_cursor": new_after}) if new_after else None
            if records or bad or (cursor is not None and cursor != given):
                yield Page(records, cursor, bad)
                given = cursor
            # the cursor is Zendesk's: stop at end_of_stream, or if it stopped moving (never loop)
            if body.get("end_of_stream") is not False or not new_after or (new_after == after and not rows):
                return
            after = new_after

    # -- organizations: time-based incremental export ----------------------------------------------
    def _read_organizations(self, state: dict[str, Any], until_ts: int, given: str | None) -> Iterator[Page]:
        api = self.client.organizations
        start, seen = int(state.get("start_time", 0)), set(state.get("seen", []))
        while True:
            url = api.endpoint.incremental(start_time=start, per_page=self.export_page_size)
            body = self._fetch("organizations", api, url, export=True)
            rows = self._rows(body, "organizations", url.path)
            # the page starts *at* start_time, so the records read there last time come again
            fresh = [o for o in rows if not (o.get("id") in seen and _stamp(o.get("updated_at")) == start)]
            records, bad = _map(fresh, _organization_record, "account")
            end_raw = body.get("end_time")
            end = int(end_raw) if isinstance(end_raw, (int, float)) or str(end_raw).isdigit() else start
            done = body.get("end_of_stream") is not False
            at_end = {o.get("id") for o in rows if _stamp(o.get("updated_at")) == end}
            next_seen = at_end | seen if end == start else at_end
            if not done and end <= start:
                # a full page of one second (Zendesk sends every record of its last second): move on
                log.warning("zendesk organizations: a whole export page shares one second (%s); "
                            "continuing from the next second", start)
                end, next_seen = start + 1, set()
            saved = min(end, until_ts)  # never a start_time past the run's start
            cursor = _dump({"start_time": saved, "seen": sorted(next_seen) if saved == end else []})
            if records or bad or cursor != given:
                yield Page(records, cursor, bad)
                given = cursor
            if done:
                return
            start, seen = end, next_seen

    # -- satisfaction ratings: the list, filtered by creation time ---------------------------------
    def _read_ratings(self, state: dict[str, Any], until_ts: int, given: str | None) -> Iterator[Page]:
        api = self.client.satisfaction_ratings
        start, seen = int(state.get("start_time", 0)), set(state.get("seen", []))
        after: str | None = state.get("page_after")  # set when a run stopped mid-list
        high = int(state.get("high", start))
        high_seen = set(state.get("high_seen", seen if high == start else []))
        while True:
            url = api.endpoint(start_time=start, cursor_pagination=self.list_page_size)
            body = self._fetch("satisfaction_ratings", api, url, {"page[after]": after} if after else None)
            rows = self._rows(body, "satisfaction_ratings", url.path)
            fresh = [r for r in rows if not (r.get("id") in seen and _stamp(r.get("created_at")) == start)]
            for row in fresh:
                ts = _stamp(row.get("created_at"))
                if ts > high:
                    high, high_seen = ts, {row.get("id")}
                elif ts == high:
                    high_seen.add(row.get("id"))
            records, bad = _map(fresh, _rating_record, SATISFACTION_KIND)
            meta = body.get("meta") or {}
            more = bool(meta.get("has_more")) and bool(meta.get("after_cursor"))
            if more:  # mid-list: resume this same query after this page
                after = meta["after_cursor"]
                position = {"start_time": start, "seen": sorted(seen), "page_after": after,
                            "high": high, "high_seen": sorted(high_seen)}
            else:  # done: the next run asks for ratings created from the newest one read
                saved = min(high, until_ts)
                position = {"start_time": saved, "seen": sorted(high_seen) if saved == high else []}
            cursor = _dump(position)
            if records or bad or cursor != given:
                yield Page(records, cursor, bad)
                given = cursor
            if not more:
                return


# -- error classification ----------------------------------------------------------------------------
def _raise_on_429(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    """Session hook: a 429 becomes zenpy's APIException before zenpy's unbounded sleep loop sees it."""
    if response.status_code == 429:
        raise APIException(response.text or "429 Too Many Requests", response=response)
    return response


def _status_error(status: int, detail: str, retry_after: float | None) -> BaseException:
    if status == 401:
        return AuthError(SOURCE, f"authentication failed (HTTP 401{detail}): check sources.zendesk.subdomain, "
                                 "email and api_token (an API token of an active agent or admin, with token "
                                 "access enabled in Admin Center > Apps and integrations > Zendesk API)")
    if status == 403:
        return AuthError(SOURCE, f"permission denied (HTTP 403{detail}): the incremental exports and "
                                 "satisfaction ratings need an admin's API token")
    if status == 429:
        return TransientError(SOURCE, f"rate limited (HTTP 429{detail})", retry_after)
    if status >= 500 or status in (408, 409):
        return TransientError(SOURCE, f"server error (HTTP {status}{detail})", retry_after)
    return RequestError(SOURCE, f"request rejected (HTTP {status}{detail})")


def _detail(response: requests.Response | None) -> str:
    """The vendor's error name and description, short (never the request, which holds no secret
    anyway: credentials travel in the Authorization header)."""
    if response is None:
        return ""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    parts = [str(body[k]) for k in ("error", "description") if isinstance(body.get(k), str)]
    return (": " + " - ".join(parts))[:300] if parts else ""


def classify(exc: BaseException) -> BaseException | None:
    """zenpy / requests exceptions -> the policy's error classes (None: not ours, re-raise as is)."""
    if isinstance(exc, (AuthError, TransientError, RequestError)):
        return exc
    response = getattr(exc, "response", None)
    if isinstance(exc, (APIException, requests.HTTPError)) and response is not None:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        return _status_error(response.status_code, _detail(response), retry_after)
    if isinstance(exc, RatelimitBudgetExceeded):
        return TransientError(SOURCE, "rate limited (zenpy's rate-limit budget is spent)")
    if isinstance(exc, requests.RequestException):  # connection errors, timeouts, truncated bodies
        return TransientError(SOURCE, f"network error: {type(exc).__name__}")
    if isinstance(exc, (APIException, ZenpyException)):
        return RequestError(SOURCE, f"zenpy: {str(exc)[:300]}")
    return None


# -- cursors ---------------------------------------------------------------------------------------
_CURSOR_KEYS = {
    "tickets": {"after_cursor"}, "users": {"after_cursor"}, "organizations": {"start_time", "seen"},
    "satisfaction_ratings": {"start_time", "seen", "page_after", "high", "high_seen"},
}


def _dump(state: dict[str, Any]) -> str:
    return json.dumps(state, separators=(",", ":"), sort_keys=True)


def _load_cursor(stream: str, cursor: str) -> dict[str, Any]:
    try:
        state = json.loads(cursor)
        ok = isinstance(state, dict) and set(state) <= _CURSOR_KEYS[stream] and bool(state)
    except ValueError:
        ok = False
    if not ok:
        raise RequestError(SOURCE, f"the saved {stream} cursor is not one this connector wrote; "
                                   f"run `rhub sync --source zendesk --stream {stream} --full-refresh`")
    return state


# -- canonical records -----------------------------------------------------------------------------
def _time(value: Any) -> datetime | None:
    """Zendesk's `2026-11-23T10:00:00Z` -> aware UTC datetime (None when absent)."""
    if value in (None, ""):
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _iso(value: Any) -> str | None:
    when = _time(value)
    return when.isoformat() if when else None


def _stamp(value: Any) -> int:
    """Unix seconds of a Zendesk time, -1 when unreadable (so it never matches a cursor)."""
    try:
        when = _time(value)
    except ValueError:
        return -1
    return int(when.timestamp()) if when else -1


def _ref(value: Any) -> str | None:
    return None if value is None else str(value)


def _required_time(row: dict[str, Any], key: str = "updated_at") -> datetime:
    when = _time(row.get(key))
    if when is None:
        raise ValueError(f"no {key}")
    return when


def _map(rows: list[Any], build: Callable[[dict[str, Any]], dict[str, Any]],
         kind: str) -> tuple[list[dict[str, Any]], list[Quarantined]]:
    """Build canonical records; a row that cannot be read goes to quarantine with the reason."""
    records, bad = [], []
    for row in rows:
        try:
            if not isinstance(row, dict) or row.get("id") is None:
                raise ValueError("not an object with an id")
            records.append(build(row))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            source_id = _ref(row.get("id")) if isinstance(row, dict) else None
            bad.append(Quarantined(kind, source_id, f"{type(exc).__name__}: {exc}", row))
    return records, bad


def _external_ids(value: Any) -> dict[str, str]:
    """An organization's external_id, named by the system whose id it looks like."""
    text = str(value).strip() if value not in (None, "") else ""
    if not text:
        return {}
    if text.startswith("cus_"):
        return {"stripe": text}
    if text.startswith("001") and _SALESFORCE_ID.match(text):  # Salesforce Account ids start 001
        return {"salesforce": text}
    return {"external": text}


def _organization_record(org: dict[str, Any]) -> dict[str, Any]:
    domains = [str(d).strip().lower() for d in org.get("domain_names") or [] if str(d).strip()]
    return record(SOURCE, "account", org["id"], _required_time(org), deleted=bool(org.get("deleted_at")),
                  name=org.get("name"), domain=domains[0] if domains else None, domain_names=domains,
                  website=None, parent_id=None, owner_id=None, industry=None, country=None, segment=None,
                  external_ids=_external_ids(org.get("external_id")), tags=list(org.get("tags") or []),
                  created_at=_iso(org.get("created_at")))


def _user_record(user: dict[str, Any]) -> dict[str, Any]:
    """End-users are the customers' people (contacts); agents and admins are staff (users).
    Zendesk marks a deleted user `active: false`."""
    deleted, updated = user.get("active") is False, _required_time(user)
    email = (user.get("email") or "").strip().lower() or None
    if (user.get("role") or "end-user") == "end-user":
        return record(SOURCE, "contact", user["id"], updated, deleted=deleted, email=email,
                      name=user.get("name"), title=None, account_id=_ref(user.get("organization_id")),
                      opted_out=None, phone=user.get("phone"), external_id=user.get("external_id"),
                      suspended=bool(user.get("suspended")))
    return record(SOURCE, "user", user["id"], updated, deleted=deleted, email=email, name=user.get("name"),
                  role=user.get("role"), suspended=bool(user.get("suspended")))


def _minutes(metric: dict[str, Any], key: str) -> int | None:
    value = (metric.get(key) or {}).get("calendar") if isinstance(metric.get(key), dict) else None
    return int(value) if isinstance(value, (int, float)) else None


def _ticket_record(ticket: dict[str, Any], metric: dict[str, Any] | None) -> dict[str, Any]:
    """A ticket with its satisfaction rating (already on the ticket: no extra call) and, from the
    `metric_sets` side-load, when it was solved."""
    metric = metric or {}
    tags = [str(t) for t in ticket.get("tags") or []]
    rating = ticket.get("satisfaction_rating") if isinstance(ticket.get("satisfaction_rating"), dict) else {}
    score = rating.get("score")
    priority = str(ticket.get("priority") or "").lower()
    return record(SOURCE, "ticket", ticket["id"], _required_time(ticket),
                  deleted=ticket.get("status") == "deleted",
                  account_id=_ref(ticket.get("organization_id")), requester_id=_ref(ticket.get("requester_id")),
                  assignee_id=_ref(ticket.get("assignee_id")), subject=ticket.get("subject"),
                  type=ticket.get("type"), priority=priority if priority in PRIORITIES else None,
                  status=ticket.get("status"), created_at=_iso(ticket.get("created_at")),
                  solved_at=_iso(metric.get("solved_at")), escalated="escalated" in tags,
                  satisfaction=score if score in ("good", "bad") else None,
                  satisfaction_offered=score in ("offered", "good", "bad"),
                  satisfaction_comment=rating.get("comment"), satisfaction_rating_id=_ref(rating.get("id")),
                  first_reply_minutes=_minutes(metric, "reply_time_in_minutes"),
                  resolution_minutes=_minutes(metric, "full_resolution_time_in_minutes"),
                  channel=(ticket.get("via") or {}).get("channel"), tags=tags)


def _rating_record(rating: dict[str, Any]) -> dict[str, Any]:
    """A CSAT rating."""
    return record(SOURCE, SATISFACTION_KIND, rating["id"], _required_time(rating),
                 ticket_id=_ref(rating.get("ticket_id")), requester_id=_ref(rating.get("requester_id")),
                 assignee_id=_ref(rating.get("assignee_id")), score=rating.get("score"),
                 comment=rating.get("comment"), reason=rating.get("reason"),
                 created_at=_iso(rating.get("created_at")))
