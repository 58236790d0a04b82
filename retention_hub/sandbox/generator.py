"""Build the sandbox world: customers in Salesforce, HubSpot, Zendesk and Stripe with realistic mess,
18 months of history up to "now", a precomputed future the world can advance into, the usage
warehouse, and the ground truth in `truth/`.

The latent process lives in `population.py`; `timeline.py` draws every dated event from it (start,
invoice and payment attempts, ticket and its solution, renewal, seat change, champion leaving, CSM
activity, churn) with numpy, and `handlers.py` turns each event into records in time order, so every
record carries the timestamps the real system would. History before Stripe's 30-day event window is
written straight into the records; from there on every write goes through the world's ``*_put``
helpers (Stripe events included), as does everything `World.advance` plays later. Every random
draw happens before any record is written, so the build is deterministic for a seed and anchor.
"""
from __future__ import annotations

import ctypes
import gc
import random
import time
import weakref
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

from . import names, timeline, truth, warehouse
from .handlers import Contact, Customer, Plan, Recorder
from .population import CAUSES, HISTORY_DAYS, PLANS, PRICE_PER_SEAT, Population, simulate
from .records import Stamps, unix, utc
from .timeline import DAY
from .world import World

EVENTS_KEPT_DAYS = 30  # Stripe keeps events 30 days: older history is written without them
METER_DAYS = 120  # meter event summaries kept for the last four months
CHUNK = 1 << 16  # events converted from numpy to Python per step
_LOST_CHAMPION = CAUSES.index("lost_champion")


