"""Lifecycle stage, adoption milestones, expansion signals and the next best action per account.

These become CRM fields that the CRM's own automation (HubSpot workflows, Salesforce flows) can
trigger lifecycle e-mails and expansion tasks from. Stage, in order of precedence:
- churned: no live subscription;
- at_risk: red tier, or churn probability >= AT_RISK_PROBABILITY;
- renewal_window: renewal within RENEWAL_WINDOW_DAYS;
- onboarding: a customer for less than ONBOARDING_DAYS, or first value not reached yet;
- adopting: a customer for less than MATURE_DAYS, or fewer than half of the milestones reached;
- mature: everything else.
Pure DataFrame functions over the feature table and the scores.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

STAGES = ("onboarding", "adopting", "mature", "renewal_window", "at_risk", "churned")
AT_RISK_PROBABILITY = 0.3
RENEWAL_WINDOW_DAYS = 90
ONBOARDING_DAYS = 60
MATURE_DAYS = 180
# milestone -> (feature, threshold reached when value >= threshold)
MILESTONES: dict[str, tuple[str, float]] = {
    "first_value": ("active_users_30d", 0.5),  # someone uses it on a typical day
    "five_active_users": ("active_users_30d", 5.0),
    "half_seats_active": ("seat_utilization", 0.5),
    "broad_feature_use": ("feature_breadth_30d", 6.0),
    "api_integration": ("api_calls_30d", 1.0),
}


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(frame[name], errors="coerce") if name in frame else pd.Series(np.nan, index=frame.index)


def milestones(features: pd.DataFrame) -> pd.DataFrame:
    """One boolean column per milestone, and `milestones` (the reached ones, comma-separated)."""
    out = pd.DataFrame({name: (_col(features, f) >= x).to_numpy() for name, (f, x) in MILESTONES.items()},
                       index=features.index)
    names = np.array(list(MILESTONES))
    out["milestones"] = [",".join(names[row]) for row in out[list(MILESTONES)].to_numpy()]
    return out


def expansion_signals(features: pd.DataFrame, scores: pd.DataFrame) -> pd.Series:
    """The strongest expansion signal per account ("" when none): seats nearly full, sustained usage
    growth, or healthy and near renewal (an upsell conversation)."""
    util, growth = _col(features, "seat_utilization"), _col(features, "active_users_trend_90d")
    days, green = _col(features, "days_to_renewal"), scores["tier"].reindex(features.index) == "green"
    out = np.where(util >= 0.9, "seats_nearly_full",
                   np.where((growth >= 0.2) & green, "usage_growth",
                            np.where(green & (days <= 120), "healthy_near_renewal", "")))
    return pd.Series(out, index=features.index, dtype=object)


def lifecycle(features: pd.DataFrame, scores: pd.DataFrame, active: pd.Index | None = None) -> pd.DataFrame:
    """lifecycle_stage, milestones (and one column per milestone), expansion_signal and
    next_best_action per account of `features`. `scores` has tier and churn_probability (same index);
    `active` lists the accounts with a live subscription (default: all)."""
    ms = milestones(features)
    tenure, days = _col(features, "tenure_days"), _col(features, "days_to_renewal")
    tier = scores["tier"].reindex(features.index)
    prob = pd.to_numeric(scores.get("churn_probability", pd.Series(np.nan, index=scores.index)),
                         errors="coerce").reindex(features.index)
    reached = ms[list(MILESTONES)].sum(axis=1)
    live = features.index.isin(active) if active is not None else np.ones(len(features), dtype=bool)
    stage = np.select(
        [~live, (tier == "red") | (prob >= AT_RISK_PROBABILITY), days <= RENEWAL_WINDOW_DAYS,
         (tenure < ONBOARDING_DAYS) | ~ms["first_value"], (tenure < MATURE_DAYS) | (reached < len(MILESTONES) / 2)],
        ["churned", "at_risk", "renewal_window", "onboarding", "adopting"], "mature")
    out = pd.DataFrame({"lifecycle_stage": stage}, index=features.index)
    out = pd.concat([out, ms], axis=1)
    out["expansion_signal"] = expansion_signals(features, scores)
    out["next_best_action"] = [_next_action(s, e, m) for s, e, m in
                               zip(out["lifecycle_stage"], out["expansion_signal"], out["milestones"])]
    return out


def _next_action(stage: str, expansion: str, reached: str) -> str:
    done = set(reached.split(",")) if reached else set()
    if stage == "churned":
        return "Win-back: ask what would bring them back"
    if stage == "at_risk":
        return "Work the retention playbook"
    if expansion == "seats_nearly_full":
        return "Propose more seats: nearly every seat is in use"
    if stage == "renewal_window":
        return "Prepare the renewal" + (": propose an upgrade" if expansion else "")
    if "first_value" not in done:
        return "Onboarding: get the first team using the product"
    if "five_active_users" not in done or "half_seats_active" not in done:
        return "Drive adoption: invite more of the team"
    if "broad_feature_use" not in done:
        return "Show the features they do not use yet"
    if expansion:
        return "Expansion conversation: usage is growing"
    return "Keep in touch: regular check-in"
