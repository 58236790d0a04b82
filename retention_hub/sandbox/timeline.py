"""When things happen in the sandbox world: every dated event of every customer, drawn with numpy.

All draws for all customers happen here at once, per kind of event (one vectorised draw for every
customer's ticket counts, days, priorities...), from the latent process in `population.py`. The result
is one table of events sorted by time: ``time`` (integer milliseconds since the first day of the
history), ``kind``, ``cust`` (customer index) and two integer arguments ``a`` and ``b`` whose meaning
depends on the kind (see `Kind`). `generator.py` turns the events into records in that order.

Times are integer milliseconds so that every path that formats them (the fast history path and
``datetime`` through the world's ``*_put`` helpers) gives the same strings.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from .population import CAUSES, HISTORY_DAYS, Population, sigmoid

DAY = 86_400_000  # milliseconds
HOUR = 3_600_000
OLD_EVENT_DAYS = 31  # invoices and activity from before the history window are not generated
RETRY_DAYS = (0, 3, 5, 7)  # Stripe's smart retries: attempt n is RETRY_DAYS[n] days after the first
# everyday tickets: none of them speaks of price or of leaving (those are the cause topics below)
TICKET_SUBJECTS = ("Report download fails", "SSO login fails", "Billing question", "API rate limit errors",
                   "Dashboard slow", "How do I add seats?", "Integration sync stopped",
                   "Feature request: bulk edit")
# tickets a cause makes the customer file, from its onset until it recovers, with their Zendesk tag
PRICING_SUBJECTS = ("Question about our renewal price", "Can we get a discount?",
                    "Reduce our seat count before renewal")
EXPORT_SUBJECTS = ("How do we export all our data?", "Bulk export via the API", "Data migration: field mapping")
SUBJECTS = TICKET_SUBJECTS + PRICING_SUBJECTS + EXPORT_SUBJECTS  # a TICKET's subject indexes this
SUBJECT_TAG = (None,) * len(TICKET_SUBJECTS) + ("pricing",) * len(PRICING_SUBJECTS) \
    + ("data_export",) * len(EXPORT_SUBJECTS)
TOPIC_DAYS = (30, 60)  # a customer with the cause files one topic ticket per 30-60 days (its own pace)
PRICE_SEAT_CUT = 0.4  # share of price causes that cut seats within 60 days of the onset
API_DECLINE = 0.5  # API calls left to a competitor cause's customer once it has moved its integrations
API_DECLINE_DAYS = 30  # ... over this many days from the onset
TICKET_TYPES = ("question", "incident", "problem", "task")
PRIORITIES = ("low", "normal", "high", "urgent")
ACTIVITY_KINDS = ("Call", "Email", "Task")
ACTIVITY_SUBJECTS = ("Quarterly business review", "Check-in call", "Onboarding session", "Adoption review",
                     "Renewal prep", "Executive sponsor sync")
FACTOR_SCALE = 1_000_000_000  # seat-change factors travel as integers (billionths)
AGENT_MASK = 0x1FFF  # a ticket's agent index: 13 bits of its flags
_PRICE, _COMPETITOR, _SUPPORT, _PAYMENT, _CHAMPION = (
    CAUSES.index(c) for c in ("price", "competitor", "support", "payment_failure", "lost_champion"))


class Kind(IntEnum):
    """Event kinds; at equal times events apply in this order. Arguments (a, b) per kind:

    START, DUP_ACCOUNT, RENEWAL_STAGE, CHAMPION_LEFT, NEW_CONTACT: unused.
    PERIOD: a = first day of the new billing period.
    INVOICE: a = invoice number, b = attempt pattern (attempts * 2 + last one succeeded).
    ATTEMPT: a = invoice number, b = attempt index * 16 + attempt pattern.
    RENEWAL_OPEN: a = renewal (close) day. RENEWAL_CLOSE: a = 1 if won.
    SEATS: a = seat-change factor in billionths.
    TICKET: a = ticket number, b = (milliseconds to solve << 24) | flags (see `ticket_flags`); the
        subject indexes SUBJECTS (everyday, or a price or competitor cause's topic with its tag).
    SOLVE: a = ticket number, b = milliseconds since the ticket was opened.
    ACTIVITY: a = index into ACTIVITY_KINDS, b = index into ACTIVITY_SUBJECTS.
    CHURN: a = index into CAUSES (the reason).
    """

    START = 0
    DUP_ACCOUNT = 1
    PERIOD = 2
    INVOICE = 3
    ATTEMPT = 4
    RENEWAL_OPEN = 5
    RENEWAL_STAGE = 6
    RENEWAL_CLOSE = 7
    SEATS = 8
    CHAMPION_LEFT = 9
    NEW_CONTACT = 10
    TICKET = 11
    SOLVE = 12
    ACTIVITY = 13
    CHURN = 14


@dataclass
class Timeline:
    """Every event of the simulation, sorted by (time, kind, customer)."""

    time: np.ndarray  # int64 milliseconds since day 0 00:00
    kind: np.ndarray  # int8 Kind
    cust: np.ndarray  # int32
    a: np.ndarray  # int64
    b: np.ndarray  # int64
    start_ms: np.ndarray  # per customer: when the customer's records are created

    def __len__(self) -> int:
        return int(self.time.size)

    def drop_before(self, position: int) -> None:
        """Forget events already applied (keeps memory to the future only)."""
        for name in ("time", "kind", "cust", "a", "b"):
            setattr(self, name, getattr(self, name)[position:].copy())


def ticket_flags(flags: int) -> tuple[int, int, int, bool, bool, bool, int]:
    """(priority, type, subject, escalated, rated, bad score, agent index) from a TICKET's flags."""
    return (flags & 3, (flags >> 2) & 3, (flags >> 4) & 15, bool(flags >> 8 & 1), bool(flags >> 9 & 1),
            bool(flags >> 10 & 1), flags >> 11 & AGENT_MASK)


def _pack_flags(priority: np.ndarray, kind: np.ndarray, subject: np.ndarray, escalated: np.ndarray,
                rated: np.ndarray, bad: np.ndarray, agent: np.ndarray) -> np.ndarray:
    """The inverse of `ticket_flags`, for arrays (24 bits: the time to solve goes above them)."""
    return (priority | kind << 2 | subject << 4 | escalated.astype(np.int64) << 8 | rated.astype(np.int64) << 9
            | bad.astype(np.int64) << 10 | (agent & AGENT_MASK) << 11)


def api_share(pop: Population, customers: np.ndarray, day: int) -> np.ndarray:
    """Share of their usual API calls `customers` still make on `day`: a competitor cause's customer
    moves its integrations away over API_DECLINE_DAYS from the onset (until it recovers)."""
    onset, recovers = pop.onset[customers], pop.recovers_at[customers]
    moving = (pop.cause[customers] == _COMPETITOR) & (onset <= day) & (day < recovers)
    ramp = np.clip((day - onset) / API_DECLINE_DAYS, 0.0, 1.0)
    return np.where(moving, 1.0 - (1.0 - API_DECLINE) * ramp, 1.0)


def _ms(days: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(days, dtype=np.float64) * DAY).astype(np.int64)


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups of the given sizes: each member's group index and its index within the group."""
    counts = np.maximum(counts, 0).astype(np.int64)
    group = np.repeat(np.arange(counts.size), counts)
    starts = np.cumsum(counts) - counts
    return group, np.arange(group.size) - starts[group]


class _Events:
    """Accumulates event columns per kind, then sorts them into a Timeline."""

    def __init__(self, end_ms: int) -> None:
        self.end_ms = end_ms
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, kind: Kind, time: np.ndarray, cust: np.ndarray, a: np.ndarray | int = 0,
            b: np.ndarray | int = 0) -> None:
        time = np.asarray(time, dtype=np.int64)
        keep = time < self.end_ms  # nothing is simulated past the end of the future
        n = int(keep.sum())
        self.parts.append((time[keep], np.full(n, int(kind), dtype=np.int8),
                           np.asarray(cust, dtype=np.int32)[keep],
                           np.broadcast_to(np.asarray(a, dtype=np.int64), time.shape)[keep],
                           np.broadcast_to(np.asarray(b, dtype=np.int64), time.shape)[keep]))

    def sorted(self, n_customers: int, start_ms: np.ndarray) -> Timeline:
        time, kind, cust, a, b = (np.concatenate([p[j] for p in self.parts]) for j in range(5))
        self.parts = []
        cust_bits = max(1, int(n_customers).bit_length())
        offset = -int(time.min()) if time.size else 0
        if time.size and (int(time.max()) + offset).bit_length() + 5 + cust_bits <= 63:
            key = ((time + offset) << (5 + cust_bits)) | (kind.astype(np.int64) << cust_bits) | cust
            order = np.argsort(key, kind="stable")
            del key
        else:
            order = np.lexsort((cust, kind, time))
        return Timeline(time[order], kind[order], cust[order], a[order], b[order], start_ms)


