"""Usage records in the store's typed usage_days table (schema v3): the record methods see them as
any other kind, the v2 -> v3 migration folds the old per-metric records, usage_frame reads a window,
from the rows or from their packed copy (schema v5), with the same result."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import insert, inspect, select

from retention_hub.connectors.records import record
from retention_hub.sync import store as store_module
from retention_hub.sync.store import SCHEMA_VERSION, Store, records, usage_days

DAY0 = date(2026, 10, 1)


def usage(account: str, n: int, source: str = "usage", deleted: bool = False, **metrics: float) -> dict:
    """The record a connector emits for `account` on day DAY0 + n."""
    day = (DAY0 + timedelta(days=n)).isoformat()
    end = datetime.combine(DAY0 + timedelta(days=n + 1), datetime.min.time(), timezone.utc)
    extra = {"meter_ids": ["mtr_1"]} if source == "stripe" else {}
    return record(source, "usage", f"{account}|{day}", end, deleted=deleted, account_ref=account, day=day,
                  metrics=metrics, **extra)


def test_usage_records_round_trip_through_their_own_table(store: Store) -> None:
    rows = [usage("ws_1", 0, active_users=3, sessions=7, clicks=2), usage("ws_1", 1, active_users=4),
            usage("cus_1", 0, "stripe", api_call=12.5), usage("ws_2", 0, events=1, deleted=True)]
    assert store.upsert_records(rows + [record("usage", "account", "ws_1", None, name="W")], run_id=1) == 5
    with store.engine.connect() as conn:  # nothing of kind usage in the generic table
        assert conn.execute(select(records.c.kind)).scalars().all() == ["account"]
        typed = {(r.account_ref, r.day): r for r in conn.execute(select(usage_days))}
    assert (typed[("ws_1", DAY0)].active_users, typed[("ws_1", DAY0)].sessions) == (3.0, 7.0)
    assert typed[("ws_1", DAY0)].events is None and typed[("ws_1", DAY0)].metrics == {
        "active_users": 3, "sessions": 7, "clicks": 2}  # an unknown metric stays in the JSON only
    assert typed[("cus_1", DAY0)].api_calls == 12.5  # Stripe's meter event name maps onto api_calls

    for row in rows:  # every record reads back as it was written
        got = store.get_record(row["source"], "usage", row["source_id"])
        assert got["payload"] == row["payload"] and got["updated_at"] == row["updated_at"]
        assert (got["deleted"], got["first_seen_run"], got["last_seen_run"]) == (row["deleted"], 1, 1)
    assert store.get_record("usage", "usage", "ws_9|2026-10-01") is None
    assert store.get_record("usage", "usage", "not-a-usage-id") is None

    assert store.count_records() == 4 and store.count_records(kind="usage") == 3
    assert store.count_records(kind="usage", include_deleted=True) == 4
    assert store.count_records(source="stripe") == 1 and store.count_records(kind="account") == 1
    listed = list(store.iter_records(include_deleted=True, batch_size=1))
    assert [(r["kind"], r["source"]) for r in listed] == [("account", "usage"), ("usage", "stripe")] + [
        ("usage", "usage")] * 3
    assert {r["source_id"]: r["payload"] for r in listed if r["kind"] == "usage"} == {
        r["source_id"]: r["payload"] for r in rows}
    assert [r["source_id"] for r in store.iter_records(kind="usage", source="usage", batch_size=2)] == [
        "ws_1|2026-10-01", "ws_1|2026-10-02"]  # by day, then account; deleted left out
    batches = list(store.iter_fields("usage", ["account_ref", "metrics", "missing"], source="stripe"))
    assert batches == [[("stripe", "cus_1|2026-10-01", "cus_1", '{"api_call":12.5}', None)]]


def test_usage_upserts_keep_the_newest_version(store: Store) -> None:
    first = usage("ws_1", 0, active_users=3)
    store.upsert_records([first], run_id=1)
    stale = {**usage("ws_1", 0, active_users=1), "updated_at": first["updated_at"] - timedelta(hours=1)}
    fresh = {**usage("ws_1", 0, active_users=5, sessions=2), "updated_at": first["updated_at"] + timedelta(hours=1)}
    store.upsert_records([stale], run_id=2)
    row = store.get_record("usage", "usage", "ws_1|2026-10-01")
    assert row["payload"]["metrics"] == {"active_users": 3} and row["last_seen_run"] == 2
    assert store.upsert_records([fresh, stale], run_id=3) == 1  # one row, the newest of the batch
    row = store.get_record("usage", "usage", "ws_1|2026-10-01")
    assert row["payload"]["metrics"] == {"active_users": 5, "sessions": 2} and row["first_seen_run"] == 1
    frame = store.usage_frame()
    assert frame[["active_users", "sessions"]].values.tolist() == [[5.0, 2.0]]


def test_a_usage_id_must_name_its_account_and_day(store: Store) -> None:
    bad = usage("ws_1", 0, active_users=1)
    with pytest.raises(ValueError, match="account_ref"):
        store.upsert_records([{**bad, "source_id": "ws_2|2026-10-01"}])
    with pytest.raises(ValueError):
        store.upsert_records([{**bad, "source_id": "ws_1|2026-10-01|active_users"}])


def test_records_marker_moves_with_usage(store: Store) -> None:
    empty = store.records_marker(["usage"])
    store.upsert_records([usage("ws_1", 0, active_users=1)], run_id=4)
    one = store.records_marker(["usage"])
    assert one != empty and one[:3] == [1, 0, 4]
    store.upsert_records([usage("ws_1", 1, active_users=1, deleted=True)], run_id=5)
    assert store.records_marker(["usage"])[:3] == [2, 1, 5]
    assert store.records_marker(["account"]) == empty  # usage counts only when asked for


def test_usage_frame_reads_a_window_of_live_rows(store: Store) -> None:
    rows = [usage(f"ws_{a}", n, active_users=a + n, features_used=2) for a in range(3) for n in range(10)]
    rows += [usage("cus_1", n, "stripe", api_calls=100 + n) for n in range(0, 10, 3)]
    rows += [usage("ws_9", 5, active_users=9, deleted=True)]
    store.upsert_records(rows)
    frame = store.usage_frame(DAY0 + timedelta(days=2), "2026-10-08")  # 2 < day <= 7 (as days of October)
    assert list(frame.columns) == ["source", "account_ref", "day", *store_module.USAGE_COLUMNS]
    assert str(frame["day"].dtype) == "datetime64[ns, UTC]"
    assert all(frame[c].dtype == np.float32 for c in store_module.USAGE_COLUMNS)
    assert isinstance(frame["source"].dtype, pd.CategoricalDtype)
    days = frame["day"].dt.day
    assert days.min() == 4 and days.max() == 8  # October 4th to 8th
    assert len(frame) == 3 * 5 + 2  # three workspaces a day, the Stripe customer on days 3 and 6 of the run
    ws = frame[frame["source"] == "usage"]
    assert ws["account_ref"].nunique() == 3 and "ws_9" not in set(frame["account_ref"])
    got = {(a, d.day): v for a, d, v in zip(ws["account_ref"], ws["day"], ws["active_users"])}
    assert got[("ws_2", 8)] == 2 + 7 and ws["api_calls"].isna().all() and (ws["features_used"] == 2).all()
    stripe = frame[frame["source"] == "stripe"]
    assert stripe["api_calls"].tolist() == [103.0, 106.0] and stripe["active_users"].isna().all()

    # small chunks, a day split across them and accounts that come and go: the same frame
    store.upsert_records([usage("ws_0", 4, deleted=True, active_users=0), usage("ws_5", 6, active_users=5)])
    whole = store.usage_frame(DAY0 + timedelta(days=2), "2026-10-08")
    for chunk in (1, 2):
        pd.testing.assert_frame_equal(store.usage_frame(DAY0 + timedelta(days=2), "2026-10-08", chunk=chunk), whole)
    assert len(whole) == len(frame) and set(whole["account_ref"]) == {"ws_0", "ws_1", "ws_2", "ws_5", "cus_1"}

    assert len(store.usage_frame()) == 30 + 4  # no bounds: all history
    assert len(store.usage_frame(sources=["stripe"])) == 4
    assert len(store.usage_frame(pd.Timestamp("2026-10-09 09:30", tz="UTC"))) == 3 + 1  # the 10th only
    assert store.usage_frame("2026-12-01").empty and store.usage_frame(sources=["nope"]).empty
    assert store.usage_sources() == ["stripe", "usage"]


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """A usage frame with its categoricals as text (packed and row reads may order categories apart)."""
    return frame.astype({"source": object, "account_ref": object})


def test_packed_days_read_as_their_rows_and_every_write_unpacks_its_day(store: Store) -> None:
    rows = [usage(f"ws_{a}", n, active_users=a + n, features_used=2) for a in range(4) for n in range(6)]
    rows += [usage("cus_1", n, "stripe", api_calls=100 + n) for n in range(0, 6, 2)]
    rows += [usage("ws_9", 3, active_users=9, deleted=True), usage("ws_8", 4, sessions=None, events=3)]
    store.upsert_records(rows, run_id=1)
    from_rows = _plain(store.usage_frame(DAY0, "2026-10-06"))
    assert store.pack_usage() == 6 + 3 and store.pack_usage() == 0  # every (source, day), once
    for window in ((DAY0, "2026-10-06"), (None, None), (DAY0 + timedelta(days=3), None)):
        packed = store.usage_frame(*window)
        assert str(packed["day"].dtype) == "datetime64[ns, UTC]" and packed["active_users"].dtype == np.float32
        if window[1] == "2026-10-06":
            pd.testing.assert_frame_equal(_plain(packed), from_rows)
    assert "ws_9" not in set(store.usage_frame()["account_ref"])  # deleted rows are not packed

    # a later write to a packed day (a correction, a deletion, a new account) is read at once, and
    # packing it again gives the same frame
    store.upsert_records([usage("ws_1", 2, active_users=50), usage("ws_2", 2, deleted=True, active_users=0),
                          usage("ws_7", 2, active_users=1)], run_id=2)
    fresh = _plain(store.usage_frame())
    day3 = fresh[fresh["day"].dt.day == 3].set_index("account_ref")
    assert day3.loc["ws_1", "active_users"] == 50 and "ws_2" not in day3.index and "ws_7" in day3.index
    assert store.pack_usage() == 1
    pd.testing.assert_frame_equal(_plain(store.usage_frame()), fresh)


def test_migration_folds_v2_usage_records_into_usage_days(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store written by the previous version: one usage record per account, day and metric."""
    with monkeypatch.context() as patch:
        patch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:2])
        with Store(store_url) as old:
            assert "usage_days" not in inspect(old.engine).get_table_names()
            t0 = datetime(2026, 10, 2, tzinfo=timezone.utc)

            def metric(source: str, account: str, day: str, name: str, value: float, run: int, **extra) -> dict:
                rec = record(source, "usage", f"{account}|{day}|{name}", t0, account_ref=account, day=day,
                             metric=name, value=value, **extra)
                return {**rec, "first_seen_run": run, "last_seen_run": run + 1}

            rows = [metric("usage", "ws_1", "2026-10-01", "active_users", 3, 1),
                    metric("usage", "ws_1", "2026-10-01", "sessions", 7, 2),
                    metric("usage", "ws_1", "2026-10-01", "clicks", 2, 1),
                    metric("usage", "ws_10", "2026-10-01", "active_users", 1, 1),
                    metric("usage", "ws_1", "2026-10-02", "active_users", 4, 3),
                    metric("stripe", "cus_1", "2026-10-01", "api_call", 9.0, 1, meter_id="mtr_1")]
            with old.engine.begin() as conn:  # as that version wrote them (today's code writes today's schema)
                conn.execute(insert(records), rows + [{**record("usage", "account", "ws_1", None, name="W"),
                                                       "first_seen_run": None, "last_seen_run": None}])
    with Store(store_url) as new:
        assert new.schema_version() == SCHEMA_VERSION
        with new.engine.connect() as conn:
            assert conn.execute(select(records.c.kind)).scalars().all() == ["account"]
        got = {r["source_id"]: r for r in new.iter_records(kind="usage")}
        assert set(got) == {"ws_1|2026-10-01", "ws_10|2026-10-01", "ws_1|2026-10-02", "cus_1|2026-10-01"}
        ws1 = got["ws_1|2026-10-01"]
        assert ws1["payload"]["metrics"] == {"active_users": 3, "sessions": 7, "clicks": 2}
        assert (ws1["first_seen_run"], ws1["last_seen_run"], ws1["updated_at"]) == (1, 3, t0)
        assert ws1["payload"] == {"source": "usage", "kind": "usage", "source_id": "ws_1|2026-10-01",
                                  "updated_at": t0.isoformat(), "deleted": False, "account_ref": "ws_1",
                                  "day": "2026-10-01", "metrics": {"active_users": 3, "sessions": 7, "clicks": 2}}
        assert got["cus_1|2026-10-01"]["payload"]["meter_ids"] == ["mtr_1"]
        frame = new.usage_frame()
        assert sorted(zip(frame["account_ref"], frame["active_users"].fillna(-1), frame["api_calls"].fillna(-1))) == [
            ("cus_1", -1, 9.0), ("ws_1", 3.0, -1), ("ws_1", 4.0, -1), ("ws_10", 1.0, -1)]
        assert new.pack_usage() == 3  # every migrated (source, day) was marked for packing (v5)
        assert len(new.usage_frame()) == 4
        # the next sync's records of the same days replace the migrated rows in place
        new.upsert_records([usage("ws_1", 0, active_users=5)])
        assert new.count_records(kind="usage") == 4
