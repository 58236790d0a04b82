"""Salesforce connector: Account, Contact, User, Opportunity, Case and Task through simple-salesforce.

Every stream is one SOQL query ordered by ``SystemModstamp, Id`` and paged through
``nextRecordsUrl`` at 2,000 rows (Salesforce's default and largest batch), selecting only the
fields the mapping needs plus any configured extras. The first read of a stream uses ``query`` (live
records up to ``until``); every later read uses ``queryAll`` from the saved stamp minus a look-back,
which returns changed *and* deleted rows (``IsDeleted = true``) in one ordered pass, so deletions cost
no extra call. User has no IsDeleted (users are deactivated, never deleted) and always uses ``query``.

The cursor (JSON) holds the newest SystemModstamp read, the Ids already emitted within the look-back
window before it (so a re-read window yields nothing twice), and the field list learnt from the one
describe call per object made on the first run. Because rows arrive in SystemModstamp order, a page's last stamp
is a safe resume point, mid-stream or at the end: the next read re-queries inclusively (``>=``) from
that stamp minus the look-back, and the store's upsert absorbs the overlap. The look-back covers
rows whose stamp was set before their transaction committed ("in flight" when the previous query ran).

API usage from ``Sforce-Limit-Info`` feeds the daily budget, so a run stops cleanly near the limit.
"""
from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (SalesforceAuthenticationFailed, SalesforceError, SalesforceExpiredSession,
                                          SalesforceGeneralError, SalesforceMalformedRequest,
                                          SalesforceRefusedRequest, SalesforceResourceNotFound)

from ..config.models import SalesforceSource
from .http import (VENDOR_POLICIES, AuthError, Budget, BudgetExhausted, Caller, Policy, RequestError, SourceError,
                   TransientError, session)
from .records import Page, Quarantined, record

log = logging.getLogger(__name__)

MAX_BATCH, MIN_BATCH = 2000, 200  # Salesforce's query batch size bounds (2,000 is the default)
LOOKBACK = timedelta(minutes=5)
MAX_SEEN = 2000  # Ids kept in the cursor for the look-back window; beyond that a re-read is harmless
BUDGET_RESERVE = 0.02  # share of the org's daily limit left for other integrations when no budget is set
RECYCLE_BIN = timedelta(days=15)  # deleted rows stay visible to queryAll about this long
DEFAULT_CURRENCY = "USD"  # single-currency orgs carry no CurrencyIsoCode; see the report
ZERO_DECIMAL = {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV", "XAF",
                "XOF", "XPF"}
THREE_DECIMAL = {"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"}
PRIORITIES = {"low": "low", "p4": "low", "medium": "normal", "normal": "normal", "p3": "normal", "high": "high",
              "p2": "high", "urgent": "urgent", "critical": "urgent", "p1": "urgent"}
MAPPING_ERRORS = (KeyError, TypeError, ValueError, ArithmeticError, AttributeError)


# -- values ------------------------------------------------------------------------------------

def parse_time(value: Any) -> datetime | None:
    """A Salesforce datetime (``2026-11-23T10:00:00.000+0000``) as an aware UTC datetime."""
    if value in (None, ""):
        return None
    text = str(value).strip().replace("Z", "+00:00")
    if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":":  # +0000 -> +00:00
        text = f"{text[:-2]}:{text[-2:]}"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"datetime without a time zone: {value!r}")
    return dt.astimezone(timezone.utc)


