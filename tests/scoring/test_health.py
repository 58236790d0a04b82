"""The scorecard on hand-computed examples."""
from __future__ import annotations

import math

import pandas as pd

from retention_hub.config.models import Scoring
from retention_hub.scoring.health import component_scores, explain, score_health
from retention_hub.config.models import Component


def scoring(**extra) -> Scoring:
    return Scoring.model_validate({"scorecards": [
        {"name": "default", "components": [
            {"name": "usage", "weight": 3, "feature": "usage", "direction": "higher_is_better",
             "thresholds": [0.25, 0.5, 0.75]},
            {"name": "tickets", "weight": 1, "feature": "tickets", "direction": "lower_is_better",
             "thresholds": [1, 3]}]},
        {"name": "enterprise", "segment": {"field": "segment", "values": ["Enterprise"]}, "components": [
            {"name": "usage", "weight": 1, "feature": "usage", "direction": "higher_is_better",
             "method": "percentile"}]}], **extra})


def test_thresholds_bands_and_direction() -> None:
    up = Component(name="u", weight=1, feature="u", direction="higher_is_better", thresholds=[0.25, 0.5, 0.75])
    assert component_scores(up, pd.Series([0.1, 0.25, 0.6, 0.9])).round(1).tolist() == [0.0, 33.3, 66.7, 100.0]
    down = Component(name="t", weight=1, feature="t", direction="lower_is_better", thresholds=[1, 3])
    assert component_scores(down, pd.Series([0, 2, 5])).tolist() == [100.0, 50.0, 0.0]


def test_weights_missing_components_tiers_and_segments() -> None:
    features = pd.DataFrame({"usage": [0.9, 0.6, 0.1, None, 0.2, 0.8],
                             "tickets": [0, 2, 5, 0, None, 9]},
                            index=pd.Index(list("abcdef"), name="unified_id"))
    accounts = pd.DataFrame({"segment": ["SMB", "SMB", "SMB", "SMB", "SMB", "Enterprise"]}, index=features.index)
    out = score_health(features, scoring(), accounts)
    # a: usage 100 (weight 3/4) + tickets 100 (1/4) = 100
    assert out.loc["a", "health_score"] == 100.0
    # b: usage 66.7 * 0.75 + tickets 50 * 0.25 = 62.5
    assert math.isclose(out.loc["b", "health_score"], 62.5, abs_tol=0.1)
    # c: 0 * 0.75 + 0 * 0.25 = 0
    assert out.loc["c", "health_score"] == 0.0
    # d: usage missing -> tickets alone (100), shown as missing
    assert out.loc["d", "health_score"] == 100.0 and out.loc["d", "missing"] == ["usage"]
    # e: tickets missing -> usage alone: 0.2 is below the first cut -> 0
    assert out.loc["e", "health_score"] == 0.0
    # f: the enterprise card, percentile among the accounts it scores (only f) -> 100
    assert out.loc["f", "scorecard"] == "enterprise" and out.loc["f", "health_score"] == 100.0
    assert out["tier"].tolist() == ["green", "yellow", "red", "green", "red", "green"]
    # contributions add up to the score
    assert math.isclose(out.loc["b", "w_usage"] + out.loc["b", "w_tickets"], out.loc["b", "health_score"], abs_tol=0.1)


def test_explanation_names_the_weakest_and_what_moved() -> None:
    now = pd.Series({"health_score": 40.0, "c_usage": 20.0, "c_tickets": 90.0})
    before = pd.Series({"health_score": 70.0, "c_usage": 80.0, "c_tickets": 90.0})
    text = explain(now, before)
    assert text.startswith("Weakest: usage 20/100") and "usage fell 60" in text
