"""Stripe objects as API version 2024-04-10 sends them, built from the world's essential records.

World records (docs/sandbox-records.md) hold the fields that matter; `Renderer` adds every other
key the 2024-04-10 object carries with Stripe's default (null, false, {}, [], an empty list
object), so responses validate against the published schema. Keys starting with ``_`` are
sandbox-internal and never sent. `expand` implements ``expand[]`` paths over rendered objects.

Derived where the world holds no record: invoice lines (one per subscription item when the items
explain the subtotal, else one line for the whole subtotal), invoice numbers (``PREFIX-0001`` in
order per customer), ``latest_invoice``, discount and coupon ids. Subscription items carry the
legacy ``plan`` twin of their price, as 2024-04-10 still sends it. Events render their snapshot
with today's renderer; ``previous_attributes`` appear on ``*.updated`` events only, with metadata
reduced to the keys that changed (null for keys that were added).
"""
from __future__ import annotations

import hashlib
import string
from typing import Any, Callable, Protocol

from .stripe_params import StripeError
from .world import World

_B62 = string.digits + string.ascii_letters
MAX_EXPAND_DEPTH = 4

# x-expandableFields of the 2024-04-10 spec, per object type (nested types by their schema name).
EXPANDABLE: dict[str, frozenset[str]] = {k: frozenset(v.split()) for k, v in {
    "customer": "address cash_balance default_source discount invoice_settings shipping sources "
                "subscriptions tax tax_ids test_clock",
    "subscription": "application automatic_tax billing_cycle_anchor_config billing_thresholds "
                    "cancellation_details customer default_payment_method default_source default_tax_rates "
                    "discount discounts items latest_invoice on_behalf_of pause_collection payment_settings "
                    "pending_invoice_item_interval pending_setup_intent pending_update schedule test_clock "
                    "transfer_data trial_settings",
    "subscription_item": "billing_thresholds discounts price tax_rates",
    "invoice": "account_tax_ids application automatic_tax charge custom_fields customer customer_address "
               "customer_shipping customer_tax_ids default_payment_method default_source default_tax_rates "
               "discount discounts from_invoice issuer last_finalization_error latest_revision lines "
               "on_behalf_of payment_intent payment_settings quote rendering shipping_cost shipping_details "
               "status_transitions subscription subscription_details test_clock threshold_reason "
               "total_discount_amounts total_tax_amounts transfer_data",
    "line_item": "discount_amounts discounts invoice_item period price proration_details subscription "
                 "subscription_item tax_amounts tax_rates",
    "product": "default_price marketing_features package_dimensions tax_code",
    "price": "currency_options custom_unit_amount product recurring tiers transform_quantity",
    "plan": "product tiers transform_usage",
    "discount": "coupon customer promotion_code",
    "coupon": "applies_to currency_options",
    "billing.meter": "customer_mapping default_aggregation status_transitions value_settings",
    "event": "data request",
    "invoice_setting_customer_setting": "custom_fields default_payment_method rendering_options",
}.items()}
NESTED_TYPES = {("customer", "invoice_settings"): "invoice_setting_customer_setting"}
# (object type, field) -> the world kind an id in that field points at
REFERENCES = {
    ("subscription", "customer"): "customer", ("subscription", "latest_invoice"): "invoice",
    ("invoice", "customer"): "customer", ("invoice", "subscription"): "subscription",
    ("invoice", "latest_revision"): "invoice", ("line_item", "subscription"): "subscription",
    ("line_item", "price"): "price", ("subscription_item", "price"): "price",
    ("price", "product"): "product", ("plan", "product"): "product",
    ("product", "default_price"): "price", ("discount", "customer"): "customer",
}
ENDED = ("canceled", "incomplete_expired")


class Index(Protocol):
    """Derived facts the renderer needs without scanning the world (see stripe_lists.WorldIndex)."""

    def latest_invoice(self, subscription_id: str) -> str | None: ...
    def invoice_sequence(self, invoice_id: str) -> int: ...
    def invoice_count(self, customer_id: str) -> int: ...
    def customer_subscriptions(self, customer_id: str) -> list[str]: ...


