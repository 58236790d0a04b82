"""The churn model on synthetic snapshots with a known churn probability, and on a public dataset."""
from __future__ import annotations

import logging

import joblib
import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks

from retention_hub.scoring.churn import FORMAT_VERSION, ChurnModel, Driver, _folds
from retention_hub.scoring.churn_drivers import saabas, tree_paths

FEATURES = ["usage_trend_30d", "seat_utilization", "tickets_90d", "failed_payments_90d", "days_to_renewal",
            "health_score", "noise_0", "noise_1", "noise_2", "noise_3"]
LABELS = {"usage_trend_30d": "Usage {fell_rose} {abs_value:.0%} over 30 days",
          "failed_payments_90d": "failed payments in the last 90 days"}


def snapshots(n_accounts: int = 2500, n_snapshots: int = 4, seed: int = 0) -> pd.DataFrame:
    """Monthly snapshots per account; churn probability logistic in the observed features, with a
    renewal-window interaction. Account health is AR(1), so one account's rows are correlated."""
    rng = np.random.default_rng(seed)
    fit, health = rng.normal(size=n_accounts), rng.normal(size=n_accounts)
    renew = rng.integers(0, 365, n_accounts)
    frames = []
    for t, when in enumerate(pd.date_range("2026-01-01", periods=n_snapshots, freq="MS")):
        health = 0.8 * health + 0.6 * rng.normal(size=n_accounts)
        df = pd.DataFrame({
            "usage_trend_30d": np.maximum(0.3 * health + 0.1 * rng.normal(size=n_accounts), -0.95),
            "seat_utilization": expit(fit + 0.5 * rng.normal(size=n_accounts)),
            "tickets_90d": rng.poisson(np.exp(0.5 - 0.5 * health)).astype(float),
            "failed_payments_90d": rng.poisson(expit(-2.5 - health)).astype(float),
            "days_to_renewal": ((renew - 30 * t) % 365).astype(float)})
        logit = (-3.6 - 3.0 * df["usage_trend_30d"] - 2.0 * (df["seat_utilization"] - 0.5)
                 + 0.25 * np.minimum(df["tickets_90d"], 6) + 1.0 * df["failed_payments_90d"]
                 + 1.2 * (df["days_to_renewal"] < 90))
        df["health_score"] = np.clip(55 + 40 * df["usage_trend_30d"] - 3 * df["tickets_90d"]
                                     + 5 * rng.normal(size=n_accounts), 0, 100)
        for k in range(4):
            df[f"noise_{k}"] = rng.normal(size=n_accounts)
        df.loc[rng.random(n_accounts) < 0.05, "usage_trend_30d"] = np.nan
        df["p_true"] = expit(logit)
        df["y"] = (rng.random(n_accounts) < df["p_true"]).astype(int)
        df["account"], df["time"] = np.arange(n_accounts), when
        df["segment"] = np.where(df["account"] % 3 == 0, "enterprise", "smb")
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return snapshots()


@pytest.fixture(scope="module")
def model(data: pd.DataFrame) -> ChurnModel:
    return ChurnModel().fit(data[FEATURES], data["y"], time=data["time"], groups=data["account"],
                            segments=data["segment"])


def test_validation_on_a_later_period_reaches_the_ceiling_and_is_calibrated(model, data):
    v = model.validation_
    assert v["split"] == "time"
    assert v["validation_time"][0] > v["train_time"][1]  # honest: calibrated and measured on a later period
    assert v["validation_time"] == (data["time"].max(), data["time"].max())  # 25% of 4 periods
    held_out = data[data["time"] == data["time"].max()]
    assert v["n_validation"] == len(held_out) and v["n_train"] == len(data) - len(held_out)
    ceiling = roc_auc_score(held_out["y"], held_out["p_true"])
    assert v["roc_auc"] >= 0.95 * ceiling, (v["roc_auc"], ceiling)
    assert v["ece"] < 0.05
    assert v["calibration_method"] == "sigmoid"  # fewer than 1000 churners held out
    assert set(v["segments"]) == {"enterprise", "smb"} and v["segments"]["smb"]["roc_auc"] > 0.7
    assert model.training_window_ == (data["time"].min(), data["time"].max())
    assert (model.n_rows_, model.n_positives_) == (len(data), int(data["y"].sum()))
    assert model.fallback_ is False and model.fallback_reason_ is None


def test_probabilities_match_the_truth_on_the_next_period(model):
    future = snapshots(seed=0, n_snapshots=5)
    future = future[future["time"] == future["time"].max()]
    p = model.predict_proba(future[FEATURES])[:, 1]
    assert roc_auc_score(future["y"], p) >= 0.95 * roc_auc_score(future["y"], future["p_true"])
    assert abs(p.mean() - future["p_true"].mean()) < 0.03
    assert model.predict(future[FEATURES]).tolist() == (p > 0.5).astype(int).tolist()