def draw(pop: Population, seed: int, in_sf: np.ndarray, in_hs: np.ndarray, in_stripe: np.ndarray,
         sf_dup: np.ndarray, n_agents: int, fold_ms: int) -> Timeline:
    """Draw every customer's events over the whole simulation (history and future).

    Follow-up events that end before `fold_ms` are left out: the generator writes those records in
    their final state when they are created (a ticket solved, an invoice's payment attempts) and
    only the last billing-period roll before `fold_ms` can be seen, so the earlier ones are dropped.
    The random draws do not depend on `fold_ms`.
    """
    if pop.health_from:
        raise ValueError("the timeline needs the whole health history")
    rng = np.random.default_rng([seed, 4])
    n, days = pop.n, pop.days
    ev = _Events(days * DAY)
    start = pop.start_day.astype(np.int64)
    churn_day = pop.churn_day.astype(np.int64)
    churn = np.minimum(churn_day, days)
    lo = np.maximum(start, -OLD_EVENT_DAYS)
    annual = pop.annual.astype(bool)
    period = np.where(annual, 365, 30).astype(np.int64)
    crm = in_sf | in_hs
    cust_all = np.arange(n)

    start_ms = _ms(start + rng.uniform(0.3, 0.7, n))
    ev.add(Kind.START, start_ms, cust_all)
    # a second Salesforce account for the same customer, typed in by someone later (before now)
    dup = np.nonzero(sf_dup)[0]
    span = np.minimum(300.0, HISTORY_DAYS - start_ms[dup] / DAY - 1)
    ev.add(Kind.DUP_ACCOUNT, start_ms[dup] + _ms(rng.uniform(0.1, 1.0, dup.size) * span), dup)

    # billing periods from the window's start (invoices, period rolls)
    kmin = np.maximum(0, -((start - lo) // period))  # ceil((lo - start) / period)
    kmax = -((start - churn) // period)  # first k with start + k * period >= churn
    ci, j = _expand(kmax - kmin)
    k = kmin[ci] + j
    d = start[ci] + k * period[ci]
    billed = in_stripe[ci]
    ic, ik, idd = ci[billed], k[billed], d[billed]
    inv_ms = np.maximum(_ms(idd + 0.02), start_ms[ic] + 60_000)  # the first invoice follows the start
    trouble = (pop.cause[ic] == _PAYMENT) & (pop.onset[ic] <= idd) & (idd < pop.recovers_at[ic])
    h = pop.health[ic, np.clip(idd, 0, days - 1)]
    fail = rng.random(ic.size) < 0.03 + 0.45 * trouble + 0.05 * (h < -1)
    retry_ok = rng.random((ic.size, 3)) < np.where(trouble, 0.3, 0.6)[:, None]
    first_ok = np.where(retry_ok.any(axis=1), retry_ok.argmax(axis=1), 3)
    attempts = np.where(fail, np.where(first_ok < 3, first_ok + 2, 4), 1)
    pattern = attempts * 2 + np.where(fail, first_ok < 3, True)
    inv_no = np.arange(ic.size)
    ev.add(Kind.INVOICE, inv_ms, ic, inv_no, pattern)
    last_attempt = inv_ms + HOUR + np.array(RETRY_DAYS)[attempts - 1] * DAY
    for attempt in range(4):
        has = (attempts > attempt) & (last_attempt >= fold_ms)
        ev.add(Kind.ATTEMPT, inv_ms[has] + HOUR + RETRY_DAYS[attempt] * DAY, ic[has], inv_no[has],
               attempt * 16 + pattern[has])
    rolls = np.nonzero(billed & (k > 0))[0]
    roll_ms = _ms(d[rolls] + 0.01)
    # rolls are grouped by customer in time order: before fold_ms only each customer's last one shows
    nxt_same = np.append(ci[rolls][1:] == ci[rolls][:-1], False)
    nxt_ms = np.append(roll_ms[1:], 0)
    seen = (roll_ms >= fold_ms) | ~nxt_same | (nxt_ms >= fold_ms)
    ev.add(Kind.PERIOD, roll_ms[seen], ci[rolls][seen], d[rolls][seen])

    # annual renewals in the CRM, for the periods that start from the window's start on: opened 120
    # days ahead, in negotiation 30 days ahead, then closed
    renewing = annual & crm
    r_sel = renewing[ci]
    ri, rd = ci[r_sel], d[r_sel]
    ev.add(Kind.RENEWAL_OPEN, _ms(rd + 245 + rng.random(ri.size)), ri, rd + 365)
    stage_ms = _ms(rd + 335 + rng.random(ri.size))
    ev.add(Kind.RENEWAL_STAGE, stage_ms, ri)
    won = churn_day[ri] > stage_ms / DAY + 31
    ev.add(Kind.RENEWAL_CLOSE, stage_ms[won] + 30 * DAY, ri[won], 1)
    lost = np.nonzero(renewing & (churn_day < days))[0]
    ev.add(Kind.RENEWAL_CLOSE, _ms(churn_day[lost] + 0.02), lost, 0)

    # 30-day blocks from the history's start: tickets, CSM activity and seat changes follow health
    bfirst = np.maximum(lo, 0) // 30
    blast = np.maximum(0, churn - 1) // 30
    bc, j = _expand(np.where(churn > np.maximum(lo, 0), blast - bfirst + 1, 0))
    blk = bfirst[bc] + j
    b0 = np.maximum(np.maximum(blk * 30, lo[bc]), 0)
    b1 = np.minimum(blk * 30 + 30, churn[bc])
    keep = b1 > b0
    bc, blk, b0, b1 = bc[keep], blk[keep], b0[keep], b1[keep]
    ncols = -(-days // 30)
    hb = pop.health[bc, np.minimum(blk, ncols - 1) * 30].astype(np.float64)
    support = (pop.cause[bc] == _SUPPORT) & (pop.onset[bc] <= b0) & (b0 < pop.recovers_at[bc])
    seg = pop.segment[bc]
    width = (b1 - b0) / 30
    n_tickets = _tickets(ev, rng, bc, b0, b1, hb, support, seg, width, start_ms, n_agents, fold_ms)
    rate = np.array([0.15, 0.4, 1.0])[seg] * np.where(hb < -0.5, 1.4, 1.0) * width
    ai, _ = _expand(rng.poisson(rate))
    act_ms = _ms(b0[ai] + rng.random(ai.size) * (b1 - b0)[ai])
    ac = bc[ai]
    ok = act_ms > start_ms[ac]
    ev.add(Kind.ACTIVITY, act_ms[ok], ac[ok], rng.integers(0, 3, ai.size)[ok], rng.integers(0, 6, ai.size)[ok])
    r = rng.random(bc.size)
    down = (hb < -0.6) & (r < 0.08)
    up = ~down & (hb > 0.7) & (r < 0.05)
    factor = np.where(down, -rng.uniform(0.1, 0.3, bc.size), rng.uniform(0.1, 0.4, bc.size))
    seat_ms = _ms(b0 + rng.uniform(0, 29, bc.size))
    ok = (down | up) & (seat_ms > start_ms[bc])
    ev.add(Kind.SEATS, seat_ms[ok], bc[ok], np.round(factor[ok] * FACTOR_SCALE).astype(np.int64))

    # the champion leaves with a lost-champion cause (at its onset, or just after the start if the
    # cause was already at work when the customer signed); a new contact shows up a month later
    onset = pop.onset.astype(np.int64)
    left = np.maximum(onset, start + 1)
    champ = np.nonzero((pop.cause == _CHAMPION) & (left < churn))[0]
    ev.add(Kind.CHAMPION_LEFT, _ms(left[champ] + rng.random(champ.size)), champ)
    follow = champ[left[champ] + 30 < churn[champ]]
    ev.add(Kind.NEW_CONTACT, _ms(left[follow] + 30 + rng.random(follow.size)), follow)
    gone = np.nonzero(churn_day < days)[0]
    ev.add(Kind.CHURN, _ms(churn_day[gone] + 0.03), gone, np.maximum(pop.churn_reason[gone], 0))
    # drawn last, so that every event above stays what it was before these were added
    _cause_events(ev, rng, pop, lo, churn, start_ms, n_agents, fold_ms, n_tickets)
    return ev.sorted(n, start_ms)


def _tickets(ev: _Events, rng: np.random.Generator, bc: np.ndarray, b0: np.ndarray, b1: np.ndarray,
             hb: np.ndarray, support: np.ndarray, seg: np.ndarray, width: np.ndarray, start_ms: np.ndarray,
             n_agents: int, fold_ms: int) -> int:
    """Support tickets per block: more when health is low, many more during a support failure.
    Returns how many (they are numbered from 0)."""
    rate = np.array([0.15, 0.45, 1.4])[seg] * np.exp(-0.6 * hb) * np.where(support, 2.5, 1.0) * width
    ti, _ = _expand(rng.poisson(rate))
    m = ti.size
    sup, h = support[ti], hb[ti]
    t_ms = _ms(b0[ti] + rng.random(m) * (b1 - b0)[ti])
    urgent = np.where(sup, 0.25, 0.06)
    u = rng.random(m)
    priority = np.where(u < 0.25, 0, np.where(u < 0.75 - urgent, 1, np.where(u < 1 - urgent, 2, 3)))
    hours = rng.lognormal(np.log(18 * np.where(sup, 3.0, 1.0)), 0.9)
    to_solve = np.maximum(60_000, np.round(hours * HOUR)).astype(np.int64)
    bad = rng.random(m) < sigmoid(-1.6 - 1.0 * h + np.where(sup, 1.3, 0.0))
    escalated = rng.random(m) < np.where(sup, 0.25, 0.04)
    rated = rng.random(m) < 0.5
    kind = rng.integers(0, len(TICKET_TYPES), m)
    subject = rng.integers(0, len(TICKET_SUBJECTS), m)
    agent = rng.integers(0, max(1, n_agents), m)
    flags = _pack_flags(priority, kind, subject, escalated, rated, bad, agent)
    cust = bc[ti]
    ok = t_ms > start_ms[cust]  # nobody files a ticket before the customer exists
    return _add_tickets(ev, t_ms[ok], cust[ok], to_solve[ok], flags[ok], 0, fold_ms)


def _add_tickets(ev: _Events, t_ms: np.ndarray, cust: np.ndarray, to_solve: np.ndarray, flags: np.ndarray,
                 first_number: int, fold_ms: int) -> int:
    """TICKET events numbered from `first_number`, and the SOLVE events still to come; returns the count."""
    number = first_number + np.arange(t_ms.size)
    ev.add(Kind.TICKET, t_ms, cust, number, to_solve << 24 | flags)
    late = t_ms + to_solve >= fold_ms
    ev.add(Kind.SOLVE, (t_ms + to_solve)[late], cust[late], number[late], to_solve[late])
    return int(t_ms.size)


def _cause_events(ev: _Events, rng: np.random.Generator, pop: Population, lo: np.ndarray, churn: np.ndarray,
                  start_ms: np.ndarray, n_agents: int, fold_ms: int, first_number: int) -> None:
    """What a price or competitor cause makes the customer do while it lasts (from its onset until it
    recovers), whether or not the customer goes on to churn: tickets about price (tagged ``pricing``)
    or about taking its data elsewhere (``data_export``), one per 30-60 days; and, for price, a seat
    cut within 60 days of the onset for some. (A competitor's falling API use is in the meter usage.)"""
    n = pop.n
    onset = pop.onset.astype(np.int64)
    pace = rng.uniform(*TOPIC_DAYS, n)  # drawn for everyone: the stream does not depend on the causes
    cut = rng.random(n) < PRICE_SEAT_CUT
    cut_day = onset + rng.uniform(0, 60, n)
    cut_factor = -rng.uniform(0.1, 0.3, n)
    topic = (pop.cause == _PRICE) | (pop.cause == _COMPETITOR)
    a = np.maximum(np.maximum(onset, lo), 0)  # (history before the window is not generated)
    b = np.minimum(np.minimum(pop.recovers_at, churn), pop.days)
    who = np.nonzero(topic & (b > a))[0]
    ti, _ = _expand(rng.poisson((b - a)[who] / pace[who]))
    m = ti.size
    cust = who[ti]
    t_ms = _ms(a[cust] + rng.random(m) * (b - a)[cust])
    u = rng.random(m)
    priority = np.where(u < 0.3, 0, np.where(u < 0.9, 1, 2))  # questions: low or normal, seldom high
    hours = rng.lognormal(np.log(18), 0.9, m)
    to_solve = np.maximum(60_000, np.round(hours * HOUR)).astype(np.int64)
    h = pop.health[cust, np.clip(t_ms // DAY, 0, pop.days - 1)]
    bad = rng.random(m) < sigmoid(-1.6 - 1.0 * h)
    rated = rng.random(m) < 0.5
    price = pop.cause[cust] == _PRICE
    subject = np.where(price, len(TICKET_SUBJECTS), len(TICKET_SUBJECTS) + len(PRICING_SUBJECTS)) \
        + rng.integers(0, np.where(price, len(PRICING_SUBJECTS), len(EXPORT_SUBJECTS)))
    agent = rng.integers(0, max(1, n_agents), m)
    flags = _pack_flags(priority, np.zeros(m, dtype=np.int64), subject, np.zeros(m, dtype=bool), rated, bad, agent)
    ok = t_ms > start_ms[cust]
    _add_tickets(ev, t_ms[ok], cust[ok], to_solve[ok], flags[ok], first_number, fold_ms)
    # the seat cut: a price customer pays for fewer seats (from the window's start on, before churn)
    seat_ms = _ms(cut_day)
    cuts = np.nonzero((pop.cause == _PRICE) & cut & (cut_day >= lo) & (cut_day < churn)
                      & (cut_day < pop.recovers_at) & (seat_ms > start_ms))[0]
    ev.add(Kind.SEATS, seat_ms[cuts], cuts, np.round(cut_factor[cuts] * FACTOR_SCALE).astype(np.int64))
