"""Typed tables of the records (schema v6): built once, then refreshed from the records written since."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from retention_hub.sync import store_cache
from retention_hub.sync.store import Store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def account(source_id: str, updated: datetime = T0, source: str = "hubspot", deleted: bool = False, **payload) -> dict:
    return {"source": source, "kind": "account", "source_id": source_id, "updated_at": updated,
            "deleted": deleted, "payload": {"id": source_id, **payload}}


class Extract:
    """name and plan from a payload, counting the payloads it reads."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, payload: dict) -> dict:
        self.calls += 1
        return {"name": payload.get("name"), "plan": payload.get("plan")}


def table(store: Store, extract: Extract, name: str = "t1", **kw) -> pd.DataFrame:
    return store.record_frame("account", ["name", "plan"], extract, name, **kw)


def test_a_table_is_built_once_then_refreshed_from_what_was_written_since(store: Store,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store.upsert_records([account("b", name="B", plan="pro"), account("a", name="A"),
                          account("z", source="salesforce", name="Z"),
                          {**account("c", name="C"), "kind": "contact"}], run_id=1)
    extract = Extract()
    first = table(store, extract)
    assert extract.calls == 3  # accounts only
    assert list(first.columns) == ["source", "source_id", "deleted", "updated_at", "name", "plan"]
    assert list(zip(first["source"], first["source_id"], first["name"])) == [
        ("hubspot", "a", "A"), ("hubspot", "b", "B"), ("salesforce", "z", "Z")]  # by (source, source_id)
    assert first["updated_at"].tolist() == [pd.Timestamp(T0)] * 3

    again = Extract()
    pd.testing.assert_frame_equal(table(store, again), first)
    assert again.calls == 0  # nothing written since: the stored table as it is

    later = T0 + timedelta(hours=1)
    store.upsert_records([account("a", later, name="A2", plan="team"), account("m", later, name="M"),
                          account("b", later, deleted=True, name="B"),
                          account("z", T0 - timedelta(days=1), source="salesforce", name="old Z")], run_id=2)
    changed = Extract()
    now = table(store, changed).sort_values("source_id", ignore_index=True)  # changed rows come last
    assert changed.calls == 3  # what run 2 changed: the older Z changed nothing and is not read again
    assert list(zip(now["source_id"], now["name"], now["plan"].fillna("-"), now["deleted"])) == [
        ("a", "A2", "team", False), ("b", "B", "-", True), ("m", "M", "-", False), ("z", "Z", "-", False)]
    live = table(store, Extract(), include_deleted=False)
    assert sorted(live["source_id"]) == ["a", "m", "z"]
    again = Extract()
    table(store, again)
    assert again.calls == 3  # a few changed records are read again rather than the table stored

    # once enough changed, the refreshed table is stored: a fresh process reads it without parsing
    monkeypatch.setattr(store_cache, "SAVE_AFTER", 1)
    table(store, Extract())
    with Store(store.url) as other:
        quiet = Extract()
        pd.testing.assert_frame_equal(table(other, quiet).sort_values("source_id", ignore_index=True), now)
        assert quiet.calls == 0

    # another extraction (a new name) is built from scratch, beside the first
    rebuilt = Extract()
    assert len(table(store, rebuilt, name="t2")) == 4 and rebuilt.calls == 4


def test_text_columns_come_back_with_their_dtype_and_missing_values(store: Store) -> None:
    rows = [account(f"id{i:03d}", name=f"Name {i}", plan=["pro", "team", None][i % 3]) for i in range(40)]
    store.upsert_records(rows, run_id=1)
    built = table(store, Extract())
    stored = table(store, Extract())
    pd.testing.assert_frame_equal(stored, built)  # plan (repetitive text) went through a categorical
    assert stored["plan"].isna().sum() == 13 and stored["plan"].dtype == built["plan"].dtype