def test_without_time_a_grouped_stratified_split_stands_in_and_says_so(data):
    m = ChurnModel(max_iter=50).fit(data[FEATURES], data["y"], groups=data["account"])
    assert m.validation_["split"] == "stratified" and m.validation_["train_time"] is None
    assert "not on a later period" in m.validation_["split_note"]
    assert m.validation_["roc_auc"] > 0.75


def test_gap_periods_isotonic_and_a_single_period(data):
    m = ChurnModel(gap_periods=1, calibration="isotonic", max_iter=60).fit(data[FEATURES], data["y"], time=data["time"])
    times = sorted(data["time"].unique())
    v = m.validation_
    assert v["train_time"] == (times[0], times[1]) and v["validation_time"] == (times[3], times[3])
    assert v["n_train"] == 2 * 2500 and v["calibration_method"] == "isotonic" and v["ece"] < 0.05
    p = m.predict_proba(data[FEATURES])[:, 1]
    assert 0 < p.min() and p.max() < 1  # isotonic never claims certainty
    one = data[data["time"] == times[0]]
    m = ChurnModel(max_iter=60).fit(one[FEATURES], one["y"], time=one["time"])
    assert m.validation_["split"] == "stratified" and m.validation_["split_note"].startswith("only 1 period")


def test_folds_keep_each_account_on_one_side_and_spread_churn():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 400, 2000)
    y = (rng.random(2000) < 0.1).astype(int)
    folds = _folds(y, groups, 4, seed=0)
    assert pd.Series(folds).groupby(groups).nunique().max() == 1
    churned_accounts = pd.Series(y).groupby(groups).max()
    per_fold = churned_accounts.groupby(pd.Series(folds).groupby(groups).first()).sum()
    assert per_fold.max() - per_fold.min() <= 1


def test_too_few_churners_fall_back_to_the_health_score(caplog):
    rng = np.random.default_rng(2)
    X = pd.DataFrame({"health_score": rng.uniform(0, 100, 1000), "tickets": rng.poisson(1, 1000)})
    y = np.zeros(1000, dtype=int)
    y[np.argsort(X["health_score"].to_numpy())[:5]] = 1  # 5 churners, all unhealthy
    with caplog.at_level(logging.WARNING, logger="retention_hub.scoring.churn"):
        m = ChurnModel().fit(X, y)
    assert m.fallback_ is True and m.validation_ is None
    assert m.fallback_reason_.startswith("Too few churn examples") and "5 churned" in m.fallback_reason_
    assert "Too few churn examples" in caplog.text
    grid = pd.DataFrame({"health_score": np.linspace(0, 100, 21), "tickets": 0})
    p = m.predict_proba(grid)[:, 1]
    assert np.all(np.diff(p) < 0)  # monotone: healthier, less likely to churn
    assert m.predict_proba(X)[:, 1].mean() == pytest.approx(5.5 / 1001)  # mean = (smoothed) churn rate
    worst = m.drivers(grid.iloc[:1])[0]
    assert [d.feature for d in worst] == ["health_score"] and worst[0].contribution > 0


def test_fallback_without_a_health_column_is_a_constant_rate():
    X = pd.DataFrame({"tickets": np.arange(200.0)})
    m = ChurnModel().fit(X, np.r_[np.ones(3), np.zeros(197)])
    assert m.fallback_ and "every row gets the churn rate" in m.fallback_reason_
    assert np.allclose(m.predict_proba(X)[:, 1], 3.5 / 201)
    assert m.drivers(X) == [[] for _ in range(200)]


def test_columns_are_matched_by_name(model, data):
    X = data[FEATURES].iloc[:50]
    shuffled = X[FEATURES[::-1]].assign(unrelated=1.0)
    assert np.array_equal(model.predict_proba(X), model.predict_proba(shuffled))
    with pytest.raises(ValueError, match="missing: tickets_90d"):
        model.predict_proba(X.drop(columns="tickets_90d"))
    with pytest.raises(ValueError, match="not numeric: seat_utilization"):
        model.predict_proba(X.assign(seat_utilization="high"))


@pytest.mark.parametrize("kind", ["hgb", "logistic"])
def test_drivers_name_the_feature_that_was_moved(kind, model, data):
    m = model if kind == "hgb" else ChurnModel(model="logistic").fit(data[FEATURES], data["y"], time=data["time"])
    typical = pd.DataFrame([dict(zip(FEATURES, m.medians_))])
    risky = typical.assign(failed_payments_90d=4.0)
    out = m.drivers(pd.concat([typical, risky], ignore_index=True), labels=LABELS, min_risk=0.0)
    top = out[1][0]
    assert isinstance(top, Driver) and top.feature == "failed_payments_90d"
    assert top.value == 4.0 and top.typical == 0.0 and top.contribution > 0.03
    assert top.text == "Failed payments in the last 90 days: 4 (typical 0)"
    assert all(d.feature != "failed_payments_90d" for d in out[0])
    fell = m.drivers(typical.assign(usage_trend_30d=-0.42), labels=LABELS, min_risk=0.0)[0][0]
    assert fell.feature == "usage_trend_30d" and fell.text == "Usage fell 42% over 30 days"


