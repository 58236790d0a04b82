"""The model report on a tiny example whose figures are worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from retention_hub.scoring.evaluation import calibration_table, evaluate, render_text, top_lift

# 10 accounts, 4 churned (at p = 0.25, 0.60, 0.80, 0.90)
Y = np.array([0, 0, 0, 0, 1, 0, 1, 0, 1, 1])
P = np.array([0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.60, 0.70, 0.80, 0.90])


def test_hand_computed_metrics():
    r = evaluate(Y, P, bins=2)
    assert (r["n"], r["n_positive"], r["base_rate"]) == (10, 4, 0.4)
    # pairs (churned, retained) ranked right: 0.25 beats 4 of 6, 0.60 beats 5, 0.80 and 0.90 beat all 6
    assert r["roc_auc"] == pytest.approx(21 / 24)  # 0.875
    # precision at each churner, riskiest first: 1/1, 2/2, 3/4, 4/6
    assert r["pr_auc"] == pytest.approx((1 + 1 + 3 / 4 + 4 / 6) / 4)  # 0.854
    # retained: .05² + .1² + .15² + .2² + .3² + .7² = 0.655; churned: .75² + .4² + .2² + .1² = 0.7725
    assert r["brier"] == pytest.approx((0.655 + 0.7725) / 10)  # 0.14275
    # top 10% = 1 account (p 0.9, churned): rate 1.0 / base 0.4
    assert r["lift_top_decile"] == pytest.approx(2.5)
    # two equal-frequency bins: the lowest five (mean p 0.15, 1 churned) and the highest five (0.66, 3 churned)
    low, high = r["calibration"]
    assert low == {"bin": 1, "mean_predicted": pytest.approx(0.15), "observed_rate": pytest.approx(0.2), "count": 5}
    assert high == {"bin": 2, "mean_predicted": pytest.approx(0.66), "observed_rate": pytest.approx(0.6), "count": 5}
    assert r["ece"] == pytest.approx((5 * 0.05 + 5 * 0.06) / 10)  # 0.055
    assert r["ece_binning"] == "equal-frequency, 2 bins"


def test_predict_proba_matrix_is_accepted():
    assert evaluate(Y, np.column_stack([1 - P, P]))["roc_auc"] == pytest.approx(0.875)


def test_segments_and_a_one_class_segment():
    r = evaluate(Y, P, segments=np.array(["a"] * 4 + ["b"] * 6), bins=2)
    assert set(r["segments"]) == {"a", "b"}
    a = r["segments"]["a"]
    assert a["n"] == 4 and a["n_positive"] == 0 and a["roc_auc"] is None and a["pr_auc"] is None
    assert "one class only" in a["notes"][0] and a["lift_top_decile"] is None
    assert a["brier"] == pytest.approx((0.05 ** 2 + 0.1 ** 2 + 0.15 ** 2 + 0.2 ** 2) / 4)
    b = r["segments"]["b"]
    # retained at 0.30 and 0.70; churned 0.25 beats neither, 0.60 one, 0.80 and 0.90 both: 5 of 8 pairs
    assert b["n"] == 6 and b["n_positive"] == 4 and b["roc_auc"] == pytest.approx(5 / 8)
    assert evaluate(Y, P, segments=[1] * 5 + [2] * 5)["segments"]["2"]["n"] == 5  # labels as text


def test_ties_share_a_bin_and_lift_does_not_depend_on_order():
    p = np.array([0.1] * 6 + [0.5] * 4)
    table = calibration_table(np.zeros(10), p, bins=4)
    assert [row["count"] for row in table] == [6, 4]
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    flat = np.full(10, 0.3)
    assert top_lift(y, flat) == pytest.approx(1.0)  # all tied: the top decile is an average account
    assert top_lift(y[::-1], flat) == pytest.approx(1.0)


def test_render_text_and_errors():
    r = evaluate(Y, P, segments=np.array(["smb"] * 6 + ["enterprise"] * 4), bins=2)
    text = render_text(r)
    assert "ROC AUC 0.875" in text and "Brier 0.1427" in text and "lift top 10% 2.50x" in text
    assert "enterprise" in text and "smb" in text and "0.1500" in text
    with pytest.raises(ValueError, match="0/1"):
        evaluate([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="rows"):
        evaluate([0, 1], [0.1])