def generate_world(accounts: int = 2000, seed: int = 7, directory: str | Path | None = None,
                   anchor: datetime | None = None, *, fold: bool = True) -> World:
    """Generate a world of `accounts` customers; write the usage warehouse and truth to `directory`.

    `fold=False` applies the whole history through the world's ``*_put`` helpers instead of writing
    the part before Stripe's event window directly: the same world, several times slower (tests
    use it to check the fast path).
    """
    if accounts < 10:
        raise ValueError("accounts must be at least 10")
    if anchor is None:
        anchor = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    anchor = utc(anchor)
    anchor = anchor.replace(microsecond=anchor.microsecond // 1000 * 1000)  # times are whole milliseconds
    pop = simulate(accounts, seed)
    world = World(seed=seed, anchor=anchor)
    builder = Builder(world, pop, seed, Path(directory) if directory else None, fold)
    # The build makes millions of containers and no garbage cycles: the collector would only rescan
    # them, during the build and then again in multi-second pauses while the emulators serve. So it
    # is off during the build, and afterwards the world's objects are frozen out of its reach (they
    # are still freed by reference counting: the world has no reference cycles, see Builder._build).
    collecting = gc.isenabled()
    gc.collect()  # so that no earlier garbage gets frozen with the world
    gc.disable()
    try:
        builder.build()
        gc.freeze()
    finally:
        if collecting:
            gc.enable()
    return world


def _return_free_memory() -> None:
    """Hand the C heap's free pages back to the OS.

    glibc keeps the pages of freed numpy temporaries (the timeline draw's hundreds of MB) for reuse,
    but Python objects come from their own arenas, so without this they would only add to the peak.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


@contextmanager
def _clock_held_before_anchor(world: World) -> Iterator[None]:
    """Keep the world's clock just before its anchor while building.

    `World.stripe_put` keeps an event only within 30 days of `now()`; with the clock running on wall
    time, events at the very start of the window would be kept or dropped depending on how long the
    build took. The clock is restored afterwards.
    """
    started = world._started
    world._started = time.monotonic() + 86_400.0
    try:
        yield
    finally:
        world._started = started


class Builder(Recorder):
    """Turns the latent population into records, event by event."""

    def __init__(self, world: World, pop: Population, seed: int, directory: Path | None,
                 fold: bool = True) -> None:
        self.world, self.pop, self.dir = world, pop, directory
        self.rng = random.Random(seed)
        self.stamps = Stamps(world.anchor - timedelta(days=HISTORY_DAYS))
        self.fold_ms = (HISTORY_DAYS - EVENTS_KEPT_DAYS) * DAY if fold else -(1 << 62)
        self.children: dict[int, list[int]] = {}
        self.usage_day = 0
        self.customers: list[Customer] = []
        self.csm_sf: list[str] = []
        self.csm_hs: list[str] = []
        self.agents: list[int] = []
        self.prices: dict[tuple[int, bool], dict] = {}
        self.metered_price: dict = {}
        self.meter_id = ""
        self.pos = 0
        self.folded = False
        self._floats: dict[int, float] = {}

    # -- time --------------------------------------------------------------------------------
    def at(self, day: float) -> datetime:
        return self.world.anchor + timedelta(days=float(day) - HISTORY_DAYS)

    # -- the whole build -----------------------------------------------------------------------
    def build(self) -> None:
        with _clock_held_before_anchor(self.world):
            self._build()

    def _build(self) -> None:
        self.make_staff_and_catalog()
        self.make_customers()
        self.plan_customers()
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
        flags = {name: np.array([getattr(c, name) for c in self.customers], dtype=bool)
                 for name in ("in_sf", "in_hs", "in_stripe", "sf_dup")}
        self.timeline = timeline.draw(self.pop, self.world.seed, flags["in_sf"], flags["in_hs"],
                                      flags["in_stripe"], flags["sf_dup"], len(self.agents), self.fold_ms)
        self.init_recorder()
        # from here on only the meter's months and the future need health (the warehouse writer has
        # its own copy of the whole array)
        self.pop.forget_health_before(HISTORY_DAYS - METER_DAYS)
        _return_free_memory()
        self.write_meter(0, HISTORY_DAYS)
        self.usage_day = HISTORY_DAYS  # the background process writes the history
        self.play(self.world.anchor)
        self.timeline.drop_before(self.pos)
        self.pos = 0
        for c in self.customers:  # only a new contact still to come needs the plan
            if c.plan is not None and (c.plan.new_contact is None
                                       or any(p is c.plan.new_contact for p in c.contacts)):
                c.plan = None
        self.world.play_until = lambda world, t: self.play(t)
        self.world = weakref.proxy(self.world)  # the world keeps its builder alive, not the reverse
        if writer:
            writer.join()
            if writer.exitcode != 0:
                raise RuntimeError(f"writing the usage warehouse failed (exit code {writer.exitcode})")
        if self.dir:
            truth.write(self.dir / "truth", self.pop, self.customers, self.at, self.mrr)

    def play(self, until: datetime) -> None:
        """Apply every event up to `until` and write usage for every complete day before it."""
        limit = (utc(until) - self.stamps.origin) // timedelta(milliseconds=1)
        if limit > self.pop.days * DAY:
            raise ValueError(f"the sandbox world is simulated only {self.pop.days - HISTORY_DAYS} days "
                             "past its start; generate a new one to go further")
        end = int(np.searchsorted(self.timeline.time, limit, side="right"))
        if not self.folded and limit >= self.fold_ms:
            # the history before the window, then the ratings of tickets solved in it, then the window
            self.apply(int(np.searchsorted(self.timeline.time, self.fold_ms)))
            self.flush_folded()
            self.folded = True
        self.apply(end)
        self.write_usage(limit // DAY)
        # Stripe keeps events 30 days: drop older ones so memory stays bounded
        horizon = unix(until - timedelta(days=EVENTS_KEPT_DAYS))
        events = self.world.stripe_events
        if events and events[0]["created"] < horizon:
            self.world.stripe_events = [e for e in events if e["created"] >= horizon]

    def apply(self, end: int) -> None:
        """Apply the timeline's events from the current position up to (not including) `end`."""
        tl, handlers = self.timeline, self.handlers
        if end > self.pos:
            self.world.version += 1  # the emulators' caches key on it
        for first in range(self.pos, end, CHUNK):
            last = min(end, first + CHUNK)
            for kind, i, a, b, t in zip(tl.kind[first:last].tolist(), tl.cust[first:last].tolist(),
                                        tl.a[first:last].tolist(), tl.b[first:last].tolist(),
                                        tl.time[first:last].tolist()):
                handlers[kind](self, i, a, b, t)
            self.pos = last

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
        meter = w.stripe_put("billing.meter", {
            "display_name": "API calls", "event_name": "api_calls", "status": "active",
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "default_aggregation": {"formula": "sum"}, "value_settings": {"event_payload_key": "value"},
            "event_time_window": None, "status_transitions": {"deactivated_at": None},
            "updated": unix(t0)}, at=t0)
        self.meter_id = meter["id"]
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
        # the API add-on: a metered price on the meter, at no charge (calls are included and tracked
        # for fair use), so revenue stays the per-seat price while usage is tracked through Stripe
        addon = w.stripe_put("product", {"name": "API add-on", "active": True, "type": "service",
                                         "description": "API calls, metered", "metadata": {}}, at=t0)
        self.metered_price = w.stripe_put("price", {
            "product": addon["id"], "unit_amount": 0, "currency": "usd", "active": True, "type": "recurring",
            "nickname": "API calls (included)",
            "recurring": {"interval": "month", "interval_count": 1, "usage_type": "metered",
                          "meter": self.meter_id, "aggregate_usage": "sum", "trial_period_days": None},
            "metadata": {}}, at=t0)

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
        segment = pop.segment.tolist()
        for i in range(pop.n):
            c = self.customers[i]
            if big and rng.random() < 0.04 and segment[i] < 2:
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

    def plan_customers(self) -> None:
        """Draw what each customer's records will say (names per system, website, flags), in order."""
        rng, cause = self.rng, self.pop.cause.tolist()
        for i, c in enumerate(self.customers):
            website = None if rng.random() < 0.15 else rng.choice(
                (f"https://www.{c.domain}", f"http://{c.domain}", c.domain, f"www.{c.domain}/"))
            p = c.plan = Plan(website, int(c.seats * rng.uniform(3, 12)))
            if c.in_stripe:
                billing = rng.random()
                p.billing_email = (f"billing@{c.domain}" if billing < 0.5 else c.contacts[0].email if billing < 0.8
                                   else names.email_for(*names.person(rng), c.domain, rng, free_mail_rate=1.0))
                p.billing_name = None if rng.random() < 0.12 else names.variant(c.base, c.country, rng, "billing")
            if c.in_sf:
                for dup in range(2 if c.sf_dup else 1):
                    p.sf_names.append(names.variant(c.base, c.country, rng, "crm"))
                    if dup:
                        p.dup_owner = rng.randrange(len(self.csm_sf))
                    p.sf_stripe_id.append(bool(c.stripe_id) and rng.random() < 0.25)
            if c.in_hs:
                for _ in range(2 if c.hs_dup else 1):
                    p.hs_names.append(names.variant(c.base, c.country, rng, "marketing"))
                    p.hs_sf_link.append(c.in_sf and rng.random() < 0.5)
                for person in c.contacts:
                    person.in_hs = rng.random() < 0.8
            if c.in_zd:
                p.zd_name = names.variant(c.base, c.country, rng, "support")
                p.zd_domain = rng.random() < 0.75
                p.zd_external = c.in_sf and rng.random() < 0.3
            if cause[i] == _LOST_CHAMPION:
                first, last = names.person(rng)
                p.new_contact = Contact(first, last, names.email_for(first, last, c.domain, rng, 0.0),
                                        rng.choice(names.TITLES), False)

    # -- usage ---------------------------------------------------------------------------------
    def write_usage(self, until_day: int) -> None:
        """Usage for every complete day before `until_day`: warehouse rows and Stripe meter sums."""
        first = self.usage_day
        if until_day <= first:
            return  # the common case: the world catches up on every API request
        if self.dir:
            warehouse.write_days(self.dir / "warehouse.db", self.pop, self.world.seed, self.world.anchor,
                                 [c.workspace for c in self.customers], first, until_day)
        self.write_meter(first, until_day)
        self.usage_day = until_day
        self.world.version += 1

    def write_meter(self, first: int, until_day: int) -> None:
        """Daily API-call sums for metered customers (Stripe keeps the recent months): 40 per active
        user, less while a competitor cause moves the customer's integrations away."""
        usage = self.world.stripe_meter_usage[self.meter_id]
        # Stripe takes no meter events for a customer deleted since (through its API, say)
        gone = self.world.stripe["customer"]
        metered = self.pop.metered & np.array([bool(c.stripe_id) and not gone.get(c.stripe_id, {}).get("_deleted")
                                               for c in self.customers])
        floats = self._floats  # a few hundred distinct sums: share the float objects
        for d in range(max(first, HISTORY_DAYS - METER_DAYS), min(until_day, self.pop.days)):
            active, users = warehouse.day_users(self.pop, self.world.seed, self.world.anchor, d)
            keep = metered[active]
            start = unix(self.at(d))
            who = active[keep]
            sums = np.rint(users[keep] * 40 * timeline.api_share(self.pop, who, d)).astype(np.int64)
            for k, calls in zip(who.tolist(), sums.tolist()):
                value = floats.get(calls)
                if value is None:
                    value = floats[calls] = float(calls)
                usage[self.customers[k].stripe_id][start] = value