def test_drivers_skip_low_risk_rows_and_are_ranked(model, data):
    X = data[FEATURES].iloc[:500]
    p = model.predict_proba(X)[:, 1]
    out = model.drivers(X, top=2)
    assert all(not d for d, pi in zip(out, p) if pi < model.base_rate_)  # below the churn rate: nothing to explain
    assert all(len(d) <= 2 and all(a.contribution >= 0 for a in d) for d in out)
    assert sum(1 for d in out if d) > 0.1 * len(X)


def test_path_attribution_adds_up_to_the_score(model, data):
    A = data[FEATURES].to_numpy(float)[:300]
    paths = tree_paths(model.base_model_)
    contributions = saabas(paths, A)
    raw = model.base_model_.decision_function(A)
    # each row's contributions sum to its score minus one constant, the score's training expectation
    offsets = raw - contributions.sum(axis=1)
    assert np.ptp(offsets) < 1e-9
    assert contributions[:, FEATURES.index("noise_0")].std() < contributions[:, FEATURES.index("usage_trend_30d")].std()


def test_save_and_load_round_trip(model, data, tmp_path):
    path = tmp_path / "churn.joblib"
    model.save(path)
    loaded = ChurnModel.load(path)
    X = data[FEATURES].iloc[:1000]
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
    meta = joblib.load(path)
    assert meta["format_version"] == FORMAT_VERSION and meta["features"] == FEATURES
    assert meta["training_window"] == model.training_window_ and meta["n_positives"] == model.n_positives_
    assert meta["validation"]["roc_auc"] == model.validation_["roc_auc"] and meta["fallback"] is False
    joblib.dump({**meta, "format_version": FORMAT_VERSION + 1}, tmp_path / "future.joblib")
    with pytest.raises(ValueError, match="file format 2"):
        ChurnModel.load(tmp_path / "future.joblib")


def test_estimator_shape():
    m = ChurnModel(max_iter=40, calibration="sigmoid")
    assert clone(m).get_params() == m.get_params()
    assert ChurnModel(**m.get_params()).get_params() == m.get_params()
    with pytest.raises(NotFittedError):
        m.predict_proba(pd.DataFrame({"a": [1.0]}))
    data = snapshots(300, 2, seed=3)
    assert m.fit(data[FEATURES], data["y"]) is m
    for check in ("check_get_params_invariance", "check_set_params", "check_no_attributes_set_in_init",
                  "check_parameters_default_constructible", "check_estimators_unfitted", "check_fit_idempotent",
                  "check_estimators_pickle", "check_n_features_in", "check_estimators_overwrite_params",
                  "check_classifiers_one_label", "check_estimators_dtypes", "check_dont_overwrite_parameters"):
        getattr(estimator_checks, check)("ChurnModel", ChurnModel(min_positives=1, max_iter=20))


def test_public_dataset_matches_a_logistic_baseline():
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    y = 1 - y  # 1 = malignant, the rarer class, as churn is
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.4, stratify=y, random_state=0)
    baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X_train, y_train)
    base_auc = roc_auc_score(y_test, baseline.predict_proba(X_test)[:, 1])
    for kind in ("hgb", "logistic"):
        m = ChurnModel(model=kind, min_samples_leaf=10).fit(X_train, y_train)
        assert roc_auc_score(y_test, m.predict_proba(X_test)[:, 1]) >= base_auc - 0.03, kind


def test_a_feature_missing_from_the_whole_training_period_is_ignored():
    # e.g. a source whose history starts after the training window: no value in the training rows
    rng = np.random.default_rng(0)
    n = 4000
    X = pd.DataFrame({"a": rng.normal(size=n), "late": np.nan, "constant": 1.0})
    X.loc[3500:, "late"] = rng.normal(size=500)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2 * X["a"] - 3)))).astype(int)
    time = pd.Series(np.repeat(np.arange(8), 500))
    model = ChurnModel(refit=False).fit(X, y, time=time)
    assert model.validation_["roc_auc"] > 0.8
    p = model.predict_proba(X)[:, 1]
    moved = model.predict_proba(X.assign(late=X["late"].fillna(0) + 100))[:, 1]
    assert np.allclose(p, moved)  # never split on in training: it changes nothing
    assert np.isfinite(ChurnModel().fit(X, y, time=time).predict_proba(X)).all()  # the refit on all rows too
