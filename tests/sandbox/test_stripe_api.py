"""The Stripe emulator, driven by stripe-python 16 as a real integration would drive Stripe.

Shapes are checked against Stripe's published OpenAPI schemas for API version 2024-04-10 and
against the example objects of fixtures3.json (trimmed copies in data/stripe/, see ATTRIBUTION).
"""
from __future__ import annotations

import base64
import json
import time
from collections import deque
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe
from openapi_schema_validator import OAS30Validator

from retention_hub.sandbox import server
from retention_hub.sandbox.records import unix
from retention_hub.sandbox.world import World

DATA = Path(__file__).parent / "data" / "stripe"
ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)
START = ANCHOR - timedelta(days=40)  # the first quarter of the customers is older than 30 days
N_CUSTOMERS = 350
N_SUBSCRIPTIONS = 40
STATUSES = ["active", "active", "past_due", "canceled", "trialing"]
DAY = 86400


# -- the world -----------------------------------------------------------------------------------
def build_world() -> World:
    """350 customers two per created second (ties), 40 subscriptions, 80 invoices, a meter with usage."""
    w = World(seed=1, anchor=ANCHOR)
    products = [w.stripe_put("product", {"name": name, "active": True, "description": None, "metadata": {},
                                         "type": "service"}, at=START) for name in ("Team", "Business")]
    meter = w.stripe_put("billing.meter", {
        "display_name": "API calls", "event_name": "api_call", "status": "active",
        "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        "default_aggregation": {"formula": "sum"}, "value_settings": {"event_payload_key": "value"}},
        at=START)
    prices = [
        w.stripe_put("price", {"product": products[0]["id"], "unit_amount": 2000, "currency": "usd",
                               "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed",
                                             "meter": None},
                               "active": True, "type": "recurring", "nickname": "team", "metadata": {}}, at=START),
        w.stripe_put("price", {"product": products[1]["id"], "unit_amount": 9900, "currency": "usd",
                               "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed",
                                             "meter": None},
                               "active": True, "type": "recurring", "nickname": "business", "metadata": {}},
                     at=START),
        w.stripe_put("price", {"product": products[1]["id"], "unit_amount": 1, "currency": "usd",
                               "recurring": {"interval": "month", "interval_count": 1, "usage_type": "metered",
                                             "meter": meter["id"]},
                               "active": False, "type": "recurring", "nickname": "calls", "metadata": {}},
                     at=START),
    ]
    for i in range(N_CUSTOMERS):
        at = START + timedelta(hours=4 * (i // 2), minutes=30)  # pairs share a created second
        w.stripe_put("customer", {"email": f"owner{i}@example{i % 7}.com", "name": f"Company {i}",
                                  "description": None, "metadata": {"idx": str(i)}, "address": {"country": "US"},
                                  "currency": "usd", "delinquent": False, "balance": 0}, at=at)
    customers = sorted(w.stripe["customer"].values(), key=lambda c: (c["created"], c["id"]))
    for i, cus in enumerate(customers[-N_SUBSCRIPTIONS:]):
        at = datetime.fromtimestamp(cus["created"], timezone.utc) + timedelta(hours=1)
        price = prices[i % 2]
        status = STATUSES[i % len(STATUSES)]
        period_start = unix(at)
        sub = w.stripe_put("subscription", {
            "customer": cus["id"], "status": status,
            "items": {"object": "list", "data": [{"id": f"si_test{i:04d}", "object": "subscription_item",
                                                  "price": dict(price), "quantity": 1 + i % 3,
                                                  "created": period_start, "metadata": {}}]},
            "current_period_start": period_start, "current_period_end": period_start + 30 * DAY,
            "start_date": period_start, "cancel_at": None, "canceled_at": None, "cancel_at_period_end": False,
            "ended_at": unix(at) if status == "canceled" else None,
            "cancellation_details": {"comment": None, "feedback": "too_expensive" if status == "canceled" else None,
                                     "reason": "cancellation_requested" if status == "canceled" else None},
            "discount": {"coupon": {"percent_off": 10.0}} if i % 4 == 0 else None,
            "metadata": {}, "collection_method": "charge_automatically", "currency": "usd"}, at=at)
        amount = price["unit_amount"] * (1 + i % 3)
        for n, state in enumerate(("paid", "open")):
            when = at + timedelta(minutes=n)
            w.stripe_put("invoice", {
                "customer": cus["id"], "subscription": sub["id"], "status": state, "amount_due": amount,
                "amount_paid": amount if state == "paid" else 0,
                "amount_remaining": 0 if state == "paid" else amount, "total": amount, "subtotal": amount,
                "paid": state == "paid", "attempted": True, "attempt_count": 1, "currency": "usd",
                "period_start": unix(when), "period_end": unix(when) + 30 * DAY,
                "billing_reason": "subscription_cycle", "next_payment_attempt": None,
                "status_transitions": {"finalized_at": unix(when), "paid_at": unix(when) if state == "paid" else None,
                                       "marked_uncollectible_at": None, "voided_at": None}},
                event_type="invoice.paid" if state == "paid" else "invoice.finalized", at=when)
    today = unix(ANCHOR) - unix(ANCHOR) % DAY
    for back, value in ((3, 10), (2, 20), (1, 30)):
        w.stripe_meter_usage[meter["id"]][customers[-1]["id"]][today - back * DAY] = value
    return w


@pytest.fixture()
def world() -> World:
    return build_world()


@pytest.fixture()
def sandbox(world: World, tmp_path: Path):
    sb = server.start(world, tmp_path, vendors=("stripe",))
    yield sb
    sb.stop()


@pytest.fixture()
def client(sandbox) -> stripe.StripeClient:
    return stripe.StripeClient(sandbox.credentials["stripe"]["api_key"],
                               base_addresses={"api": sandbox.urls["stripe"]}, max_network_retries=0)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One world and server for the tests that only read (a server takes 0.5 s to stop)."""
    world = build_world()
    sb = server.start(world, tmp_path_factory.mktemp("stripe"), vendors=("stripe",))
    cl = stripe.StripeClient(sb.credentials["stripe"]["api_key"], base_addresses={"api": sb.urls["stripe"]},
                             max_network_retries=0)
    yield world, sb, cl
    sb.stop()


def raw(sandbox, method: str, path: str, **kwargs: Any) -> requests.Response:
    """A plain HTTP call (to see exact JSON, headers and status)."""
    headers = {"Authorization": "Bearer " + sandbox.credentials["stripe"]["api_key"], **kwargs.pop("headers", {})}
    return requests.request(method, sandbox.urls["stripe"] + path, headers=headers, timeout=10, **kwargs)


def newest_first(world: World, kind: str, keep=lambda r: True) -> list[str]:
    recs = [r for r in world.stripe[kind].values() if keep(r)]
    return [r["id"] for r in sorted(recs, key=lambda r: (r["created"], r["id"]), reverse=True)]


def calls(sandbox, path: str) -> int:
    return sum(r["count"] for r in sandbox.emulators["stripe"].stats()["requests"] if r["path"] == path)


# -- pagination ----------------------------------------------------------------------------------
def test_auto_paging_walks_every_customer_newest_first(shared):
    world, sandbox, client = shared
    before = calls(sandbox, "/v1/customers")
    seen = [c.id for c in client.v1.customers.list({"limit": 100}).auto_paging_iter()]
    assert seen == newest_first(world, "customer")
    assert len(seen) == N_CUSTOMERS
    assert calls(sandbox, "/v1/customers") - before == 4  # ceil(350 / 100): the floor


def test_paging_by_hand_forwards_and_back(shared):
    world, sandbox, client = shared
    expected = newest_first(world, "customer")
    pages, after = [], None
    while True:
        params = {"limit": 100, **({"starting_after": after} if after else {})}
        page = client.v1.customers.list(params)
        pages.append(page)
        if not page.has_more:
            break
        after = page.data[-1].id
    assert [len(p.data) for p in pages] == [100, 100, 100, 50]
    assert [p.has_more for p in pages] == [True, True, True, False]
    assert [c.id for p in pages for c in p.data] == expected
    # ending_before the first object of page 4 gives page 3 again, newest first, with more above it
    back = client.v1.customers.list({"limit": 100, "ending_before": pages[3].data[0].id})
    assert [c.id for c in back.data] == [c.id for c in pages[2].data]
    assert back.has_more is True
    top = client.v1.customers.list({"limit": 100, "ending_before": pages[0].data[0].id})
    assert top.data == [] and top.has_more is False
    near_top = client.v1.customers.list({"limit": 3, "ending_before": expected[5]})
    assert [c.id for c in near_top.data] == expected[2:5] and near_top.has_more is True


def test_auto_paging_backwards_with_ending_before(shared):
    world, sandbox, client = shared
    expected = newest_first(world, "customer")
    seen = [c.id for c in client.v1.customers.list({"limit": 100, "ending_before": expected[250]})
            .auto_paging_iter()]
    assert seen == expected[:250][::-1]  # the SDK yields oldest to newest when walking back


def test_created_filters_and_email(shared):
    world, sandbox, client = shared
    created = sorted(c["created"] for c in world.stripe["customer"].values())
    pivot = created[100]
    gte = [c.id for c in client.v1.customers.list({"limit": 100, "created": {"gte": pivot}}).auto_paging_iter()]
    assert len(gte) == sum(1 for c in created if c >= pivot)
    lt_gt = client.v1.customers.list({"limit": 100, "created": {"gt": created[0], "lt": created[9]}})
    assert len(lt_gt.data) == sum(1 for c in created if created[0] < c < created[9])
    exact = client.v1.customers.list({"created": pivot})
    assert len(exact.data) == 2 and {c.created for c in exact.data} == {pivot}
    by_email = client.v1.customers.list({"email": "owner7@example0.com"})
    assert [c.name for c in by_email.data] == ["Company 7"]


def test_limit_and_cursor_errors(shared):
    world, sandbox, client = shared
    with pytest.raises(stripe.InvalidRequestError) as too_big:
        client.v1.customers.list({"limit": 500})
    assert too_big.value.http_status == 400 and too_big.value.param == "limit"
    with pytest.raises(stripe.InvalidRequestError) as zero:
        client.v1.customers.list({"limit": 0})
    assert zero.value.param == "limit"
    bad = raw(sandbox, "GET", "/v1/customers?limit=ten").json()["error"]
    assert (bad["code"], bad["param"], bad["message"]) == ("parameter_invalid_integer", "limit",
                                                           "Invalid integer: ten")
    with pytest.raises(stripe.InvalidRequestError) as cursor:
        client.v1.customers.list({"starting_after": "cus_doesnotexist"})
    assert cursor.value.http_status == 404 and cursor.value.code == "resource_missing"
    assert cursor.value.param == "starting_after"
    assert "No such customer: 'cus_doesnotexist'" in str(cursor.value)
    both = raw(sandbox, "GET", "/v1/customers?starting_after=a&ending_before=b")
    assert both.status_code == 400 and "only one" in both.json()["error"]["message"]
    bad_filter = raw(sandbox, "GET", "/v1/customers?created[since]=5").json()["error"]
    assert bad_filter["message"] == "Received unknown parameter: created[since]"


def test_unknown_parameters_are_rejected(client, sandbox, world):
    cus_id = newest_first(world, "customer")[0]
    with pytest.raises(stripe.InvalidRequestError) as post:
        client.v1.customers.update(cus_id, {"nickname": "x"})
    assert post.value.code == "parameter_unknown" and post.value.param == "nickname"
    assert post.value.user_message == "Received unknown parameter: nickname"
    listed = raw(sandbox, "GET", "/v1/invoices?colour=red")
    assert listed.status_code == 400 and listed.json()["error"]["param"] == "colour"
    broken = raw(sandbox, "POST", f"/v1/customers/{cus_id}", data="metadata[a=1",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"


# -- subscriptions, invoices, products, prices -----------------------------------------------------------
def test_subscription_status_filters(shared):
    world, sandbox, client = shared
    subs = world.stripe["subscription"].values()
    default = [s.id for s in client.v1.subscriptions.list({"limit": 100}).auto_paging_iter()]
    everything = [s.id for s in client.v1.subscriptions.list({"limit": 100, "status": "all"}).auto_paging_iter()]
    canceled = [s.id for s in client.v1.subscriptions.list({"status": "canceled", "limit": 100}).data]
    assert set(everything) == {s["id"] for s in subs}
    assert set(default) == {s["id"] for s in subs if s["status"] != "canceled"}
    assert set(canceled) == {s["id"] for s in subs if s["status"] == "canceled"} and canceled
    assert everything == newest_first(world, "subscription")
    sub = next(iter(subs))
    mine = client.v1.subscriptions.list({"customer": sub["customer"], "status": "all"})
    assert [s.id for s in mine.data] == [sub["id"]]
    price_id = sub["items"]["data"][0]["price"]["id"]
    by_price = client.v1.subscriptions.list({"price": price_id, "status": "all", "limit": 100})
    assert {s.id for s in by_price.data} == {s["id"] for s in subs if s["items"]["data"][0]["price"]["id"] == price_id}
    with pytest.raises(stripe.InvalidRequestError) as bad:
        client.v1.subscriptions.list({"status": "sleeping"})
    assert bad.value.param == "status"


def test_subscription_shape_and_items(shared):
    world, sandbox, client = shared
    sub = next(s for s in world.stripe["subscription"].values() if s.get("discount"))
    got = client.v1.subscriptions.retrieve(sub["id"])
    item = got["items"].data[0]
    assert item.price.id == sub["items"]["data"][0]["price"]["id"] and item.price.object == "price"
    assert item.subscription == sub["id"] and item.plan.id == item.price.id
    assert got["items"].url == f"/v1/subscription_items?subscription={sub['id']}"
    assert got.discount.coupon.percent_off == 10.0 and got.discounts == [got.discount.id]
    latest = max((i for i in world.stripe["invoice"].values() if i["subscription"] == sub["id"]),
                 key=lambda i: (i["created"], i["id"]))
    assert got.latest_invoice == latest["id"]


def test_invoice_filters_and_lines(shared):
    world, sandbox, client = shared
    sub = next(iter(world.stripe["subscription"].values()))
    mine = client.v1.invoices.list({"subscription": sub["id"]})
    assert len(mine.data) == 2 and mine.data[0].created >= mine.data[1].created
    paid = [i.id for i in client.v1.invoices.list({"status": "paid", "limit": 100}).auto_paging_iter()]
    assert set(paid) == {i["id"] for i in world.stripe["invoice"].values() if i["status"] == "paid"}
    invoice = client.v1.invoices.retrieve(mine.data[0].id)
    assert sum(line.amount for line in invoice.lines.data) == invoice.subtotal
    assert invoice.customer_email == world.stripe["customer"][sub["customer"]]["email"]
    assert invoice.number.startswith(world_prefix(client, sub["customer"]))


def world_prefix(client, customer_id: str) -> str:
    return client.v1.customers.retrieve(customer_id).invoice_prefix


def test_products_and_prices(shared):
    world, sandbox, client = shared
    assert len(client.v1.products.list().data) == 2
    team = next(p for p in world.stripe["product"].values() if p["name"] == "Team")
    prices = client.v1.prices.list({"product": team["id"]})
    assert [p.nickname for p in prices.data] == ["team"]
    inactive = client.v1.prices.list({"active": False})
    assert [p.nickname for p in inactive.data] == ["calls"]
    metered = client.v1.prices.list({"recurring": {"usage_type": "metered"}})
    assert [p.recurring.meter for p in metered.data] == [next(iter(world.stripe["billing.meter"]))]
    price = client.v1.prices.retrieve(prices.data[0].id, {"expand": ["product"]})
    assert price.product.name == "Team"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.products.retrieve("prod_nope")
    assert missing.value.http_status == 404 and "No such product: 'prod_nope'" in str(missing.value)


# -- expand ---------------------------------------------------------------------------------------
def test_expand_on_lists_and_objects(shared):
    world, sandbox, client = shared
    subs = client.v1.subscriptions.list({"limit": 5, "expand": ["data.customer"]})
    for sub in subs.data:
        assert sub.customer.object == "customer"
        assert sub.customer.id == world.stripe["subscription"][sub.id]["customer"]
    one = client.v1.subscriptions.retrieve(subs.data[0].id,
                                           {"expand": ["items.data.price.product", "latest_invoice.customer"]})
    assert one["items"].data[0].price.product.object == "product"
    assert one.latest_invoice.object == "invoice" and one.latest_invoice.customer.object == "customer"
    inv = client.v1.invoices.list({"limit": 2, "expand": ["data.subscription", "data.customer"]})
    assert all(i.subscription.object == "subscription" and i.customer.object == "customer" for i in inv.data)
    cus = client.v1.customers.retrieve(subs.data[0].customer.id, {"expand": ["subscriptions"]})
    assert [s.id for s in cus.subscriptions.data] == [subs.data[0].id]
    with pytest.raises(stripe.InvalidRequestError) as deep:  # data. counts as a level on lists
        client.v1.subscriptions.list({"expand": ["data.items.data.price.product"]})
    assert "You cannot expand more than 4 levels of a property" in str(deep.value)
    with pytest.raises(stripe.InvalidRequestError) as not_ref:
        client.v1.subscriptions.retrieve(subs.data[0].id, {"expand": ["status"]})
    assert "This property cannot be expanded (status)." in str(not_ref.value)
    hint = raw(sandbox, "GET", "/v1/subscriptions?expand[]=customer").json()["error"]["message"]
    assert hint == ("This property cannot be expanded (customer). "
                    "You may want to try expanding 'data.customer' instead.")


# -- events ---------------------------------------------------------------------------------------------
def events_newest_first(world: World, cutoff: int = 0) -> list[str]:
    """Stripe's order: created descending, events of the same second newest (last recorded) first."""
    order = sorted(range(len(world.stripe_events)), key=lambda i: (world.stripe_events[i]["created"], i))
    return [world.stripe_events[i]["id"] for i in reversed(order) if world.stripe_events[i]["created"] >= cutoff]


def test_events_keep_thirty_days(client, sandbox, world):
    listed = [e for e in client.v1.events.list({"limit": 100}).auto_paging_iter()]
    assert [e.id for e in listed] == events_newest_first(world)
    assert len({e.id for e in listed}) == len(listed) > 300
    # ten days later the events of days -30..-20 are past Stripe's 30 days: gone from list and retrieve
    world.advance(10)
    cutoff = unix(world.now()) - 30 * DAY
    later = [e.id for e in client.v1.events.list({"limit": 100}).auto_paging_iter()]
    assert later == events_newest_first(world, cutoff)
    assert 0 < len(later) < len(listed)
    old = next(e for e in world.stripe_events if e["created"] < cutoff)
    with pytest.raises(stripe.InvalidRequestError) as gone:
        client.v1.events.retrieve(old["id"])
    assert gone.value.http_status == 404 and gone.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.list({"starting_after": old["id"]})


def test_event_filters(shared):
    world, sandbox, client = shared
    cutoff = unix(world.now()) - 30 * DAY
    invoices = [e for e in client.v1.events.list({"type": "invoice.paid", "limit": 100}).auto_paging_iter()]
    assert invoices and {e.type for e in invoices} == {"invoice.paid"}
    assert len(invoices) == sum(1 for e in world.stripe_events
                                if e["type"] == "invoice.paid" and e["created"] >= cutoff)
    several = client.v1.events.list({"types": ["invoice.paid", "invoice.finalized"], "limit": 100})
    assert {e.type for e in several.data} == {"invoice.paid", "invoice.finalized"}
    wildcard = client.v1.events.list({"type": "customer.*", "limit": 100})
    assert wildcard.data and all(e.type.startswith("customer.") for e in wildcard.data)
    pivot = invoices[len(invoices) // 2].created
    newer = client.v1.events.list({"type": "invoice.paid", "created": {"gt": pivot}, "limit": 100})
    assert newer.data and all(e.created > pivot for e in newer.data)
    event = client.v1.events.retrieve(invoices[0].id)
    assert event.data.object.object == "invoice" and event.data.object.id == invoices[0].data.object.id


def test_customer_update_merges_metadata_and_emits_event(client, world):
    cus_id = newest_first(world, "customer")[0]
    old_name = world.stripe["customer"][cus_id]["name"]
    first = client.v1.customers.update(cus_id, {"metadata": {"tier": "gold"}, "name": "Renamed"},
                                       options={"idempotency_key": "update-1"})
    assert first.metadata.to_dict() == {"idx": world.stripe["customer"][cus_id]["metadata"]["idx"], "tier": "gold"}
    second = client.v1.customers.update(cus_id, {"metadata": {"tier": "", "seats": "5"}})
    assert "tier" not in second.metadata and second.metadata.seats == "5" and second.name == "Renamed"
    events = client.v1.events.list({"type": "customer.updated", "limit": 2}).data
    assert [e.data.object.id for e in events] == [cus_id, cus_id]
    latest, earlier = events
    assert latest.data.previous_attributes.to_dict() == {"metadata": {"seats": None, "tier": "gold"}}
    assert earlier.data.previous_attributes.name == old_name
    assert earlier.request.id == first.last_response.request_id
    assert earlier.request.idempotency_key == "update-1"
    assert latest.data.object.metadata.seats == "5"


def test_create_and_delete_customer(client, world):
    created = client.v1.customers.create({"email": "new@example.com", "metadata": {"source": "test"}})
    assert created.id.startswith("cus_") and created.email == "new@example.com"
    assert client.v1.customers.list({"limit": 1}).data[0].id == created.id
    victim = world.stripe["subscription"][newest_first(world, "subscription",
                                                        lambda s: s["status"] == "active")[0]]
    gone = client.v1.customers.delete(victim["customer"])
    assert gone.deleted is True and gone.id == victim["customer"]
    assert client.v1.customers.retrieve(victim["customer"]).deleted is True
    assert victim["customer"] not in {c.id for c in client.v1.customers.list({"limit": 100}).auto_paging_iter()}
    sub = client.v1.subscriptions.retrieve(victim["id"])
    assert sub.status == "canceled" and sub.cancellation_details.reason == "cancellation_requested"
    types = [e.type for e in client.v1.events.list({"limit": 3}).data]
    assert types[:2] == ["customer.deleted", "customer.subscription.deleted"]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.delete(victim["customer"])


def test_subscription_update_cancel_at_period_end(client, world):
    sub_id = newest_first(world, "subscription", lambda s: s["status"] == "active")[0]
    updated = client.v1.subscriptions.update(sub_id, {"cancel_at_period_end": True,
                                                      "metadata": {"reason": "budget"}})
    assert updated.cancel_at_period_end is True and updated.cancel_at == updated.current_period_end
    assert updated.canceled_at is not None and updated.metadata.reason == "budget"
    event = client.v1.events.list({"type": "customer.subscription.updated", "limit": 1}).data[0]
    assert event.data.object.id == sub_id
    assert event.data.previous_attributes.cancel_at_period_end is False
    undone = client.v1.subscriptions.update(sub_id, {"cancel_at_period_end": False})
    assert undone.cancel_at is None and undone.canceled_at is None


# -- idempotency, auth, faults, headers -----------------------------------------------------------------
def test_idempotency_replay_and_mismatch(client, sandbox, world):
    before = len(world.stripe["customer"])
    one = client.v1.customers.create({"email": "idem@example.com"}, options={"idempotency_key": "key-1"})
    two = client.v1.customers.create({"email": "idem@example.com"}, options={"idempotency_key": "key-1"})
    assert one.id == two.id and len(world.stripe["customer"]) == before + 1
    assert two.last_response.headers.get("Idempotent-Replayed") == "true"
    assert one.last_response.headers.get("Idempotent-Replayed") is None
    assert two.last_response.headers["Original-Request"] == one.last_response.request_id
    with pytest.raises(stripe.IdempotencyError) as mismatch:
        client.v1.customers.create({"email": "other@example.com"}, options={"idempotency_key": "key-1"})
    assert mismatch.value.http_status == 400
    assert mismatch.value.json_body["error"]["type"] == "idempotency_error"
    assert "Try using a key other than 'key-1'" in str(mismatch.value)
    # keys live 24 hours: after a day the key is free again and creates a new customer
    world.advance(1)
    three = client.v1.customers.create({"email": "idem@example.com"}, options={"idempotency_key": "key-1"})
    assert three.id != one.id


def test_wrong_key_is_401_masked(sandbox):
    bad = stripe.StripeClient("sk_test_wrongwrongwrongabcd", base_addresses={"api": sandbox.urls["stripe"]})
    with pytest.raises(stripe.AuthenticationError) as err:
        bad.v1.customers.list()
    assert err.value.http_status == 401
    assert err.value.json_body == {"error": {"message": "Invalid API Key provided: sk_test_" + "*" * 15 + "abcd",
                                             "type": "invalid_request_error"}}
    none = requests.get(sandbox.urls["stripe"] + "/v1/customers", timeout=10)
    assert none.status_code == 401 and "You did not provide an API key" in none.json()["error"]["message"]
    basic = base64.b64encode((sandbox.credentials["stripe"]["api_key"] + ":").encode()).decode()
    ok = requests.get(sandbox.urls["stripe"] + "/v1/customers?limit=1", timeout=10,
                      headers={"Authorization": "Basic " + basic})
    assert ok.status_code == 200 and ok.json()["object"] == "list"


def test_rate_limited_429(client, sandbox):
    emulator = sandbox.emulators["stripe"]
    emulator.knobs.throttle_rate = 1.0
    with pytest.raises(stripe.RateLimitError) as err:
        client.v1.customers.list()
    assert err.value.http_status == 429
    body = err.value.json_body["error"]
    assert body["code"] == "rate_limit" and body["type"] == "invalid_request_error"
    assert body["message"].startswith("Request rate limit exceeded.")
    emulator.knobs.throttle_rate = 0.0
    emulator.knobs.rate_limits = "real"
    emulator._windows["read"] = deque([time.monotonic()] * 100)  # 100 reads in this second already
    with pytest.raises(stripe.RateLimitError):
        client.v1.invoices.list()
    created = client.v1.customers.create({"email": "writes@example.com"})  # writes have their own 100/s
    assert created.object == "customer"


def test_server_errors_are_api_error(client, sandbox):
    sandbox.emulators["stripe"].knobs.error_rate = 1.0
    with pytest.raises(stripe.APIError) as err:
        client.v1.customers.list()
    assert err.value.http_status >= 500 and err.value.json_body["error"]["type"] == "api_error"


def test_headers_and_unrecognized_urls(shared):
    world, sandbox, client = shared
    ok = raw(sandbox, "GET", "/v1/products", headers={"Stripe-Version": "2026-10-28.endive"})
    assert ok.headers["Stripe-Version"] == "2024-04-10" and ok.headers["Request-Id"].startswith("req_")
    nope = raw(sandbox, "GET", "/v1/charges")
    assert nope.status_code == 404 and nope.headers["Request-Id"].startswith("req_")
    assert nope.json()["error"]["message"].startswith("Unrecognized request URL (GET: /v1/charges).")
    wrong_method = raw(sandbox, "DELETE", "/v1/events")
    assert wrong_method.status_code == 404
    bad_version = raw(sandbox, "GET", "/v1/products", headers={"Stripe-Version": "yesterday"})
    assert bad_version.status_code == 400 and "Invalid Stripe API version" in bad_version.json()["error"]["message"]


def test_customer_search(shared):
    world, sandbox, client = shared
    found = client.v1.customers.search({"query": "email:'owner12@example5.com'"})
    assert [c.name for c in found.data] == ["Company 12"]
    paged = client.v1.customers.search({"query": "email~'example3' AND created>0", "limit": 20})
    everyone = [c.id for c in paged.auto_paging_iter()]
    assert everyone == newest_first(world, "customer", lambda c: "example3" in c["email"])
    by_meta = client.v1.customers.search({"query": "metadata['idx']:'42'"})
    assert [c.name for c in by_meta.data] == ["Company 42"]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.search({"query": "email:'a' AND name:'b' OR phone:'c'"})


# -- billing meters ---------------------------------------------------------------------------------------
def test_meter_event_summaries(client, sandbox, world):
    meter_id = next(iter(world.stripe["billing.meter"]))
    customer = next(iter(world.stripe_meter_usage[meter_id]))
    today = unix(ANCHOR) - unix(ANCHOR) % DAY
    assert client.v1.billing.meters.retrieve(meter_id).event_name == "api_call"
    assert [m.id for m in client.v1.billing.meters.list().data] == [meter_id]
    whole = client.v1.billing.meters.event_summaries.list(
        meter_id, {"customer": customer, "start_time": today - 3 * DAY, "end_time": today})
    assert [s.aggregated_value for s in whole.data] == [60]
    daily = client.v1.billing.meters.event_summaries.list(
        meter_id, {"customer": customer, "start_time": today - 3 * DAY, "end_time": today,
                   "value_grouping_window": "day"})
    assert [(s.start_time, s.aggregated_value) for s in daily.data] == [
        (today - DAY, 30), (today - 2 * DAY, 20), (today - 3 * DAY, 10)]
    second = client.v1.billing.meters.event_summaries.list(
        meter_id, {"customer": customer, "start_time": today - 3 * DAY, "end_time": today,
                   "value_grouping_window": "day", "limit": 1, "starting_after": daily.data[0].id})
    assert [s.aggregated_value for s in second.data] == [20] and second.has_more is True
    # a meter event lands in its hour and in the day's sum, once per identifier
    at = unix(world.now()) - 2 * 3600
    day_before = world.stripe_meter_usage[meter_id][customer].get(at - at % DAY, 0)
    for _ in range(2):
        client.v1.billing.meter_events.create({"event_name": "api_call", "timestamp": at, "identifier": "evt-a",
                                               "payload": {"stripe_customer_id": customer, "value": "7"}})
    hour = at - at % 3600
    hourly = client.v1.billing.meters.event_summaries.list(
        meter_id, {"customer": customer, "start_time": hour - 3600, "end_time": hour + 3600,
                   "value_grouping_window": "hour"})
    assert [(s.start_time, s.aggregated_value) for s in hourly.data] == [(hour, 7), (hour - 3600, 0)]
    assert world.stripe_meter_usage[meter_id][customer][at - at % DAY] == day_before + 7
    with pytest.raises(stripe.InvalidRequestError) as misaligned:
        client.v1.billing.meters.event_summaries.list(
            meter_id, {"customer": customer, "start_time": today + 30, "end_time": today + 3600})
    assert misaligned.value.param == "start_time"
    with pytest.raises(stripe.InvalidRequestError) as no_customer:
        client.v1.billing.meters.event_summaries.list(meter_id, {"start_time": today, "end_time": today + 60})
    assert no_customer.value.code == "parameter_missing" and no_customer.value.param == "customer"


# -- shapes against Stripe's published schema and examples ---------------------------------------------------
def _nullable(node: Any) -> Any:
    """Stripe marks enums, anyOf and $ref as nullable; OAS 3.0.3 reads that as "null is also valid",
    which the validator only applies to `type`: spell it out."""
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    if node.get("nullable") is True and any(k in node for k in ("enum", "anyOf", "$ref")):
        inner = {k: v for k, v in node.items() if k != "nullable"}
        return {"anyOf": [inner, {"enum": [None]}]}
    return node


@pytest.fixture(scope="module")
def spec() -> dict:
    return _nullable(json.loads((DATA / "spec3.v2024-04-10.trimmed.json").read_text()))


def validate(spec: dict, name: str, instance: dict) -> None:
    validator = OAS30Validator({**spec, "$ref": f"#/components/schemas/{name}"})
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(instance)]
    assert not errors, f"{name}: {errors[:5]}"


def shapes(sandbox, world) -> dict[str, dict]:
    """One JSON object of each kind as the emulator sends it."""
    sub = next(s for s in world.stripe["subscription"].values() if s.get("discount"))
    meter_id = next(iter(world.stripe["billing.meter"]))
    customer = next(iter(world.stripe_meter_usage[meter_id]))
    today = unix(ANCHOR) - unix(ANCHOR) % DAY
    event = raw(sandbox, "GET", "/v1/events?limit=1&type=invoice.paid").json()["data"][0]
    return {
        "customer": raw(sandbox, "GET", f"/v1/customers/{sub['customer']}").json(),
        "subscription": raw(sandbox, "GET", f"/v1/subscriptions/{sub['id']}?expand[]=customer"
                                            "&expand[]=latest_invoice").json(),
        "invoice": raw(sandbox, "GET", "/v1/invoices?limit=1").json()["data"][0],
        "event": event,
        "product": raw(sandbox, "GET", "/v1/products?limit=1").json()["data"][0],
        "price": raw(sandbox, "GET", "/v1/prices?limit=1&active=false").json()["data"][0],
        "billing.meter": raw(sandbox, "GET", f"/v1/billing/meters/{meter_id}").json(),
        "billing.meter_event_summary": raw(
            sandbox, "GET", f"/v1/billing/meters/{meter_id}/event_summaries?customer={customer}"
                            f"&start_time={today - DAY}&end_time={today}").json()["data"][0],
        "billing.meter_event": raw(sandbox, "POST", "/v1/billing/meter_events", data={
            "event_name": "api_call", "payload[stripe_customer_id]": customer, "payload[value]": "3"}).json(),
        "subscription_item": raw(sandbox, "GET", f"/v1/subscriptions/{sub['id']}").json()["items"]["data"][0],
        "line_item": raw(sandbox, "GET", "/v1/invoices?limit=1").json()["data"][0]["lines"]["data"][0],
        "discount": raw(sandbox, "GET", f"/v1/subscriptions/{sub['id']}").json()["discount"],
    }


def test_responses_validate_against_2024_04_10_schema(sandbox, world, spec):
    got = shapes(sandbox, world)
    for name, instance in got.items():
        validate(spec, name, instance)
    validate(spec, "invoice", got["event"]["data"]["object"])
    validate(spec, "customer", got["subscription"]["customer"])
    validate(spec, "invoice", got["subscription"]["latest_invoice"])
    deleted = raw(sandbox, "DELETE", f"/v1/customers/{got['customer']['id']}").json()
    validate(spec, "deleted_customer", deleted)
    validate(spec, "error", raw(sandbox, "GET", "/v1/customers/cus_nope").json())
    updated = raw(sandbox, "GET", "/v1/events?type=customer.subscription.deleted").json()["data"][0]
    validate(spec, "event", updated)
    validate(spec, "subscription", updated["data"]["object"])


def test_key_sets_match_stripe_examples(sandbox, world, spec):
    """Every key of fixtures3.json's example that 2024-04-10 defines is sent, and nothing that neither
    the 2024-04-10 schema nor the (newer) example knows."""
    examples = json.loads((DATA / "fixtures3.trimmed.json").read_text())["resources"]
    for name, instance in shapes(sandbox, world).items():
        schema_keys = set(spec["components"]["schemas"][name]["properties"])
        example_keys = set(examples[name])
        ours = set(instance)
        assert example_keys & schema_keys <= ours, (name, sorted(example_keys & schema_keys - ours))
        assert ours <= schema_keys | example_keys, (name, sorted(ours - schema_keys - example_keys))



# -- a generated world --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from retention_hub.sandbox.generator import generate_world
    directory = tmp_path_factory.mktemp("generated")
    world = generate_world(200, seed=3, directory=directory, anchor=ANCHOR)
    sb = server.start(world, directory, vendors=("stripe",))
    cl = stripe.StripeClient(sb.credentials["stripe"]["api_key"], base_addresses={"api": sb.urls["stripe"]},
                             max_network_retries=0)
    yield world, sb, cl
    sb.stop()


def raw_ids(sandbox, path: str) -> list[str]:
    """Every id of a list, paging by hand with starting_after."""
    ids: list[str] = []
    while True:
        body = raw(sandbox, "GET", f"{path}?limit=100" + (f"&starting_after={ids[-1]}" if ids else "")).json()
        ids += [obj["id"] for obj in body["data"]]
        if not body["has_more"]:
            return ids


def test_generated_world_serves_valid_stripe(generated, spec):
    world, sandbox, client = generated
    customers = [c.id for c in client.v1.customers.list({"limit": 100}).auto_paging_iter()]
    assert customers == newest_first(world, "customer") and len(customers) > 100
    subs = list(client.v1.subscriptions.list({"limit": 100, "status": "all"}).auto_paging_iter())
    assert [s.id for s in subs] == newest_first(world, "subscription")
    live = client.v1.subscriptions.list({"limit": 100}).auto_paging_iter()
    assert {s.id for s in live} == {s.id for s in subs if s.status != "canceled"}
    assert raw_ids(sandbox, "/v1/invoices") == newest_first(world, "invoice")  # raw: the SDK is slow on 1,500
    for path, name in (("/v1/customers", "customer"), ("/v1/subscriptions?status=all", "subscription"),
                       ("/v1/invoices", "invoice"), ("/v1/prices", "price"), ("/v1/products", "product"),
                       ("/v1/billing/meters", "billing.meter")):
        sep = "&" if "?" in path else "?"
        for obj in raw(sandbox, "GET", f"{path}{sep}limit=100").json()["data"]:
            validate(spec, name, obj)
    events = raw(sandbox, "GET", "/v1/events?limit=100").json()["data"]
    assert [e["id"] for e in events] == events_newest_first(world, unix(world.now()) - 30 * DAY)[:100]
    for event in events:
        validate(spec, "event", event)
        validate(spec, event["data"]["object"]["object"], event["data"]["object"])
    meter_id = next(iter(world.stripe_meter_usage))
    customer, days = next(iter(world.stripe_meter_usage[meter_id].items()))
    first, last = min(days), max(days)
    total = client.v1.billing.meters.event_summaries.list(
        meter_id, {"customer": customer, "start_time": first, "end_time": last + DAY})
    assert total.data[0].aggregated_value == pytest.approx(sum(days.values()))
    # a week later the world has moved on and the emulator follows it
    before = len(world.stripe["invoice"])
    requests.post(sandbox.urls["stripe"] + "/__sandbox/advance?days=7", timeout=30).raise_for_status()
    assert len(world.stripe["invoice"]) > before
    assert raw_ids(sandbox, "/v1/invoices") == newest_first(world, "invoice")
    recent = [e.id for e in client.v1.events.list({"limit": 100}).auto_paging_iter()]
    assert recent == events_newest_first(world, unix(world.now()) - 30 * DAY)
