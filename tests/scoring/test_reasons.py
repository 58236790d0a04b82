"""Churn reasons from signals, on hand-made feature rows."""
from __future__ import annotations

import numpy as np
import pandas as pd

from retention_hub.scoring.reasons import REASONS, churn_reasons


def rows(**accounts: dict) -> pd.DataFrame:
    base = {"failed_payments_90d": 0, "in_dunning": 0, "pricing_tickets_90d": 0, "export_tickets_90d": 0,
            "mrr_change_90d": 0.0, "api_calls_trend_30d": np.nan, "contacts_lost_90d": 0, "escalations_90d": 0,
            "high_priority_tickets_90d": 0, "bad_ratings_90d": 0, "resolution_hours_90d": 10.0,
            "seat_utilization": 0.7, "active_users_trend_30d": 0.0, "days_since_usage": 0, "feature_breadth_30d": 8,
            "days_to_renewal": 200, "annual_plan": 0, "has_usage": 1, "contacts_lost_365d": 0}
    return pd.DataFrame([{**base, **v} for v in accounts.values()], index=list(accounts))


def test_each_reason_from_its_own_evidence() -> None:
    out = churn_reasons(rows(
        pay={"failed_payments_90d": 2, "in_dunning": 1},
        price={"pricing_tickets_90d": 1, "mrr_change_90d": -0.25},
        comp={"export_tickets_90d": 1, "api_calls_trend_30d": -0.6},
        champ={"contacts_lost_90d": 1},
        support={"escalations_90d": 2, "high_priority_tickets_90d": 4, "bad_ratings_90d": 3},
        adoption={"seat_utilization": 0.2, "active_users_trend_30d": -0.4},
        renewal={"days_to_renewal": 20, "annual_plan": 1, "has_usage": 0, "seat_utilization": np.nan},
        old_champ={"contacts_lost_365d": 1},
        fine={}))
    assert out["churn_reason"].to_dict() == {
        "pay": "payment_failure", "price": "price", "comp": "competitor", "champ": "lost_champion",
        "support": "support", "adoption": "low_adoption", "renewal": "upcoming_renewal",
        "old_champ": "lost_champion", "fine": "low_adoption"}
    assert out.loc["pay", "reason_evidence"] == "2 failed payment(s) in 90 days; an invoice is unpaid and being retried"
    assert out.loc["price", "reason_evidence"] == "1 ticket(s) about price or discounts; MRR -25% in 90 days"
    assert out.loc["adoption", "reason_evidence"] == "20% of paid seats active; active users -40% vs the month before"
    # no specific trigger: product fit / low adoption, said as such, with the weakest strength
    assert out.loc["fine", "reason_evidence"] == "no specific trigger found"
    assert out.loc["fine", "reason_strength"] == 0.05
    assert out.loc["pay", "reason_strength"] == 0.9  # 0.2 + 0.35 + 0.35
    assert {f"reason_{r}" for r in REASONS} <= set(out.columns)


def test_specific_evidence_beats_general_drift() -> None:
    # low usage and a few tickets, but a pricing ticket: price, not low adoption
    out = churn_reasons(rows(a={"pricing_tickets_90d": 1, "seat_utilization": 0.3, "high_priority_tickets_90d": 3}))
    assert out.loc["a", "churn_reason"] == "price"


def test_missing_features_are_no_evidence() -> None:
    out = churn_reasons(pd.DataFrame({"seat_utilization": [np.nan, 0.1]}, index=["x", "y"]))
    assert out["churn_reason"].tolist() == ["", "low_adoption"]
