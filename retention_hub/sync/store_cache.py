"""Typed tables of the canonical records, kept up to date from the records that changed.

Scoring reads a few fields of every account, contact, ticket, invoice and subscription. Parsing each
record's JSON on every run costs ~30 µs a record: over a minute and a half at 100,000 customers
(3 million records), for records of which a sync changes a few percent. So the store keeps, per
(kind, extraction), the extracted table (a pickled DataFrame) and the write sequence it is good
through, and `record_frame` reads only the records written since.

The write sequence: every `upsert_records` call takes the next number from `sequences` (its row
lock serialises writers on PostgreSQL, so numbers commit in order) and stamps it on the records whose
content it changed (`records.write_seq`, indexed with kind). Records older than schema v6 have none:
they are all read by the first, full build.

Schema (version 6)
------------------
records.write_seq INT NULL, index (kind, write_seq)
sequences       name PK, value INT: "records" is the last write sequence handed out
record_frames   name PK ("{kind}:{extraction}"), through_seq INT, built_at, blob (the pickled table)

The blob is a pickle: the store is trusted like the churn models it holds (also pickled).
"""
from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Column, Index, Integer, LargeBinary, MetaData, String, Table, insert, select, text, update
from sqlalchemy.engine import Connection

RECORDS_SEQUENCE = "records"
SAVE_AFTER = 1000  # changed records re-read on every load until this many (or 0.5% of the table)
BASE_COLUMNS = ["source", "source_id", "deleted", "updated_at"]


def define(md: MetaData, datetime_type: Any) -> dict[str, Table]:
    """The version-6 tables bound to `md` (the store passes its UTC datetime column type)."""
    return {
        "sequences": Table(
            "sequences", md,
            Column("name", String(32), primary_key=True),
            Column("value", Integer, nullable=False)),
        "record_frames": Table(
            "record_frames", md,
            Column("name", String(128), primary_key=True),
            Column("through_seq", Integer, nullable=False),
            Column("built_at", datetime_type, nullable=False),
            Column("blob", LargeBinary, nullable=False)),
    }


def extend_records(records: Table) -> None:
    """The live `records` table gains version 6's column and index."""
    records.append_column(Column("write_seq", Integer, nullable=True))
    Index("ix_records_kind_seq", records.c.kind, records.c.write_seq)


def migrate(conn: Connection, datetime_type: Any) -> None:
    md = MetaData()
    tables = define(md, datetime_type)
    md.create_all(conn, checkfirst=True)
    conn.execute(text("ALTER TABLE records ADD COLUMN write_seq INTEGER"))
    conn.execute(text("CREATE INDEX ix_records_kind_seq ON records (kind, write_seq)"))
    conn.execute(insert(tables["sequences"]).values(name=RECORDS_SEQUENCE, value=0))


def next_write_seq(conn: Connection, sequences: Table) -> int:
    """The next records write sequence, inside the caller's transaction."""
    conn.execute(update(sequences).where(sequences.c.name == RECORDS_SEQUENCE)
                 .values(value=sequences.c.value + 1))
    return int(conn.execute(select(sequences.c.value).where(sequences.c.name == RECORDS_SEQUENCE)).scalar_one())


Extract = Callable[[Mapping[str, Any]], Mapping[str, Any]]


