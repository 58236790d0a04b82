"""The latent side of the sandbox world: who the customers really are, how healthy they are day by
day, when and why they churn, and the generator's own churn probability (the oracle).

Everything here is numpy over all customers at once, deterministic by seed. Day 0 is the first day
of the 18-month history; day `HISTORY_DAYS` is the world's "now"; `FUTURE_DAYS` more are simulated so
the world can advance and so outcomes after "now" are known.

The process: each customer has a fit level mu and a daily health h_t = mu + AR(1) noise + shock,
where a shock is a cause (price, competitor, low adoption, support failures, payment failure, lost
champion) that starts on an onset day and pulls health down over ~45 days. At every renewal point
(monthly or annual) the customer churns with probability sigmoid(alpha + beta * h) evaluated two
weeks before the renewal. Observable signals (usage, tickets, CSAT, payments, seats, contacts) are
drawn from health and cause with noise in `generator.py`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HISTORY_DAYS = 548  # 18 months up to "now"
FUTURE_DAYS = 365
DECISION_LAG = 14  # the renewal decision uses health two weeks before the renewal date
PHI, SIGMA_STATIONARY = 0.985, 0.55
BETA = -1.3  # churn log-odds per unit of health
ALPHA = {"monthly": -4.3, "annual": -2.1}
SHOCK_RAMP = 45
CAUSE_RATE = 0.5  # share of customers whose health a cause hits at some point of the simulation
FIT_SD = 0.55  # spread of the customers' fit levels mu
HEALTH_BLOCK = 32  # days of health simulated per vectorised step

CAUSES = ("price", "competitor", "low_adoption", "support", "payment_failure", "lost_champion")
CAUSE_SHARE = np.array([0.18, 0.14, 0.26, 0.16, 0.12, 0.14])
# a customer that churns with no cause active at its renewal decision churned because its health
# drifted low with no specific trigger: product fit / low adoption (its usage follows its health,
# which is often only a little lower than that of customers who stay)
BACKGROUND_REASON = CAUSES.index("low_adoption")
SEGMENTS = ("SMB", "Mid-Market", "Enterprise")
PLANS = ("Starter", "Growth", "Enterprise")
PRICE_PER_SEAT = np.array([2_500, 4_000, 6_500])  # minor units (USD cents) per seat per month


@dataclass
class Population:
    """Latent truth for `n` customers over `days` days (arrays indexed [customer] or [customer, day])."""

    n: int
    days: int
    segment: np.ndarray  # 0 SMB, 1 Mid-Market, 2 Enterprise
    seats: np.ndarray  # seats at start
    annual: np.ndarray  # bool: annual contract (else monthly)
    start_day: np.ndarray  # may be negative (customer since before the history window)
    discount: np.ndarray  # 0..0.3
    metered: np.ndarray  # bool: has the metered API add-on
    mu: np.ndarray
    health: np.ndarray  # float32 [n, days]
    cause: np.ndarray  # -1 none, else index into CAUSES
    onset: np.ndarray  # day the cause starts (large if none)
    churn_day: np.ndarray  # day the subscription ends (large if never within the simulation)
    churn_reason: np.ndarray  # index into CAUSES, -1 if no churn
    p_true: np.ndarray  # oracle P(churn within 90 days of now), NaN if not active at now
    depth: np.ndarray  # how far the cause pulls health down
    recovers_at: np.ndarray  # day the cause ends (large if never)
    health_from: int = 0  # health[:, 0] is this day (earlier days forgotten to save memory)

    def health_on(self, d: int, customers: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Health of `customers` on day d (d >= health_from)."""
        if d < self.health_from:
            raise ValueError(f"health before day {self.health_from} is no longer kept")
        return self.health[customers, d - self.health_from]

    def forget_health_before(self, day: int) -> None:
        """Drop the health of days before `day` (nothing needs them once the history is drawn)."""
        if day > self.health_from:
            self.health = self.health[:, day - self.health_from:].copy()
            self.health_from = day

    def shock_on(self, d: int) -> np.ndarray:
        """Health lost to each customer's cause on day d."""
        return shock(d, self.onset, self.depth, self.recovers_at)

    def active_at(self, day: int) -> np.ndarray:
        return (self.start_day <= day) & (self.churn_day > day)

    def renewal_days(self, i: int, until: int) -> list[int]:
        period = 365 if self.annual[i] else 30
        first = int(self.start_day[i]) + period
        return list(range(first, until, period))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def simulate(n: int, seed: int) -> Population:
    rng = np.random.default_rng([seed, 1])
    days = HISTORY_DAYS + FUTURE_DAYS
    segment = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    seat_mu = np.array([2.4, 4.0, 5.8])[segment]
    seats = np.maximum(3, np.round(np.exp(rng.normal(seat_mu, 0.45)))).astype(np.int64)
    annual = np.where(segment == 0, rng.random(n) < 0.3, rng.random(n) < 0.95)
    # 72% were customers before the window opened, the rest joined during it
    old = rng.random(n) < 0.72
    start_day = np.where(old, -rng.integers(1, 1500, n), rng.integers(0, HISTORY_DAYS - 20, n))
    discount = np.where(rng.random(n) < 0.35, rng.choice([0.1, 0.15, 0.2, 0.3], n), 0.0)
    metered = rng.random(n) < 0.2
    mu = rng.normal(0.15, FIT_SD, n) + 0.15 * segment

    has_cause = rng.random(n) < CAUSE_RATE
    cause = np.where(has_cause, rng.choice(len(CAUSES), size=n, p=CAUSE_SHARE), -1)
    onset = np.where(has_cause, rng.integers(-60, days, n), 10**6)
    depth = rng.uniform(0.8, 2.2, n)
    recovers_at = np.where(rng.random(n) < 0.3, onset + rng.integers(90, 240, n), 10**6)

    sigma = SIGMA_STATIONARY * np.sqrt(1 - PHI**2)
    health = np.empty((n, days), dtype=np.float32)
    h = mu + rng.normal(0, SIGMA_STATIONARY, n)
    # blocks of days: one draw per block (the same numbers as one draw per day) and the shock
    # broadcast over the block; whole blocks are written into the customer-major array at once
    for d0 in range(0, days, HEALTH_BLOCK):
        k = min(HEALTH_BLOCK, days - d0)
        block = rng.normal(0, sigma, (k, n))
        for j in range(k):
            h = mu + PHI * (h - mu) + block[j]
            block[j] = h
        hit = np.nonzero((onset < d0 + k) & (recovers_at > d0))[0]  # the shock is 0.0 for everyone else
        block[:, hit] -= shock(np.arange(d0, d0 + k)[:, None], onset[hit], depth[hit], recovers_at[hit])
        health[:, d0:d0 + k] = block.T

    churn_day = np.full(n, 10**6, dtype=np.int64)
    churn_reason = np.full(n, -1, dtype=np.int64)
    period = np.where(annual, 365, 30)
    alpha = np.where(annual, ALPHA["annual"], ALPHA["monthly"])
    j_max = int(((days - start_day) // period).max()) + 1
    u = rng.random((n, j_max + 1))
    alive = np.ones(n, dtype=bool)
    for j in range(1, j_max + 1):  # j-th renewal since the start; those before day 0 were survived
        r = start_day + j * period
        idx = np.nonzero(alive & (r >= 0) & (r < days))[0]
        if idx.size == 0:
            continue
        hd = health[idx, np.clip(r[idx] - DECISION_LAG, 0, days - 1)]
        churned = u[idx, j] < sigmoid(alpha[idx] + BETA * hd)
        ci = idx[churned]
        churn_day[ci] = r[ci]
        alive[ci] = False
    # the cause is the reason when it was pulling health down on the day the decision was taken
    decided = churn_day - DECISION_LAG
    shock_active = (cause >= 0) & (onset <= decided) & (recovers_at > decided)
    churned_any = churn_day < 10**6
    churn_reason[churned_any] = np.where(shock_active, cause, BACKGROUND_REASON)[churned_any]

    pop = Population(n, days, segment, seats, annual, start_day, discount, metered, mu, health, cause,
                     onset, churn_day, churn_reason, np.full(n, np.nan), depth, recovers_at)
    pop.p_true = oracle_probability(pop, HISTORY_DAYS, depth, recovers_at)
    return pop


def shock(d: int | np.ndarray, onset: np.ndarray, depth: np.ndarray, recovers_at: np.ndarray) -> np.ndarray:
    """Health lost to the customer's cause on day d: ramps in over SHOCK_RAMP days, ends on recovery."""
    ramp = np.clip((d - onset) / SHOCK_RAMP, 0.0, 1.0)
    return np.where(d >= recovers_at, 0.0, depth * ramp)


def oracle_probability(pop: Population, now: int, depth: np.ndarray, recovers_at: np.ndarray,
                       horizon: int = 90) -> np.ndarray:
    """P(churn within `horizon` days after `now`) from everything latent that is known at `now`.

    Future health is the AR(1) expectation from today's value (shocks already begun continue on
    their known ramp; shocks not yet begun are unknown); its spread widens with the lead time and is
    folded into the logistic through the probit approximation.
    """
    n = pop.n
    p_true = np.full(n, np.nan)
    active = pop.active_at(now)
    period = np.where(pop.annual, 365, 30)
    alpha = np.where(pop.annual, ALPHA["annual"], ALPHA["monthly"])
    known_onset = pop.onset <= now
    shock_now = np.where(known_onset, shock(now, pop.onset, depth, recovers_at), 0.0)
    h_now = pop.health[:, now].astype(np.float64)
    base_now = h_now + shock_now  # health without the shock: mean-reverts to mu
    survive = np.ones(n)
    k = np.floor((now - pop.start_day) / period).astype(np.int64) + 1
    for _ in range(horizon // 30 + 2):
        r = pop.start_day + k * period
        inside = active & (r > now) & (r <= now + horizon)
        t = r - DECISION_LAG
        lead = np.maximum(0, t - now)
        mean = pop.mu + PHI**lead * (base_now - pop.mu)
        mean = mean - np.where(known_onset, shock(t, pop.onset, depth, recovers_at), 0.0)
        var = SIGMA_STATIONARY**2 * (1 - PHI ** (2 * lead))
        past = lead == 0
        known_h = pop.health[np.arange(n), np.clip(t, 0, pop.days - 1)]
        mean = np.where(past, known_h, mean)
        logit = alpha + BETA * mean
        p = sigmoid(logit / np.sqrt(1 + np.pi * BETA**2 * var / 8))
        survive = np.where(inside, survive * (1 - p), survive)
        k = k + 1
    p_true[active] = 1 - survive[active]
    return p_true
