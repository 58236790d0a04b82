"""The Stripe API emulator (v1, answering in API version 2024-04-10 shapes).

Serves customers, subscriptions, invoices, events, products, prices and billing meters from the
shared world, in Stripe's own paths, parameters (form-encoded, bracket notation), headers and JSON,
so stripe-python (``StripeClient(key, base_addresses={"api": url})``) works unmodified.

Differences from the real API worth knowing:
- Whatever ``Stripe-Version`` a client asks for (stripe-python 16 sends a 2026 version), objects are
  rendered as 2024-04-10 sends them, and the ``Stripe-Version`` response header says 2024-04-10.
- Only the endpoints in `StripeEmulator.rules`; other paths answer Stripe's 404 "Unrecognized
  request URL". Writes take a subset of Stripe's parameters (see each handler); the others answer
  "Received unknown parameter". No Connect (``Stripe-Account`` is ignored); livemode is false.
- Idempotent results are kept for successful (2xx) requests only, for 24 hours of world time
  (stripe_idempotency). An ``expand`` error on a POST is reported after the write happened.
- ``expand`` resolves ids of objects the world holds (customers, subscriptions, invoices, products,
  prices); other expandable fields (payment methods, sources...) are null in the sandbox anyway.
- Rate limits ("real" knob): live-mode numbers whatever the key (100 reads/s, 100 writes/s, search
  20/s, meter events 1000/s apart); test mode on Stripe allows 25. No concurrency limiter.
- Meter events, invoice lines and event payloads: see stripe_meters and stripe_render.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from .emulator import Emulator, RateLimit, json_response
from .records import STRIPE_API_VERSION, unix
from .stripe_idempotency import IdempotencyStore, Stored
from .stripe_lists import WorldIndex, items_of, page, price_id, type_matches, within
from .stripe_meters import WINDOWS, MeterLedger, decode_summary_id
from .stripe_params import (StripeError, as_list, check_known, get_bool, get_int, get_str, metadata_update,
                            missing, parse_form, require, time_range, to_int)
from .stripe_render import ENDED, Renderer, list_object
from .stripe_search import search_customers
from .world import Knobs, World

LIST_PARAMS = ("limit", "starting_after", "ending_before")
EVENT_RETENTION = 30 * 86400  # Stripe keeps events for 30 days
NO_KEY = ("You did not provide an API key. You need to provide your API key in the Authorization header, "
          "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
          "https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.")
RATE_LIMITED = ("Request rate limit exceeded. Learn more about rate limits here "
                "https://stripe.com/docs/rate-limits.")
VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(\.[a-z]+)?(;\s*[\w.]+=[\w.]+)*")  # "2024-04-10; x_beta=v1"
KIND_NAMES = {"billing.meter": "billing meter"}
SUB_STATUSES = ("active", "past_due", "unpaid", "canceled", "incomplete", "incomplete_expired",
                "trialing", "paused", "all", "ended")
INVOICE_STATUSES = ("draft", "open", "paid", "uncollectible", "void")

# Live-mode limits from Stripe's rate-limit documentation: 100 reads and 100 writes per second,
# search 20 reads per second (also counted as reads), meter events 1000 per second on their own.
READS = RateLimit("read", 100, 1.0)
WRITES = RateLimit("write", 100, 1.0)
SEARCHES = RateLimit("search", 20, 1.0, r"/search$")
METER_EVENTS = RateLimit("meter_events", 1000, 1.0, r"^/v1/billing/meter_events$")


@dataclass
class Ctx:
    """One request as a handler sees it."""

    request: Request
    params: dict[str, Any]
    now: int
    request_id: str
    idempotency_key: str | None


def endpoint(*params: str, write: bool = False) -> Callable:
    """Mark a handler: the parameters it accepts (plus ``expand``) and whether it writes."""
    allowed = frozenset(params) | {"expand"}

    def decorate(fn: Callable[..., Any]) -> Callable[..., Response]:
        @functools.wraps(fn)
        def handler(self: "StripeEmulator", request: Request, **values: str) -> Response:
            return self._handle(request, fn, allowed, write, values)
        return handler
    return decorate


def mask_key(key: str) -> str:
    """Stripe's rendering of a wrong key: prefix kept, the rest starred but for the last 4."""
    match = re.match(r"^(?:sk|rk|pk)_(?:test|live)_", key)
    prefix = match.group(0) if match else ""
    body = key[len(prefix):]
    return prefix + "*" * max(0, len(body) - 4) + body[-4:]