class RecordFrames:
    """Store method for the cached record tables (mixed into `sync.store.Store`)."""

    engine: Any
    cache_tables: dict[str, Table]  # records, sequences, record_frames
    _insert: Callable[[Table], Any]

    def record_frame(self, kind: str, columns: list[str], extract: Extract, name: str,
                     include_deleted: bool = True, finish: Callable[[pd.DataFrame], pd.DataFrame] | None = None
                     ) -> pd.DataFrame:
        """The records of `kind` as a table: BASE_COLUMNS plus `columns`, filled by `extract(payload)`
        (a dict with those keys) and then `finish(table)` (e.g. parsing times, once, before storing).
        `name` identifies the extraction: change it whenever `extract` or `finish` changes, and the
        table is rebuilt. A full build comes by (source, source_id); records written since come last,
        in no set order: callers must not depend on the order. Reads only the records written since the stored table,
        and stores the result when anything changed."""
        r, frames = self.cache_tables["records"], self.cache_tables["record_frames"]
        key = f"{kind}:{name}"
        with self.engine.connect() as conn:
            row = conn.execute(select(frames.c.through_seq, frames.c.blob).where(frames.c.name == key)).first()
        through = int(row[0]) if row else -1
        cached = _unpack(row[1]) if row else None
        if cached is not None and list(cached.columns) != BASE_COLUMNS + columns:
            cached, through = None, -1
        query = select(r.c.source, r.c.source_id, r.c.deleted, r.c.updated_at, r.c.write_seq, r.c.payload).where(
            r.c.kind == kind)
        if cached is not None:  # what was written since: a range of the (kind, write_seq) index
            query = query.where(r.c.write_seq > through)
        else:  # everything, in the order of the (kind, source, source_id) index
            query = query.order_by(r.c.source, r.c.source_id)
        rows, latest = [], through
        with self.engine.connect() as conn:
            for source, source_id, deleted, updated_at, seq, payload in conn.execute(query).yield_per(20_000):
                if isinstance(payload, str):
                    payload = json.loads(payload)
                fields = extract(payload)
                rows.append((source, source_id, bool(deleted), updated_at, *(fields.get(c) for c in columns)))
                if seq is not None and seq > latest:
                    latest = seq
        fresh = pd.DataFrame(rows, columns=BASE_COLUMNS + columns)
        fresh["deleted"] = fresh["deleted"].astype(bool)  # also when there are no rows
        if finish is not None:
            fresh = finish(fresh)
        if cached is None:
            table = fresh
        elif not len(fresh):
            table = cached
        else:  # changed records replace their old rows; new ones come last
            gone = np.zeros(len(cached), dtype=bool)
            for source, ids in fresh.groupby("source", observed=True)["source_id"]:
                gone |= (cached["source"] == source).to_numpy() & cached["source_id"].isin(ids).to_numpy()
            table = pd.concat([cached[~gone], fresh], ignore_index=True)
        # a few changed records are cheaper to read again next time than the whole table is to store
        if cached is None or len(fresh) >= max(SAVE_AFTER, len(table) // 200):
            self._save_frame(key, max(latest, 0), table)
        return table if include_deleted else table[~table["deleted"]].reset_index(drop=True)

    def _save_frame(self, key: str, through: int, table: pd.DataFrame) -> None:
        from .store import utcnow

        frames = self.cache_tables["record_frames"]
        stmt = self._insert(frames).values(name=key, through_seq=through, built_at=utcnow(), blob=_pack(table))
        # a concurrent reader may have stored a newer table: never replace it with an older one
        stmt = stmt.on_conflict_do_update(
            index_elements=[frames.c.name],
            set_={"through_seq": stmt.excluded.through_seq, "built_at": stmt.excluded.built_at,
                  "blob": stmt.excluded.blob},
            where=stmt.excluded.through_seq >= frames.c.through_seq)
        with self.engine.begin() as conn:
            conn.execute(stmt)


def _pack(table: pd.DataFrame) -> bytes:
    """The table pickled, its repetitive text columns as categoricals: unpickling a column of
    strings costs a string object each, a categorical's codes cost nothing."""
    dtypes = {}
    packed = table.copy(deep=False)
    for column in table.columns:
        values = table[column]
        if isinstance(values.dtype, pd.StringDtype):  # text only: NaN comes back as it went
            # a sample first: counting the distinct values of an id column costs as much as the pickle
            if values.iloc[:2000].nunique() <= 500 and values.nunique() <= len(values) // 4:
                dtypes[column] = values.dtype
                packed[column] = values.astype("category")
    buffer = io.BytesIO()
    pickle.dump({"table": packed, "dtypes": dtypes}, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    return buffer.getvalue()


def _unpack(blob: bytes) -> pd.DataFrame | None:
    stored = pickle.loads(blob)
    if not isinstance(stored, dict) or "table" not in stored:
        return None  # an older layout: rebuild
    table = stored["table"]
    for column, dtype in stored["dtypes"].items():
        table[column] = table[column].astype(dtype)
    return table
