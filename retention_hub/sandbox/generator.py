"""Build the sandbox world: customers in Salesforce, HubSpot, Zendesk and Stripe with realistic mess,
18 months of history up to "now", a precomputed future the world can advance into, the usage
warehouse, and the ground truth in `truth/`.

The latent process lives in `population.py`; this module turns it into a timeline of dated events
(start, invoice, ticket, renewal, seat change, champion leaving, CSM activity, churn) and applies them
through the world's ``*_put`` helpers, so every record carries the timestamps the real system would.
Every random draw happens while the timeline is built, so applying it is deterministic.
"""
from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from . import names, truth, warehouse
from .population import CAUSES, HISTORY_DAYS, PLANS, PRICE_PER_SEAT, SEGMENTS, Population, simulate, sigmoid
from .records import sf_date, unix
from .world import World, hubspot_date_value

STRIPE_FEEDBACK = {"price": "too_expensive", "competitor": "switched_service", "low_adoption": "unused",
                   "support": "customer_service", "payment_failure": None, "lost_champion": "other"}
EVENTS_KEPT_DAYS = 30  # Stripe keeps events 30 days: older ones are not stored at all
METER_DAYS = 120  # meter event summaries kept for the last four months
OLD_EVENT_DAYS = 31  # invoices, tickets and activity from before the window are not generated


@dataclass
class Contact:
    first: str
    last: str
    email: str
    title: str
    opted_out: bool
    sf_id: str | None = None
    hs_id: str | None = None
    zd_id: int | None = None


@dataclass
class Customer:
    """One true customer: its identity and where it lives in each system."""

    key: str
    base: str
    country: str
    industry: str
    domain: str
    owner: int
    parent: int | None
    in_sf: bool
    in_hs: bool
    in_zd: bool
    in_stripe: bool
    sf_dup: bool
    hs_dup: bool
    seats: int
    contacts: list[Contact] = field(default_factory=list)
    sf_ids: list[str] = field(default_factory=list)
    hs_ids: list[str] = field(default_factory=list)
    zd_org: int | None = None
    stripe_id: str | None = None
    sub_id: str | None = None
    workspace: str | None = None
    renewal_opp: str | None = None  # the open renewal Opportunity / deal, if any
    renewal_deal: str | None = None


def generate_world(accounts: int = 2000, seed: int = 7, directory: str | Path | None = None,
                   anchor: datetime | None = None) -> World:
    """Generate a world of `accounts` customers; write the usage warehouse and truth to `directory`."""
    if accounts < 10:
        raise ValueError("accounts must be at least 10")
    if anchor is None:
        anchor = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    pop = simulate(accounts, seed)
    world = World(seed=seed, anchor=anchor)
    builder = Builder(world, pop, seed, Path(directory) if directory else None)
    builder.build()
    return world