class StripeEmulator(Emulator):
    vendor = "stripe"
    rules = [
        Rule("/v1/customers", endpoint="list_customers", methods=["GET"]),
        Rule("/v1/customers", endpoint="create_customer", methods=["POST"]),
        Rule("/v1/customers/search", endpoint="search_customers", methods=["GET"]),
        Rule("/v1/customers/<id>", endpoint="retrieve_customer", methods=["GET"]),
        Rule("/v1/customers/<id>", endpoint="update_customer", methods=["POST"]),
        Rule("/v1/customers/<id>", endpoint="delete_customer", methods=["DELETE"]),
        Rule("/v1/subscriptions", endpoint="list_subscriptions", methods=["GET"]),
        Rule("/v1/subscriptions/<id>", endpoint="retrieve_subscription", methods=["GET"]),
        Rule("/v1/subscriptions/<id>", endpoint="update_subscription", methods=["POST"]),
        Rule("/v1/invoices", endpoint="list_invoices", methods=["GET"]),
        Rule("/v1/invoices/<id>", endpoint="retrieve_invoice", methods=["GET"]),
        Rule("/v1/events", endpoint="list_events", methods=["GET"]),
        Rule("/v1/events/<id>", endpoint="retrieve_event", methods=["GET"]),
        Rule("/v1/products", endpoint="list_products", methods=["GET"]),
        Rule("/v1/products/<id>", endpoint="retrieve_product", methods=["GET"]),
        Rule("/v1/prices", endpoint="list_prices", methods=["GET"]),
        Rule("/v1/prices/<id>", endpoint="retrieve_price", methods=["GET"]),
        Rule("/v1/billing/meters", endpoint="list_meters", methods=["GET"]),
        Rule("/v1/billing/meters/<id>", endpoint="retrieve_meter", methods=["GET"]),
        Rule("/v1/billing/meters/<id>/event_summaries", endpoint="list_meter_event_summaries",
             methods=["GET"]),
        Rule("/v1/billing/meter_events", endpoint="create_meter_event", methods=["POST"]),
        # anything else, including a known path with another method: Stripe's "Unrecognized request URL"
        Rule("/<path:rest>", endpoint="unrecognized", methods=["GET", "POST", "DELETE", "PUT", "PATCH"]),
    ]
    rate_limits = [READS, WRITES, SEARCHES, METER_EVENTS]

    def __init__(self, world: World, credentials: dict[str, str], knobs: Knobs | None = None) -> None:
        super().__init__(world, credentials, knobs)
        self.index = WorldIndex(world)
        self.renderer = Renderer(world, self.index)
        self.meters = MeterLedger(world)
        self.idempotency = IdempotencyStore()

    # -- vendor hooks ----------------------------------------------------------------------------
    def authenticate(self, request: Request) -> None:
        auth = request.headers.get("Authorization", "").strip()
        key = ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            key = value.strip()
        elif scheme.lower() == "basic":
            try:
                key = base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                key = ""
        headers = {"WWW-Authenticate": 'Basic realm="Stripe"'}
        if not key:
            raise StripeError(401, NO_KEY, headers=headers)
        if not hmac.compare_digest(key.encode(), self.credentials["api_key"].encode()):
            raise StripeError(401, f"Invalid API Key provided: {mask_key(key)}", headers=headers)

    def error_body(self, status: int, code: str, message: str) -> Any:
        if status >= 500:
            return {"error": {"message": message, "type": "api_error"}}
        found = re.search(r"does not exist: (\S+) (\S+)$", message)
        if status in (404, 405) and found:
            message = (f"Unrecognized request URL ({found.group(1)}: {found.group(2)}). Please see "
                       "https://stripe.com/docs or we can help at https://support.stripe.com/.")
        return {"error": {"message": message, "type": "invalid_request_error"}}

    def throttled(self, limit: RateLimit, retry_after: float) -> Response:
        reason = "global-rate" if limit.name in ("read", "write", "injected") else "endpoint-rate"
        return json_response(StripeError(429, RATE_LIMITED, code="rate_limit").body, 429,
                             {"Stripe-Rate-Limited-Reason": reason})

    def extra_headers(self, request: Request) -> dict[str, str]:
        return {"Request-Id": self._request_id(request), "Stripe-Version": STRIPE_API_VERSION,
                "Cache-Control": "no-cache, no-store"}

    def _throttle(self, request: Request) -> Response | None:
        """Stripe counts reads and writes separately, so limits are chosen by method, not path only."""
        if self.knobs.rate_limits != "real":
            return None
        if request.method == "POST" and METER_EVENTS.matches(request.path):
            limits = [METER_EVENTS]
        elif request.method in ("GET", "HEAD"):
            limits = [READS, SEARCHES] if SEARCHES.matches(request.path) else [READS]
        else:
            limits = [WRITES]
        now = time.monotonic()
        with self._stats_lock:
            for limit in limits:
                window = self._windows.setdefault(limit.name, deque())
                while window and window[0] <= now - limit.window:
                    window.popleft()
                if len(window) >= limit.limit:
                    return self.throttled(limit, window[0] + limit.window - now)
            for limit in limits:
                self._windows[limit.name].append(now)
        return None

    @staticmethod
    def _request_id(request: Request) -> str:
        rid = request.environ.get("stripe.request_id")
        if rid is None:
            rid = request.environ["stripe.request_id"] = "req_" + secrets.token_urlsafe(10).replace(
                "-", "x").replace("_", "y")[:14]
        return rid

    # -- the request pipeline ----------------------------------------------------------------------
    def _handle(self, request: Request, fn: Callable[..., Any], allowed: frozenset[str], write: bool,
                values: dict[str, str]) -> Response:
        rid = self._request_id(request)
        now = unix(self.world.now())
        try:
            version = request.headers.get("Stripe-Version")
            if version is not None and not VERSION.fullmatch(version):
                raise StripeError(400, f"Invalid Stripe API version: {version}")
            pairs = list(request.args.items(multi=True))
            if request.method == "POST":
                pairs += list(request.form.items(multi=True))
            params = parse_form(pairs)
            check_known(params, allowed)
            expand = as_list(params.get("expand"), "expand")
            key = request.headers.get("Idempotency-Key") if write else None
            endpoint_name = f"{request.method} {request.path}"
            canonical = json.dumps(params, sort_keys=True)
            if key:
                replay = self.idempotency.replay(key, endpoint_name, canonical, now)
                if replay is not None:
                    return replay
            result = fn(self, Ctx(request, params, now, rid, key), **values)
            status, body = result if isinstance(result, tuple) else (200, result)
            self.renderer.expand(body, expand)
        except StripeError as exc:
            exc.body["error"]["request_log_url"] = (
                f"https://dashboard.stripe.com/test/logs/{rid}?t={now}")
            raise
        headers: dict[str, str] = {}
        if key:
            headers = {"Idempotency-Key": key, "Original-Request": rid}
            self.idempotency.remember(key, Stored(endpoint_name, canonical, status, json.dumps(body), rid, now))
        return json_response(body, status, headers)

    def _put(self, ctx: Ctx, kind: str, fields: dict[str, Any], event_type: str | None = None) -> dict:
        """Write through `World.stripe_put` and stamp the events it records with this request."""
        before = len(self.world.stripe_events)
        rec = self.world.stripe_put(kind, fields, event_type)
        for event in self.world.stripe_events[before:]:
            event["request"] = {"id": ctx.request_id, "idempotency_key": ctx.idempotency_key}
        return rec

    # -- shared list and retrieve logic ----------------------------------------------------------
    def _record(self, kind: str, rec_id: str, param: str = "id", *, deleted_ok: bool = False) -> dict:
        rec = self.world.stripe.get(kind, {}).get(rec_id)
        if rec is None or (rec.get("_deleted") and not deleted_ok):
            raise missing(KIND_NAMES.get(kind, kind), rec_id, param)
        return rec

    def _list(self, ctx: Ctx, kind: str, url: str, query: tuple, predicate: Callable[[dict], bool],
              *, created: bool = True) -> dict:
        p = ctx.params
        limit = get_int(p, "limit", 10, minimum=1, maximum=100)
        after_id, before_id = get_str(p, "starting_after") or None, get_str(p, "ending_before") or None
        if after_id and before_id:
            raise StripeError(400, "Received both starting_after and ending_before parameters. "
                                   "Please pass in only one.")
        low, high = time_range(p, "created") if created else (None, None)
        keys = self.index.keys(kind, query, predicate)
        after = self._cursor(kind, after_id, "starting_after")
        before = self._cursor(kind, before_id, "ending_before")
        chosen, more = page(keys, limit, low=low, high=high, after=after, before=before)
        table = self.world.stripe[kind]
        return list_object([self.renderer.render(kind, table[i]) for _, i in chosen], url, has_more=more)

    def _cursor(self, kind: str, rec_id: str | None, param: str) -> tuple[int, str] | None:
        if rec_id is None:
            return None
        rec = self._record(kind, rec_id, param, deleted_ok=True)
        return rec["created"], rec["id"]

    def _retrieve(self, kind: str, rec_id: str) -> dict:
        return self.renderer.render(kind, self._record(kind, rec_id, deleted_ok=kind == "customer"))

    def unrecognized(self, request: Request, rest: str) -> Response:
        raise StripeError(404, f"Unrecognized request URL ({request.method}: {request.path}). Please see "
                               "https://stripe.com/docs or we can help at https://support.stripe.com/.")

    # -- customers ---------------------------------------------------------------------------------
    @endpoint("email", "created", "test_clock", *LIST_PARAMS)
    def list_customers(self, ctx: Ctx) -> dict:
        email = get_str(ctx.params, "email", max_length=512)
        clock = get_str(ctx.params, "test_clock")
        return self._list(ctx, "customer", "/v1/customers", ("email", email, clock),
                          lambda r: not r.get("_deleted") and (email is None or r.get("email") == email)
                          and (clock is None or r.get("test_clock") == clock))

    @endpoint("query", "limit", "page")
    def search_customers(self, ctx: Ctx) -> dict:
        return search_customers(self, ctx.params)

    @endpoint()
    def retrieve_customer(self, ctx: Ctx, id: str) -> dict:
        return self._retrieve("customer", id)

    CUSTOMER_FIELDS = ("address", "balance", "description", "email", "metadata", "name", "phone",
                       "preferred_locales")

    def _customer_fields(self, params: dict[str, Any], current: dict | None) -> dict[str, Any]:
        """Stripe's update semantics: an empty string unsets a field, metadata keys merge."""
        fields: dict[str, Any] = {}
        for name in ("description", "email", "name", "phone"):
            value = get_str(params, name, max_length=512 if name == "email" else 5000)
            if value is not None:
                fields[name] = value or None
        if "balance" in params:
            fields["balance"] = to_int(params["balance"], "balance")
        if "metadata" in params:
            fields["metadata"] = metadata_update((current or {}).get("metadata"), params["metadata"])
        if "preferred_locales" in params:
            fields["preferred_locales"] = [str(v) for v in as_list(params["preferred_locales"],
                                                                   "preferred_locales")]
        if "address" in params:
            raw = params["address"]
            if raw == "":
                fields["address"] = None
            elif isinstance(raw, dict):
                allowed = ("city", "country", "line1", "line2", "postal_code", "state")
                check_known({f"address[{k}]": v for k, v in raw.items()}, [f"address[{a}]" for a in allowed])
                merged = dict((current or {}).get("address") or {})
                merged.update({k: (v or None) for k, v in raw.items()})
                fields["address"] = merged
            else:
                raise StripeError(400, "Invalid object", param="address")
        return fields

    @endpoint(*CUSTOMER_FIELDS, write=True)
    def create_customer(self, ctx: Ctx) -> dict:
        fields = {"address": None, "balance": 0, "currency": None, "delinquent": False, "description": None,
                  "email": None, "metadata": {}, "name": None}
        fields.update(self._customer_fields(ctx.params, None))
        rec = self._put(ctx, "customer", fields)
        return self.renderer.render("customer", rec)

    @endpoint(*CUSTOMER_FIELDS, write=True)
    def update_customer(self, ctx: Ctx, id: str) -> dict:
        rec = self._record("customer", id)
        fields = self._customer_fields(ctx.params, rec)
        if fields:
            rec = self._put(ctx, "customer", {"id": id, **fields})
        return self.renderer.render("customer", rec)

    @endpoint(write=True)
    def delete_customer(self, ctx: Ctx, id: str) -> dict:
        """Stripe deletes the customer and cancels its subscriptions at once."""
        self._record("customer", id)
        for sub_id in self.index.customer_subscriptions(id):
            sub = self.world.stripe["subscription"][sub_id]
            if sub.get("status") not in ENDED:
                details = dict(sub.get("cancellation_details") or {}, reason="cancellation_requested")
                self._put(ctx, "subscription", {"id": sub_id, "status": "canceled", "canceled_at": ctx.now,
                                                "ended_at": ctx.now, "cancellation_details": details},
                          "customer.subscription.deleted")
        self._put(ctx, "customer", {"id": id, "_deleted": True}, "customer.deleted")
        return {"id": id, "object": "customer", "deleted": True}

    # -- subscriptions -----------------------------------------------------------------------------
    @endpoint("customer", "price", "status", "collection_method", "created", "current_period_start",
              "current_period_end", "test_clock", *LIST_PARAMS)
    def list_subscriptions(self, ctx: Ctx) -> dict:
        p = ctx.params
        customer, price = get_str(p, "customer"), get_str(p, "price")
        status = get_str(p, "status", choices=SUB_STATUSES)
        method = get_str(p, "collection_method", choices=("charge_automatically", "send_invoice"))
        start_range = time_range(p, "current_period_start")
        end_range = time_range(p, "current_period_end")

        def wanted(r: dict) -> bool:
            state = r.get("status", "active")
            if status is None and state == "canceled":  # the default leaves canceled subscriptions out
                return False
            if status == "ended" and state not in ENDED:
                return False
            if status not in (None, "all", "ended") and state != status:
                return False
            if customer is not None and r.get("customer") != customer:
                return False
            if method is not None and r.get("collection_method", "charge_automatically") != method:
                return False
            if price is not None and not any(price_id(i) == price for i in items_of(r)):
                return False
            return within(r.get("current_period_start"), start_range) and within(
                r.get("current_period_end"), end_range)

        query = ("sub", customer, price, status, method, start_range, end_range)
        return self._list(ctx, "subscription", "/v1/subscriptions", query, wanted)

    @endpoint()
    def retrieve_subscription(self, ctx: Ctx, id: str) -> dict:
        return self._retrieve("subscription", id)

    @endpoint("cancel_at_period_end", "cancellation_details", "description", "metadata", write=True)
    def update_subscription(self, ctx: Ctx, id: str) -> dict:
        rec = self._record("subscription", id)
        p = ctx.params
        fields: dict[str, Any] = {}
        if "metadata" in p:
            fields["metadata"] = metadata_update(rec.get("metadata"), p["metadata"])
        if "description" in p:
            fields["description"] = get_str(p, "description") or None
        if "cancellation_details" in p:
            raw = p["cancellation_details"]
            if not isinstance(raw, dict):
                raise StripeError(400, "Invalid object", param="cancellation_details")
            check_known({f"cancellation_details[{k}]": v for k, v in raw.items()},
                        ["cancellation_details[comment]", "cancellation_details[feedback]"])
            details = dict(rec.get("cancellation_details") or {"comment": None, "feedback": None,
                                                                "reason": None})
            details.update({k: (v or None) for k, v in raw.items()})
            fields["cancellation_details"] = details
        cancel = get_bool(p, "cancel_at_period_end")
        if cancel is not None:
            if rec.get("status") in ENDED:
                raise StripeError(400, "A canceled subscription can only update its cancellation_details "
                                       "and metadata.")
            fields["cancel_at_period_end"] = cancel
            # Stripe schedules the cancellation for the period end and stamps the request time
            fields["cancel_at"] = rec.get("current_period_end") if cancel else None
            fields["canceled_at"] = ctx.now if cancel else None
            if cancel:
                details = dict(fields.get("cancellation_details") or rec.get("cancellation_details") or {})
                details.setdefault("comment", None)
                details.setdefault("feedback", None)
                details["reason"] = "cancellation_requested"
                fields["cancellation_details"] = details
        if fields:
            rec = self._put(ctx, "subscription", {"id": id, **fields})
        return self.renderer.render("subscription", rec)

    # -- invoices ------------------------------------------------------------------------------------
    @endpoint("customer", "subscription", "status", "collection_method", "created", "due_date",
              *LIST_PARAMS)
    def list_invoices(self, ctx: Ctx) -> dict:
        p = ctx.params
        customer, sub = get_str(p, "customer"), get_str(p, "subscription")
        status = get_str(p, "status", choices=INVOICE_STATUSES)
        method = get_str(p, "collection_method", choices=("charge_automatically", "send_invoice"))
        due = time_range(p, "due_date")
        return self._list(ctx, "invoice", "/v1/invoices", ("inv", customer, sub, status, method, due),
                          lambda r: (customer is None or r.get("customer") == customer)
                          and (sub is None or r.get("subscription") == sub)
                          and (status is None or r.get("status", "draft") == status)
                          and (method is None or r.get("collection_method", "charge_automatically") == method)
                          and within(r.get("due_date"), due))

    @endpoint()
    def retrieve_invoice(self, ctx: Ctx, id: str) -> dict:
        return self._retrieve("invoice", id)

    # -- events --------------------------------------------------------------------------------------
    @endpoint("type", "types", "created", "delivery_success", *LIST_PARAMS)
    def list_events(self, ctx: Ctx) -> dict:
        p = ctx.params
        if "type" in p and "types" in p:
            raise StripeError(400, "You may only specify one of these parameters: type, types.", param="type")
        one = get_str(p, "type")
        many = tuple(str(t) for t in as_list(p.get("types"), "types"))
        if len(many) > 20:
            raise StripeError(400, "You may specify at most 20 types.", param="types")
        delivered = get_bool(p, "delivery_success")
        patterns = (one,) if one else many
        limit = get_int(p, "limit", 10, minimum=1, maximum=100)
        after_id, before_id = get_str(p, "starting_after") or None, get_str(p, "ending_before") or None
        if after_id and before_id:
            raise StripeError(400, "Received both starting_after and ending_before parameters. "
                                   "Please pass in only one.")
        low, high = time_range(p, "created")
        cutoff = ctx.now - EVENT_RETENTION  # older events are gone, as on Stripe
        low = cutoff if low is None else max(low, cutoff)

        def wanted(e: dict) -> bool:
            # no webhook endpoints exist in the sandbox, so no delivery ever failed
            return delivered is not False and (not patterns or any(type_matches(t, e["type"])
                                                                   for t in patterns))

        keys = self.index.event_keys(("types", patterns, delivered), wanted)
        after = self._event_cursor(after_id, "starting_after", cutoff)
        before = self._event_cursor(before_id, "ending_before", cutoff)
        chosen, more = page(keys, limit, low=low, high=high, after=after, before=before)
        events = self.world.stripe_events
        return list_object([self.renderer.event(events[i]) for _, i in chosen], "/v1/events", has_more=more)

    def _event_cursor(self, event_id: str | None, param: str, cutoff: int) -> tuple[int, int] | None:
        if event_id is None:
            return None
        position = self._event(event_id, param, cutoff)
        return self.world.stripe_events[position]["created"], position

    def _event(self, event_id: str, param: str, cutoff: int) -> int:
        position = self.index.event_position(event_id)
        if position is None or self.world.stripe_events[position]["created"] < cutoff:
            raise missing("event", event_id, param)
        return position

    @endpoint()
    def retrieve_event(self, ctx: Ctx, id: str) -> dict:
        position = self._event(id, "id", ctx.now - EVENT_RETENTION)
        return self.renderer.event(self.world.stripe_events[position])

    # -- products and prices ---------------------------------------------------------------------------
    @endpoint("active", "created", "ids", "shippable", "url", *LIST_PARAMS)
    def list_products(self, ctx: Ctx) -> dict:
        p = ctx.params
        active, shippable = get_bool(p, "active"), get_bool(p, "shippable")
        ids = frozenset(str(i) for i in as_list(p.get("ids"), "ids")) or None
        url = get_str(p, "url")
        return self._list(ctx, "product", "/v1/products", ("prod", active, shippable, ids, url),
                          lambda r: (active is None or r.get("active", True) == active)
                          and (shippable is None or r.get("shippable") == shippable)
                          and (ids is None or r["id"] in ids) and (url is None or r.get("url") == url))

    @endpoint()
    def retrieve_product(self, ctx: Ctx, id: str) -> dict:
        return self._retrieve("product", id)

    @endpoint("active", "created", "currency", "lookup_keys", "product", "recurring", "type", *LIST_PARAMS)
    def list_prices(self, ctx: Ctx) -> dict:
        p = ctx.params
        active = get_bool(p, "active")
        product, currency = get_str(p, "product"), get_str(p, "currency")
        kind = get_str(p, "type", choices=("one_time", "recurring"))
        lookup = frozenset(str(k) for k in as_list(p.get("lookup_keys"), "lookup_keys")) or None
        recurring = p.get("recurring") or {}
        if not isinstance(recurring, dict):
            raise StripeError(400, "Invalid object", param="recurring")
        check_known({f"recurring[{k}]": v for k, v in recurring.items()},
                    ["recurring[interval]", "recurring[meter]", "recurring[usage_type]"])
        wanted_recurring = tuple(sorted(recurring.items()))

        def wanted(r: dict) -> bool:
            rec_kind = "recurring" if r.get("recurring") else "one_time"
            return ((active is None or r.get("active", True) == active)
                    and (product is None or r.get("product") == product)
                    and (currency is None or r.get("currency", "usd") == currency.lower())
                    and (kind is None or r.get("type", rec_kind) == kind)
                    and (lookup is None or r.get("lookup_key") in lookup)
                    and all((r.get("recurring") or {}).get(k) == v for k, v in wanted_recurring))

        query = ("price", active, product, currency, kind, lookup, wanted_recurring)
        return self._list(ctx, "price", "/v1/prices", query, wanted)

    @endpoint()
    def retrieve_price(self, ctx: Ctx, id: str) -> dict:
        return self._retrieve("price", id)

    # -- billing meters ------------------------------------------------------------------------------
    @endpoint("status", *LIST_PARAMS)
    def list_meters(self, ctx: Ctx) -> dict:
        status = get_str(ctx.params, "status", choices=("active", "inactive"))
        return self._list(ctx, "billing.meter", "/v1/billing/meters", ("meter", status),
                          lambda r: status is None or r.get("status", "active") == status, created=False)

    @endpoint()
    def retrieve_meter(self, ctx: Ctx, id: str) -> dict:
        return self._retrieve("billing.meter", id)

    @endpoint("customer", "start_time", "end_time", "value_grouping_window", *LIST_PARAMS)
    def list_meter_event_summaries(self, ctx: Ctx, id: str) -> dict:
        p = ctx.params
        meter = self.renderer.render("billing.meter", self._record("billing.meter", id))
        customer = str(require(p, "customer"))
        start = to_int(require(p, "start_time"), "start_time")
        end = to_int(require(p, "end_time"), "end_time")
        window = get_str(p, "value_grouping_window", choices=tuple(WINDOWS))
        limit = get_int(p, "limit", 10, minimum=1, maximum=100)
        for name, value in (("start_time", start), ("end_time", end)):
            if value % 60:
                raise StripeError(400, f"{name} must be aligned with minute boundaries.", param=name)
        if start >= end:
            raise StripeError(400, "start_time must be before end_time.", param="start_time")
        self._record("customer", customer, "customer")
        summaries = self.meters.summaries(meter, customer, start, end, window)
        keys = [(s["start_time"], s["id"]) for s in summaries]
        cursors = []
        for param in ("starting_after", "ending_before"):
            value = get_str(p, param) or None
            decoded = decode_summary_id(value) if value else None
            if value and (decoded is None or decoded[:2] != (id, customer)):
                raise missing("billing.meter_event_summary", value, param)
            cursors.append((decoded[2], value) if decoded else None)
        if cursors[0] and cursors[1]:
            raise StripeError(400, "Received both starting_after and ending_before parameters. "
                                   "Please pass in only one.")
        chosen, more = page(keys, limit, after=cursors[0], before=cursors[1])
        by_id = {s["id"]: s for s in summaries}
        return list_object([by_id[i] for _, i in chosen], f"/v1/billing/meters/{id}/event_summaries",
                           has_more=more)

    @endpoint("event_name", "payload", "timestamp", "identifier", write=True)
    def create_meter_event(self, ctx: Ctx) -> dict:
        p = ctx.params
        get_str(p, "event_name", max_length=100)
        require(p, "event_name")
        payload = require(p, "payload")
        if not isinstance(payload, dict) or any(not isinstance(v, str) for v in payload.values()):
            raise StripeError(400, "Invalid object", param="payload")
        identifier = get_str(p, "identifier", max_length=100) or secrets.token_hex(16)
        return self.meters.record(p, ctx.now, identifier)