def soql_time(dt: datetime) -> str:
    """A SOQL dateTime literal, floored to the second (the documented literal has no fraction)."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def floor_second(dt: datetime) -> datetime:
    return dt.astimezone(timezone.utc).replace(microsecond=0)


def _iso(value: Any) -> str | None:
    dt = parse_time(value)
    return dt.isoformat() if dt else None


def _date(value: Any) -> str | None:
    return None if value in (None, "") else date.fromisoformat(str(value)[:10]).isoformat()


def amount_minor(amount: Any, currency: str) -> int | None:
    """An amount in the currency's minor units (cents, or yen for JPY), rounded half up."""
    if amount is None:
        return None
    exponent = 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2
    try:
        value = Decimal(str(amount)) * (10 ** exponent)
    except InvalidOperation:
        raise ValueError(f"amount {amount!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"amount {amount!r} is not finite")
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def domain_of(website: Any) -> str | None:
    """The bare host of a Website value (``https://www.Acme.com/x`` -> ``acme.com``)."""
    if not website or not isinstance(website, str):
        return None
    text = website.strip().lower()
    host = urlsplit(text if "//" in text else f"//{text}").hostname or ""
    host = host.removeprefix("www.").rstrip(".")
    return host if "." in host and " " not in host else None


def segment_of(employees: Any) -> str | None:
    """Segment bands by employee count (the usual SMB / Mid-Market / Enterprise cut-offs)."""
    if employees in (None, ""):
        return None
    n = float(employees)
    return "SMB" if n < 100 else "Mid-Market" if n < 1000 else "Enterprise"


def priority_of(value: Any) -> str | None:
    return PRIORITIES.get(str(value).strip().lower()) if value not in (None, "") else None


def plain(value: Any) -> Any:
    """JSON-safe copy of a field value (Decimals from the exact float parser become numbers)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k != "attributes"}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _path(row: dict, name: str) -> Any:
    """A field of a query row; ``Contact.Email`` reads the nested parent record."""
    value: Any = row
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


# -- what each stream reads --------------------------------------------------------------------

Mapper = Callable[[dict, str], dict]  # (row, currency) -> canonical fields


def _account(row: dict, currency: str) -> dict:
    stripe = (row.get("Stripe_Customer_Id__c") or "").strip()
    return {"name": row.get("Name"), "domain": domain_of(row.get("Website")), "website": row.get("Website"),
            "parent_id": row.get("ParentId"), "owner_id": row.get("OwnerId"), "industry": row.get("Industry"),
            "country": row.get("BillingCountry"), "segment": segment_of(row.get("NumberOfEmployees")),
            "type": row.get("Type"), "employees": plain(row.get("NumberOfEmployees")),
            "external_ids": {"stripe": stripe} if stripe else {}}


def _contact(row: dict, currency: str) -> dict:
    name = row.get("Name") or " ".join(p for p in (row.get("FirstName"), row.get("LastName")) if p) or None
    email = (row.get("Email") or "").strip().lower() or None
    return {"email": email, "name": name, "title": row.get("Title"), "account_id": row.get("AccountId"),
            "opted_out": bool(row.get("HasOptedOutOfEmail"))}


def _user(row: dict, currency: str) -> dict:
    return {"email": (row.get("Email") or "").strip().lower() or None, "name": row.get("Name"),
            "title": row.get("Title"), "active": row.get("IsActive")}


def _renewal(row: dict, currency: str) -> dict:
    currency = (row.get("CurrencyIsoCode") or currency).upper()
    probability = row.get("Probability")
    return {"account_id": row.get("AccountId"), "name": row.get("Name"), "close_date": _date(row.get("CloseDate")),
            "amount_minor": amount_minor(row.get("Amount"), currency), "currency": currency,
            "stage": row.get("StageName"), "type": row.get("Type"), "is_closed": bool(row.get("IsClosed")),
            "is_won": bool(row.get("IsWon")), "probability": None if probability is None else float(probability),
            "owner_id": row.get("OwnerId")}


def _ticket(row: dict, currency: str) -> dict:
    email = _path(row, "Contact.Email") or row.get("SuppliedEmail")
    closed = bool(row.get("IsClosed"))
    return {"account_id": row.get("AccountId"), "requester_email": email.strip().lower() if email else None,
            "requester_id": row.get("ContactId"), "subject": row.get("Subject"),
            "priority": priority_of(row.get("Priority")), "priority_raw": row.get("Priority"),
            "status": row.get("Status"), "is_closed": closed, "created_at": _iso(row.get("CreatedDate")),
            "solved_at": _iso(row.get("ClosedDate")) if closed else None,
            "escalated": bool(row.get("IsEscalated")) or str(row.get("Status") or "").lower() == "escalated",
            "satisfaction": None, "origin": row.get("Origin"), "owner_id": row.get("OwnerId")}


def _activity(row: dict, currency: str) -> dict:
    what = row.get("WhatId")
    # Task.AccountId (derived by Salesforce) when the org exposes it; else a WhatId that is an Account
    account = row.get("AccountId") or (what if isinstance(what, str) and what.startswith("001") else None)
    return {"account_id": account, "owner_id": row.get("OwnerId"), "type": row.get("TaskSubtype") or "Task",
            "subject": row.get("Subject"), "status": row.get("Status"), "priority": row.get("Priority"),
            "due_date": _date(row.get("ActivityDate")), "completed": bool(row.get("IsClosed")),
            "what_id": what, "who_id": row.get("WhoId")}


@dataclass(frozen=True)
class Spec:
    """One stream: its sObject, canonical kind, the fields its mapper reads, and how."""

    stream: str
    sobject: str
    kind: str
    fields: tuple[str, ...]
    mapper: Mapper
    optional: tuple[str, ...] = ()  # selected only when the describe lists them
    deletable: bool = True  # has IsDeleted, so queryAll shows deletions


BASE = ("Id", "SystemModstamp")
SPECS: dict[str, Spec] = {s.stream: s for s in (
    Spec("accounts", "Account", "account", BASE + ("Name", "Website", "ParentId", "OwnerId", "Industry",
                                                    "BillingCountry", "Type", "NumberOfEmployees"),
         _account, optional=("Stripe_Customer_Id__c",)),
    Spec("contacts", "Contact", "contact", BASE + ("AccountId", "FirstName", "LastName", "Name", "Email", "Title",
                                                    "HasOptedOutOfEmail"), _contact),
    Spec("users", "User", "user", BASE + ("Name", "Email", "Title", "IsActive"), _user, deletable=False),
    Spec("renewals", "Opportunity", "renewal", BASE + ("AccountId", "Name", "CloseDate", "Amount", "StageName",
                                                        "Type", "IsClosed", "IsWon", "Probability", "OwnerId"),
         _renewal, optional=("CurrencyIsoCode",)),
    Spec("tickets", "Case", "ticket", BASE + ("AccountId", "ContactId", "Subject", "Status", "Priority", "Origin",
                                               "IsClosed", "IsEscalated", "CreatedDate", "ClosedDate", "OwnerId"),
         _ticket, optional=("Contact.Email", "SuppliedEmail")),
    Spec("activities", "Task", "activity", BASE + ("WhatId", "WhoId", "OwnerId", "Subject", "Status", "Priority",
                                                    "ActivityDate", "IsClosed", "TaskSubtype"),
         _activity, optional=("AccountId",)),
)}


def build_soql(sobject: str, fields: list[str], since: datetime | None, until: datetime) -> str:
    """The stream query: inclusive lower bound (if any), `until` as the upper bound, stable order."""
    where = ([f"SystemModstamp >= {soql_time(since)}"] if since is not None else [])
    where.append(f"SystemModstamp <= {soql_time(until)}")
    return (f"SELECT {', '.join(fields)} FROM {sobject} WHERE {' AND '.join(where)} "
            f"ORDER BY SystemModstamp ASC, Id ASC")


# -- the cursor --------------------------------------------------------------------------------

@dataclass
class State:
    """What the cursor string holds (see the module docstring)."""

    stamp: datetime | None = None
    seen: OrderedDict[str, datetime] = field(default_factory=OrderedDict)  # Id -> stamp, oldest first
    fields: list[str] = field(default_factory=list)  # the resolved SELECT list
    extra: list[str] = field(default_factory=list)  # the configured extras it was resolved for
    read_to: datetime | None = None  # `until` of the last complete read (only for the recycle-bin warning)

    def note(self, rec_id: str, stamp: datetime) -> None:
        self.seen[rec_id] = stamp
        self.seen.move_to_end(rec_id)
        if self.stamp is None or stamp > self.stamp:
            self.stamp = stamp

    def prune(self, lookback: timedelta) -> None:
        """Keep only Ids a look-back re-read can return again (bounded by MAX_SEEN)."""
        if self.stamp is None:
            return
        low = floor_second(self.stamp - lookback)
        for rec_id in [k for k, v in self.seen.items() if v < low]:
            del self.seen[rec_id]
        while len(self.seen) > MAX_SEEN:
            self.seen.popitem(last=False)

    def dump(self) -> str:
        groups: dict[str, list[str]] = {}
        for stamp, rec_id in sorted((s, i) for i, s in self.seen.items()):  # canonical: same state, same text
            groups.setdefault(stamp.isoformat(), []).append(rec_id)
        return json.dumps({"v": 1, "stamp": self.stamp.isoformat() if self.stamp else None, "seen": groups,
                           "fields": self.fields, "extra": self.extra,
                           "read_to": self.read_to.isoformat() if self.read_to else None}, separators=(",", ":"))

    @classmethod
    def load(cls, text: str | None) -> "State | None":
        if not text:
            return None
        try:
            data = json.loads(text)
            if data.get("v") != 1:
                raise ValueError(f"unknown cursor version {data.get('v')!r}")
            stamp = parse_time(data["stamp"])
            pairs = sorted((parse_time(s), i) for s, ids in data.get("seen", {}).items() for i in ids)
            seen: OrderedDict[str, datetime] = OrderedDict((i, s) for s, i in pairs if s is not None)
            return cls(stamp, seen, list(data.get("fields") or []), list(data.get("extra") or []),
                       parse_time(data.get("read_to")))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("salesforce: unreadable cursor (%s); reading the stream in full", exc)
            return None


# -- the connector -----------------------------------------------------------------------------

class SalesforceConnector:
    """Reads a Salesforce org's accounts, contacts, users, renewals, tickets and activities."""

    source = "salesforce"

    def __init__(self, config: SalesforceSource, policy: Policy | None = None, page_size: int = MAX_BATCH,
                 lookback: timedelta = LOOKBACK) -> None:
        self.config = config
        self.page_size = min(MAX_BATCH, max(MIN_BATCH, page_size))
        self.lookback = lookback
        self.policy = policy or VENDOR_POLICIES["salesforce"]
        self.caller = Caller(self.source, self.classify, self.policy,
                             budget=Budget(self.source, limit=config.daily_api_budget))
        self._session = session(self.policy, verify=str(config.ca_cert) if config.ca_cert else True)
        self._sf: Salesforce | None = None
        self._reserve_set = False
        wanted = {o.lower() for o in config.objects} if config.objects is not None else None
        known = {s.sobject.lower() for s in SPECS.values()}
        unknown = sorted(o for o in (config.objects or []) if o.lower() not in known)
        if unknown:
            raise RequestError(self.source, f"objects: {', '.join(unknown)} not supported; choose from "
                                            f"{', '.join(s.sobject for s in SPECS.values())}")
        self._streams = [s.stream for s in SPECS.values() if wanted is None or s.sobject.lower() in wanted]
        self._extra = {k.lower(): list(v) for k, v in (config.fields or {}).items()}

    # -- Connector protocol ----------------------------------------------------------------------
    def streams(self) -> list[str]:
        return list(self._streams)

    def api_calls(self) -> dict[str, int]:
        return dict(self.caller.calls)

    def read(self, stream: str, cursor: str | None, until: datetime, full_refresh: bool = False) -> Iterator[Page]:
        """Pages of `stream` changed since `cursor` (all live records when there is none), up to `until`."""
        if stream not in self._streams:
            raise RequestError(self.source, f"unknown stream {stream!r}; streams: {', '.join(self._streams)}")
        if until.tzinfo is None:
            raise ValueError("until must be timezone-aware")
        spec = SPECS[stream]
        state = None if full_refresh else State.load(cursor)
        extra = self._extra.get(spec.sobject.lower(), [])
        if state is None or state.extra != extra or not state.fields:
            state = State(state.stamp if state else None, state.seen if state else OrderedDict(),
                          self._resolve_fields(spec, extra), list(extra), state.read_to if state else None)
        if state.read_to is not None and state.read_to < until - RECYCLE_BIN and spec.deletable:
            log.warning("salesforce.%s: last read %s, longer ago than the 15-day recycle bin: records deleted "
                        "and purged since then can no longer be seen", stream, state.read_to.date())
        last = cursor if not full_refresh else None
        restarts = 0
        while True:
            include_deleted = spec.deletable and state.stamp is not None
            since = state.stamp - self.lookback if state.stamp is not None else None
            soql = build_soql(spec.sobject, state.fields, since, until)
            try:
                for page in self._pages(stream, soql, include_deleted):
                    out = self._page(spec, page, state)
                    text = out.cursor
                    if out.records or out.quarantined or text != last:
                        last = text
                        yield out
                break
            except RequestError as exc:  # Salesforce dropped the query cursor (idle 15 min, or too many open)
                if "INVALID_QUERY_LOCATOR" not in str(exc) or restarts >= 3:
                    raise
                restarts += 1
                log.info("salesforce.%s: query cursor expired; re-querying from %s", stream, state.stamp)
        # The resume point stays the newest stamp Salesforce itself wrote, not `until`: `until` is the
        # client's clock, and trusting it would lose rows whenever that clock runs ahead of the org's.
        state.read_to = until
        if state.dump() != last:
            yield Page([], state.dump())

    # -- reading ---------------------------------------------------------------------------------
    def _pages(self, stream: str, soql: str, include_deleted: bool) -> Iterator[dict]:
        headers = {"Sforce-Query-Options": f"batchSize={self.page_size}"} if self.page_size != MAX_BATCH else {}
        page = self._call(stream, lambda: self._api().query(soql, include_deleted=include_deleted, headers=headers))
        while True:
            yield page
            if page.get("done", True) or not page.get("nextRecordsUrl"):
                return
            url = page["nextRecordsUrl"]
            page = self._call(stream, lambda: self._api().query_more(url, identifier_is_url=True))

    def _page(self, spec: Spec, page: dict, state: State) -> Page:
        records, quarantined = [], []
        wanted = {e.lower() for e in state.extra}
        extra = [f for f in state.fields if f.lower() in wanted]
        currency = DEFAULT_CURRENCY
        for row in page.get("records") or []:
            rec_id = row.get("Id") if isinstance(row, dict) else None
            try:
                if not rec_id:
                    raise ValueError("row has no Id")
                stamp = parse_time(row.get("SystemModstamp"))
                if stamp is None:
                    raise ValueError("row has no SystemModstamp")
            except MAPPING_ERRORS as exc:
                quarantined.append(Quarantined(spec.kind, rec_id, f"unreadable row: {exc}", plain(row)))
                continue
            if state.seen.get(rec_id) == stamp:
                continue  # already emitted: a look-back or restart re-read it unchanged
            state.note(rec_id, stamp)
            deleted = bool(row.get("IsDeleted"))
            try:
                fields = spec.mapper(row, currency)
            except MAPPING_ERRORS as exc:
                if not deleted:
                    quarantined.append(Quarantined(spec.kind, rec_id, f"cannot map {spec.sobject}: {exc}",
                                                   plain(row)))
                    continue
                fields = {}  # a deletion still counts even when the rest of the row is odd
            if extra:
                fields["extra"] = {name: plain(_path(row, name)) for name in extra}
            records.append(record(self.source, spec.kind, rec_id, stamp, deleted=deleted, **fields))
        state.prune(self.lookback)
        return Page(records, state.dump(), quarantined)

    def _resolve_fields(self, spec: Spec, extra: list[str]) -> list[str]:
        """The SELECT list: the mapper's fields the org shows, optional ones it has, configured extras."""
        described = self._call("describe", lambda: self._api().restful(f"sobjects/{spec.sobject}/describe"))
        names = {f["name"].lower(): f["name"] for f in (described or {}).get("fields", [])}
        refs = {f["relationshipName"].lower() for f in (described or {}).get("fields", [])
                if f.get("relationshipName")}
        out: list[str] = []
        for name in spec.fields:
            if name.lower() in names or name in BASE:
                out.append(names.get(name.lower(), name))
            else:  # hidden by field-level security, or absent in this org: map it as empty
                log.warning("salesforce: %s.%s is not visible to the integration user; it is left empty "
                            "(grant read access to the field to fill it)", spec.sobject, name)
        for name in spec.optional:
            head = name.split(".")[0].lower()
            if name.lower() in names or ("." in name and head in refs):
                out.append(names.get(name.lower(), name))
        if spec.deletable and "isdeleted" in names:
            out.append("IsDeleted")
        missing = [n for n in extra if n.lower() not in names and not ("." in n and n.split(".")[0].lower() in refs)]
        if missing:
            raise RequestError(self.source, f"fields.{spec.sobject}: {', '.join(missing)} not found on "
                                            f"{spec.sobject} (or not visible to the integration user); fix the "
                                            "field names in sources.salesforce.fields or grant read access")
        lowered = {n.lower() for n in out}
        out += [names.get(n.lower(), n) for n in extra if n.lower() not in lowered]
        return out

    # -- calls, auth and budget ------------------------------------------------------------------
    def _call(self, stream: str, fn: Callable[[], Any]) -> Any:
        """One API call under the policy; an expired OAuth session is renewed once and the call repeated."""
        self._connect()  # outside `fn`, so the token call is counted and retried on its own
        try:
            result = self.caller.call(fn, stream=stream)
        except AuthError as exc:
            if self.config.auth.access_token is not None or not isinstance(exc.__cause__, SalesforceExpiredSession):
                raise
            log.info("salesforce: session expired; requesting a new access token")
            self._sf = None
            self._connect()
            result = self.caller.call(fn, stream=stream)
        self._observe()
        return result

    def _connect(self) -> None:
        if self._sf is None:
            token = self._token()
            self._sf = Salesforce(instance_url=self.config.instance_url, session_id=token, session=self._session,
                                  version=self.config.api_version, parse_float=Decimal)

    def _api(self) -> Salesforce:
        assert self._sf is not None, "_call connects first"
        return self._sf

    def _token(self) -> str:
        """The configured access token, or a fresh one from the OAuth token endpoint (one "auth" call)."""
        auth = self.config.auth
        if auth.access_token is not None:
            return auth.access_token.get_secret_value()
        form = {"grant_type": auth.grant, "client_id": auth.client_id}
        if auth.client_secret is not None:
            form["client_secret"] = auth.client_secret.get_secret_value()
        if auth.grant == "refresh_token" and auth.refresh_token is not None:
            form["refresh_token"] = auth.refresh_token.get_secret_value()
        elif auth.grant == "password" and auth.password is not None:
            form.update(username=auth.username, password=auth.password.get_secret_value())

        def fetch() -> str:
            resp = self._session.post(auth.token_url, data=form, headers={"Accept": "application/json"})
            if resp.status_code >= 500 or resp.status_code == 429:
                raise SalesforceGeneralError(auth.token_url, resp.status_code, "oauth2/token", resp.content)
            try:
                body = resp.json()
            except ValueError:
                body = {}
            if resp.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
                body = body if isinstance(body, dict) else {}
                raise SalesforceAuthenticationFailed(body.get("error") or resp.status_code,
                                                     body.get("error_description"))
            return str(body["access_token"])
        return self.caller.call(fetch, stream="auth")

    def _observe(self) -> None:
        """Feed the org's own counter (Sforce-Limit-Info) to the budget."""
        usage = self._sf.api_usage.get("api-usage") if self._sf is not None else None
        if usage is None:
            return
        budget = self.caller.budget
        assert budget is not None
        if not self._reserve_set:
            configured = self.config.daily_api_budget
            if configured is None or configured >= usage.total:  # keep headroom for the org's other users
                budget.reserve = max(budget.reserve, math.ceil(usage.total * BUDGET_RESERVE))
            self._reserve_set = True
        budget.observe(usage.used, usage.total)

    # -- errors ----------------------------------------------------------------------------------
    def classify(self, exc: BaseException) -> BaseException | None:
        """Map an SDK or network exception to the policy's error classes (None: not ours, re-raise)."""
        src = self.source
        if isinstance(exc, SourceError):
            return exc
        if isinstance(exc, SalesforceAuthenticationFailed):
            detail = exc.auth_message or "no description"
            return AuthError(src, f"the OAuth token request was refused ({exc.code}: {detail}); check "
                                  f"sources.salesforce.{self._oauth_hint(exc.code)}")
        if isinstance(exc, SalesforceError):
            code, message = _error_of(exc)
            what = f"{code}: {message}" if code else message
            if isinstance(exc, SalesforceExpiredSession):
                fix = ("set a fresh sources.salesforce.auth.access_token, or configure an OAuth client "
                       "(client_id, client_secret) so the hub renews it" if self.config.auth.access_token
                       is not None else "a freshly issued token was refused: check the connected app's "
                       "session and IP policies")
                return AuthError(src, f"the session was refused ({what}); {fix}")
            if isinstance(exc, SalesforceRefusedRequest):
                if code == "REQUEST_LIMIT_EXCEEDED":
                    if "concurrent" in message.lower():  # too many long requests at once: wait and retry
                        return TransientError(src, f"throttled ({what})")
                    return BudgetExhausted(src, f"the org's daily API request limit is used up ({what}); the "
                                                "run stopped with its state saved and the next run continues")
                resource = exc.resource_name or ""
                target = resource.split("/")[1] if resource.startswith("sobjects/") else "the synced objects"
                return AuthError(src, f"permission denied ({what}); give the integration user \"API Enabled\" "
                                      f"and read access to {target}")
            if isinstance(exc, SalesforceMalformedRequest):
                return RequestError(src, f"request rejected ({what})")
            if isinstance(exc, SalesforceResourceNotFound):
                return RequestError(src, f"not found ({what}); check sources.salesforce.instance_url and "
                                         "api_version, and that the integration user can see the object")
            if exc.status >= 500 or exc.status == 429:
                return TransientError(src, f"Salesforce answered {exc.status} ({what})")
            return RequestError(src, f"Salesforce answered {exc.status} ({what})")
        if isinstance(exc, requests.exceptions.SSLError):
            return AuthError(src, f"the TLS certificate of {urlsplit(self.config.instance_url).hostname} is not "
                                  "trusted; set sources.salesforce.ca_cert to the CA bundle that signed it")
        if isinstance(exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                            json.JSONDecodeError)):
            return TransientError(src, f"network error ({type(exc).__name__})")
        return None

    def _oauth_hint(self, code: Any) -> str:
        grant = self.config.auth.grant
        return {"invalid_client_id": "auth.client_id",
                "invalid_client": "auth.client_secret (and auth.client_id)",
                "unsupported_grant_type": f"auth.grant ({grant} must be enabled on the connected app)",
                "invalid_grant": {"refresh_token": "auth.refresh_token (revoked or expired: authorise again)",
                                  "password": "auth.username and auth.password (append the security token if "
                                              "the org requires one)",
                                  }.get(grant or "", "the connected app's client credentials flow and its "
                                                     "\"Run As\" user"),
                }.get(str(code), "auth and auth.token_url")


def _error_of(exc: SalesforceError) -> tuple[str, str]:
    """(errorCode, message) of a REST error body: ``[{"message": ..., "errorCode": ...}]``."""
    content: Any = exc.content
    if isinstance(content, bytes):
        try:
            content = json.loads(content.decode("utf-8", "replace"))
        except ValueError:
            content = content.decode("utf-8", "replace")
    if isinstance(content, list) and content and isinstance(content[0], dict):
        content = content[0]
    if isinstance(content, dict):
        return str(content.get("errorCode") or content.get("error") or ""), str(
            content.get("message") or content.get("error_description") or "")
    return "", str(content)[:300]
