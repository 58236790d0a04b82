"""How each timeline event changes the records of the four systems.

Every write goes through the record operations of `record_ops.RecordOps` (direct before the Stripe
event window, through the world's ``*_put`` helpers from there on). Records whose whole life ends
before the window (a ticket solved, an invoice paid) are created once in their final state.
`tests/sandbox/test_generator_paths.py` checks that all this gives the same world as applying
every event through the ``*_put`` helpers.

Records share a few constant sub-objects (ticket ``via``, tag lists, the "unoffered" rating,
minutes and paid invoices' status_transitions): neither the handlers nor the emulators change stored
sub-objects in place, they replace them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .population import CAUSES, PRICE_PER_SEAT, Population
from .record_ops import RecordOps
from .timeline import (ACTIVITY_KINDS, ACTIVITY_SUBJECTS, DAY, FACTOR_SCALE, HOUR, PRIORITIES, RETRY_DAYS,
                       SUBJECT_TAG, SUBJECTS, TICKET_TYPES, Kind, ticket_flags)
from .world import hubspot_date_value

STRIPE_FEEDBACK = {"price": "too_expensive", "competitor": "switched_service", "low_adoption": "unused",
                   "support": "customer_service", "payment_failure": None, "lost_champion": "other"}
VIA_EMAIL = {"channel": "email"}
NO_FIELDS: list[Any] = []
UNOFFERED = {"score": "unoffered"}
NO_MINUTES = {"calendar": None, "business": None}
DESCRIPTIONS = tuple(s + "." for s in SUBJECTS)
# a Zendesk ticket's tags per (subject, escalated): its topic's tag (pricing, data_export), "escalated"
TAGS = tuple(tuple([*([tag] if tag else []), *(["escalated"] if escalated else [])] for escalated in (False, True))
             for tag in SUBJECT_TAG)
CASE_PRIORITY = {"low": "Low", "normal": "Medium", "high": "High", "urgent": "High"}
HS_PRIORITY = {"low": "LOW", "normal": "MEDIUM", "high": "HIGH", "urgent": "URGENT"}
HS_TASK_TYPE = {"Call": "CALL", "Email": "EMAIL", "Task": "TODO"}
RATING_COMMENT = {"good": "Thanks!", "bad": "Took far too long."}
ZD, SF_CASE, HS_TICKET = 0, 1, 2


@dataclass(slots=True)
class Contact:
    first: str
    last: str
    email: str
    title: str
    opted_out: bool
    in_hs: bool = False
    sf_id: str | None = None
    hs_id: str | None = None
    zd_id: int | None = None


@dataclass(slots=True)
class Plan:
    """What a customer's records say when they are created (drawn up front, in customer order)."""

    website: str | None
    employees: int
    billing_email: str | None = None
    billing_name: str | None = None
    sf_names: list[str] = field(default_factory=list)
    sf_stripe_id: list[bool] = field(default_factory=list)
    dup_owner: int = 0
    hs_names: list[str] = field(default_factory=list)
    hs_sf_link: list[bool] = field(default_factory=list)
    zd_name: str = ""
    zd_domain: bool = False
    zd_external: bool = False
    new_contact: Contact | None = None


@dataclass(slots=True)
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
    plan: Plan | None = None
    churned: bool = False


