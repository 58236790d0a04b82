"""Lifecycle stages, milestones, expansion signals and the next best action on hand-made rows."""
from __future__ import annotations

import pandas as pd

from retention_hub.scoring.lifecycle import lifecycle


def test_stages_milestones_and_expansion() -> None:
    f = pd.DataFrame({
        "tenure_days": [20, 400, 400, 400, 100, 900],
        "days_to_renewal": [300, 300, 40, 300, 300, 300],
        "active_users_30d": [0.0, 8, 8, 8, 3, 9],
        "seat_utilization": [0.0, 0.95, 0.6, 0.6, 0.3, 0.7],
        "feature_breadth_30d": [0, 8, 8, 8, 3, 9],
        "api_calls_30d": [0, 0, 0, 0, 0, 500],
        "active_users_trend_90d": [0, 0, 0, 0, 0, 0.3],
    }, index=["new", "full", "renewing", "risky", "young", "gone"])
    s = pd.DataFrame({"tier": ["yellow", "green", "green", "red", "yellow", "green"],
                      "churn_probability": [0.1, 0.05, 0.05, 0.2, 0.1, 0.05]}, index=f.index)
    out = lifecycle(f, s, active=pd.Index(["new", "full", "renewing", "risky", "young"]))
    assert out["lifecycle_stage"].to_dict() == {"new": "onboarding", "full": "mature", "renewing": "renewal_window",
                                                "risky": "at_risk", "young": "adopting", "gone": "churned"}
    assert out.loc["full", "milestones"] == "first_value,five_active_users,half_seats_active,broad_feature_use"
    assert out.loc["new", "milestones"] == ""
    assert out["expansion_signal"].to_dict() == {"new": "", "full": "seats_nearly_full",
                                                 "renewing": "healthy_near_renewal", "risky": "", "young": "",
                                                 "gone": "usage_growth"}
    assert out.loc["full", "next_best_action"].startswith("Propose more seats")
    assert out.loc["new", "next_best_action"].startswith("Onboarding")
    assert out.loc["young", "next_best_action"].startswith("Drive adoption")