def derived_id(prefix: str, *parts: Any, length: int = 14) -> str:
    """A stable id for objects the world does not store (discounts, line items...)."""
    n = int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:12], "big")
    out = ""
    while len(out) < length:
        n, r = divmod(n, 62)
        out += _B62[r]
    return f"{prefix}_{out}"


def public(value: Any) -> Any:
    """A deep copy without sandbox-internal ``_`` keys."""
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items() if not (isinstance(k, str) and k.startswith("_"))}
    if isinstance(value, list):
        return [public(v) for v in value]
    return value


def list_object(data: list[dict], url: str, *, has_more: bool = False,
                total_count: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"object": "list", "data": data, "has_more": has_more}
    if total_count is not None:
        out["total_count"] = total_count
    out["url"] = url
    return out


def _overlay(defaults: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
    defaults.update(public(rec))
    return defaults


def _address(value: Any) -> dict | None:
    if not value:
        return None
    base = {"city": None, "country": None, "line1": None, "line2": None, "postal_code": None, "state": None}
    return _overlay(base, value)


class Renderer:
    """Renders world records (and event snapshots) as 2024-04-10 JSON objects."""

    def __init__(self, world: World, index: Index) -> None:
        self.world, self.index = world, index
        self._kinds: dict[str, Callable[[dict], dict]] = {
            "customer": self.customer, "subscription": self.subscription, "invoice": self.invoice,
            "product": self.product, "price": self.price, "billing.meter": self.meter,
        }

    def render(self, kind: str, rec: dict[str, Any], *, stub_deleted: bool = True) -> dict[str, Any]:
        if stub_deleted and rec.get("_deleted"):
            return {"id": rec["id"], "object": kind, "deleted": True}
        renderer = self._kinds.get(kind)
        return renderer(rec) if renderer else public(rec)

    def by_id(self, kind: str, rec_id: str) -> dict[str, Any] | None:
        rec = self.world.stripe.get(kind, {}).get(rec_id)
        return None if rec is None else self.render(kind, rec)

    # -- objects ---------------------------------------------------------------------------
    def customer(self, rec: dict) -> dict:
        out = {
            "id": rec["id"], "object": "customer", "address": None, "balance": 0, "created": rec["created"],
            "currency": None, "default_source": None, "delinquent": False, "description": None,
            "discount": None, "email": None, "invoice_prefix": self.invoice_prefix(rec["id"]),
            "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None,
                                 "rendering_options": None},
            "livemode": False, "metadata": {}, "name": None,
            "next_invoice_sequence": self.index.invoice_count(rec["id"]) + 1, "phone": None,
            "preferred_locales": [], "shipping": None, "tax_exempt": "none", "test_clock": None,
        }
        _overlay(out, rec)
        out["address"] = _address(rec.get("address"))
        if isinstance(rec.get("invoice_settings"), dict):
            out["invoice_settings"] = _overlay(
                {"custom_fields": None, "default_payment_method": None, "footer": None,
                 "rendering_options": None}, rec["invoice_settings"])
        if rec.get("discount"):
            out["discount"] = self.discount(rec["discount"], owner=rec["id"], customer=rec["id"],
                                            start=rec["created"])
        return out

    @staticmethod
    def invoice_prefix(customer_id: str) -> str:
        return derived_id("x", customer_id, length=8)[2:].upper()

    def product(self, rec: dict) -> dict:
        out = {
            "id": rec["id"], "object": "product", "active": True, "created": rec["created"],
            "default_price": None, "description": None, "images": [], "livemode": False,
            "marketing_features": [], "metadata": {}, "name": "", "package_dimensions": None,
            "shippable": None, "statement_descriptor": None, "tax_code": None, "type": "service",
            "unit_label": None, "updated": rec.get("updated", rec["created"]), "url": None,
        }
        return _overlay(out, rec)

    def price(self, rec: dict) -> dict:
        out = {
            "id": rec["id"], "object": "price", "active": True, "billing_scheme": "per_unit",
            "created": rec["created"], "currency": "usd", "custom_unit_amount": None, "livemode": False,
            "lookup_key": None, "metadata": {}, "nickname": None, "product": None, "recurring": None,
            "tax_behavior": "unspecified", "tiers_mode": None, "transform_quantity": None,
            "type": "recurring" if rec.get("recurring") else "one_time", "unit_amount": None,
            "unit_amount_decimal": None,
        }
        _overlay(out, rec)
        if isinstance(out["product"], dict):  # a world record may embed the product
            out["product"] = out["product"].get("id")
        if rec.get("recurring"):
            out["recurring"] = _overlay({"aggregate_usage": None, "interval": "month", "interval_count": 1,
                                         "meter": None, "trial_period_days": None,
                                         "usage_type": "licensed"}, rec["recurring"])
        if out["unit_amount"] is not None and out["unit_amount_decimal"] is None:
            out["unit_amount_decimal"] = str(out["unit_amount"])
        return out

    def plan(self, price: dict) -> dict | None:
        """The legacy ``plan`` twin of a recurring price, still sent on items in 2024-04-10."""
        recurring = price.get("recurring")
        if not recurring:
            return None
        return {
            "id": price["id"], "object": "plan", "active": price["active"],
            "aggregate_usage": recurring.get("aggregate_usage"), "amount": price["unit_amount"],
            "amount_decimal": price["unit_amount_decimal"], "billing_scheme": price["billing_scheme"],
            "created": price["created"], "currency": price["currency"], "interval": recurring["interval"],
            "interval_count": recurring["interval_count"], "livemode": False, "metadata": price["metadata"],
            "meter": recurring.get("meter"), "nickname": price["nickname"], "product": price["product"],
            "tiers_mode": None, "transform_usage": None, "trial_period_days": None,
            "usage_type": recurring["usage_type"],
        }

    def _price_of(self, value: Any) -> dict | None:
        if isinstance(value, str):
            return self.by_id("price", value)
        if isinstance(value, dict):
            current = self.world.stripe.get("price", {}).get(value.get("id"))
            # the item's embedded copy is the price as it was attached; fill gaps from the catalogue
            return self.price({**(current or {}), **value}) if value.get("created") or current else None
        return None

    def subscription_item(self, item: dict, sub: dict) -> dict:
        price = self._price_of(item.get("price"))
        out = {
            "id": item["id"], "object": "subscription_item", "billing_thresholds": None,
            "created": item.get("created", sub["created"]), "discounts": [], "metadata": {},
            "plan": self.plan(price) if price else None, "price": price, "quantity": 1,
            "subscription": sub["id"], "tax_rates": [],
        }
        if price and (price.get("recurring") or {}).get("usage_type") == "metered":
            del out["quantity"]  # Stripe sends no quantity on a metered item
        _overlay(out, {k: v for k, v in item.items() if k != "price"})
        out["subscription"] = item.get("subscription") or sub["id"]
        return out

    def subscription(self, rec: dict) -> dict:
        items = rec.get("items") or {}
        raw_items = items.get("data", []) if isinstance(items, dict) else list(items)
        currency = rec.get("currency") or next(
            (i["price"].get("currency") for i in raw_items if isinstance(i.get("price"), dict)), "usd")
        out = {
            "id": rec["id"], "object": "subscription", "application": None, "application_fee_percent": None,
            "automatic_tax": {"enabled": False, "liability": None},
            "billing_cycle_anchor": rec.get("current_period_start", rec["created"]),
            "billing_cycle_anchor_config": None, "billing_thresholds": None, "cancel_at": None,
            "cancel_at_period_end": False, "canceled_at": None,
            "cancellation_details": {"comment": None, "feedback": None, "reason": None},
            "collection_method": "charge_automatically", "created": rec["created"], "currency": currency,
            "current_period_end": rec["created"], "current_period_start": rec["created"], "customer": None,
            "days_until_due": None, "default_payment_method": None, "default_source": None,
            "default_tax_rates": [], "description": None, "discount": None, "discounts": [], "ended_at": None,
            "items": None, "latest_invoice": self.index.latest_invoice(rec["id"]), "livemode": False,
            "metadata": {}, "next_pending_invoice_item_invoice": None, "on_behalf_of": None,
            "pause_collection": None,
            "payment_settings": {"payment_method_options": None, "payment_method_types": None,
                                 "save_default_payment_method": "off"},
            "pending_invoice_item_interval": None, "pending_setup_intent": None, "pending_update": None,
            "schedule": None, "start_date": rec.get("start_date", rec["created"]), "status": "active",
            "test_clock": None, "transfer_data": None, "trial_end": None,
            "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            "trial_start": None,
        }
        _overlay(out, rec)
        out["cancellation_details"] = _overlay({"comment": None, "feedback": None, "reason": None},
                                               rec.get("cancellation_details") or {})
        data = [self.subscription_item(i, rec) for i in raw_items]
        out["items"] = list_object(data, f"/v1/subscription_items?subscription={rec['id']}",
                                   total_count=len(data))
        if rec.get("discount"):
            out["discount"] = self.discount(rec["discount"], owner=rec["id"], customer=out["customer"],
                                            start=out["start_date"], subscription=rec["id"])
            out["discounts"] = [out["discount"]["id"]]
        return out

    def discount(self, raw: dict, *, owner: str, customer: Any, start: int,
                 subscription: str | None = None) -> dict:
        coupon = _overlay({
            "id": derived_id("co", owner, length=8), "object": "coupon", "amount_off": None,
            "created": start, "currency": None, "duration": "forever", "duration_in_months": None,
            "livemode": False, "max_redemptions": None, "metadata": {}, "name": None, "percent_off": None,
            "redeem_by": None, "times_redeemed": 1, "valid": True}, raw.get("coupon") or {})
        out = {"id": derived_id("di", owner), "object": "discount", "checkout_session": None,
               "coupon": coupon, "customer": customer, "end": None, "invoice": None, "invoice_item": None,
               "promotion_code": None, "start": start, "subscription": subscription, "subscription_item": None}
        return _overlay(out, {k: v for k, v in raw.items() if k != "coupon"})

    def invoice(self, rec: dict) -> dict:
        customer = self.world.stripe.get("customer", {}).get(rec.get("customer") or "")
        total = rec.get("total", rec.get("amount_due", 0))
        subtotal = rec.get("subtotal", total)
        status = rec.get("status", "draft")
        transitions = _overlay({"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None,
                                "voided_at": None}, rec.get("status_transitions") or {})
        number = None
        if status != "draft" and customer is not None:
            number = f"{self.invoice_prefix(customer['id'])}-{self.index.invoice_sequence(rec['id']):04d}"
        sub = self.world.stripe.get("subscription", {}).get(rec.get("subscription") or "")
        out = {
            "id": rec["id"], "object": "invoice", "account_country": "US", "account_name": None,
            "account_tax_ids": None, "amount_due": total, "amount_paid": 0, "amount_remaining": total,
            "amount_shipping": 0, "application": None, "application_fee_amount": None, "attempt_count": 0,
            "attempted": False, "auto_advance": status == "draft",
            "automatic_tax": {"enabled": False, "liability": None, "status": None}, "billing_reason": None,
            "charge": None, "collection_method": "charge_automatically", "created": rec["created"],
            "currency": "usd", "custom_fields": None, "customer": None,
            "customer_address": _address(customer.get("address")) if customer else None,
            "customer_email": customer.get("email") if customer else None,
            "customer_name": customer.get("name") if customer else None, "customer_phone": None,
            "customer_shipping": None, "customer_tax_exempt": "none", "customer_tax_ids": [],
            "default_payment_method": None, "default_source": None, "default_tax_rates": [],
            "description": None, "discount": None, "discounts": [], "due_date": None,
            "effective_at": transitions["finalized_at"], "ending_balance": None if status == "draft" else 0,
            "footer": None, "from_invoice": None, "hosted_invoice_url": None, "invoice_pdf": None,
            "issuer": {"type": "self"}, "last_finalization_error": None, "latest_revision": None,
            "lines": None, "livemode": False, "metadata": {}, "next_payment_attempt": None, "number": number,
            "on_behalf_of": None, "paid": False, "paid_out_of_band": False, "payment_intent": None,
            "payment_settings": {"default_mandate": None, "payment_method_options": None,
                                 "payment_method_types": None},
            "period_end": rec["created"], "period_start": rec["created"],
            "post_payment_credit_notes_amount": 0, "pre_payment_credit_notes_amount": 0, "quote": None,
            "receipt_number": None, "rendering": None, "shipping_cost": None, "shipping_details": None,
            "starting_balance": 0, "statement_descriptor": None, "status": status,
            "status_transitions": transitions, "subscription": None,
            "subscription_details": {"metadata": (sub or {}).get("metadata") if sub else None},
            "subtotal": subtotal, "subtotal_excluding_tax": subtotal, "tax": None, "test_clock": None,
            "total": total, "total_discount_amounts": [], "total_excluding_tax": total,
            "total_tax_amounts": [], "transfer_data": None, "webhooks_delivered_at": rec["created"],
        }
        _overlay(out, rec)
        out["status_transitions"] = transitions
        out["lines"] = self.invoice_lines(out, sub, rec.get("lines"))
        return out

    def invoice_lines(self, inv: dict, sub: dict | None, stored: Any) -> dict:
        url = f"/v1/invoices/{inv['id']}/lines"
        if isinstance(stored, dict) and "data" in stored:  # the world keeps real lines: send them
            data = [public(line) for line in stored["data"]]
            return list_object(data[:10], url, has_more=len(data) > 10, total_count=len(data))
        period = {"end": inv["period_end"], "start": inv["period_start"]}
        base = {"object": "line_item", "discount_amounts": [], "discountable": True, "discounts": [],
                "invoice": inv["id"], "livemode": False, "metadata": {}, "period": period, "price": None, "proration": False, "proration_details": {"credited_items": None},
                "quantity": None, "subscription": inv.get("subscription"), "tax_amounts": [],
                "tax_rates": [], "currency": inv["currency"]}
        items = [self.subscription_item(i, sub) for i in (sub or {}).get("items", {}).get("data", [])]
        amounts = [(i["price"] or {}).get("unit_amount") or 0 for i in items]
        lines = []
        if items and sum(a * (i.get("quantity") or 0) for a, i in zip(amounts, items)) == inv["subtotal"]:
            for item, unit in zip(items, amounts):
                amount = unit * (item.get("quantity") or 0)
                lines.append({**base, "id": derived_id("il", inv["id"], item["id"]), "amount": amount,
                              "amount_excluding_tax": amount, "description": self._describe(item),
                              "price": item["price"], "quantity": item.get("quantity"),
                              "subscription_item": item["id"], "type": "subscription",
                              "unit_amount_excluding_tax": str(unit)})
        else:  # amounts the items do not explain (discounts, prorations): one line for the whole
            line = {**base, "id": derived_id("il", inv["id"]), "amount": inv["subtotal"],
                    "amount_excluding_tax": inv["subtotal"], "description": None,
                    "unit_amount_excluding_tax": None}
            if sub is not None:
                # the seat item: the metered add-on's lines would be zero-amount
                seat = next((i for i in items if "quantity" in i), items[0] if items else None)
                line.update(type="subscription", subscription_item=seat["id"] if seat else None)
            else:
                line.update(type="invoiceitem", invoice_item=derived_id("ii", inv["id"]))
            lines.append(line)
        return list_object(lines[:10], url, has_more=len(lines) > 10, total_count=len(lines))

    def _describe(self, item: dict) -> str | None:
        price = item.get("price") or {}
        product = self.world.stripe.get("product", {}).get(price.get("product") or "")
        if not product:
            return None
        interval = (price.get("recurring") or {}).get("interval", "month")
        amount = (price.get("unit_amount") or 0) / 100
        return f"{item.get('quantity') or 0} × {product.get('name')} (at ${amount:,.2f} / {interval})"

    def meter(self, rec: dict) -> dict:
        out = {
            "id": rec["id"], "object": "billing.meter", "created": rec["created"],
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "default_aggregation": {"formula": "sum"}, "display_name": "", "event_name": "",
            "event_time_window": None, "livemode": False, "status": "active",
            "status_transitions": {"deactivated_at": None}, "updated": rec.get("updated", rec["created"]),
            "value_settings": {"event_payload_key": "value"},
        }
        return _overlay(out, rec)

    def event(self, ev: dict) -> dict:
        snapshot = ev["data"]["object"]
        kind = snapshot.get("object", "")
        obj = self.render(kind, snapshot, stub_deleted=False)
        data: dict[str, Any] = {"object": obj}
        # Stripe sends previous_attributes on *.updated events only
        updated = ev["type"].endswith(".updated")
        previous = public(ev["data"].get("previous_attributes") or {}) if updated else {}
        if isinstance(previous.get("metadata"), dict) and isinstance(obj.get("metadata"), dict):
            # Stripe reports only the metadata keys that changed (null for keys that were added)
            old, new = previous["metadata"], obj["metadata"]
            previous["metadata"] = {k: old.get(k) for k in sorted(set(old) | set(new))
                                    if old.get(k) != new.get(k)}
        if previous:
            data["previous_attributes"] = previous
        return {"id": ev["id"], "object": "event", "api_version": ev.get("api_version"),
                "created": ev["created"], "data": data, "livemode": ev.get("livemode", False),
                "pending_webhooks": ev.get("pending_webhooks", 0),
                "request": public(ev.get("request") or {"id": None, "idempotency_key": None}),
                "type": ev["type"]}

    # -- includable lists (only present when expanded) ---------------------------------------
    def include(self, owner_type: str, owner: dict, field: str) -> Any:
        if owner_type != "customer":
            return None
        base = f"/v1/customers/{owner['id']}/{field}"
        if field == "subscriptions":
            subs = [self.by_id("subscription", s) for s in self.index.customer_subscriptions(owner["id"])]
            live = [s for s in subs if s and s["status"] != "canceled"]
            live.sort(key=lambda s: (s["created"], s["id"]), reverse=True)
            return list_object(live[:10], base, has_more=len(live) > 10, total_count=len(live))
        if field in ("sources", "tax_ids"):
            return list_object([], base, total_count=0)
        if field == "tax":
            return {"automatic_tax": "unrecognized_location", "ip_address": None, "location": None}
        if field == "invoice_credit_balance":
            return {}
        return None

    # -- expand[] ------------------------------------------------------------------------------
    def expand(self, obj: dict, paths: list[str]) -> dict:
        """Apply ``expand[]`` paths to a rendered object or list, in place; Stripe's 400 on bad paths."""
        for path in paths:
            if not isinstance(path, str) or not path:
                raise StripeError(400, "Invalid array", param="expand")
            segments = path.split(".")
            if len(segments) > MAX_EXPAND_DEPTH:
                raise StripeError(400, "You cannot expand more than 4 levels of a property. "
                                       f"Property: {path}", param="expand")
            self._expand(obj, segments, obj.get("object", ""), top=True)
        return obj

    def _expand(self, node: Any, segments: list[str], typ: str, top: bool = False) -> None:
        if not segments or node is None or isinstance(node, str):
            return
        seg, rest = segments[0], segments[1:]
        if isinstance(node, list):
            for item in node:
                self._expand(item, segments, item.get("object", typ) if isinstance(item, dict) else typ)
            return
        if node.get("object") in ("list", "search_result"):
            if seg != "data":
                hint = f" You may want to try expanding 'data.{seg}' instead." if top else ""
                raise StripeError(400, f"This property cannot be expanded ({seg}).{hint}")
            for item in node.get("data", []):
                self._expand(item, rest, item.get("object", ""))
            return
        if node.get("deleted") is True:  # a deleted object has nothing left to expand
            return
        if seg not in EXPANDABLE.get(typ, ()):
            raise StripeError(400, f"This property cannot be expanded ({seg}).")
        value = node.get(seg)
        kind = REFERENCES.get((typ, seg))
        if isinstance(value, str) and kind:
            value = self.by_id(kind, value) or value
            node[seg] = value
        elif seg not in node:
            value = node[seg] = self.include(typ, node, seg)
        if rest and isinstance(value, (dict, list)):
            child = value.get("object") if isinstance(value, dict) else None
            self._expand(value, rest, child or NESTED_TYPES.get((typ, seg), ""))

