"""The likely churn reason per account, from its signals, with the evidence in words.

Each reason has a few rules over the point-in-time features (`features.py`); a rule that fires adds
its weight to the reason's strength (capped at 1) and a line of evidence. The reason with the
greatest strength wins; specific evidence (a pricing ticket, a failed payment, a departed contact)
weighs more than the general drift every unhealthy account shows (fewer users, more tickets), so
"low adoption" wins only when nothing more specific is there. When no specific trigger shows at all,
the reason is product fit / low adoption ("no specific trigger found"), except for an annual renewal
coming up on an account without usage data ("upcoming renewal"). Accounts without any of these
features get no reason ("" with strength 0). Transparent on purpose: an admin can read and question every rule.
Pure DataFrame functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

REASONS = ("price", "competitor", "low_adoption", "support", "payment_failure", "lost_champion", "upcoming_renewal")
LABELS = {"price": "price sensitivity", "competitor": "competitive displacement", "low_adoption":
          "product fit / low adoption", "support": "support failure", "payment_failure": "payment failure",
          "lost_champion": "lost champion", "upcoming_renewal": "upcoming renewal"}


@dataclass(frozen=True)
class Rule:
    reason: str
    feature: str
    fires: Callable[[pd.Series], pd.Series]  # feature values -> bool per account
    weight: float
    evidence: str  # str.format template over {value}


def _ge(x: float) -> Callable[[pd.Series], pd.Series]:
    return lambda v: v >= x


def _le(x: float) -> Callable[[pd.Series], pd.Series]:
    return lambda v: v <= x


RESIDUAL = "no specific trigger found"
RULES: tuple[Rule, ...] = (
    # one failed payment happens to healthy customers too (an expired card): weak alone
    Rule("payment_failure", "failed_payments_90d", _ge(1), 0.2, "{value:.0f} failed payment(s) in 90 days"),
    Rule("payment_failure", "failed_payments_90d", _ge(2), 0.35, ""),
    Rule("payment_failure", "in_dunning", _ge(1), 0.35, "an invoice is unpaid and being retried"),
    Rule("price", "pricing_tickets_90d", _ge(1), 0.6, "{value:.0f} ticket(s) about price or discounts"),
    Rule("price", "pricing_tickets_90d", _ge(2), 0.15, ""),
    Rule("price", "mrr_change_90d", _le(-0.1), 0.25, "MRR {value:+.0%} in 90 days"),
    Rule("competitor", "export_tickets_90d", _ge(1), 0.65, "{value:.0f} ticket(s) about exporting data or migrating"),
    Rule("competitor", "export_tickets_90d", _ge(2), 0.15, ""),
    Rule("competitor", "api_calls_trend_30d", _le(-0.4), 0.3, "API calls {value:+.0%} vs the month before"),
    Rule("lost_champion", "contacts_lost_90d", _ge(1), 0.55, "{value:.0f} contact(s) left in 90 days"),
    Rule("lost_champion", "contacts_lost_90d", _ge(2), 0.15, ""),
    # a champion who left months ago still explains a renewal lost now
    Rule("lost_champion", "contacts_lost_365d", _ge(1), 0.45, "{value:.0f} contact(s) left in the last year"),
    # unhappy customers file more tickets whatever the cause: support needs two of these to stand out
    Rule("support", "escalations_90d", _ge(1), 0.2, "{value:.0f} escalated ticket(s) in 90 days"),
    Rule("support", "high_priority_tickets_90d", _ge(3), 0.2, "{value:.0f} high-priority tickets in 90 days"),
    Rule("support", "bad_ratings_90d", _ge(2), 0.2, "{value:.0f} bad satisfaction ratings in 90 days"),
    Rule("support", "resolution_hours_90d", _ge(48), 0.15, "tickets take {value:.0f} h to resolve (median)"),
    Rule("low_adoption", "seat_utilization", _le(0.35), 0.3, "{value:.0%} of paid seats active"),
    Rule("low_adoption", "active_users_trend_30d", _le(-0.2), 0.25, "active users {value:+.0%} vs the month before"),
    Rule("low_adoption", "days_since_usage", _ge(14), 0.3, "nobody used the product for {value:.0f} days"),
    Rule("low_adoption", "feature_breadth_30d", _le(4), 0.1, "{value:.1f} features used per day"),
    # the residual: no specific trigger (price, competitor, support, payment, people) in sight means
    # the product does not fit well enough; weakest of all, so any specific evidence wins
    Rule("low_adoption", "has_usage", _ge(0), 0.05, RESIDUAL),
    # an annual renewal close, with no usage data to judge adoption by
    Rule("upcoming_renewal", "renewal_without_usage", _le(60), 0.07, "annual renewal in {value:.0f} days"),
)


def _said(lines: list[str]) -> list[str]:
    """The residual line only when nothing else was found."""
    return [x for x in lines if x != RESIDUAL] or lines


def churn_reasons(features: pd.DataFrame, rules: tuple[Rule, ...] = RULES) -> pd.DataFrame:
    """Per account (index of `features`): churn_reason (one of REASONS, "" when no rule fires),
    reason_strength (0-1), reason_evidence (the firing rules' evidence, strongest reason only) and
    one `reason_<name>` strength column per reason."""
    index = features.index
    features = features.copy()
    if {"annual_plan", "days_to_renewal", "has_usage"} <= set(features):
        annual = (features["annual_plan"] == 1) & (features["has_usage"] == 0)
        features["renewal_without_usage"] = features["days_to_renewal"].where(annual)
    strength = {r: np.zeros(len(index)) for r in REASONS}
    evidence: dict[str, list[list[str]]] = {r: [[] for _ in range(len(index))] for r in REASONS}
    for rule in rules:
        if rule.feature not in features:
            continue
        values = pd.to_numeric(features[rule.feature], errors="coerce")
        hit = rule.fires(values).fillna(False).to_numpy(dtype=bool)
        strength[rule.reason] += np.where(hit, rule.weight, 0.0)
        if rule.evidence:
            for i in np.flatnonzero(hit):
                evidence[rule.reason][i].append(rule.evidence.format(value=float(values.iloc[i])))
    table = pd.DataFrame({f"reason_{r}": np.minimum(strength[r], 1.0) for r in REASONS}, index=index)
    best = table.to_numpy().argmax(axis=1)  # ties go to the earlier reason in REASONS
    top = table.to_numpy()[np.arange(len(index)), best]
    out = pd.DataFrame(index=index)
    out["churn_reason"] = np.where(top > 0, np.array(REASONS)[best], "")
    out["reason_strength"] = top.round(2)
    out["reason_evidence"] = ["; ".join(_said(evidence[REASONS[b]][i])) if top[i] > 0 else ""
                              for i, b in enumerate(best)]
    return pd.concat([out, table.round(2)], axis=1)
