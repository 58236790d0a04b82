"""Daily usage from the store's typed table to the usage features: the wide frame, its unified
accounts, and the features' windows."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retention_hub.connectors.records import record
from retention_hub.scoring.features import usage_features
from retention_hub.scoring.frames import load_frames
from retention_hub.sync.store import Store

AS_OF = pd.Timestamp("2026-11-02 09:30", tz="UTC")  # day 0 (the last complete day) is November 1st
ACCOUNTS = {("usage", "ws_1"): "u_a", ("usage", "ws_2"): "u_b", ("stripe", "cus_1"): "u_a"}


def day_record(source: str, account: str, ago: int, **metrics: float) -> dict:
    day = date(2026, 11, 1) - timedelta(days=ago)
    end = datetime.combine(day + timedelta(days=1), time(), timezone.utc)
    return record(source, "usage", f"{account}|{day}", end, account_ref=account, day=day.isoformat(),
                  metrics=metrics)


@pytest.fixture
def store(tmp_path: Path):
    rows = [day_record("usage", "ws_1", ago, active_users=2, **({"sessions": 6} if ago < 30 else {}))
            for ago in range(60)]
    rows += [day_record("usage", "ws_2", ago, active_users=0 if ago < 5 else 1, features_used=3) for ago in range(30)]
    rows += [day_record("stripe", "cus_1", ago, api_call=20 if ago < 30 else 10) for ago in range(60)]
    rows += [day_record("usage", "ws_x", ago, active_users=9) for ago in range(5)]  # no unified account
    with Store(f"sqlite:///{tmp_path / 'hub.db'}") as s:
        s.upsert_records(rows)
        yield s


def test_the_usage_frame_is_wide_typed_and_attributed(store: Store) -> None:
    frames = load_frames(store, ACCOUNTS)
    usage = frames.usage
    assert list(usage.columns) == ["unified_id", "source", "day", "active_users", "sessions", "events",
                                   "features_used", "api_calls"]
    assert isinstance(usage["unified_id"].dtype, pd.CategoricalDtype)
    assert str(usage["day"].dtype) == "datetime64[ns, UTC]"
    assert usage["active_users"].dtype == np.float32
    assert len(usage) == 60 + 30 + 60 and frames.unattributed["usage"] == 5
    assert usage.groupby(["unified_id", "source"], observed=True).size().to_dict() == {
        ("u_a", "stripe"): 60, ("u_a", "usage"): 60, ("u_b", "usage"): 30}
    stripe = usage[usage["source"] == "stripe"]
    assert stripe["api_calls"].sum() == 30 * 20 + 30 * 10 and stripe["active_users"].isna().all()

    recent = load_frames(store, ACCOUNTS, usage_since=pd.Timestamp("2026-10-22")).usage  # the last 10 days
    assert recent["day"].min() == pd.Timestamp("2026-10-23", tz="UTC") and len(recent) == 3 * 10
    assert load_frames(store, ACCOUNTS, usage_since=AS_OF).usage.empty


def test_usage_features_from_the_wide_frame(store: Store) -> None:
    ids = pd.Index(["u_a", "u_b", "u_c"], name="unified_id")
    out = usage_features(load_frames(store, ACCOUNTS).usage, AS_OF, ids)
    assert list(out.columns) == ["active_users_30d", "active_users_7d", "active_users_180d", "active_users_trend_30d",
                                 "active_users_trend_60d", "active_users_trend_90d", "days_since_usage",
                                 "api_calls_trend_30d", "api_calls_30d", "feature_breadth_30d", "feature_breadth_7d",
                                 "sessions_per_user_30d"]
    a, b, c = (out.loc[i] for i in ids)
    assert a["active_users_30d"] == 2.0 and a["active_users_trend_30d"] == 0.0
    assert np.isnan(a["active_users_trend_60d"])  # nothing 60 to 120 days ago
    assert a["days_since_usage"] == 0 and a["api_calls_trend_30d"] == pytest.approx(1.0)
    assert a["sessions_per_user_30d"] == pytest.approx(3.0) and np.isnan(a["feature_breadth_30d"])
    assert b["active_users_30d"] == pytest.approx(25 / 30) and np.isnan(b["active_users_trend_30d"])
    assert b["days_since_usage"] == 5 and b["feature_breadth_30d"] == 3.0 and np.isnan(b["api_calls_trend_30d"])
    assert c.isna().all()  # no usage at all
    # 200 days later every row is older than the 180-day look-back: no usage columns at all
    assert usage_features(load_frames(store, ACCOUNTS).usage, AS_OF + pd.Timedelta(days=200), ids).empty
