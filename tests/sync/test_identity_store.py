"""The store's identity tables (schema version 2) and the methods identity unification uses."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
from sqlalchemy import inspect

from retention_hub.sync.store import IDENTITY_TABLES, SCHEMA_VERSION, Store

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)




def test_version_2_adds_the_identity_tables(store: Store) -> None:
    assert SCHEMA_VERSION >= 2 and store.schema_version() == SCHEMA_VERSION
    inspector = inspect(store.engine)
    for name, table in IDENTITY_TABLES.items():
        assert {c["name"] for c in inspector.get_columns(name)} == set(table.columns.keys()), name
    assert inspector.get_pk_constraint("identity_links")["constrained_columns"] == ["source", "kind", "source_id"]


def test_iter_fields_reads_payload_fields_in_batches(store: Store) -> None:
    store.upsert_records([{"source": "hubspot", "kind": "account", "source_id": f"{i:03d}", "updated_at": T0,
                           "payload": {"name": f"Acme {i}", "external_ids": {"salesforce": f"001{i}"},
                                       "domain_names": ["a.example"], "employees": 12}} for i in range(7)] +
                         [{"source": "stripe", "kind": "account", "source_id": "cus_1", "updated_at": T0,
                           "deleted": True, "payload": {"name": "gone"}}], run_id=1)
    batches = list(store.iter_fields("account", ["name", "external_ids", "domain_names", "employees", "missing"],
                                     batch_size=3))
    assert [len(b) for b in batches] == [3, 3, 1]
    rows = [r for b in batches for r in b]
    assert rows[0][:3] == ("hubspot", "000", "Acme 0")
    assert rows[0][3].replace(" ", "") == '{"salesforce":"0010"}' and rows[0][4].replace(" ", "") == '["a.example"]'
    assert str(rows[0][5]) == "12" and rows[0][6] is None
    assert [r[1] for r in rows] == [f"{i:03d}" for i in range(7)]  # deleted records left out


def test_records_marker_moves_with_every_change(store: Store) -> None:
    empty = store.records_marker(["account"])
    row = {"source": "hubspot", "kind": "account", "source_id": "1", "updated_at": T0, "payload": {"name": "a"}}
    store.upsert_records([row], run_id=1)
    one = store.records_marker(["account"])
    store.upsert_records([{**row, "updated_at": T0 + timedelta(hours=1), "deleted": True}], run_id=2)
    deleted = store.records_marker(["account"])
    assert len({str(empty), str(one), str(deleted)}) == 3 and deleted[:2] == [1, 1]
    store.upsert_records([{**row, "kind": "ticket"}], run_id=3)
    assert store.records_marker(["account"]) == deleted  # other kinds do not count


def test_write_identity_inserts_upserts_and_deletes_in_one_go(store: Store) -> None:
    links = pd.DataFrame({"source": ["hubspot", "stripe"], "kind": "account", "source_id": ["1", "cus_1"],
                          "unified_id": "u_1", "method": ["domain", "email_domain"], "confidence": [0.97, 0.95],
                          "status": "accepted"})
    links["updated_at"] = pd.Series([T0, T0], dtype=object)
    written = store.write_identity(
        inserts={"identity_links": links,
                 "identity_events": [{"at": T0, "event": "new", "unified_id": "u_1", "other_id": None,
                                      "detail": {"records": 2}}]},
        upserts={"identity_state": [{"name": "marker", "value": {"a": [1, 2]}, "updated_at": T0}]})
    assert written == 4
    assert store.identity_state("marker") == {"a": [1, 2]}
    event = store.read_identity("identity_events")[0]
    assert event[1] == T0 and event[5] == {"records": 2}
    store.write_identity(upserts={"identity_links": [{**links.iloc[0].to_dict(), "unified_id": "u_2",
                                                      "updated_at": T0 + timedelta(days=1)}]},
                         deletes={"identity_links": [{"source": "stripe", "kind": "account", "source_id": "cus_1"}]})
    rows = store.read_identity("identity_links", ["source_id", "unified_id", "confidence", "updated_at"])
    assert rows == [("1", "u_2", 0.97, T0 + timedelta(days=1))]


def test_iter_identity_pages_by_primary_key(store: Store) -> None:
    rows = [{"source": s, "kind": "contact", "source_id": f"{i}", "unified_id": None, "email": None,
             "method": "unmatched", "updated_at": T0} for s in ("hubspot", "zendesk") for i in range(5)]
    store.write_identity(inserts={"identity_people": rows})
    pages = list(store.iter_identity("identity_people", ["source", "source_id", "method"], batch_size=4))
    assert [len(p) for p in pages] == [4, 4, 2]
    assert [r[:2] for p in pages for r in p] == [(s, f"{i}") for s in ("hubspot", "zendesk") for i in range(5)]
