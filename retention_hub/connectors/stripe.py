"""Stripe connector: customers, subscriptions, invoices and metered usage through stripe-python.

First run (and any full refresh): before listing, the newest event of the stream's types is noted
(one call, ``limit=1``); then the objects are listed newest first at Stripe's maximum page size
(100), ``created <= until``, paging with ``starting_after``. Later runs read ``/v1/events`` forward
from the noted event: ``ending_before=<event>`` returns the events right after it, so pages come
oldest first and the cursor can move after each one; each event's ``data.object`` is the object's
new state. Stripe keeps events 30 days: when the stream last confirmed it was up to date more than
that long ago, it falls back to a full refresh by itself, logs a WARNING and marks the cursor
(``"refresh": "events_expired"``). If only the saved event expired (a quiet stream, confirmed
recently), every retained event is read instead: nothing after the last confirmation can be gone.

Records from a listing carry, as ``updated_at``, the time of the newest event noted before it (the
state is at least that new), so a later event always replaces them and an old event never does.

Usage: billing meter event summaries (one per customer x meter x UTC day) for the customers
subscribed to a price on the meter (meters no price uses: every customer with a subscription,
said once at WARNING), as one record per customer and UTC day (``source_id``
``"{customer}|{day}"``): ``metrics`` ``{meter event name: value}`` over the customer's meters, and
``meter_ids``. The first run reads the last `usage_lookback_days` days. Only complete days are read;
the last one is re-read the next time a day completes (meter events aggregate asynchronously).
Customers are read in 64 hash buckets whose fingerprints of that day are kept in the cursor, so the
re-read day is re-emitted only for buckets where it changed, and a crash resumes after the last
finished bucket. Meters with no usage that day (value 0) add no metric, and a day with none at all
yields no record, as the usage warehouse has no row for it.

The API version is pinned to 2024-04-10, the shapes this module maps; the mapping also accepts the
newer shapes (period on subscription items, invoice ``parent.subscription_details``).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator
from urllib.parse import quote

import stripe as stripe_sdk

from ..config.models import StripeSource
from .http import (VENDOR_POLICIES, AuthError, Caller, Policy, RequestError, SourceError, TransientError,
                   retry_after_seconds, session)
from .records import dump_cursor, load_cursor, Page, Quarantined, record

log = logging.getLogger(__name__)

SOURCE = "stripe"
API_VERSION = "2024-04-10"
MAX_PAGE = 100  # Stripe's list maximum
EVENTS = "/v1/events"
DAY = 86_400
EVENT_RETENTION = 30 * DAY  # Stripe lists events of the last 30 days only
RETENTION_MARGIN = 3_600  # fall back an hour early rather than race the expiry
USAGE_LOOKBACK_DAYS = 90  # first run: the usage health features look back 90 days
USAGE_PAGE_PAIRS = 50  # about this many (customer, meter) pairs per yielded usage page
USAGE_BUCKETS = 64  # customers are read in hash buckets, each fingerprinted in the cursor
# subscriptions in these states bring no recurring revenue (Stripe's own MRR leaves them out)
NO_REVENUE = frozenset({"canceled", "incomplete", "incomplete_expired", "trialing", "paused"})
FREE_MAIL = frozenset({"gmail.com", "googlemail.com", "yahoo.com", "yahoo.co.uk", "outlook.com", "hotmail.com",
                       "live.com", "msn.com", "icloud.com", "me.com", "aol.com", "proton.me", "protonmail.com",
                       "gmx.com", "gmx.de", "web.de", "mail.com", "yandex.ru", "zoho.com", "qq.com", "163.com"})
# metadata keys seen on customers that name the same company in another system
EXTERNAL_KEYS = {"salesforce_account_id": "salesforce", "salesforce_id": "salesforce", "sfdc_account_id": "salesforce",
                 "hubspot_company_id": "hubspot", "hubspot_id": "hubspot", "zendesk_organization_id": "zendesk",
                 "workspace_id": "usage"}
MONTHS_PER = {"day": 12 / 365, "week": 12 / 52, "month": 1.0, "year": 12.0}  # months in one interval


# -- values ---------------------------------------------------------------------------------------
def _ref(value: Any) -> str | None:
    """An id whether the field was expanded into an object or not."""
    return value.get("id") if isinstance(value, dict) else value


def _iso(ts: Any) -> str | None:
    return None if ts is None else datetime.fromtimestamp(int(ts), timezone.utc).isoformat()


def _when(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def _unix(dt: datetime) -> int:
    return int(dt.timestamp())


def email_domain(email: Any) -> str | None:
    """The company domain of an e-mail address; None for free-mail providers."""
    if not isinstance(email, str) or "@" not in email:
        return None
    domain = email.rsplit("@", 1)[1].strip().lower().rstrip(".")
    return None if not domain or domain in FREE_MAIL else domain


# -- mapping --------------------------------------------------------------------------------------
def map_customer(obj: dict, updated_at: datetime, deleted: bool) -> dict:
    metadata = obj.get("metadata") or {}
    external = {system: str(metadata[key]) for key, system in EXTERNAL_KEYS.items() if metadata.get(key)}
    return record(SOURCE, "account", obj["id"], updated_at, deleted,
                  name=obj.get("name") or obj.get("description"), domain=email_domain(obj.get("email")),
                  website=None, parent_id=None, owner_id=None, industry=None,
                  country=(obj.get("address") or {}).get("country"), segment=None, external_ids=external,
                  email=obj.get("email"), currency=obj.get("currency"), delinquent=obj.get("delinquent"),
                  balance_minor=obj.get("balance"), created_at=_iso(obj.get("created")))


def _items(sub: dict) -> list[dict]:
    items = sub.get("items") or {}
    return list(items.get("data") or []) if isinstance(items, dict) else list(items)


def _metered(price: dict) -> bool:
    recurring = price.get("recurring") or {}
    return recurring.get("usage_type") == "metered" or bool(recurring.get("meter"))


def monthly_minor(sub: dict) -> int | None:
    """Recurring revenue of the licensed items per month, after a percent or amount discount;
    None when a price has no unit amount (tiered prices)."""
    total, months = 0.0, 1.0
    for item in _items(sub):
        price = item.get("price") or item.get("plan") or {}
        if _metered(price):
            continue  # usage-based revenue is not known in advance
        recurring = price.get("recurring") or {"interval": price.get("interval", "month"),
                                               "interval_count": price.get("interval_count", 1)}
        amount = price.get("unit_amount", price.get("amount"))
        if amount is None:
            return None
        months = MONTHS_PER.get(recurring.get("interval") or "month", 1.0) * (recurring.get("interval_count") or 1)
        total += amount * (item.get("quantity") or 0) / months
    discount = sub.get("discount")
    coupon = discount.get("coupon") if isinstance(discount, dict) else None
    if isinstance(coupon, dict):
        if coupon.get("percent_off"):
            total *= 1 - float(coupon["percent_off"]) / 100
        elif coupon.get("amount_off"):  # taken off each invoice, i.e. once per billing interval
            total = max(0.0, total - coupon["amount_off"] / months)
    return int(round(total))


def map_subscription(obj: dict, updated_at: datetime, deleted: bool) -> dict:
    items = _items(obj)
    licensed = [i for i in items if not _metered(i.get("price") or {})]
    main = (licensed or items or [{}])[0]
    price = main.get("price") or {}
    details = obj.get("cancellation_details") or {}
    recurring_minor = monthly_minor(obj)
    status = obj.get("status")
    # API versions from 2025-03-31 carry the period on the items only
    period_end = obj.get("current_period_end", main.get("current_period_end"))
    period_start = obj.get("current_period_start", main.get("current_period_start"))
    return record(SOURCE, "subscription", obj["id"], updated_at, deleted,
                  customer_id=_ref(obj.get("customer")), status=status, price_id=_ref(price),
                  plan=_ref(price.get("product")) if price else None, plan_name=price.get("nickname"),
                  quantity=sum(i.get("quantity") or 0 for i in licensed),
                  mrr_minor=0 if status in NO_REVENUE else recurring_minor,
                  contract_mrr_minor=recurring_minor, currency=obj.get("currency") or price.get("currency"),
                  interval=(price.get("recurring") or {}).get("interval"),
                  start=_iso(obj.get("start_date")), current_period_start=_iso(period_start),
                  current_period_end=_iso(period_end), cancel_at=_iso(obj.get("cancel_at")),
                  cancel_at_period_end=obj.get("cancel_at_period_end"), canceled_at=_iso(obj.get("canceled_at")),
                  ended_at=_iso(obj.get("ended_at")), trial_end=_iso(obj.get("trial_end")),
                  cancellation_reason=details.get("reason"), cancellation_feedback=details.get("feedback"),
                  cancellation_comment=details.get("comment"),
                  meters=sorted({((i.get("price") or {}).get("recurring") or {}).get("meter") for i in items} - {None}),
                  created_at=_iso(obj.get("created")))


def map_invoice(obj: dict, updated_at: datetime, deleted: bool) -> dict:
    status = obj.get("status")
    parent = (obj.get("parent") or {}).get("subscription_details") or {}
    paid = obj.get("paid", status == "paid")
    transitions = obj.get("status_transitions") or {}
    return record(SOURCE, "invoice", obj["id"], updated_at, deleted,
                  customer_id=_ref(obj.get("customer")),
                  subscription_id=_ref(obj.get("subscription", parent.get("subscription"))),
                  status=status, amount_minor=obj.get("amount_due"), amount_paid_minor=obj.get("amount_paid"),
                  amount_remaining_minor=obj.get("amount_remaining"), total_minor=obj.get("total"),
                  currency=obj.get("currency"), attempted=obj.get("attempted"), paid=paid,
                  attempt_count=obj.get("attempt_count"),
                  payment_failed=bool(obj.get("attempted") and not paid and status == "open"),
                  billing_reason=obj.get("billing_reason"), created_at=_iso(obj.get("created")),
                  due_date=_iso(obj.get("due_date")), period_start=_iso(obj.get("period_start")),
                  period_end=_iso(obj.get("period_end")), paid_at=_iso(transitions.get("paid_at")),
                  next_payment_attempt=_iso(obj.get("next_payment_attempt")))


@dataclass(frozen=True)
class Spec:
    """One object stream: how to list it, which events change it, how to map it."""

    kind: str
    path: str
    list_params: dict[str, Any]
    events: dict[str, Any]  # the type filter of /v1/events
    deleted_types: frozenset[str]
    mapper: Callable[[dict, datetime, bool], dict]


SPECS: dict[str, Spec] = {
    "customers": Spec("account", "/v1/customers", {},
                      {"types": ["customer.created", "customer.updated", "customer.deleted"]},
                      frozenset({"customer.deleted"}), map_customer),
    # customer.subscription.deleted means canceled: the subscription stays, with status canceled
    "subscriptions": Spec("subscription", "/v1/subscriptions", {"status": "all"},
                          {"type": "customer.subscription.*"}, frozenset(), map_subscription),
    "invoices": Spec("invoice", "/v1/invoices", {}, {"type": "invoice.*"},
                     frozenset({"invoice.deleted"}), map_invoice),
}


# -- errors ---------------------------------------------------------------------------------------
def classify(exc: BaseException) -> BaseException | None:
    """Stripe's exceptions as the policy's error classes (None: not Stripe's, re-raised as is)."""
    if isinstance(exc, stripe_sdk.AuthenticationError):
        return AuthError(SOURCE, "the API key was rejected (401): set sources.stripe.api_key to a valid "
                                 "secret or restricted key")
    if isinstance(exc, stripe_sdk.PermissionError):
        return AuthError(SOURCE, "the API key lacks a permission (403): give the restricted key read access "
                                 "to Customers, Subscriptions, Invoices, Events, Prices and Billing meters")
    if isinstance(exc, stripe_sdk.RateLimitError):
        return TransientError(SOURCE, "rate limited (429)", _retry_after(exc))
    if isinstance(exc, stripe_sdk.APIConnectionError):
        return TransientError(SOURCE, f"connection failed: {exc.user_message or type(exc).__name__}")
    if isinstance(exc, stripe_sdk.APIError) and (exc.http_status is None or exc.http_status >= 500):
        return TransientError(SOURCE, f"server error ({exc.http_status})", _retry_after(exc))
    if isinstance(exc, stripe_sdk.StripeError):
        return RequestError(SOURCE, f"request rejected ({exc.http_status}): {exc.user_message}")
    return None


def _retry_after(exc: stripe_sdk.StripeError) -> float | None:
    headers = {str(k).lower(): v for k, v in (exc.headers or {}).items()}
    return retry_after_seconds(headers.get("retry-after"))


def _missing(exc: SourceError) -> bool:
    """Whether a rejected request named an object that no longer exists (a cursor, a customer)."""
    cause = exc.__cause__
    return isinstance(cause, stripe_sdk.InvalidRequestError) and cause.code == "resource_missing"


# -- the connector --------------------------------------------------------------------------------
class StripeConnector:
    """Reads customers, subscriptions, invoices and usage from one Stripe account."""

    source = SOURCE

    def __init__(self, config: StripeSource, policy: Policy | None = None, page_size: int = MAX_PAGE,
                 usage_lookback_days: int = USAGE_LOOKBACK_DAYS) -> None:
        self.config = config
        self.policy = policy or VENDOR_POLICIES[SOURCE]
        self.page_size = max(1, min(page_size, MAX_PAGE))
        self.usage_lookback_days = usage_lookback_days
        self.caller = Caller(SOURCE, classify, self.policy)
        http = stripe_sdk.RequestsClient(timeout=self.policy.timeout, session=session(self.policy))
        self.client = stripe_sdk.StripeClient(config.api_key.get_secret_value(), stripe_version=API_VERSION,
                                              base_addresses={"api": config.base_url.rstrip("/")},
                                              max_network_retries=0, http_client=http)
        self._warned_unpriced: set[str] = set()

    def streams(self) -> list[str]:
        return [*SPECS, "usage"]

    def api_calls(self) -> dict[str, int]:
        return dict(self.caller.calls)

    def read(self, stream: str, cursor: str | None, until: datetime, full_refresh: bool = False) -> Iterator[Page]:
        if stream != "usage" and stream not in SPECS:
            raise RequestError(SOURCE, f"unknown stream {stream!r} (streams: {', '.join(self.streams())})")
        state = None if full_refresh else _load(cursor, ("end", "partial") if stream == "usage" else ("phase",))
        if stream == "usage":
            return self._read_usage(state, _unix(until))
        return self._read_objects(stream, state, _unix(until))

    def _list(self, stream: str, path: str, **params: Any) -> tuple[list[dict], bool]:
        """One page of a Stripe list. `raw_request` keeps the SDK's auth, encoding and error classes
        but skips building typed objects, which costs more than the HTTP exchange."""
        reply = self.caller.call(self.client.raw_request, "get", path, stream=stream, **params).data
        return list(reply.get("data") or []), bool(reply.get("has_more"))

    # -- customers, subscriptions, invoices ---------------------------------------------------------
    def _read_objects(self, stream: str, state: dict | None, until: int) -> Iterator[Page]:
        spec = SPECS[stream]
        if state is None:
            yield from self._full(stream, spec, until)
            return
        if until - state["checked"] > EVENT_RETENTION - RETENTION_MARGIN:
            log.warning("stripe.%s: last confirmed up to date %s, more than the 30 days Stripe keeps events; "
                        "falling back to a full refresh", stream, _iso(state["checked"]))
            yield from self._full(stream, spec, until, refresh="events_expired")
        elif state["phase"] == "list":
            yield from self._full(stream, spec, until, resume=state)
        else:
            yield from self._events(stream, spec, state, until)

    def _full(self, stream: str, spec: Spec, until: int, resume: dict | None = None,
              refresh: str | None = None) -> Iterator[Page]:
        """List every object (or continue a listing a crash interrupted), then switch to events."""
        if resume is None:
            newest, _ = self._list(stream, EVENTS, limit=1, created={"lte": until}, **spec.events)
            resume = {"phase": "list", "after": None, "lte": until, "checked": until,
                      "event": newest[0]["id"] if newest else None,
                      # no event in 30 days: the state has not changed since then
                      "mark": newest[0]["created"] if newest else until - EVENT_RETENTION}
            if refresh:
                resume["refresh"] = refresh
        state = dict(resume)
        while True:
            params: dict[str, Any] = {**spec.list_params, "limit": self.page_size, "created": {"lte": state["lte"]}}
            if state["after"]:
                params["starting_after"] = state["after"]
            try:
                objects, more = self._list(stream, spec.path, **params)
            except RequestError as exc:
                if not (_missing(exc) and state["after"]):
                    raise
                log.warning("stripe.%s: the listing's resume point is gone; listing again from the start", stream)
                yield from self._full(stream, spec, until, refresh=state.get("refresh"))
                return
            records, bad = _map_all(spec, [(o, state["mark"], False) for o in objects])
            state["after"] = objects[-1]["id"] if objects else state["after"]
            if not more or not objects:
                done = {"phase": "events", "event": state["event"], "checked": state["checked"]}
                if state.get("refresh"):
                    done["refresh"] = state["refresh"]
                yield Page(records, _dump(done), bad)
                return
            yield Page(records, _dump(state), bad)

    def _events(self, stream: str, spec: Spec, state: dict, until: int) -> Iterator[Page]:
        """Apply the stream's events after the saved one, oldest first, as the objects' new state."""
        last, checked = state.get("event"), state["checked"]
        if last is None:
            yield from self._all_events(stream, spec, checked, until)
            return
        while True:
            try:
                events, more = self._list(stream, EVENTS, limit=self.page_size, created={"lte": until},
                                          ending_before=last, **spec.events)
            except RequestError as exc:
                if not _missing(exc):
                    raise
                # the saved event expired, but the stream was confirmed up to date within 30 days:
                # every event since then is still kept
                log.info("stripe.%s: saved event %s expired; reading every retained event", stream, last)
                yield from self._all_events(stream, spec, checked, until)
                return
            events.reverse()  # pages list newest first; apply oldest first
            last = events[-1]["id"] if events else last
            done = not more or not events
            cursor = {"phase": "events", "event": last, "checked": until if done else checked}
            records, bad = _map_events(spec, events)
            yield Page(records, _dump(cursor), bad)
            if done:
                return

    def _all_events(self, stream: str, spec: Spec, checked: int, until: int) -> Iterator[Page]:
        """Every retained event of the stream, gathered newest first, applied oldest first."""
        gathered: list[dict] = []
        after = None
        while True:
            params: dict[str, Any] = {"limit": self.page_size, "created": {"lte": until}, **spec.events}
            if after:
                params["starting_after"] = after
            events, more = self._list(stream, EVENTS, **params)
            gathered += events
            if not more or not events:
                break
            after = events[-1]["id"]
        gathered.reverse()
        last = None
        for start in range(0, len(gathered), self.page_size):
            chunk = gathered[start:start + self.page_size]
            last = chunk[-1]["id"]
            done = start + self.page_size >= len(gathered)
            records, bad = _map_events(spec, chunk)
            yield Page(records, _dump({"phase": "events", "event": last, "checked": until if done else checked}),
                       bad)
        if not gathered:
            yield Page([], _dump({"phase": "events", "event": None, "checked": until}))

    # -- usage from billing meters --------------------------------------------------------------------
    def _read_usage(self, state: dict | None, until: int) -> Iterator[Page]:
        """Daily summaries per (customer, meter) as one record per customer and day, in hash buckets
        of customers (all of a customer's meters in one): the cursor keeps each bucket's fingerprint
        of the last day read, so the re-read day is emitted only for buckets whose values changed,
        and a crash resumes after the last bucket finished."""
        stop = until - until % DAY  # only complete days
        partial = (state or {}).get("partial")
        if partial and partial.get("by") != "customer":
            # saved mid-read by the version that bucketed (customer, meter) pairs: redo the range
            partial = {**partial, "bucket": -1, "new": {}}
        if partial:
            start, stop = partial["start"], partial["stop"]
        elif state is None:
            start = stop - self.usage_lookback_days * DAY
        else:
            if stop <= state["end"]:
                return  # no day completed since the last read
            start = state["end"] - DAY  # re-read the last day: meter events aggregate asynchronously
        old = partial["old"] if partial else (state or {}).get("days")  # the re-read day, per bucket
        new: dict[str, str] = dict(partial["new"]) if partial else {}  # the last day, per bucket
        buckets: dict[int, list[tuple[str, str, str]]] = {}
        for pair in self._metered_pairs(start, stop):
            buckets.setdefault(_bucket(pair[0]), []).append(pair)
        records: list[dict] = []
        pending = 0
        for b in sorted(buckets):
            if partial and b <= partial["bucket"]:
                continue
            days: dict[tuple[str, int], dict[str, Any]] = {}  # (customer, day start) -> the day's record
            reread_print, last_print = _Print(), _Print()
            for customer, meter_id, metric in buckets[b]:
                for summary in self._summaries(meter_id, customer, start, stop):
                    value = summary.get("aggregated_value") or 0
                    if not value:
                        continue
                    begin = summary["start_time"]
                    entry = days.setdefault((customer, begin), {"metrics": {}, "meter_ids": set(),
                                                                "end": summary["end_time"]})
                    entry["metrics"][metric] = entry["metrics"].get(metric, 0) + value  # one name, two meters
                    entry["meter_ids"].add(meter_id)
                    line = f"{customer}|{metric}|{value}"
                    if begin == stop - DAY:
                        last_print.add(line)
                    if old is not None and begin == start:
                        reread_print.add(line)
            changed = old is None or reread_print.value() != old.get(str(b), _Print().value())
            for (customer, begin), entry in days.items():
                if begin == start and not changed:
                    continue  # the re-read day, as it was
                day = _when(begin).date().isoformat()
                records.append(record(SOURCE, "usage", f"{customer}|{day}", _when(entry["end"]),
                                      account_ref=customer, day=day, metrics=entry["metrics"],
                                      meter_ids=sorted(entry["meter_ids"])))
            if last_print.count:
                new[str(b)] = last_print.value()
            pending += len(buckets[b])
            if pending >= USAGE_PAGE_PAIRS:
                pending = 0
                yield Page(records, _dump({"end": (state or {}).get("end", start), "partial": {
                    "start": start, "stop": stop, "bucket": b, "old": old, "new": new, "by": "customer"}}))
                records = []
        yield Page(records, _dump({"end": stop, "days": new}))

    def _summaries(self, meter_id: str, customer: str, start: int, stop: int) -> list[dict]:
        path = f"/v1/billing/meters/{quote(meter_id, safe='')}/event_summaries"
        out: list[dict] = []
        after = None
        while True:
            params: dict[str, Any] = {"customer": customer, "start_time": start, "end_time": stop,
                                      "value_grouping_window": "day", "limit": MAX_PAGE}
            if after:
                params["starting_after"] = after
            try:
                page, more = self._list("usage", path, **params)
            except RequestError as exc:
                if _missing(exc):  # the customer was deleted: no usage to read
                    log.debug("stripe.usage: customer %s no longer exists", customer)
                    return out
                raise
            out += page
            if not more or not page:
                return out
            after = page[-1]["id"]

    def _metered_pairs(self, start: int, stop: int) -> list[tuple[str, str, str]]:
        """(customer, meter id, event name) for every customer subscribed to a price on a meter
        during [start, stop); meters no price uses fall back to every subscribed customer."""
        meters = {m["id"]: m for m in self._list_all("usage", "/v1/billing/meters")}
        if not meters:
            return []
        prices = self._list_all("usage", "/v1/prices", recurring={"usage_type": "metered"})
        by_meter: dict[str, list[str]] = {}
        for price in prices:
            meter = (price.get("recurring") or {}).get("meter")
            if meter in meters:
                by_meter.setdefault(meter, []).append(price["id"])
        pairs: set[tuple[str, str, str]] = set()
        for meter_id, price_ids in by_meter.items():
            for price_id in price_ids:
                subs = self._list_all("usage", "/v1/subscriptions", price=price_id, status="all")
                pairs |= {(c, meter_id, meters[meter_id]["event_name"]) for c in _live_customers(subs, start, stop)}
        unpriced = sorted(set(meters) - set(by_meter))
        if unpriced:
            new = [m for m in unpriced if m not in self._warned_unpriced]
            if new:
                log.warning("stripe.usage: no price uses meter(s) %s; reading their usage for every customer "
                            "with a subscription (one call per customer)", ", ".join(new))
                self._warned_unpriced.update(new)
            customers = _live_customers(self._list_all("usage", "/v1/subscriptions", status="all"),
                                        start, stop)
            pairs |= {(c, m, meters[m]["event_name"]) for c in customers for m in unpriced}
        return sorted(pairs, key=lambda p: f"{p[0]}|{p[1]}")

    def _list_all(self, stream: str, path: str, **params: Any) -> list[dict]:
        out: list[dict] = []
        after = None
        while True:
            page, more = self._list(stream, path, limit=MAX_PAGE, **params,
                                    **({"starting_after": after} if after else {}))
            out += page
            if not more or not page:
                return out
            after = page[-1]["id"]


class _Print:
    """An order-independent fingerprint of lines: a count and a sum of hashes (JSON-safe)."""

    def __init__(self) -> None:
        self.count, self.total = 0, 0

    def add(self, line: str) -> None:
        digest = hashlib.blake2b(line.encode(), digest_size=8).digest()
        self.count, self.total = self.count + 1, (self.total + int.from_bytes(digest, "big")) % (1 << 64)

    def value(self) -> str:
        return f"{self.count}:{self.total:016x}"


def _bucket(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=2).digest(), "big") % USAGE_BUCKETS


