"""HubSpot connector: companies, contacts, deals, tickets, tasks and owners through hubspot-api-client.

First run: the list endpoints (100 per page, the maximum) with only the properties we map, and
each record's company link (a company's: its parent) read through the v4 batch association
endpoint for up to 1,000 ids at once. Later runs: CRM search on the last-modified date, inclusive
with a look-back, up to the run's start, sorted ascending, 200 per page (the maximum). Search stops
at 10,000 results per query, so a query ends before that and the next one starts at the last
modification time read; the same happens when a query's `total` changes while we page (a record
modified since the run began left the list, and offsets slid). Records read twice that way or
because of the look-back are skipped by (id, modification time) kept in the cursor. Search does
not return archived records, so incremental runs also list the archived ones to emit deletions.
Owners are few: read in full each run, only the changed ones emitted after the first run.

Replies are parsed from JSON here (`_preload_content=False`): the SDK's model building costs four
times the HTTP exchange and adds nothing we use.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Callable, Iterator

import urllib3
from hubspot import HubSpot
from urllib3.util.retry import Retry

from ..config.models import HubSpotSource
from .http import (VENDOR_POLICIES, AuthError, BudgetExhausted, Caller, Policy, RequestError, SourceError,
                   TransientError, retry_after_seconds)
from .records import Page, Quarantined, record

SOURCE = "hubspot"
LIST_LIMIT, SEARCH_LIMIT, ASSOC_BATCH, OWNER_LIMIT = 100, 200, 1000, 500  # HubSpot's maxima
SEARCH_WINDOW = 10_000  # search returns at most this many results per query
CHILD_TO_PARENT = 14  # HUBSPOT_DEFINED company -> its parent company
ZERO_DECIMAL = {"JPY", "KRW", "VND", "CLP", "ISK", "HUF", "TWD", "UGX", "XAF", "XOF", "PYG", "RWF"}
THREE_DECIMAL = {"BHD", "JOD", "KWD", "OMR", "TND", "IQD", "LYD"}
PRIORITY = {"LOW": "low", "MEDIUM": "normal", "HIGH": "high", "URGENT": "urgent"}
# the default ticket pipeline's stages (custom pipelines keep their own stage id as status)
TICKET_STAGE = {"1": "new", "2": "pending", "3": "open", "4": "closed"}


@dataclass(frozen=True)
class Spec:
    """One CRM object stream."""

    object_type: str  # HubSpot's plural name
    kind: str  # canonical kind
    properties: tuple[str, ...]
    modified: str = "hs_lastmodifieddate"  # the searchable last-modified property
    created: str = "createdate"  # the searchable creation time (engagements call it hs_createdate)
    link: str = "companies"  # association read for every record (companies: the parent company)


SPECS: dict[str, Spec] = {
    "companies": Spec("companies", "account", ("name", "domain", "website", "hubspot_owner_id", "industry",
                                               "country", "numberofemployees", "annualrevenue", "lifecyclestage",
                                               "salesforceaccountid", "hs_lastmodifieddate")),
    "contacts": Spec("contacts", "contact", ("email", "firstname", "lastname", "jobtitle", "hs_email_optout",
                                             "hubspot_owner_id", "lastmodifieddate"), modified="lastmodifieddate"),
    "deals": Spec("deals", "renewal", ("dealname", "amount", "deal_currency_code", "closedate", "dealstage",
                                       "pipeline", "dealtype", "hs_is_closed", "hs_is_closed_won",
                                       "hubspot_owner_id", "hs_lastmodifieddate")),
    "tickets": Spec("tickets", "ticket", ("subject", "hs_pipeline", "hs_pipeline_stage", "hs_ticket_priority",
                                          "createdate", "closed_date", "hubspot_owner_id", "hs_lastmodifieddate")),
    "tasks": Spec("tasks", "activity", ("hs_task_subject", "hs_task_status", "hs_task_type", "hs_timestamp",
                                        "hubspot_owner_id", "hs_lastmodifieddate"), created="hs_createdate"),
}
STREAMS = (*SPECS, "owners")


# -- time and values ----------------------------------------------------------------------------
def to_ms(value: Any) -> int | None:
    """HubSpot time (ISO string, epoch millis string or datetime) -> epoch millis."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    dt = datetime.fromisoformat(text)
    return int((dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def iso(value: Any) -> str | None:
    ms = to_ms(value)
    return from_ms(ms).isoformat() if ms is not None else None


def minor_units(amount: Any, currency: str) -> int | None:
    if amount in (None, ""):
        return None
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        raise ValueError(f"amount {amount!r} is not a number") from None
    scale = Decimal(1 if currency in ZERO_DECIMAL else 1000 if currency in THREE_DECIMAL else 100)
    return int((value * scale).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def flag(value: Any) -> bool | None:
    return None if value in (None, "") else str(value).strip().lower() == "true"


# -- errors -------------------------------------------------------------------------------------
def _is_api_exception(exc: BaseException) -> bool:
    """Every generated sub-package (hubspot.crm.contacts, ...) has its own ApiException class."""
    return any(c.__name__ == "ApiException" and c.__module__.startswith("hubspot.") for c in type(exc).__mro__)


def _vendor_message(body: Any) -> tuple[str, dict[str, Any]]:
    try:
        data = json.loads(body) if body else {}
    except (ValueError, TypeError):
        data = {}
    data = data if isinstance(data, dict) else {}
    return str(data.get("message") or "no message"), data


def classify(exc: BaseException) -> BaseException | None:
    """Map an SDK or urllib3 error to the policy's classes (None: a bug, raised as it is)."""
    if isinstance(exc, SourceError):
        return exc
    if _is_api_exception(exc):
        status = int(getattr(exc, "status", 0) or 0)
        message, body = _vendor_message(getattr(exc, "body", None))
        headers = getattr(exc, "headers", None) or {}
        if status == 401:
            return AuthError(SOURCE, f"the access token was rejected (401: {message}); check "
                                     "sources.hubspot.access_token (a private app's token) and that the app "
                                     "is still installed")
        if status == 403:
            return AuthError(SOURCE, f"the access token lacks a permission (403: {message}); give the private "
                                     "app the read scopes for companies, contacts, deals, tickets, tasks and "
                                     "owners")
        if status == 429:
            policy = str(body.get("policyName") or "")
            if policy == "DAILY":
                return BudgetExhausted(SOURCE, "HubSpot's daily API limit is used up; the run stopped with its "
                                               "state saved and the next run continues from there")
            after = retry_after_seconds(headers.get("Retry-After"))
            if after is None and policy == "SECONDLY":
                after = 1.0
            return TransientError(SOURCE, f"throttled by HubSpot (429 {policy or 'rate limit'})", after)
        if status >= 500:
            return TransientError(SOURCE, f"HubSpot answered {status}: {message}",
                                  retry_after_seconds(headers.get("Retry-After")))
        if status == 0:  # the SDK's wrapper of a TLS failure: retrying cannot fix a certificate
            return RequestError(SOURCE, f"could not connect securely: {getattr(exc, 'reason', '')}; "
                                        "check sources.hubspot.base_url")
        category = body.get("category") or "error"
        return RequestError(SOURCE, f"HubSpot refused the request ({status} {category}: {message})")
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and isinstance(exc.reason, urllib3.exceptions.SSLError):
        return RequestError(SOURCE, f"could not connect securely ({exc.reason}); check sources.hubspot.base_url")
    if isinstance(exc, urllib3.exceptions.HTTPError):  # MaxRetryError, ProtocolError, timeouts
        return TransientError(SOURCE, f"connection problem: {type(exc).__name__}")
    if isinstance(exc, json.JSONDecodeError):
        return TransientError(SOURCE, "HubSpot sent a reply that is not JSON")
    return None


# -- the cursor ---------------------------------------------------------------------------------
@dataclass
class Cursor:
    """Where a stream resumes. `mod`/`arch`: lower bounds (epoch ms) of the next modification search
    and archived scan; `seen`: id -> modification (or archive) ms of records already emitted at or
    after the look-back horizon; `full`: a first read in progress (list `after`, start ms, phase);
    `live`: how many live records were created up to `mod` (set only when a run completed);
    `active`: owners only, the ids listed as active by the last completed run."""

    mod: int | None = None
    arch: int | None = None
    seen: dict[str, int] = field(default_factory=dict)
    full: dict[str, Any] | None = None
    live: int | None = None
    active: list[str] | None = None

    @classmethod
    def load(cls, text: str | None) -> "Cursor | None":
        if not text:
            return None
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            raise RequestError(SOURCE, f"the stored cursor cannot be read ({exc}); run a full refresh") from None
        return cls(data.get("mod"), data.get("arch"), {str(k): int(v) for k, v in (data.get("seen") or {}).items()},
                   data.get("full"), data.get("live"), data.get("active"))

    def dump(self, horizon: int) -> str:
        """JSON, keeping only the `seen` entries a look-back from `horizon` can meet again."""
        seen = {k: v for k, v in self.seen.items() if v >= horizon}
        data: dict[str, Any] = {"v": 1, "mod": self.mod, "arch": self.arch, "seen": seen}
        if self.full is not None:
            data["full"] = self.full
        if self.live is not None:
            data["live"] = self.live
        if self.active is not None:
            data["active"] = self.active
        return json.dumps(data, separators=(",", ":"), sort_keys=True)


class HubSpotConnector:
    """Reads one HubSpot portal; see the module docstring for how."""

    source = SOURCE

    def __init__(self, config: HubSpotSource, policy: Policy | None = None, *, search_rate: float = 4.0,
                 lookback: timedelta = timedelta(minutes=5), default_currency: str = "USD",
                 search_page_size: int = SEARCH_LIMIT, batch_size: int = ASSOC_BATCH) -> None:
        self.config = config
        self.policy = policy or VENDOR_POLICIES[SOURCE]
        self.caller = Caller(SOURCE, classify, self.policy)
        # search has its own limit (5 / s) and does not count against the general one
        self.search_caller = Caller(SOURCE, classify, replace(self.policy, rate_per_second=search_rate, burst=1),
                                    budget=self.caller.budget, calls=self.caller.calls, retries=self.caller.retries)
        self.lookback_ms = int(lookback.total_seconds() * 1000)
        self.currency = default_currency.upper()
        self.search_limit = min(search_page_size, SEARCH_LIMIT)
        self.batch_size = min(batch_size, ASSOC_BATCH)
        # Retry(0): urllib3 would otherwise retry connection errors 3 times unseen; retries belong to Caller
        self.client = HubSpot(access_token=config.access_token.get_secret_value(),
                              host=config.base_url.rstrip("/"), retry=Retry(0, redirect=False))
        self._apis: dict[str, Any] = {}  # each SDK property access builds a new client: build once

    # -- the Connector protocol -----------------------------------------------------------------
    def streams(self) -> list[str]:
        return list(STREAMS)

    def api_calls(self) -> dict[str, int]:
        return dict(self.caller.calls)

    def read(self, stream: str, cursor: str | None, until: datetime, full_refresh: bool = False) -> Iterator[Page]:
        if stream not in STREAMS:
            raise RequestError(SOURCE, f"unknown stream {stream!r} (streams: {', '.join(STREAMS)})")
        if until.tzinfo is None:
            raise ValueError("until must be timezone-aware")
        state = None if full_refresh else Cursor.load(cursor)
        hi = to_ms(until)
        assert hi is not None
        if stream == "owners":
            yield from self._owners(state, hi, full_refresh)
        elif state is None or state.full is not None or state.mod is None:
            yield from self._full(SPECS[stream], state, hi, full_refresh)
        else:
            yield from self._incremental(SPECS[stream], state, hi)

    # -- SDK access ------------------------------------------------------------------------------
    def _api(self, name: str) -> Any:
        if name not in self._apis:
            crm = self.client.crm
            if name == "assoc_batch":
                api = crm.associations.v4.batch_api
            elif name == "assoc_basic":
                api = crm.associations.v4.basic_api
            elif name == "owners":
                api = crm.owners.owners_api
            else:
                object_type, _, kind = name.partition(":")
                group = crm.objects.tasks if object_type == "tasks" else getattr(crm, object_type)
                api = getattr(group, f"{kind}_api")
            self._apis[name] = api
        return self._apis[name]

    def _fetch(self, fn: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
        """One SDK call with the policy's timeout; the reply's JSON (see the module docstring)."""
        resp = fn(**kwargs, _preload_content=False, _request_timeout=self.policy.timeout)
        try:
            data = resp.data
            limit, left = resp.headers.get("X-HubSpot-RateLimit-Daily"), resp.headers.get(
                "X-HubSpot-RateLimit-Daily-Remaining")
        finally:
            resp.release_conn()
        if limit and left and limit.isdigit() and left.isdigit():
            assert self.caller.budget is not None
            self.caller.budget.observe(int(limit) - int(left), int(limit))
        return json.loads(data)

    def _call(self, stream: str, fn: Callable[..., Any], search: bool = False, **kwargs: Any) -> dict[str, Any]:
        caller = self.search_caller if search else self.caller
        return caller.call(self._fetch, fn, stream=stream, **kwargs)

    def _list(self, stream: str, object_type: str, properties: tuple[str, ...], archived: bool,
              after: str | None) -> tuple[list[dict], str | None]:
        body = self._call(stream, self._api(f"{object_type}:basic").get_page, limit=LIST_LIMIT, after=after,
                          properties=list(properties), archived=archived)
        return body.get("results") or [], _next_after(body)

    def _links(self, stream: str, from_type: str, to_type: str, ids: list[str]) -> dict[str, list[dict]]:
        """from id -> [{toObjectId, associationTypes}] for up to 1,000 ids in one batch call."""
        out: dict[str, list[dict]] = {}
        if not ids:
            return out
        body = self._call(stream, self._api("assoc_batch").get_page, from_object_type=from_type,
                          to_object_type=to_type,
                          batch_input_public_fetch_associations_batch_request={"inputs": [{"id": i} for i in ids]})
        # ids without associations come back under `errors` (NO_ASSOCIATIONS_FOUND): nothing to add
        for result in body.get("results") or []:
            from_id = str(result["from"]["id"])
            out.setdefault(from_id, []).extend(result.get("to") or [])
            after = _next_after(result)
            while after:  # more than 500 associations on one record: its own pages
                page = self._call(stream, self._api("assoc_basic").get_page, object_type=from_type,
                                  object_id=from_id, to_object_type=to_type, after=after, limit=500)
                out[from_id].extend(page.get("results") or [])
                after = _next_after(page)
        return out

    # -- reading ---------------------------------------------------------------------------------
    def _stamp(self, spec: Spec, obj: dict) -> int | None:
        """The record's last-modified time in epoch ms (None when missing or unreadable)."""
        props = obj.get("properties") or {}
        try:
            return to_ms(props.get(spec.modified) or props.get("hs_lastmodifieddate") or obj.get("updatedAt"))
        except ValueError:
            return None

    def _page(self, spec: Spec, objs: list[dict], cursor: str | None) -> Page:
        """Canonical records for live objects, with their company links read in one batch."""
        links = self._links(spec.object_type, spec.object_type, spec.link,
                            [str(o["id"]) for o in objs if o.get("id") is not None])
        records, bad = [], []
        for obj in objs:
            try:
                records.append(self._canonical(spec, obj, links.get(str(obj.get("id")), [])))
            except (KeyError, TypeError, ValueError) as exc:
                bad.append(Quarantined(spec.kind, obj.get("id") if isinstance(obj, dict) else None,
                                       f"{type(exc).__name__}: {exc}", obj))
        return Page(records, cursor, bad)

    def _full(self, spec: Spec, state: Cursor | None, hi: int, full_refresh: bool) -> Iterator[Page]:
        """List every record; with `full_refresh` also every archived one (stale rows in the store)."""
        if state is not None and state.full is not None:  # resuming a first read that was interrupted
            full, seen = dict(state.full), dict(state.seen)
        else:
            full, seen = {"start": hi, "after": None, "phase": "live", "archived": full_refresh}, {}
        horizon = full["start"] - self.lookback_ms
        final = Cursor(full["start"], full["start"], seen)  # what the next run starts from

        def resume() -> str:
            return Cursor(seen=seen, full=dict(full)).dump(horizon)

        buffer: list[dict] = []
        while full["phase"] == "live":
            objs, after = self._list(spec.object_type, spec.object_type, spec.properties, False, full["after"])
            for obj in objs:
                stamp = self._stamp(spec, obj)
                if stamp is not None and stamp >= horizon and obj.get("id") is not None:
                    seen[str(obj["id"])] = stamp
            buffer += objs
            full["after"] = after
            if after and len(buffer) + LIST_LIMIT <= self.batch_size:
                continue  # gather up to 1,000 ids for one association call
            if not after:
                full["phase"] = "archived" if full["archived"] else "done"
                if full["phase"] == "done":
                    final.live = self._live_total(spec, final.mod)
            yield self._page(spec, buffer, resume() if full["phase"] != "done" else final.dump(horizon))
            buffer = []
        if full["phase"] == "archived":
            for deleted, after in self._archived(spec, None, seen, horizon, full["after"]):
                full["after"] = after
                if not after:
                    final.live = self._live_total(spec, final.mod)
                yield Page(deleted, resume() if after else final.dump(horizon))

    def _archived(self, spec: Spec, since: int | None, seen: dict[str, int], horizon: int,
                  after: str | None = None) -> Iterator[tuple[list[dict], str | None]]:
        """Deletions, a list page at a time: records archived since `since` (all when None)."""
        while True:
            objs, after = self._list(spec.object_type, spec.object_type, ("hs_object_id",), True, after)
            records = []
            for obj in objs:
                if obj.get("id") is None:
                    continue
                try:
                    stamp = to_ms(obj.get("archivedAt") or obj.get("updatedAt"))
                except ValueError:
                    stamp = None  # deleted all the same; only its time is unknown
                rec_id = str(obj["id"])
                if since is not None and (stamp is None or stamp < since or seen.get(rec_id) == stamp):
                    continue  # archived before the cursor, or already emitted
                if stamp is not None and stamp >= horizon:
                    seen[rec_id] = stamp
                records.append(record(SOURCE, spec.kind, rec_id, from_ms(stamp) if stamp else None, deleted=True))
            yield records, after
            if not after:
                return

    def _incremental(self, spec: Spec, state: Cursor, hi: int) -> Iterator[Page]:
        """Search modified records in time windows, then list archived ones for deletions.

        Within one query pages go by offset (the server keeps one result list per query); a query
        ends before its 10,000th result, or as soon as its `total` changes (a record modified since
        the run began left the list, so offsets slid): the next query starts at the last modification
        time read, and `seen` skips what is read twice. A window made of one timestamp only is walked
        by record id instead.
        """
        assert state.mod is not None
        arch = state.arch if state.arch is not None else state.mod
        seen, buffer = dict(state.seen), []
        created = 0  # live records created since the last completed run, as read now
        start = state.mod - self.lookback_ms  # lower bound of the current query
        offset, total, read_to = 0, None, start  # read_to: modification time of the last record read
        tie_after: str | None = None  # set while walking the records of timestamp `start` by id
        while start <= hi:
            objs, more, count = self._search(spec, start, hi, offset, tie_after)
            previous = read_to
            for obj in objs:
                stamp = self._stamp(spec, obj)
                read_to = max(read_to, stamp or read_to)
                if stamp is None or obj.get("id") is None or seen.get(str(obj["id"])) == stamp:
                    continue  # already emitted: a look-back or window-boundary re-read
                seen[str(obj["id"])] = stamp
                buffer.append(obj)
                born = self._created(spec, obj)
                created += born is not None and state.mod < born <= hi
            safe = read_to  # everything modified before `safe` has been read
            if tie_after is not None:
                start, tie_after = (start, str(objs[-1]["id"])) if more and objs else (start + 1, None)
                offset, total, safe = 0, None, start
            elif total is not None and count != total:
                start, offset, total = previous, 0, None  # re-read from before the page that slid
                safe = previous
            elif not more or not objs:
                start = hi + 1
            elif offset + len(objs) + self.search_limit > SEARCH_WINDOW:
                if read_to > start:
                    start, offset, total = read_to, 0, None
                else:
                    tie_after, safe = "0", start
            else:
                offset, total = offset + len(objs), count
            if start <= hi and len(buffer) + self.search_limit > self.batch_size:
                yield self._page(spec, buffer, Cursor(safe, arch, seen).dump(min(safe, arch) - self.lookback_ms))
                buffer = []
        # HubSpot's archived list cannot be filtered by time, so reading it costs a call per 100
        # archived records, every run. Skip it when the live count says nothing was archived: live
        # records created up to now = those counted last time + those created since - the archived.
        live = self._live_total(spec, hi)
        deleted: list[dict] = []
        if state.live is None or live != state.live + created:
            since = arch - self.lookback_ms
            deleted = [r for records, _ in self._archived(spec, since, seen, since) for r in records]
            arch = hi
        page = self._page(spec, buffer, Cursor(hi, arch, seen, live=live).dump(hi - self.lookback_ms))
        page.records += deleted
        yield page

    def _created(self, spec: Spec, obj: dict) -> int | None:
        props = obj.get("properties") or {}
        try:
            return to_ms(props.get(spec.created) or obj.get("createdAt"))
        except ValueError:
            return None

    def _live_total(self, spec: Spec, hi: int) -> int:
        """How many live records were created up to `hi` (one search call; its `total`)."""
        request = {"filterGroups": [{"filters": [{"propertyName": spec.created, "operator": "LTE",
                                                  "value": str(hi)}]}],
                   "properties": ["hs_object_id"], "limit": 1}
        body = self._call(spec.object_type, self._api(f"{spec.object_type}:search").do_search, search=True,
                          public_object_search_request=request)
        return int(body.get("total") or 0)

    def _search(self, spec: Spec, start: int, hi: int, offset: int,
                tie_after: str | None) -> tuple[list[dict], bool, int]:
        """One search page: modified in [start, hi] ascending, or (`tie_after`) at `start` by id."""
        if tie_after is None:
            filters = [{"propertyName": spec.modified, "operator": "GTE", "value": str(start)},
                       {"propertyName": spec.modified, "operator": "LTE", "value": str(hi)}]
            sort = spec.modified
        else:
            filters = [{"propertyName": spec.modified, "operator": "EQ", "value": str(start)},
                       {"propertyName": "hs_object_id", "operator": "GT", "value": tie_after}]
            sort = "hs_object_id"
        request: dict[str, Any] = {"filterGroups": [{"filters": filters}],
                                   "properties": list(dict.fromkeys((*spec.properties, spec.created))),
                                   "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
                                   "limit": self.search_limit}
        if offset:
            request["after"] = str(offset)
        body = self._call(spec.object_type, self._api(f"{spec.object_type}:search").do_search, search=True,
                          public_object_search_request=request)
        return body.get("results") or [], _next_after(body) is not None, int(body.get("total") or 0)

    def _owners(self, state: Cursor | None, hi: int, full_refresh: bool) -> Iterator[Page]:
        """All owners each run (a few hundred at most, and no filter by time); later runs emit only
        the changed ones, and read the archived list only when an owner left the active one."""
        since = state.mod - self.lookback_ms if state and state.mod is not None else None
        cur = Cursor(hi, hi, dict(state.seen) if state else {}, active=[])
        records, bad = [], []
        for archived in ((False, True) if state is not None or full_refresh else (False,)):
            if archived and not full_refresh and state is not None and state.active is not None \
                    and set(state.active) <= set(cur.active or ()):
                break  # every owner active last time still is: nothing was archived
            after = None
            while True:
                body = self._call("owners", self._api("owners").get_page, limit=OWNER_LIMIT, after=after,
                                  archived=archived)
                for owner in body.get("results") or []:
                    try:
                        stamp, rec_id = to_ms(owner.get("updatedAt")), str(owner["id"])
                        if not archived and cur.active is not None:
                            cur.active.append(rec_id)
                        if since is not None and (stamp is None or stamp < since or cur.seen.get(rec_id) == stamp):
                            continue
                        if stamp is not None:
                            cur.seen[rec_id] = stamp
                        name = " ".join(p for p in (owner.get("firstName"), owner.get("lastName")) if p) or None
                        records.append(record(SOURCE, "user", rec_id, from_ms(stamp) if stamp else None,
                                              deleted=archived, email=owner.get("email"), name=name,
                                              user_id=owner.get("userId")))
                    except (KeyError, TypeError, ValueError) as exc:
                        bad.append(Quarantined("user", owner.get("id") if isinstance(owner, dict) else None,
                                               f"{type(exc).__name__}: {exc}", owner))
                after = _next_after(body)
                if not after:
                    break
        cur.active = sorted(cur.active or ())
        yield Page(records, cur.dump(hi - self.lookback_ms), bad)

    # -- canonical records ------------------------------------------------------------------------
    def _canonical(self, spec: Spec, obj: dict, links: list[dict]) -> dict[str, Any]:
        p, rec_id = obj["properties"], str(obj["id"])
        stamp = self._stamp(spec, obj)
        updated = from_ms(stamp) if stamp is not None else None
        owner = p.get("hubspot_owner_id") or None
        if spec.kind == "account":
            parent = _linked(links, CHILD_TO_PARENT)
            external = {"salesforce": p["salesforceaccountid"]} if p.get("salesforceaccountid") else {}
            employees = p.get("numberofemployees")
            return record(SOURCE, "account", rec_id, updated, name=p.get("name"), domain=_domain(p.get("domain")),
                          website=p.get("website"), parent_id=parent, owner_id=owner, industry=p.get("industry"),
                          country=p.get("country"), segment=None, external_ids=external,
                          employees=int(float(employees)) if employees not in (None, "") else None,
                          lifecycle_stage=p.get("lifecyclestage"))
        account = _linked(links)
        if spec.kind == "contact":
            name = " ".join(x for x in (p.get("firstname"), p.get("lastname")) if x) or None
            return record(SOURCE, "contact", rec_id, updated, email=p.get("email"), name=name,
                          title=p.get("jobtitle"), account_id=account, opted_out=flag(p.get("hs_email_optout")),
                          owner_id=owner)
        if spec.kind == "renewal":
            currency = (p.get("deal_currency_code") or self.currency).upper()
            stage = p.get("dealstage")
            closed = flag(p.get("hs_is_closed"))
            won = flag(p.get("hs_is_closed_won"))
            if closed is None:  # older portals / the sandbox: the default pipeline's closing stages
                closed, won = stage in ("closedwon", "closedlost"), stage == "closedwon"
            close = iso(p.get("closedate"))
            return record(SOURCE, "renewal", rec_id, updated, account_id=account, name=p.get("dealname"),
                          close_date=close[:10] if close else None, amount_minor=minor_units(p.get("amount"), currency),
                          currency=currency, stage=stage, type=p.get("dealtype"), is_closed=closed,
                          is_won=bool(won) if closed else False, owner_id=owner)
        if spec.kind == "ticket":
            stage = p.get("hs_pipeline_stage")
            status = TICKET_STAGE.get(stage or "") if (p.get("hs_pipeline") or "0") == "0" else None
            if status is None:
                status = "closed" if p.get("closed_date") else stage
            priority = p.get("hs_ticket_priority")
            return record(SOURCE, "ticket", rec_id, updated, account_id=account, requester_email=None,
                          requester_id=None, subject=p.get("subject"),
                          priority=PRIORITY.get(str(priority).upper(), "normal") if priority else None,
                          status=status, created_at=iso(p.get("createdate") or obj.get("createdAt")),
                          solved_at=iso(p.get("closed_date")), escalated=None, satisfaction=None, owner_id=owner)
        status = p.get("hs_task_status")
        kind = p.get("hs_task_type")
        return record(SOURCE, "activity", rec_id, updated, account_id=account, owner_id=owner,
                      type=kind.lower() if kind else None, subject=p.get("hs_task_subject"),
                      status=status.lower() if status else None,
                      due_date=iso(p.get("hs_timestamp")), completed=status == "COMPLETED")


def _next_after(body: dict[str, Any]) -> str | None:
    nxt = ((body.get("paging") or {}).get("next") or {}).get("after")
    return str(nxt) if nxt not in (None, "") else None


def _linked(links: list[dict], type_id: int | None = None) -> str | None:
    """The associated id: of the given association type, else the "Primary" one, else the lowest id."""
    best: tuple[int, int] | None = None
    for link in links:
        types = link.get("associationTypes") or []
        if type_id is not None:
            if any(t.get("typeId") == type_id for t in types):
                return str(link["toObjectId"])
            continue
        rank = 0 if any((t.get("label") or "") == "Primary" for t in types) else 1
        key = (rank, int(link["toObjectId"]))
        best = key if best is None or key < best else best
    return str(best[1]) if best else None


def _domain(value: Any) -> str | None:
    if not value:
        return None
    text = str(value).strip().lower()
    for prefix in ("https://", "http://"):
        text = text.removeprefix(prefix)
    return text.removeprefix("www.").split("/")[0] or None