class Builder:
    """Turns the latent population into records, day by day."""

    def __init__(self, world: World, pop: Population, seed: int, directory: Path | None) -> None:
        self.world, self.pop, self.dir = world, pop, directory
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng([seed, 2])
        self.events: list[tuple[float, int, str, int, dict]] = []
        self.later: list[tuple[float, int, str, int, dict]] = []  # heap of follow-ups
        self.later_seq = 0
        self.applied = 0
        self.children: dict[int, list[int]] = {}
        self.usage_day = 0
        self.customers: list[Customer] = []
        self.csm_sf: list[str] = []
        self.csm_hs: list[str] = []
        self.agents: list[int] = []
        self.prices: dict[tuple[int, bool], dict] = {}
        self.meter_id = ""

    # -- time --------------------------------------------------------------------------------
    def at(self, day: float) -> datetime:
        return self.world.anchor + timedelta(days=float(day) - HISTORY_DAYS)

    def day_of(self, t: datetime) -> float:
        return HISTORY_DAYS + (t - self.world.anchor).total_seconds() / 86400

    # -- the whole build -----------------------------------------------------------------------
    def build(self) -> None:
        self.make_staff_and_catalog()
        self.make_customers()
        writer = None
        if self.dir:
            self.dir.mkdir(parents=True, exist_ok=True)
            path = self.dir / "warehouse.db"
            warehouse.create(path, [(c.workspace, c.base, c.domain, c.stripe_id,
                                     self.at(float(self.pop.start_day[i])).isoformat())
                                    for i, c in enumerate(self.customers)])
            self.world.usage_db = path
            writer = warehouse.write_in_background(path, self.pop, self.world.seed, self.world.anchor,
                                                   [c.workspace for c in self.customers], HISTORY_DAYS)
        self.make_timeline()
        self.usage_day = HISTORY_DAYS if writer else 0  # the background process writes the history
        self.write_meter(0, HISTORY_DAYS)
        self.play(self.world.anchor)
        self.world.play_until = lambda world, t: self.play(t)
        if writer:
            writer.join()
            if writer.exitcode != 0:
                raise RuntimeError(f"writing the usage warehouse failed (exit code {writer.exitcode})")
            truth.write(self.dir / "truth", self.pop, self.customers, self.at, self.mrr)

    def play(self, until: datetime) -> None:
        """Apply every event up to `until` and write usage for every complete day before it."""
        limit = self.day_of(until)
        if limit > self.pop.days:
            raise ValueError(f"the sandbox world is simulated only {self.pop.days - HISTORY_DAYS} days "
                             "past its start; generate a new one to go further")
        while True:
            planned = self.events[self.applied] if self.applied < len(self.events) else None
            later = self.later[0] if self.later else None
            event = min(e for e in (planned, later) if e is not None) if (planned or later) else None
            if event is None or event[0] > limit:
                break
            if event is planned:
                self.applied += 1
            else:
                heapq.heappop(self.later)
            day, _, kind, i, data = event
            getattr(self, "on_" + kind)(self.customers[i], self.at(day), data)
        self.write_usage(int(math.floor(limit)))
        # Stripe keeps events 30 days: drop older ones so memory stays bounded
        horizon = unix(until - timedelta(days=EVENTS_KEPT_DAYS))
        events = self.world.stripe_events
        if events and events[0]["created"] < horizon:
            self.world.stripe_events = [e for e in events if e["created"] >= horizon]

    def add(self, day: float, kind: str, i: int, data: dict | None = None) -> None:
        self.events.append((day, len(self.events), kind, i, data or {}))

    # -- static records ------------------------------------------------------------------------
    def make_staff_and_catalog(self) -> None:
        w, rng, n = self.world, self.rng, self.pop.n
        t0 = self.at(-1500)
        w.sf_custom_fields["Account"]["Stripe_Customer_Id__c"] = {
            "name": "Stripe_Customer_Id__c", "label": "Stripe Customer Id", "type": "string",
            "length": 255, "custom": True}
        w.sf_put("User", {"Username": "admin@sandbox.example.com", "Name": "Sandbox Admin",
                          "FirstName": "Sandbox", "LastName": "Admin", "Email": "admin@sandbox.example.com",
                          "IsActive": True, "Title": "Salesforce Administrator"}, at=t0)
        for k in range(max(4, n // 60)):
            first, last = names.person(rng)
            email = f"{first.lower()}.{last.lower()}{k}@retention-sandbox.example.com"
            user = w.sf_put("User", {"Username": email, "Name": f"{first} {last}", "FirstName": first,
                                     "LastName": last, "Email": email, "IsActive": True,
                                     "Title": "Customer Success Manager"}, at=t0)
            self.csm_sf.append(user["Id"])
            owner_id = str(60_000_000 + k)
            w.hs_owners[owner_id] = {"id": owner_id, "email": email, "firstName": first, "lastName": last,
                                     "userId": 9_000_000 + k, "createdAt": "2022-01-01T00:00:00.000Z",
                                     "updatedAt": "2022-01-01T00:00:00.000Z", "archived": False, "teams": []}
            self.csm_hs.append(owner_id)
        for k in range(max(3, n // 250)):
            first, last = names.person(rng)
            agent = w.zd_put("users", {"name": f"{first} {last}", "role": "agent", "active": True,
                                       "verified": True, "organization_id": None, "external_id": None,
                                       "email": f"{first.lower()}.{k}@support.retention-sandbox.example.com",
                                       "tags": [], "user_fields": {}}, at=t0)
            self.agents.append(agent["id"])
        for plan_i, plan in enumerate(PLANS):
            product = w.stripe_put("product", {"name": f"{plan} plan", "active": True, "type": "service",
                                               "description": f"Per-seat {plan} subscription", "metadata": {}},
                                   at=t0)
            for annual in (False, True):
                unit = int(PRICE_PER_SEAT[plan_i]) * (12 if annual else 1)
                self.prices[(plan_i, annual)] = w.stripe_put("price", {
                    "product": product["id"], "unit_amount": unit, "currency": "usd", "active": True,
                    "type": "recurring", "nickname": f"{plan} {'annual' if annual else 'monthly'}",
                    "recurring": {"interval": "year" if annual else "month", "interval_count": 1,
                                  "usage_type": "licensed", "meter": None, "aggregate_usage": None,
                                  "trial_period_days": None}, "metadata": {}}, at=t0)
        meter = w.stripe_put("billing.meter", {
            "display_name": "API calls", "event_name": "api_calls", "status": "active",
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "default_aggregation": {"formula": "sum"}, "value_settings": {"event_payload_key": "value"},
            "event_time_window": None, "status_transitions": {"deactivated_at": None},
            "updated": unix(t0)}, at=t0)
        self.meter_id = meter["id"]

    def make_customers(self) -> None:
        rng, pop = self.rng, self.pop
        bases = names.company_base_names(pop.n, rng)
        for i in range(pop.n):
            country = rng.choices(names.COUNTRIES, names.COUNTRY_SHARE)[0]
            in_sf, in_hs = rng.random() < 0.85, rng.random() < 0.6
            if not (in_sf or in_hs):
                in_sf = True
            self.customers.append(Customer(
                key=f"C{i + 1:06d}", base=bases[i], country=country, industry=rng.choice(names.INDUSTRIES),
                domain=names.domain_for(bases[i], country, rng), owner=rng.randrange(len(self.csm_sf)),
                parent=None, in_sf=in_sf, in_hs=in_hs, in_zd=rng.random() < 0.75,
                in_stripe=rng.random() < 0.92, sf_dup=in_sf and rng.random() < 0.02,
                hs_dup=in_hs and rng.random() < 0.03, seats=int(pop.seats[i])))
        # subsidiaries: a few customers are the local arm of a bigger one, often on its domain
        big = [i for i in range(pop.n) if pop.segment[i] >= 1]
        for i in range(pop.n):
            c = self.customers[i]
            if big and rng.random() < 0.04 and pop.segment[i] < 2:
                p = rng.choice(big)
                if p == i or self.customers[p].parent is not None:
                    continue
                parent = self.customers[p]
                self.children.setdefault(p, []).append(i)
                c.parent, c.base = p, f"{parent.base} {names.COUNTRY_NAME[c.country]}"
                if rng.random() < 0.6:
                    c.domain = parent.domain
        for c in self.customers:
            c.workspace = f"ws_{int(c.key[1:]):06d}{rng.randrange(16**4):04x}"
            if c.in_stripe:  # minted up front: the warehouse records it before the records exist
                c.stripe_id = self.world.ids.stripe("cus")
            for _ in range(min(8, 2 + c.seats // 15)):
                first, last = names.person(rng)
                c.contacts.append(Contact(first, last, names.email_for(first, last, c.domain, rng),
                                          rng.choice(names.TITLES), rng.random() < 0.05))

    # -- the timeline --------------------------------------------------------------------------
    def make_timeline(self) -> None:
        pop, rng = self.pop, self.rng
        end = pop.days
        block_health = pop.health[:, ::30]  # health at the start of every 30-day block
        for i, c in enumerate(self.customers):
            start, churn = int(pop.start_day[i]), int(min(pop.churn_day[i], end))
            cause = int(pop.cause[i])
            onset = int(pop.onset[i])
            self.add(start + rng.uniform(0.3, 0.7), "start", i)
            lo = max(start, -OLD_EVENT_DAYS)
            period = 365 if pop.annual[i] else 30
            k = max(0, math.ceil((lo - start) / period))
            while start + k * period < churn:
                d = start + k * period
                if c.in_stripe and d >= lo:
                    self.add_invoice(i, d, cause, onset)
                if k > 0 and d >= lo:
                    self.add(d + 0.01, "period", i, {"period": period})
                if pop.annual[i] and (c.in_sf or c.in_hs) and d + 365 - 120 >= lo:
                    self.add(d + 365 - 120 + rng.random(), "renewal_open", i, {"close": d + 365})
                    self.add(d + 365 - 30 + rng.random(), "renewal_stage", i, {})
                k += 1
            if pop.annual[i] and (c.in_sf or c.in_hs) and churn < end:
                self.add(churn + 0.02, "renewal_close", i, {"won": False})
            for b in range(max(lo, 0) // 30, max(0, (churn - 1)) // 30 + 1):
                b0 = max(b * 30, lo, 0)
                b1 = min(b * 30 + 30, churn)
                if b1 <= b0:
                    continue
                h = float(block_health[i, min(b, block_health.shape[1] - 1)])
                support = cause == CAUSES.index("support") and onset <= b0 < pop.recovers_at[i]
                self.add_tickets(i, b0, b1, h, support)
                self.add_activity(i, b0, b1, h)
                self.add_seat_change(i, b0, h)
            if cause == CAUSES.index("lost_champion") and start < onset < churn and onset >= lo:
                self.add(onset + rng.random(), "champion_left", i, {})
                if onset + 30 < churn:
                    self.add(onset + 30 + rng.random(), "new_contact", i, {})
            if churn < end:
                self.add(churn + 0.03, "churn", i, {"reason": CAUSES[int(pop.churn_reason[i])]})
        self.events.sort()

    def add_invoice(self, i: int, d: int, cause: int, onset: int) -> None:
        rng, pop = self.rng, self.pop
        paying_trouble = cause == CAUSES.index("payment_failure") and onset <= d < pop.recovers_at[i]
        h = float(pop.health[i, min(max(d, 0), pop.days - 1)])
        fail = rng.random() < 0.03 + (0.45 if paying_trouble else 0.0) + (0.05 if h < -1 else 0.0)
        attempts = [True] if not fail else [False] + [rng.random() < (0.3 if paying_trouble else 0.6)
                                                      for _ in range(3)]
        self.add(d + 0.02, "invoice", i, {"attempts": attempts})

    def add_tickets(self, i: int, b0: int, b1: int, h: float, support: bool) -> None:
        rng, seg = self.rng, int(self.pop.segment[i])
        rate = (0.15, 0.45, 1.4)[seg] * math.exp(-0.6 * h) * (2.5 if support else 1.0) * (b1 - b0) / 30
        for _ in range(int(self.np_rng.poisson(rate))):
            day = rng.uniform(b0, b1)
            urgent = 0.25 if support else 0.06
            priority = rng.choices(("low", "normal", "high", "urgent"), (0.25, 0.5 - urgent, 0.25, urgent))[0]
            hours = rng.lognormvariate(math.log(18 * (3 if support else 1)), 0.9)
            bad = rng.random() < sigmoid(np.array(-1.6 - 1.0 * h + (1.3 if support else 0.0)))
            self.add(day, "ticket", i, {
                "priority": priority, "escalated": rng.random() < (0.25 if support else 0.04),
                "hours": hours, "rated": rng.random() < 0.5, "score": "bad" if bad else "good",
                "type": rng.choice(("question", "incident", "problem", "task")),
                "subject": rng.choice(("Cannot export report", "SSO login fails", "Billing question",
                                       "API rate limit errors", "Dashboard slow", "How do I add seats?",
                                       "Integration sync stopped", "Feature request: bulk edit"))})

    def add_activity(self, i: int, b0: int, b1: int, h: float) -> None:
        seg = int(self.pop.segment[i])
        rate = (0.15, 0.4, 1.0)[seg] * (1.4 if h < -0.5 else 1.0) * (b1 - b0) / 30
        for _ in range(int(self.np_rng.poisson(rate))):
            self.add(self.rng.uniform(b0, b1), "activity", i, {
                "kind": self.rng.choice(("Call", "Email", "Task")),
                "subject": self.rng.choice(("Quarterly business review", "Check-in call", "Onboarding session",
                                            "Adoption review", "Renewal prep", "Executive sponsor sync"))})

    def add_seat_change(self, i: int, b0: int, h: float) -> None:
        r = self.rng.random()
        if h < -0.6 and r < 0.08:
            self.add(b0 + self.rng.uniform(0, 29), "seats", i, {"factor": -self.rng.uniform(0.1, 0.3)})
        elif h > 0.7 and r < 0.05:
            self.add(b0 + self.rng.uniform(0, 29), "seats", i, {"factor": self.rng.uniform(0.1, 0.4)})

    # -- helpers for handlers ------------------------------------------------------------------
    def mrr(self, i: int, c: Customer) -> int:
        """Monthly recurring revenue in minor units after discount."""
        return int(round(c.seats * int(PRICE_PER_SEAT[self.pop.segment[i]]) * (1 - self.pop.discount[i])))

    def requester(self, c: Customer, t: datetime) -> int:
        with_user = [p for p in c.contacts if p.zd_id is not None]
        if with_user:
            return self.rng.choice(with_user).zd_id  # type: ignore[return-value]
        p = c.contacts[0]
        org = c.zd_org if p.email.endswith("@" + c.domain) else None
        p.zd_id = self.world.zd_put("users", {
            "name": f"{p.first} {p.last}", "email": p.email, "role": "end-user", "organization_id": org,
            "active": True, "verified": True, "external_id": None, "tags": [], "user_fields": {}}, at=t)["id"]
        return p.zd_id

    def subscription_fields(self, i: int, c: Customer, period_start: datetime) -> dict:
        annual = bool(self.pop.annual[i])
        end = period_start + timedelta(days=365 if annual else 30)
        return {"current_period_start": unix(period_start), "current_period_end": unix(end)}

    # -- event handlers --------------------------------------------------------------------------
    def on_start(self, c: Customer, t: datetime, data: dict) -> None:
        w, rng, i = self.world, self.rng, int(c.key[1:]) - 1
        seg = int(self.pop.segment[i])
        website = None if rng.random() < 0.15 else rng.choice(
            (f"https://www.{c.domain}", f"http://{c.domain}", c.domain, f"www.{c.domain}/"))
        employees = int(c.seats * rng.uniform(3, 12))
        if c.in_stripe:
            billing = rng.random()
            email = (f"billing@{c.domain}" if billing < 0.5 else c.contacts[0].email if billing < 0.8
                     else names.email_for(*names.person(rng), c.domain, rng, free_mail_rate=1.0))
            w.stripe_put("customer", {
                "id": c.stripe_id, "email": email, "name": None if rng.random() < 0.12 else names.variant(c.base, c.country, rng, "billing"),
                "description": None, "metadata": {}, "currency": "usd", "delinquent": False, "balance": 0,
                "address": {"country": c.country, "city": None, "line1": None, "line2": None,
                            "postal_code": None, "state": None}}, at=t)
            price = self.prices[(seg, bool(self.pop.annual[i]))]
            discount = self.pop.discount[i]
            sub = {"customer": c.stripe_id, "status": "active", "start_date": unix(t), "cancel_at": None,
                   "canceled_at": None, "cancel_at_period_end": False, "ended_at": None, "metadata": {},
                   "cancellation_details": {"comment": None, "feedback": None, "reason": None},
                   "collection_method": "charge_automatically", "currency": "usd",
                   "discount": None if not discount else {
                       "object": "discount", "coupon": {"id": f"SAVE{int(discount * 100)}", "object": "coupon",
                                                        "percent_off": float(discount * 100), "duration": "forever",
                                                        "valid": True}},
                   **self.subscription_fields(i, c, t)}
            sub_id = w.ids.stripe("sub")
            sub["items"] = {"object": "list", "has_more": False, "total_count": 1,
                            "url": f"/v1/subscription_items?subscription={sub_id}",
                            "data": [{"id": w.ids.stripe("si"), "object": "subscription_item", "price": price,
                                      "quantity": c.seats, "created": unix(t), "subscription": sub_id,
                                      "metadata": {}}]}
            sub["id"] = sub_id
            c.sub_id = w.stripe_put("subscription", sub, at=t)["id"]
        if c.in_sf:
            for dup in range(2 if c.sf_dup else 1):
                acct = w.sf_put("Account", {
                    "Name": names.variant(c.base, c.country, rng, "crm"), "Website": None if dup else website,
                    "ParentId": None, "OwnerId": self.csm_sf[c.owner if not dup else rng.randrange(len(self.csm_sf))],
                    "Industry": c.industry, "BillingCountry": c.country, "Type": "Customer",
                    "NumberOfEmployees": employees, "AnnualRevenue": float(employees * 150_000),
                    "Stripe_Customer_Id__c": c.stripe_id if c.stripe_id and rng.random() < 0.25 else None},
                    at=t + timedelta(days=dup * rng.uniform(30, 300)) if dup else t)
                c.sf_ids.append(acct["Id"])
            for p in c.contacts:
                p.sf_id = w.sf_put("Contact", self.sf_contact(c, p), at=t)["Id"]
        if c.in_hs:
            for dup in range(2 if c.hs_dup else 1):
                comp = w.hs_put("companies", {
                    "name": names.variant(c.base, c.country, rng, "marketing"),
                    "domain": None if dup else c.domain, "website": None if dup else website,
                    "country": c.country, "industry": c.industry.upper(), "numberofemployees": employees,
                    "annualrevenue": employees * 150_000, "hubspot_owner_id": self.csm_hs[c.owner],
                    "lifecyclestage": "customer",
                    "salesforceaccountid": c.sf_ids[0] if c.sf_ids and rng.random() < 0.5 else None}, at=t)
                c.hs_ids.append(comp["id"])
            for p in c.contacts:
                if rng.random() < 0.8:
                    p.hs_id = w.hs_put("contacts", {
                        "email": p.email, "firstname": p.first, "lastname": p.last, "jobtitle": p.title,
                        "phone": None, "hubspot_owner_id": self.csm_hs[c.owner],
                        "hs_email_optout": "true" if p.opted_out else "false"}, at=t)["id"]
                    w.hs_associate("contacts", p.hs_id, "companies", c.hs_ids[0])
        if c.in_zd:
            org = w.zd_put("organizations", {
                "name": names.variant(c.base, c.country, rng, "support"),
                "domain_names": [c.domain] if rng.random() < 0.75 else [],
                "external_id": c.sf_ids[0] if c.sf_ids and rng.random() < 0.3 else None,
                "details": None, "notes": None, "tags": [SEGMENTS[seg].lower().replace("-", "_")],
                "group_id": None, "shared_tickets": False, "shared_comments": False,
                "organization_fields": {}}, at=t)
            c.zd_org = org["id"]
        self.link_parent(c, i)

    def link_parent(self, c: Customer, i: int) -> None:
        """Salesforce ParentId and HubSpot parent company, once both sides exist."""
        w = self.world
        pairs = [(c, self.customers[c.parent])] if c.parent is not None else []
        pairs += [(self.customers[k], c) for k in self.children.get(i, [])]
        for child, parent in pairs:
            if child.sf_ids and parent.sf_ids:
                w.sf_put("Account", {"Id": child.sf_ids[0], "ParentId": parent.sf_ids[0]},
                         at=max(self.world_time_of(child), self.world_time_of(parent)))
            if child.hs_ids and parent.hs_ids:
                w.hs_associate("companies", parent.hs_ids[0], "companies", child.hs_ids[0], 13, 14)

    def world_time_of(self, c: Customer) -> datetime:
        return self.at(float(self.pop.start_day[int(c.key[1:]) - 1]) + 0.75)

    def sf_contact(self, c: Customer, p: Contact) -> dict:
        return {"AccountId": c.sf_ids[0], "FirstName": p.first, "LastName": p.last,
                "Name": f"{p.first} {p.last}", "Email": p.email, "Title": p.title, "Phone": None,
                "HasOptedOutOfEmail": p.opted_out, "OwnerId": self.csm_sf[c.owner]}

    def on_invoice(self, c: Customer, t: datetime, data: dict) -> None:
        w, i = self.world, int(c.key[1:]) - 1
        annual = bool(self.pop.annual[i])
        amount = self.mrr(i, c) * (12 if annual else 1)
        end = t + timedelta(days=365 if annual else 30)
        inv = w.stripe_put("invoice", {
            "customer": c.stripe_id, "subscription": c.sub_id, "status": "open", "amount_due": amount,
            "amount_paid": 0, "amount_remaining": amount, "attempted": False, "attempt_count": 0,
            "paid": False, "currency": "usd", "period_start": unix(t), "period_end": unix(end),
            "billing_reason": "subscription_cycle", "next_payment_attempt": unix(t + timedelta(hours=1)),
            "total": amount, "subtotal": amount,
            "status_transitions": {"finalized_at": unix(t), "paid_at": None, "voided_at": None,
                                   "marked_uncollectible_at": None}}, at=t)
        attempts: list[bool] = data["attempts"]
        for n, ok in enumerate(attempts):
            when = t + timedelta(hours=1) + timedelta(days=(0, 3, 5, 7)[n])
            final = n == len(attempts) - 1
            if ok:
                w.stripe_put("invoice", {"id": inv["id"], "status": "paid", "amount_paid": amount,
                                         "amount_remaining": 0, "attempted": True, "attempt_count": n + 1,
                                         "paid": True, "next_payment_attempt": None,
                                         "status_transitions": {**inv["status_transitions"], "paid_at": unix(when)}},
                             event_type="invoice.paid", at=when)
                if n > 0 and c.sub_id and w.stripe["subscription"][c.sub_id]["status"] == "past_due":
                    w.stripe_put("subscription", {"id": c.sub_id, "status": "active"}, at=when)
                    w.stripe_put("customer", {"id": c.stripe_id, "delinquent": False}, at=when)
                break
            w.stripe_put("invoice", {
                "id": inv["id"], "attempted": True, "attempt_count": n + 1,
                "status": "uncollectible" if final else "open",
                "next_payment_attempt": None if final else unix(when + timedelta(days=(3, 2, 2)[min(n, 2)]))},
                event_type="invoice.payment_failed", at=when)
            if n == 0 and c.sub_id:
                w.stripe_put("subscription", {"id": c.sub_id, "status": "past_due"}, at=when)
                w.stripe_put("customer", {"id": c.stripe_id, "delinquent": True}, at=when)

    def on_period(self, c: Customer, t: datetime, data: dict) -> None:
        if c.sub_id:
            sub = self.world.stripe["subscription"][c.sub_id]
            if sub["status"] != "canceled":
                self.world.stripe_put("subscription", {"id": c.sub_id, **self.subscription_fields(
                    int(c.key[1:]) - 1, c, t.replace(hour=0, minute=0, second=0, microsecond=0))}, at=t)

    def on_renewal_open(self, c: Customer, t: datetime, data: dict) -> None:
        w, i = self.world, int(c.key[1:]) - 1
        close = self.at(data["close"])
        amount = self.mrr(i, c) * 12 / 100
        if c.sf_ids:
            c.renewal_opp = w.sf_put("Opportunity", {"AccountId": c.sf_ids[0], "Name": f"{c.base} - Renewal {close.year}",
                                     "Type": "Renewal", "StageName": "Prospecting", "CloseDate": sf_date(close),
                                     "Amount": round(amount, 2), "Probability": 10.0, "IsClosed": False,
                                     "IsWon": False, "OwnerId": self.csm_sf[c.owner]}, at=t)["Id"]
        if c.hs_ids:
            deal = w.hs_put("deals", {"dealname": f"{c.base} renewal {close.year}", "amount": round(amount, 2),
                                      "closedate": hubspot_date_value(close), "dealstage": "qualifiedtobuy",
                                      "pipeline": "default", "dealtype": "existingbusiness",
                                      "hubspot_owner_id": self.csm_hs[c.owner]}, at=t)
            w.hs_associate("deals", deal["id"], "companies", c.hs_ids[0])
            c.renewal_deal = deal["id"]

    def open_renewals(self, c: Customer) -> tuple[list[dict], list[dict]]:
        opp = self.world.salesforce["Opportunity"].get(c.renewal_opp) if c.renewal_opp else None
        deal = self.world.hubspot["deals"].get(c.renewal_deal) if c.renewal_deal else None
        return ([opp] if opp and not opp["IsClosed"] else [],
                [deal] if deal and deal["properties"].get("dealstage") not in ("closedwon", "closedlost") else [])

    def on_renewal_stage(self, c: Customer, t: datetime, data: dict) -> None:
        opps, deals = self.open_renewals(c)
        for o in opps:
            self.world.sf_put("Opportunity", {"Id": o["Id"], "StageName": "Negotiation/Review",
                                              "Probability": 75.0}, at=t)
        for d in deals:
            self.world.hs_put("deals", {"dealstage": "contractsent"}, d["id"], at=t)
        # the renewal closes won on its date unless the customer churns (renewal_close then)
        i = int(c.key[1:]) - 1
        if self.pop.churn_day[i] > self.day_of(t) + 31:
            self.add_later(self.day_of(t) + 30, "renewal_close", i, {"won": True})

    def add_later(self, day: float, kind: str, i: int, data: dict) -> None:
        """Schedule a follow-up event (ticket solved, renewal closed) decided while playing."""
        self.later_seq += 1
        heapq.heappush(self.later, (day, 10**9 + self.later_seq, kind, i, data))

    def on_renewal_close(self, c: Customer, t: datetime, data: dict) -> None:
        opps, deals = self.open_renewals(c)
        won = data["won"]
        for o in opps:
            self.world.sf_put("Opportunity", {"Id": o["Id"], "StageName": "Closed Won" if won else "Closed Lost",
                                              "Probability": 100.0 if won else 0.0, "IsClosed": True,
                                              "IsWon": won}, at=t)
        for d in deals:
            self.world.hs_put("deals", {"dealstage": "closedwon" if won else "closedlost"}, d["id"], at=t)

    def on_ticket(self, c: Customer, t: datetime, data: dict) -> None:
        w = self.world
        solved = t + timedelta(hours=data["hours"])
        if c.in_zd and c.zd_org is not None:
            requester = self.requester(c, t)
            agent = self.rng.choice(self.agents)
            ticket = w.zd_put("tickets", {
                "subject": data["subject"], "description": data["subject"] + ".", "type": data["type"],
                "priority": data["priority"], "status": "new", "requester_id": requester,
                "submitter_id": requester, "assignee_id": agent, "organization_id": c.zd_org, "group_id": None,
                "tags": ["escalated"] if data["escalated"] else [], "via": {"channel": "email"},
                "custom_fields": [], "external_id": None,
                "satisfaction_rating": {"score": "unoffered"},
                "_metric_set": {"solved_at": None, "full_resolution_time_in_minutes": {"calendar": None, "business": None},
                                "reply_time_in_minutes": {"calendar": int(data["hours"] * 6), "business": int(data["hours"] * 4)}}},
                at=t)
            self.add_later(self.day_of(solved), "ticket_solved", int(c.key[1:]) - 1,
                           {"id": ticket["id"], "rated": data["rated"], "score": data["score"], "created": t})
        elif c.sf_ids:
            case = w.sf_put("Case", {"AccountId": c.sf_ids[0], "ContactId": c.contacts[0].sf_id,
                                     "Subject": data["subject"], "Description": data["subject"] + ".",
                                     "Status": "Escalated" if data["escalated"] else "New",
                                     "Priority": {"low": "Low", "normal": "Medium"}.get(data["priority"], "High"),
                                     "Origin": "Email", "IsClosed": False, "IsEscalated": data["escalated"],
                                     "ClosedDate": None, "OwnerId": self.csm_sf[c.owner]}, at=t)
            self.add_later(self.day_of(solved), "case_closed", int(c.key[1:]) - 1, {"id": case["Id"]})
        elif c.hs_ids:
            tk = w.hs_put("tickets", {"subject": data["subject"], "content": data["subject"] + ".",
                                      "hs_pipeline": "0", "hs_pipeline_stage": "1",
                                      "hs_ticket_priority": {"normal": "MEDIUM"}.get(data["priority"], data["priority"].upper()),
                                      "closed_date": None}, at=t)
            w.hs_associate("tickets", tk["id"], "companies", c.hs_ids[0])
            self.add_later(self.day_of(solved), "hs_ticket_closed", int(c.key[1:]) - 1, {"id": tk["id"]})

    def on_ticket_solved(self, c: Customer, t: datetime, data: dict) -> None:
        w = self.world
        ticket = w.zendesk["tickets"][data["id"]]
        minutes = int((t - data["created"]).total_seconds() / 60)
        metric = {**ticket["_metric_set"], "solved_at": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "full_resolution_time_in_minutes": {"calendar": minutes, "business": int(minutes * 0.4)}}
        rating = {"score": "unoffered"}
        if data["rated"]:
            r = w.zd_put("satisfaction_ratings", {
                "ticket_id": ticket["id"], "requester_id": ticket["requester_id"],
                "assignee_id": ticket["assignee_id"], "group_id": None, "score": data["score"],
                "comment": "Thanks!" if data["score"] == "good" else "Took far too long."}, at=t)
            rating = {"score": data["score"], "id": r["id"], "comment": r["comment"]}
        w.zd_put("tickets", {"id": ticket["id"], "status": "solved", "_metric_set": metric,
                             "satisfaction_rating": rating}, at=t)

    def on_case_closed(self, c: Customer, t: datetime, data: dict) -> None:
        self.world.sf_put("Case", {"Id": data["id"], "Status": "Closed", "IsClosed": True,
                                   "ClosedDate": t.strftime("%Y-%m-%dT%H:%M:%S.000+0000")}, at=t)

    def on_hs_ticket_closed(self, c: Customer, t: datetime, data: dict) -> None:
        self.world.hs_put("tickets", {"hs_pipeline_stage": "4", "closed_date": t.strftime("%Y-%m-%dT%H:%M:%S.000Z")},
                          data["id"], at=t)

    def on_activity(self, c: Customer, t: datetime, data: dict) -> None:
        w = self.world
        if c.sf_ids:
            w.sf_put("Task", {"WhatId": c.sf_ids[0], "WhoId": c.contacts[0].sf_id, "OwnerId": self.csm_sf[c.owner],
                              "Subject": data["subject"], "Description": None, "Status": "Completed",
                              "Priority": "Normal", "ActivityDate": sf_date(t), "IsClosed": True,
                              "TaskSubtype": data["kind"]}, at=t)
        elif c.hs_ids:
            task = w.hs_put("tasks", {"hs_task_subject": data["subject"], "hs_task_body": None,
                                      "hs_task_status": "COMPLETED", "hs_task_priority": "NONE",
                                      "hs_task_type": {"Call": "CALL", "Email": "EMAIL"}.get(data["kind"], "TODO"),
                                      "hs_timestamp": t.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                                      "hubspot_owner_id": self.csm_hs[c.owner]}, at=t)
            w.hs_associate("tasks", task["id"], "companies", c.hs_ids[0])

    def on_seats(self, c: Customer, t: datetime, data: dict) -> None:
        i = int(c.key[1:]) - 1
        before = c.seats
        c.seats = max(1, before + int(round(before * data["factor"])) or (1 if data["factor"] > 0 else -1))
        if c.sub_id:
            sub = self.world.stripe["subscription"][c.sub_id]
            item = {**sub["items"]["data"][0], "quantity": c.seats}
            self.world.stripe_put("subscription", {"id": c.sub_id, "items": {**sub["items"], "data": [item]}}, at=t)
        if c.sf_ids and c.seats > before:
            amount = (c.seats - before) * int(PRICE_PER_SEAT[self.pop.segment[i]]) * 12 / 100
            self.world.sf_put("Opportunity", {
                "AccountId": c.sf_ids[0], "Name": f"{c.base} - Expansion", "Type": "Upsell",
                "StageName": "Closed Won", "CloseDate": sf_date(t), "Amount": round(amount, 2),
                "Probability": 100.0, "IsClosed": True, "IsWon": True, "OwnerId": self.csm_sf[c.owner]}, at=t)

    def on_champion_left(self, c: Customer, t: datetime, data: dict) -> None:
        p = c.contacts[0]
        if p.sf_id:
            self.world.sf_delete("Contact", p.sf_id, at=t)
        if p.hs_id:
            self.world.hs_archive("contacts", p.hs_id, at=t)
        if p.zd_id:
            self.world.zd_put("users", {"id": p.zd_id, "active": False}, at=t)
        c.contacts = c.contacts[1:] or c.contacts

    def on_new_contact(self, c: Customer, t: datetime, data: dict) -> None:
        first, last = names.person(self.rng)
        p = Contact(first, last, names.email_for(first, last, c.domain, self.rng, 0.0),
                    self.rng.choice(names.TITLES), False)
        if c.sf_ids:
            p.sf_id = self.world.sf_put("Contact", self.sf_contact(c, p), at=t)["Id"]
        if c.hs_ids:
            p.hs_id = self.world.hs_put("contacts", {"email": p.email, "firstname": first, "lastname": last,
                                                     "jobtitle": p.title, "hs_email_optout": "false"}, at=t)["id"]
            self.world.hs_associate("contacts", p.hs_id, "companies", c.hs_ids[0])
        c.contacts.append(p)

    def on_churn(self, c: Customer, t: datetime, data: dict) -> None:
        w, reason = self.world, data["reason"]
        if c.sub_id:
            w.stripe_put("subscription", {
                "id": c.sub_id, "status": "canceled", "canceled_at": unix(t), "ended_at": unix(t),
                "cancellation_details": {"comment": None, "feedback": STRIPE_FEEDBACK[reason],
                                         "reason": "payment_failed" if reason == "payment_failure"
                                         else "cancellation_requested"}},
                event_type="customer.subscription.deleted", at=t)
        for acct in c.sf_ids:
            w.sf_put("Account", {"Id": acct, "Type": "Former Customer"}, at=t)
        for comp in c.hs_ids:
            w.hs_put("companies", {"lifecyclestage": "other"}, comp, at=t)

    # -- usage ---------------------------------------------------------------------------------
    def write_usage(self, until_day: int) -> None:
        """Usage for every complete day before `until_day`: warehouse rows and Stripe meter sums."""
        first = self.usage_day
        if self.dir and until_day > first:
            warehouse.write_days(self.dir / "warehouse.db", self.pop, self.world.seed, self.world.anchor,
                                 [c.workspace for c in self.customers], first, until_day)
        self.write_meter(first, until_day)
        self.usage_day = max(self.usage_day, until_day)

    def write_meter(self, first: int, until_day: int) -> None:
        """Daily API-call sums for metered customers (Stripe keeps the recent months)."""
        for d in range(max(first, HISTORY_DAYS - METER_DAYS), min(until_day, self.pop.days)):
            active, users, *_ = warehouse.day_usage(self.pop, self.world.seed, self.world.anchor, d)
            start = unix(self.at(d))
            for k, calls in zip(active.tolist(), (users * 40).tolist()):
                c = self.customers[k]
                if self.pop.metered[k] and c.stripe_id:
                    self.world.stripe_meter_usage[self.meter_id][c.stripe_id][start] = float(calls)