def _live_customers(subs: list[dict], start: int, stop: int) -> set[str]:
    """Customers with a subscription that overlapped [start, stop)."""
    out = set()
    for sub in subs:
        ended = sub.get("ended_at")
        began = sub.get("start_date") or sub.get("created") or 0
        customer = _ref(sub.get("customer"))
        if customer and began < stop and (ended is None or ended >= start):
            out.add(customer)
    return out


def _map_all(spec: Spec, items: list[tuple[dict, int, bool]]) -> tuple[list[dict], list[Quarantined]]:
    """Map (object, updated_at unix, deleted) triples; objects that cannot be mapped are quarantined."""
    records, bad = [], []
    for obj, updated, deleted in items:
        try:
            records.append(spec.mapper(obj, _when(updated), deleted))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            bad.append(Quarantined(spec.kind, obj.get("id") if isinstance(obj, dict) else None,
                                   f"cannot map: {type(exc).__name__}: {exc}", obj))
    return records, bad


def _map_events(spec: Spec, events: list[dict]) -> tuple[list[dict], list[Quarantined]]:
    """Events (oldest first) as records: each object once, in its newest state of the page."""
    latest: dict[str, tuple[dict, int, bool]] = {}
    for event in events:
        obj = (event.get("data") or {}).get("object")
        if not isinstance(obj, dict) or not obj.get("id"):
            continue  # e.g. invoice.upcoming: a preview, not a stored object
        latest.pop(obj["id"], None)
        latest[obj["id"]] = (obj, event["created"], event["type"] in spec.deleted_types)
    return _map_all(spec, list(latest.values()))


def _dump(state: dict) -> str:
    return dump_cursor(state)


def _load(cursor: str | None, keys: tuple[str, ...]) -> dict | None:
    return load_cursor(SOURCE, cursor, keys)