class Recorder(RecordOps):
    """Record operations and event handlers; `generator.Builder` supplies the state they use."""

    pop: Population
    customers: list[Customer]
    children: dict[int, list[int]]
    csm_sf: list[str]
    csm_hs: list[str]
    agents: list[int]
    prices: dict[tuple[int, bool], dict]
    metered_price: dict

    def init_recorder(self) -> None:
        pop = self.pop
        self.seg: list[int] = pop.segment.tolist()
        self.annual: list[bool] = pop.annual.tolist()
        self.discount: list[float] = pop.discount.tolist()
        self.metered: list[bool] = pop.metered.tolist()
        self.seat_price: list[int] = [int(p) for p in PRICE_PER_SEAT]
        self.open_tickets: dict[int, tuple[int, dict, int]] = {}
        self.open_invoices: dict[int, dict] = {}
        self.folded_ratings: list[tuple[int, int, int, dict, str]] = []
        self._minutes: dict[tuple[int, int], dict] = {}
        self._unix: dict[int, int] = {}
        self._transitions: dict[tuple[int, int], dict] = {}
        self._names: dict[str, str] = {}
        # plain functions, called with the recorder: bound methods would make a reference cycle
        self.handlers = [getattr(type(self), "on_" + k.name.lower()) for k in sorted(Kind)]

    # -- helpers ---------------------------------------------------------------------------------
    def mrr(self, i: int, c: Customer) -> int:
        """Monthly recurring revenue in minor units after discount."""
        return int(round(c.seats * self.seat_price[self.seg[i]] * (1 - self.discount[i])))

    def account(self, rec_id: str) -> dict:
        return self.world.salesforce["Account"][rec_id]

    def subscription(self, c: Customer) -> dict | None:
        return self.world.stripe["subscription"].get(c.sub_id) if c.sub_id else None

    def period_fields(self, i: int, start_ms: int) -> dict[str, int]:
        days = 365 if self.annual[i] else 30
        return {"current_period_start": self.stamps.unix(start_ms),
                "current_period_end": self.stamps.unix(start_ms + days * DAY)}

    def sf_contact(self, c: Customer, p: Contact) -> dict:
        return {"AccountId": c.sf_ids[0], "FirstName": p.first, "LastName": p.last,
                "Name": self.full_name(p), "Email": p.email, "Title": p.title, "Phone": None,
                "HasOptedOutOfEmail": p.opted_out, "OwnerId": self.csm_sf[c.owner]}

    def requester(self, c: Customer, t: int) -> int:
        """The primary contact's Zendesk user, created with their first ticket."""
        p = c.contacts[0]
        if p.zd_id is None:
            org = c.zd_org if p.email.endswith("@" + c.domain) else None
            p.zd_id = self.zd_new("users", {
                "name": self.full_name(p), "email": p.email, "role": "end-user", "organization_id": org,
                "active": True, "verified": True, "external_id": None, "tags": [], "user_fields": {}}, t)["id"]
        return p.zd_id

    def shared_unix(self, ms: int) -> int:
        """`Stamps.unix`, returning one int object per distinct value (for times many records share)."""
        found = self._unix.get(ms)
        if found is None:
            found = self._unix[ms] = self.stamps.unix(ms)
        return found

    def transitions(self, finalized: int, paid: int) -> dict:
        """A paid invoice's status_transitions, shared by the invoices finalized and paid together
        (most invoices of a day are): payment attempts replace the dict, nothing edits it."""
        key = (finalized, paid)
        found = self._transitions.get(key)
        if found is None:
            found = self._transitions[key] = {"finalized_at": finalized, "paid_at": paid, "voided_at": None,
                                              "marked_uncollectible_at": None}
        return found

    def full_name(self, p: Contact) -> str:
        """The contact's full name ("First Last"), one string object per distinct name."""
        name = f"{p.first} {p.last}"
        return self._names.setdefault(name, name)

    def minutes(self, calendar: int, business: int) -> dict:
        """A shared {calendar, business} minutes dict (a few thousand distinct values over 1M tickets)."""
        key = (calendar, business)
        found = self._minutes.get(key)
        if found is None:
            found = self._minutes[key] = {"calendar": calendar, "business": business}
        return found

    # -- event handlers: (customer index, a, b, time in ms); see timeline.Kind for a and b --------------
    def on_start(self, i: int, a: int, b: int, t: int) -> None:
        c, w = self.customers[i], self.world
        p = c.plan
        assert p is not None
        seg = self.seg[i]
        if c.in_stripe:
            assert c.stripe_id
            self.st_new("customer", c.stripe_id, {
                "email": p.billing_email, "name": p.billing_name, "description": None, "metadata": {},
                "currency": "usd", "delinquent": False, "balance": 0,
                "address": {"country": c.country, "city": None, "line1": None, "line2": None,
                            "postal_code": None, "state": None}}, t)
            discount = self.discount[i]
            sub_id, tu = w.ids.stripe("sub"), self.stamps.unix(t)
            # the licensed seat item comes first (seat changes edit data[0]); metered items have no quantity
            data = [{"id": w.ids.stripe("si"), "object": "subscription_item",
                     "price": self.prices[(seg, self.annual[i])], "quantity": c.seats, "created": tu,
                     "subscription": sub_id, "metadata": {}}]
            if self.metered[i]:
                data.append({"id": w.ids.stripe("si"), "object": "subscription_item", "price": self.metered_price,
                             "created": tu, "subscription": sub_id, "metadata": {}})
            items = {"object": "list", "has_more": False, "total_count": len(data),
                     "url": f"/v1/subscription_items?subscription={sub_id}", "data": data}
            self.st_new("subscription", sub_id, {
                "customer": c.stripe_id, "status": "active", "start_date": tu, "cancel_at": None,
                "canceled_at": None, "cancel_at_period_end": False, "ended_at": None, "metadata": {},
                "cancellation_details": {"comment": None, "feedback": None, "reason": None},
                "collection_method": "charge_automatically", "currency": "usd",
                "discount": None if not discount else {
                    "object": "discount", "coupon": {"id": f"SAVE{int(discount * 100)}", "object": "coupon",
                                                     "percent_off": float(discount * 100), "duration": "forever",
                                                     "valid": True}},
                **self.period_fields(i, t), "items": items}, t)
            c.sub_id = sub_id
        if c.in_sf:
            c.sf_ids.append(self.sf_new("Account", self.account_fields(c, 0), t)["Id"])
            for person in c.contacts:
                person.sf_id = self.sf_new("Contact", self.sf_contact(c, person), t)["Id"]
        if c.in_hs:
            for dup in range(2 if c.hs_dup else 1):
                c.hs_ids.append(self.hs_new("companies", {
                    "name": p.hs_names[dup], "domain": None if dup else c.domain,
                    "website": None if dup else p.website, "country": c.country, "industry": c.industry.upper(),
                    "numberofemployees": p.employees, "annualrevenue": p.employees * 150_000,
                    "hubspot_owner_id": self.csm_hs[c.owner], "lifecyclestage": "customer",
                    "salesforceaccountid": c.sf_ids[0] if c.sf_ids and p.hs_sf_link[dup] else None}, t)["id"])
            for person in c.contacts:
                if person.in_hs:
                    person.hs_id = self.hs_new("contacts", {
                        "email": person.email, "firstname": person.first, "lastname": person.last,
                        "jobtitle": person.title, "phone": None, "hubspot_owner_id": self.csm_hs[c.owner],
                        "hs_email_optout": "true" if person.opted_out else "false"}, t)["id"]
                    w.hs_associate("contacts", person.hs_id, "companies", c.hs_ids[0])
        if c.in_zd:
            c.zd_org = self.zd_new("organizations", {
                "name": p.zd_name, "domain_names": [c.domain] if p.zd_domain else [],
                "external_id": c.sf_ids[0] if c.sf_ids and p.zd_external else None,
                "details": None, "notes": None, "tags": [("smb", "mid_market", "enterprise")[seg]],
                "group_id": None, "shared_tickets": False, "shared_comments": False,
                "organization_fields": {}}, t)["id"]
        self.link_parent(c, i, t)

    def account_fields(self, c: Customer, dup: int) -> dict[str, Any]:
        p = c.plan
        assert p is not None
        return {"Name": p.sf_names[dup], "Website": None if dup else p.website, "ParentId": None,
                "OwnerId": self.csm_sf[p.dup_owner if dup else c.owner], "Industry": c.industry,
                "BillingCountry": c.country, "Type": "Former Customer" if c.churned else "Customer",
                "NumberOfEmployees": p.employees, "AnnualRevenue": float(p.employees * 150_000),
                "Stripe_Customer_Id__c": c.stripe_id if p.sf_stripe_id[dup] else None}

    def link_parent(self, c: Customer, i: int, t: int) -> None:
        """Salesforce ParentId and HubSpot parent company, once both sides exist."""
        pairs = [(c, self.customers[c.parent])] if c.parent is not None else []
        pairs += [(self.customers[k], c) for k in self.children.get(i, [])]
        for child, parent in pairs:
            if child.sf_ids and parent.sf_ids:
                self.sf_set("Account", self.account(child.sf_ids[0]), {"ParentId": parent.sf_ids[0]}, t)
            if child.hs_ids and parent.hs_ids:
                self.world.hs_associate("companies", parent.hs_ids[0], "companies", child.hs_ids[0], 13, 14)

    def on_dup_account(self, i: int, a: int, b: int, t: int) -> None:
        c = self.customers[i]
        if c.sf_ids:
            c.sf_ids.append(self.sf_new("Account", self.account_fields(c, 1), t)["Id"])

    def on_period(self, i: int, day: int, b: int, t: int) -> None:
        sub = self.subscription(self.customers[i])
        if sub is not None and sub["status"] != "canceled":
            self.st_set("subscription", sub, self.period_fields(i, self.stamps.midnight(t)), t)

    def on_invoice(self, i: int, number: int, pattern: int, t: int) -> None:
        c = self.customers[i]
        annual = self.annual[i]
        amount = self.mrr(i, c) * (12 if annual else 1)
        unix = self.shared_unix  # invoices run at the same times of day: share the int objects
        tu, first_try = unix(t), t + HOUR
        attempts = pattern >> 1
        folded = t + HOUR + RETRY_DAYS[attempts - 1] * DAY < self.fold_ms  # every attempt is history
        paid = folded and pattern == 3  # the usual case: paid at the first attempt, made final at once
        rec = self.st_new("invoice", self.world.ids.stripe("in"), {
            "customer": c.stripe_id, "subscription": c.sub_id, "status": "paid" if paid else "open",
            "amount_due": amount, "amount_paid": amount if paid else 0, "amount_remaining": 0 if paid else amount,
            "attempted": paid, "attempt_count": 1 if paid else 0, "paid": paid, "currency": "usd",
            "period_start": tu, "period_end": unix(t + (365 if annual else 30) * DAY),
            "billing_reason": "subscription_cycle",
            "next_payment_attempt": None if paid else unix(first_try), "total": amount,
            "subtotal": amount,
            "status_transitions": self.transitions(tu, unix(first_try)) if paid else {
                "finalized_at": tu, "paid_at": None, "voided_at": None, "marked_uncollectible_at": None}}, t, tu)
        if not folded:
            self.open_invoices[number] = rec
        elif not paid:
            for n in range(attempts):
                self.attempt(i, rec, n, pattern, t + HOUR + RETRY_DAYS[n] * DAY)

    def on_attempt(self, i: int, number: int, code: int, t: int) -> None:
        n, pattern = code >> 4, code & 15
        inv = self.open_invoices.pop(number, None) if n == (pattern >> 1) - 1 else self.open_invoices.get(number)
        if inv is not None:
            self.attempt(i, inv, n, pattern, t)

    def attempt(self, i: int, inv: dict, n: int, pattern: int, t: int) -> None:
        """Payment attempt `n` of an invoice: paid, or failed (the subscription goes past due)."""
        final = n == (pattern >> 1) - 1
        c = self.customers[i]
        sub = self.subscription(c)
        customer = self.world.stripe["customer"].get(c.stripe_id or "")
        if final and pattern & 1:
            self.st_set("invoice", inv, {
                "status": "paid", "amount_paid": inv["amount_due"], "amount_remaining": 0, "attempted": True,
                "attempt_count": n + 1, "paid": True, "next_payment_attempt": None,
                "status_transitions": {**inv["status_transitions"], "paid_at": self.stamps.unix(t)}},
                t, "invoice.paid")
            if n > 0 and sub is not None and sub["status"] == "past_due":
                self.st_set("subscription", sub, {"status": "active"}, t)
                if customer is not None:
                    self.st_set("customer", customer, {"delinquent": False}, t)
            return
        self.st_set("invoice", inv, {
            "attempted": True, "attempt_count": n + 1, "status": "uncollectible" if final else "open",
            "next_payment_attempt": None if final else self.stamps.unix(t + (3, 2, 2)[min(n, 2)] * DAY)},
            t, "invoice.payment_failed")
        if n == 0 and sub is not None:
            self.st_set("subscription", sub, {"status": "past_due"}, t)
            if customer is not None:
                self.st_set("customer", customer, {"delinquent": True}, t)

    def open_renewals(self, c: Customer) -> tuple[list[dict], list[dict]]:
        opp = self.world.salesforce["Opportunity"].get(c.renewal_opp) if c.renewal_opp else None
        deal = self.world.hubspot["deals"].get(c.renewal_deal) if c.renewal_deal else None
        return ([opp] if opp and not opp["IsClosed"] else [],
                [deal] if deal and deal["properties"].get("dealstage") not in ("closedwon", "closedlost") else [])

    def on_renewal_open(self, i: int, close_day: int, b: int, t: int) -> None:
        c = self.customers[i]
        close = self.stamps.at(close_day * DAY)
        amount = round(self.mrr(i, c) * 12 / 100, 2)
        if c.sf_ids:
            c.renewal_opp = self.sf_new("Opportunity", {
                "AccountId": c.sf_ids[0], "Name": f"{c.base} - Renewal {close.year}", "Type": "Renewal",
                "StageName": "Prospecting", "CloseDate": self.stamps.date(close_day * DAY), "Amount": amount,
                "Probability": 10.0, "IsClosed": False, "IsWon": False, "OwnerId": self.csm_sf[c.owner]}, t)["Id"]
        if c.hs_ids:
            deal = self.hs_new("deals", {
                "dealname": f"{c.base} renewal {close.year}", "amount": amount,
                "closedate": hubspot_date_value(close), "dealstage": "qualifiedtobuy", "pipeline": "default",
                "dealtype": "existingbusiness", "hubspot_owner_id": self.csm_hs[c.owner]}, t)
            self.world.hs_associate("deals", deal["id"], "companies", c.hs_ids[0])
            c.renewal_deal = deal["id"]

    def on_renewal_stage(self, i: int, a: int, b: int, t: int) -> None:
        opps, deals = self.open_renewals(self.customers[i])
        for o in opps:
            self.sf_set("Opportunity", o, {"StageName": "Negotiation/Review", "Probability": 75.0}, t)
        for d in deals:
            self.hs_set("deals", d, {"dealstage": "contractsent"}, t)

    def on_renewal_close(self, i: int, won: int, b: int, t: int) -> None:
        opps, deals = self.open_renewals(self.customers[i])
        for o in opps:
            self.sf_set("Opportunity", o, {"StageName": "Closed Won" if won else "Closed Lost",
                                           "Probability": 100.0 if won else 0.0, "IsClosed": True,
                                           "IsWon": bool(won)}, t)
        for d in deals:
            self.hs_set("deals", d, {"dealstage": "closedwon" if won else "closedlost"}, t)

    def on_seats(self, i: int, factor_units: int, b: int, t: int) -> None:
        c = self.customers[i]
        factor = factor_units / FACTOR_SCALE
        before = c.seats
        c.seats = max(1, before + int(round(before * factor)) or (1 if factor > 0 else -1))
        sub = self.subscription(c)
        if sub is not None:
            seats, *rest = sub["items"]["data"]
            self.st_set("subscription", sub, {"items": {**sub["items"], "data": [{**seats, "quantity": c.seats},
                                                                                 *rest]}}, t)
        if c.sf_ids and c.seats > before:
            amount = (c.seats - before) * self.seat_price[self.seg[i]] * 12 / 100
            self.sf_new("Opportunity", {
                "AccountId": c.sf_ids[0], "Name": f"{c.base} - Expansion", "Type": "Upsell",
                "StageName": "Closed Won", "CloseDate": self.stamps.date(t), "Amount": round(amount, 2),
                "Probability": 100.0, "IsClosed": True, "IsWon": True, "OwnerId": self.csm_sf[c.owner]}, t)

    def on_champion_left(self, i: int, a: int, b: int, t: int) -> None:
        c = self.customers[i]
        p = c.contacts[0]
        if p.sf_id:
            self.sf_remove("Contact", self.world.salesforce["Contact"][p.sf_id], t)
        if p.hs_id:
            self.hs_remove("contacts", self.world.hubspot["contacts"][p.hs_id], t)
        if p.zd_id:
            self.zd_set("users", self.world.zendesk["users"][p.zd_id], {"active": False}, t)
        c.contacts = c.contacts[1:] or c.contacts

    def on_new_contact(self, i: int, a: int, b: int, t: int) -> None:
        c = self.customers[i]
        p = c.plan.new_contact if c.plan else None
        if p is None:
            return
        if c.sf_ids:
            p.sf_id = self.sf_new("Contact", self.sf_contact(c, p), t)["Id"]
        if c.hs_ids:
            p.hs_id = self.hs_new("contacts", {"email": p.email, "firstname": p.first, "lastname": p.last,
                                               "jobtitle": p.title, "hs_email_optout": "false"}, t)["id"]
            self.world.hs_associate("contacts", p.hs_id, "companies", c.hs_ids[0])
        c.contacts.append(p)

    def on_ticket(self, i: int, number: int, packed: int, t: int) -> None:
        c = self.customers[i]
        to_solve, flags = packed >> 24, packed & 0xFFFFFF
        priority_i, type_i, subject_i, escalated, rated, bad, agent_i = ticket_flags(flags)
        priority, subject = PRIORITIES[priority_i], SUBJECTS[subject_i]
        solved = t + to_solve
        folded = solved < self.fold_ms  # solved before the window: created in its final state
        if c.in_zd and c.zd_org is not None:
            requester = self.requester(c, t)
            hours = to_solve / HOUR
            reply = self.minutes(int(hours * 6), int(hours * 4))
            if folded:  # the hottest path: the final record in one literal (as zd_new + zd_set make it)
                minutes = to_solve // 60_000
                done = self.stamps.zd(solved)
                rec = {"id": self.world.ids.zendesk("tickets"), "created_at": self.stamps.zd(t),
                       "subject": subject, "description": DESCRIPTIONS[subject_i], "type": TICKET_TYPES[type_i],
                       "priority": priority, "status": "solved", "requester_id": requester,
                       "submitter_id": requester, "assignee_id": self.agents[agent_i % len(self.agents)],
                       "organization_id": c.zd_org, "group_id": None,
                       "tags": TAGS[subject_i][escalated], "via": VIA_EMAIL,
                       "custom_fields": NO_FIELDS, "external_id": None, "satisfaction_rating": UNOFFERED,
                       "_metric_set": {"solved_at": done, "full_resolution_time_in_minutes":
                                       self.minutes(minutes, int(minutes * 0.4)), "reply_time_in_minutes": reply},
                       "updated_at": done, "generated_timestamp": self.stamps.unix(solved)}
                self.world.zendesk["tickets"][rec["id"]] = rec
                if rated:  # ratings get their ids in the order they were given: see flush_folded
                    self.folded_ratings.append((solved, i, number, rec, "bad" if bad else "good"))
                return
            rec = self.zd_new("tickets", {
                "subject": subject, "description": DESCRIPTIONS[subject_i], "type": TICKET_TYPES[type_i],
                "priority": priority, "status": "new", "requester_id": requester, "submitter_id": requester,
                "assignee_id": self.agents[agent_i % len(self.agents)], "organization_id": c.zd_org,
                "group_id": None, "tags": TAGS[subject_i][escalated], "via": VIA_EMAIL,
                "custom_fields": NO_FIELDS, "external_id": None, "satisfaction_rating": UNOFFERED,
                "_metric_set": {"solved_at": None, "full_resolution_time_in_minutes": NO_MINUTES,
                                "reply_time_in_minutes": reply}}, t)
            self.open_tickets[number] = (ZD, rec, flags)
        elif c.sf_ids:
            rec = self.sf_new("Case", {
                "AccountId": c.sf_ids[0], "ContactId": c.contacts[0].sf_id, "Subject": subject,
                "Description": DESCRIPTIONS[subject_i],
                "Status": "Closed" if folded else "Escalated" if escalated else "New",
                "Priority": CASE_PRIORITY[priority], "Origin": "Email", "IsClosed": folded,
                "IsEscalated": escalated, "ClosedDate": self.stamps.sf(solved) if folded else None,
                "OwnerId": self.csm_sf[c.owner]}, t, solved if folded else None)
            if not folded:
                self.open_tickets[number] = (SF_CASE, rec, flags)
        elif c.hs_ids:
            rec = self.hs_new("tickets", {"subject": subject, "content": DESCRIPTIONS[subject_i],
                                          "hs_pipeline": "0", "hs_pipeline_stage": "4" if folded else "1",
                                          "hs_ticket_priority": HS_PRIORITY[priority],
                                          "closed_date": self.stamps.hs(solved) if folded else None},
                              t, solved if folded else None)
            self.world.hs_associate("tickets", rec["id"], "companies", c.hs_ids[0])
            if not folded:
                self.open_tickets[number] = (HS_TICKET, rec, flags)

    def flush_folded(self) -> None:
        """Create the ratings of tickets solved before fold_ms, in the order they were given."""
        self.folded_ratings.sort(key=lambda r: r[:3])
        for solved, _, _, rec, score in self.folded_ratings:
            r = self.zd_new("satisfaction_ratings", {
                "ticket_id": rec["id"], "requester_id": rec["requester_id"], "assignee_id": rec["assignee_id"],
                "group_id": None, "score": score, "comment": RATING_COMMENT[score]}, solved)
            rec["satisfaction_rating"] = {"score": score, "id": r["id"], "comment": r["comment"]}
        self.folded_ratings = []

    def on_solve(self, i: int, number: int, took_ms: int, t: int) -> None:
        found = self.open_tickets.pop(number, None)
        if found is None:
            return
        system, rec, flags = found
        if system == SF_CASE:
            self.sf_set("Case", rec, {"Status": "Closed", "IsClosed": True, "ClosedDate": self.stamps.sf(t)}, t)
            return
        if system == HS_TICKET:
            self.hs_set("tickets", rec, {"hs_pipeline_stage": "4", "closed_date": self.stamps.hs(t)}, t)
            return
        _, _, _, _, rated, bad, _ = ticket_flags(flags)
        minutes = took_ms // 60_000
        metric = {**rec["_metric_set"], "solved_at": self.stamps.zd(t),
                  "full_resolution_time_in_minutes": self.minutes(minutes, int(minutes * 0.4))}
        rating = UNOFFERED
        if rated:
            score = "bad" if bad else "good"
            r = self.zd_new("satisfaction_ratings", {
                "ticket_id": rec["id"], "requester_id": rec["requester_id"], "assignee_id": rec["assignee_id"],
                "group_id": None, "score": score, "comment": RATING_COMMENT[score]}, t)
            rating = {"score": score, "id": r["id"], "comment": r["comment"]}
        self.zd_set("tickets", rec, {"status": "solved", "_metric_set": metric, "satisfaction_rating": rating}, t)

    def on_activity(self, i: int, kind_i: int, subject_i: int, t: int) -> None:
        c = self.customers[i]
        kind, subject = ACTIVITY_KINDS[kind_i], ACTIVITY_SUBJECTS[subject_i]
        if c.sf_ids:
            self.sf_new("Task", {"WhatId": c.sf_ids[0], "WhoId": c.contacts[0].sf_id,
                                 "OwnerId": self.csm_sf[c.owner], "Subject": subject, "Description": None,
                                 "Status": "Completed", "Priority": "Normal", "ActivityDate": self.stamps.date(t),
                                 "IsClosed": True, "TaskSubtype": kind}, t)
        elif c.hs_ids:
            task = self.hs_new("tasks", {"hs_task_subject": subject, "hs_task_body": None,
                                         "hs_task_status": "COMPLETED", "hs_task_priority": "NONE",
                                         "hs_task_type": HS_TASK_TYPE[kind], "hs_timestamp": self.stamps.hs(t),
                                         "hubspot_owner_id": self.csm_hs[c.owner]}, t)
            self.world.hs_associate("tasks", task["id"], "companies", c.hs_ids[0])

    def on_churn(self, i: int, reason_i: int, b: int, t: int) -> None:
        c = self.customers[i]
        c.churned = True
        reason = CAUSES[reason_i]
        sub = self.subscription(c)
        if sub is not None:
            tu = self.stamps.unix(t)
            self.st_set("subscription", sub, {
                "status": "canceled", "canceled_at": tu, "ended_at": tu,
                "cancellation_details": {"comment": None, "feedback": STRIPE_FEEDBACK[reason],
                                         "reason": "payment_failed" if reason == "payment_failure"
                                         else "cancellation_requested"}},
                t, "customer.subscription.deleted")
        for acct in c.sf_ids:
            self.sf_set("Account", self.account(acct), {"Type": "Former Customer"}, t)
        for comp in c.hs_ids:
            self.hs_set("companies", self.world.hubspot["companies"][comp], {"lifecyclestage": "other"}, t)

