"""The state store: canonical records, sync cursors, run history and quarantined records.

SQLAlchemy 2 Core on SQLite (the default; WAL mode and a busy timeout so a scheduler and a CLI can
share the file) or PostgreSQL (`postgresql+psycopg://...`). Every timestamp is stored and returned
as an aware UTC datetime; a naive datetime is refused rather than guessed at.

Schema (version 1)
------------------
schema_version  version INT, applied_at TIMESTAMP: one row per applied migration; max = current.
records         source, kind, source_id   (primary key) e.g. ("salesforce", "account", "001...")
                updated_at TIMESTAMP NULL  the source's own modification time
                deleted BOOL               deleted/archived in the source
                payload JSON               the canonical record (docs: DESIGN.md "Canonical records")
                first_seen_run, last_seen_run INT NULL   runs.id that first/last delivered it
                index (kind, source, source_id)
cursors         source, stream (primary key), value TEXT (opaque to the store), updated_at
runs            id INT autoincrement, job, started_at, finished_at NULL,
                status ("running" | "ok" | "partial" | "failed"), counts JSON ({stream: n, ...}),
                api_calls, writes, errors INT, message TEXT NULL (scrubbed of secrets)
                index (job, started_at)
quarantine      id INT autoincrement, run_id INT NULL, source, kind, source_id NULL, reason TEXT,
                raw TEXT (the offending record as JSON, cut at RAW_LIMIT characters), at TIMESTAMP
                index (run_id)

Schema (version 2: identity unification, see sync/identity.py)
---------------------------------------------------------------
identity_accounts   unified_id PK, name, domain, country, parent_unified_id NULL, sources (comma list),
                    members INT, status ("live" | "merged" | "retired"), redirect_to NULL (the survivor
                    a merged id points to), created_at, updated_at
identity_links      source, kind, source_id (PK: one row per account-level record) -> unified_id,
                    method, confidence FLOAT, status ("accepted" | "review" | "override"), updated_at;
                    index (unified_id)
identity_people     source, kind, source_id (PK: a contact) -> unified_id NULL, email, method, updated_at
                    (no index on unified_id: read whole)
identity_review     left_source, left_id, right_source, right_id (PK: a candidate pair not merged),
                    left_unified_id, right_unified_id, left_name, right_name, method, confidence,
                    reason, created_at
identity_conflicts  kind, subject (PK, e.g. ("shared_domain", "acme.com")), detail JSON, first_seen_at,
                    updated_at (when its detail last changed)
identity_events     id autoincrement, at, event ("new" | "merge" | "split" | "retire" | "unlink"),
                    unified_id, other_id NULL, detail JSON; index (unified_id)
identity_decisions  left_source, left_id, right_source, right_id (PK), relation ("same" | "not_same"),
                    origin, decided_at: review decisions imported back (overrides kept in the store)
identity_state      name PK, value JSON, updated_at (e.g. the store marker seen at the last unification)

Schema (version 3: product usage in its own typed table)
--------------------------------------------------------
usage_days          source, day DATE, account_ref (primary key: one row per source account and day; a
                    usage record's source_id is "{account_ref}|{day}", so it is not stored)
                    updated_at TIMESTAMP NULL, deleted BOOL, first_seen_run, last_seen_run INT NULL (as in
                    records), metrics JSON ({name: value} as the connector gave them), extra JSON NULL (the
                    payload's other fields, e.g. Stripe's meter ids), and one FLOAT NULL column per canonical
                    metric: active_users, sessions, events, features_used, api_calls (`USAGE_METRIC_COLUMNS`
                    maps metric names onto them; other metrics stay in `metrics` only). SQLite keeps it
                    WITHOUT ROWID, clustered on the key, so a day window of one source is one range read.
                    Records of kind "usage" live here, not in `records`; every record method
                    (upsert_records, get_record, iter_records, count_records, records_marker, iter_fields)
                    covers them transparently, the payload rebuilt from the columns (its source, kind,
                    source_id, updated_at, deleted, account_ref, day and metrics, plus `extra`).
                    `usage_frame` reads a day window as a DataFrame. The v3 migration folds the old
                    per-metric usage records ("{account}|{day}|{metric}") into these rows and removes
                    them from `records`.

Version 4 adds the scoring tables (store_scores.py); version 5 a packed copy of usage_days, one row
of arrays per source and day, which `usage_frame` reads (store_usage.py); version 6 a write sequence
on records and typed tables extracted from them, refreshed from what changed (store_cache.py).

Migrations: `MIGRATIONS` is an ordered list of functions taking a Connection; the store applies
the ones past its recorded version inside one transaction. A schema change appends a migration
and edits the `Table` objects below; migration functions never change once released.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any

from sqlalchemy import (JSON, Boolean, Column, Date, DateTime, Engine, Float, Index, Integer, MetaData,
                        PrimaryKeyConstraint, String, Table, Text, and_, bindparam, case, create_engine, delete,
                        event, func, insert, literal, or_, select, tuple_, update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.types import TypeDecorator

from ..log import register_secret, scrub
from . import store_cache, store_scores, store_usage
from .store_usage import USAGE_COLUMNS, USAGE_METRIC_COLUMNS
from .store_usage import as_day as _as_day

DEFAULT_STORE_URL = "sqlite:///.rhub/hub.db"
RAW_LIMIT = 10_000
RUN_STATUSES = ("running", "ok", "partial", "failed")
_PG_LOCK_KEY = 0x72687562  # "rhub": serialises migrations between processes on PostgreSQL
_SQLITE_BUSY_MS = 30_000


class StoreError(Exception):
    """The store cannot be used as it is (e.g. its schema is newer than this code)."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every dialect."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            raise ValueError("naive datetime: the store keeps UTC, pass an aware datetime")
        value = value.astimezone(timezone.utc)
        # SQLite has no time zone type: keep naive UTC text, which also sorts correctly
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"))


JSONType = JSON().with_variant(JSONB(), "postgresql")
JSONOrNull = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")  # None -> SQL NULL



# -- schema --------------------------------------------------------------------------------------


def _define_v1(md: MetaData) -> dict[str, Table]:
    """The version-1 tables, bound to `md`."""
    return {
        "schema_version": Table(
            "schema_version", md,
            Column("version", Integer, primary_key=True, autoincrement=False),
            Column("applied_at", UTCDateTime, nullable=False)),
        "records": Table(
            "records", md,
            Column("source", String(32), primary_key=True),
            Column("kind", String(32), primary_key=True),
            Column("source_id", String(255), primary_key=True),
            Column("updated_at", UTCDateTime, nullable=True),
            Column("deleted", Boolean, nullable=False, default=False),
            Column("payload", JSONType, nullable=False),
            Column("first_seen_run", Integer, nullable=True),
            Column("last_seen_run", Integer, nullable=True),
            # serves kind/source filters and the keyset order of iter_records without a sort
            Index("ix_records_kind_source_id", "kind", "source", "source_id")),
        "cursors": Table(
            "cursors", md,
            Column("source", String(32), primary_key=True),
            Column("stream", String(64), primary_key=True),
            Column("value", Text, nullable=True),
            Column("updated_at", UTCDateTime, nullable=False)),
        "runs": Table(
            "runs", md,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("job", String(64), nullable=False),
            Column("started_at", UTCDateTime, nullable=False),
            Column("finished_at", UTCDateTime, nullable=True),
            Column("status", String(16), nullable=False),
            Column("counts", JSONType, nullable=False),
            Column("api_calls", Integer, nullable=False, default=0),
            Column("writes", Integer, nullable=False, default=0),
            Column("errors", Integer, nullable=False, default=0),
            Column("message", Text, nullable=True),
            Index("ix_runs_job_started", "job", "started_at")),
        "quarantine": Table(
            "quarantine", md,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("run_id", Integer, nullable=True),
            Column("source", String(32), nullable=False),
            Column("kind", String(32), nullable=False),
            Column("source_id", String(255), nullable=True),
            Column("reason", Text, nullable=False),
            Column("raw", Text, nullable=True),
            Column("at", UTCDateTime, nullable=False),
            Index("ix_quarantine_run", "run_id")),
    }


def _migrate_v1(conn: Connection) -> None:
    """Create the first schema (its own MetaData, so later edits to the live tables cannot change it)."""
    md = MetaData()
    _define_v1(md)
    md.create_all(conn, checkfirst=True)


def _define_v2(md: MetaData) -> dict[str, Table]:
    """The identity tables added by version 2, bound to `md`."""
    uid = 32  # "u_" + 12 hex today; room for ids an admin pins by hand
    return {
        "identity_accounts": Table(
            "identity_accounts", md,
            Column("unified_id", String(uid), primary_key=True),
            Column("name", Text, nullable=True),
            Column("domain", String(255), nullable=True),
            Column("country", String(64), nullable=True),
            Column("parent_unified_id", String(uid), nullable=True),
            Column("sources", String(255), nullable=False, default=""),
            Column("members", Integer, nullable=False, default=0),
            Column("status", String(16), nullable=False),
            Column("redirect_to", String(uid), nullable=True),
            Column("created_at", UTCDateTime, nullable=False),
            Column("updated_at", UTCDateTime, nullable=False)),
        "identity_links": Table(
            "identity_links", md,
            Column("source", String(32), primary_key=True),
            Column("kind", String(32), primary_key=True),
            Column("source_id", String(255), primary_key=True),
            Column("unified_id", String(uid), nullable=False),
            Column("method", String(32), nullable=False),
            Column("confidence", Float, nullable=False),
            Column("status", String(16), nullable=False),
            Column("updated_at", UTCDateTime, nullable=False),
            Index("ix_identity_links_unified", "unified_id")),
        "identity_people": Table(
            "identity_people", md,
            Column("source", String(32), primary_key=True),
            Column("kind", String(32), primary_key=True),
            Column("source_id", String(255), primary_key=True),
            Column("unified_id", String(uid), nullable=True),
            Column("email", String(320), nullable=True),
            # no index on unified_id: people are read whole (identity.people_map), and an index in
            # hash order costs more to keep than the million-row table it would serve
            Column("method", String(32), nullable=False),
            Column("updated_at", UTCDateTime, nullable=False)),
        "identity_review": Table(
            "identity_review", md,
            Column("left_source", String(32), primary_key=True),
            Column("left_id", String(255), primary_key=True),
            Column("right_source", String(32), primary_key=True),
            Column("right_id", String(255), primary_key=True),
            Column("left_unified_id", String(uid), nullable=False),
            Column("right_unified_id", String(uid), nullable=False),
            Column("left_name", Text, nullable=True),
            Column("right_name", Text, nullable=True),
            Column("method", String(32), nullable=False),
            Column("confidence", Float, nullable=False),
            Column("reason", Text, nullable=True),
            Column("created_at", UTCDateTime, nullable=False)),
        "identity_conflicts": Table(
            "identity_conflicts", md,
            Column("kind", String(32), primary_key=True),
            Column("subject", String(512), primary_key=True),
            Column("detail", JSONType, nullable=False),
            Column("first_seen_at", UTCDateTime, nullable=False),
            Column("updated_at", UTCDateTime, nullable=False)),
        "identity_events": Table(
            "identity_events", md,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("at", UTCDateTime, nullable=False),
            Column("event", String(16), nullable=False),
            Column("unified_id", String(uid), nullable=False),
            Column("other_id", String(uid), nullable=True),
            Column("detail", JSONType, nullable=False),
            Index("ix_identity_events_unified", "unified_id")),
        "identity_decisions": Table(
            "identity_decisions", md,
            Column("left_source", String(32), primary_key=True),
            Column("left_id", String(255), primary_key=True),
            Column("right_source", String(32), primary_key=True),
            Column("right_id", String(255), primary_key=True),
            Column("relation", String(16), nullable=False),
            Column("origin", String(64), nullable=False),
            Column("decided_at", UTCDateTime, nullable=False)),
        "identity_state": Table(
            "identity_state", md,
            Column("name", String(64), primary_key=True),
            Column("value", JSONType, nullable=False),
            Column("updated_at", UTCDateTime, nullable=False)),
    }


def _migrate_v2(conn: Connection) -> None:
    """Identity unification tables (own MetaData, like v1)."""
    md = MetaData()
    _define_v2(md)
    md.create_all(conn, checkfirst=True)


def _define_v3(md: MetaData) -> dict[str, Table]:
    """The typed usage table added by version 3, bound to `md`."""
    return {
        "usage_days": Table(
            "usage_days", md,
            Column("source", String(32), nullable=False),
            Column("day", Date, nullable=False),
            Column("account_ref", String(255), nullable=False),
            Column("updated_at", UTCDateTime, nullable=True),
            Column("deleted", Boolean, nullable=False, default=False),
            Column("metrics", JSONType, nullable=False),
            Column("extra", JSONOrNull, nullable=True),
            Column("first_seen_run", Integer, nullable=True),
            Column("last_seen_run", Integer, nullable=True),
            *[Column(name, Float, nullable=True) for name in
              ("active_users", "sessions", "events", "features_used", "api_calls")],
            # (source, day, ...) first: a day window of a source is one range of the key, and a sync's
            # day-by-day writes append to it
            PrimaryKeyConstraint("source", "day", "account_ref"),
            sqlite_with_rowid=False)}


# v3's mapping of metric names onto its typed columns, frozen here for the migration
_V3_METRIC_COLUMNS = {"active_users": "active_users", "sessions": "sessions", "events": "events",
                      "features_used": "features_used", "api_calls": "api_calls", "api_call": "api_calls"}


def _migrate_v3(conn: Connection) -> None:
    """The usage_days table; the per-metric usage records ("{account}|{day}|{metric}") are folded into
    one row per source, account and day, and leave `records`."""
    md = MetaData()
    old = _define_v1(md)["records"]
    usage = _define_v3(md)["usage_days"]
    usage.create(conn, checkfirst=True)
    account, day = old.c.payload["account_ref"].as_string(), old.c.payload["day"].as_string()
    # ordered by the target key, so each row's records arrive together and memory stays bounded
    query = (select(old.c.source, old.c.source_id, old.c.updated_at, old.c.deleted, old.c.payload,
                    old.c.first_seen_run, old.c.last_seen_run)
             .where(old.c.kind == "usage").order_by(old.c.source, account, day, old.c.source_id))
    batch: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for rec in conn.execute(query, execution_options={"yield_per": 10_000}):
        payload = dict(rec.payload or {})
        parts = rec.source_id.split("|")
        ref = str(payload.get("account_ref") or parts[0])
        when = str(payload.get("day") or (parts[1] if len(parts) > 1 else ""))[:10]
        key = (rec.source, when, ref)
        if current is None or current["_key"] != key:
            if current is not None:
                batch.append(_v3_row(current))
                if len(batch) >= 5_000:
                    conn.execute(insert(usage), batch)
                    batch = []
            current = {"_key": key, "source": rec.source, "day": date.fromisoformat(when), "account_ref": ref,
                       "updated_at": None, "deleted": True, "metrics": {}, "extra": {},
                       "first_seen_run": None, "last_seen_run": None}
        current["updated_at"] = max((t for t in (current["updated_at"], rec.updated_at) if t is not None),
                                    default=None)
        current["deleted"] = current["deleted"] and bool(rec.deleted)
        current["first_seen_run"] = min((r for r in (current["first_seen_run"], rec.first_seen_run)
                                         if r is not None), default=None)
        current["last_seen_run"] = max((r for r in (current["last_seen_run"], rec.last_seen_run)
                                        if r is not None), default=None)
        if isinstance(payload.get("metrics"), dict):
            current["metrics"].update(payload["metrics"])
        elif payload.get("metric") is not None:
            current["metrics"][str(payload["metric"])] = payload.get("value")
        if payload.get("meter_id"):
            current["extra"].setdefault("meter_ids", [])
            if payload["meter_id"] not in current["extra"]["meter_ids"]:
                current["extra"]["meter_ids"] = sorted([*current["extra"]["meter_ids"], payload["meter_id"]])
        for name, value in payload.items():
            if name not in _V3_OLD_FIELDS:
                current["extra"][name] = value
    if current is not None:
        batch.append(_v3_row(current))
    if batch:
        conn.execute(insert(usage), batch)
    conn.execute(delete(old).where(old.c.kind == "usage"))


# fields of the old per-metric usage payload that v3 keeps in its columns
_V3_OLD_FIELDS = frozenset({"source", "kind", "source_id", "updated_at", "deleted", "account_ref", "day", "metric",
                            "value", "metrics", "meter_id"})


def _v3_row(group: dict[str, Any]) -> dict[str, Any]:
    row = {k: v for k, v in group.items() if k != "_key"}
    row["extra"] = row["extra"] or None
    typed: dict[str, float | None] = {c: None for c in set(_V3_METRIC_COLUMNS.values())}
    for name, value in row["metrics"].items():
        column = _V3_METRIC_COLUMNS.get(name)
        if column and isinstance(value, (int, float)) and not isinstance(value, bool):
            typed[column] = (typed[column] or 0.0) + float(value)
    return {**row, **typed}


def _define_v4(md: MetaData) -> dict[str, Table]:
    """The scoring stage's tables (models, scores, playbook assignments, episodes and tasks)."""
    return store_scores.define(md, JSONType, UTCDateTime)


def _migrate_v4(conn: Connection) -> None:
    md = MetaData()
    _define_v4(md)
    md.create_all(conn, checkfirst=True)


def _migrate_v5(conn: Connection) -> None:
    """The packed copy of usage_days (see store_usage.py), every stored day marked stale."""
    store_usage.migrate(conn, _define_v3(MetaData())["usage_days"])


def _migrate_v6(conn: Connection) -> None:
    """records.write_seq and the cached record tables (see store_cache.py)."""
    store_cache.migrate(conn, UTCDateTime)


MIGRATIONS: list[Callable[[Connection], None]] = [_migrate_v1, _migrate_v2, _migrate_v3, _migrate_v4, _migrate_v5,
                                                  _migrate_v6]
SCHEMA_VERSION = len(MIGRATIONS)

# The live schema, used by the queries below: version 1, the identity tables of version 2, usage_days of 3,
# the scoring tables of 4, packed usage of 5, records' write sequence and the cached record tables of 6.
metadata = MetaData()
_tables = {**_define_v1(metadata), **_define_v2(metadata), **_define_v3(metadata), **_define_v4(metadata),
           **store_usage.define(metadata), **store_cache.define(metadata, UTCDateTime)}
store_cache.extend_records(_tables["records"])
SCORE_TABLES: dict[str, Table] = {name: _tables[name] for name in
                                  ("models", "scores", "playbook_assignments", "playbook_episodes", "playbook_tasks")}
schema_version_table = _tables["schema_version"]
records = _tables["records"]
cursors = _tables["cursors"]
runs = _tables["runs"]
quarantine = _tables["quarantine"]
usage_days = _tables["usage_days"]
IDENTITY_TABLES: dict[str, Table] = {name: t for name, t in _tables.items() if name.startswith("identity_")}
USAGE = "usage"  # the record kind kept in usage_days
# payload fields of a usage record that usage_days keeps in its own columns (the rest go to `extra`)
_USAGE_FIELDS = frozenset({"source", "kind", "source_id", "updated_at", "deleted", "account_ref", "day", "metrics"})


@dataclass(frozen=True)
class Run:
    id: int
    job: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    counts: dict[str, Any]
    api_calls: int
    writes: int
    errors: int
    message: str | None


@dataclass(frozen=True)
class QuarantinedRecord:
    id: int
    run_id: int | None
    source: str
    kind: str
    source_id: str | None
    reason: str
    raw: str | None
    at: datetime


# -- the store -----------------------------------------------------------------------------------


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets its directory created, WAL mode and a busy timeout."""
    parsed = make_url(url)
    if parsed.password:
        register_secret(str(parsed.password))
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, json_serializer=_dumps, pool_pre_ping=True)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
    if not in_memory and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, json_serializer=_dumps,
                           connect_args={"timeout": _SQLITE_BUSY_MS / 1000})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        if not in_memory:
            cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
            cur.execute("PRAGMA synchronous=NORMAL")  # safe with WAL, much faster commits
        cur.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
        cur.close()

    return engine


class Store(store_scores.ScoreTables, store_usage.UsageTables, store_cache.RecordFrames):
    """Access to the state store at `url`; creates or migrates the schema on first use."""

    tables = SCORE_TABLES  # for the scoring methods of store_scores.ScoreTables
    usage_tables = {name: _tables[name] for name in ("usage_days", "usage_packed", "usage_refs")}
    cache_tables = {name: _tables[name] for name in ("records", "sequences", "record_frames")}

    def __init__(self, url: str = DEFAULT_STORE_URL) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._dialect = self.engine.dialect.name
        try:
            self._migrate()
        except Exception:
            self.engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"Store({make_url(self.url).render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- schema --------------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self.engine.begin() as conn:
            if self._dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
            schema_version_table.create(conn, checkfirst=True)
            current, latest = self._version(conn), len(MIGRATIONS)
            if current > latest:
                raise StoreError(
                    f"the store at {make_url(self.url).render_as_string(hide_password=True)} has schema "
                    f"version {current}, but this version of retention-hub knows only up to "
                    f"{latest}; upgrade retention-hub (or point store.url at another database)")
            for version in range(current + 1, latest + 1):
                MIGRATIONS[version - 1](conn)
                conn.execute(insert(schema_version_table).values(version=version, applied_at=utcnow()))

    @staticmethod
    def _version(conn: Connection) -> int:
        return conn.execute(select(func.max(schema_version_table.c.version))).scalar() or 0

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return self._version(conn)

    # -- records -------------------------------------------------------------------------------

    def _insert(self, table: Table) -> Any:
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        if self._dialect == "sqlite":
            return sqlite.insert(table)
        raise StoreError(f"unsupported database {self._dialect!r}: use SQLite or PostgreSQL")

    def upsert_records(self, rows: Iterable[Mapping[str, Any]], run_id: int | None = None) -> int:
        """Insert or update canonical records; returns how many distinct records were written.

        Each row needs source, kind, source_id, payload; updated_at (aware datetime or ISO text)
        and deleted are optional. A row older than the stored version (by updated_at) does not
        replace it, so replays and look-back windows are harmless; last_seen_run moves anyway.
        """
        latest: dict[tuple[str, str, str], dict[str, Any]] = {}
        usage: list[Mapping[str, Any]] = []
        for row in rows:
            if row["kind"] == USAGE:
                usage.append(row)
                continue
            key = (str(row["source"]), str(row["kind"]), str(row["source_id"]))
            item = {"source": key[0], "kind": key[1], "source_id": key[2],
                    "updated_at": _as_utc(row.get("updated_at")), "deleted": bool(row.get("deleted", False)),
                    "payload": row["payload"], "first_seen_run": run_id, "last_seen_run": run_id}
            seen = latest.get(key)
            # within one batch keep the newest version (a statement may not touch a row twice)
            if seen is None or _not_older(item["updated_at"], seen["updated_at"]):
                latest[key] = item
        written = self._upsert_usage(usage, run_id) if usage else 0
        if not latest:
            return written
        stmt = self._insert(records)
        new = stmt.excluded
        newer = or_(new.updated_at.is_(None), records.c.updated_at.is_(None),
                    new.updated_at >= records.c.updated_at)
        stmt = stmt.on_conflict_do_update(
            index_elements=[records.c.source, records.c.kind, records.c.source_id],
            set_={"updated_at": case((newer, new.updated_at), else_=records.c.updated_at),
                  "deleted": case((newer, new.deleted), else_=records.c.deleted),
                  "payload": case((newer, new.payload), else_=records.c.payload),
                  "write_seq": case((newer, new.write_seq), else_=records.c.write_seq),
                  "last_seen_run": func.coalesce(new.last_seen_run, records.c.last_seen_run)})
        with self.engine.begin() as conn:
            seq = store_cache.next_write_seq(conn, _tables["sequences"])  # what changed, for cached tables
            for item in latest.values():
                item["write_seq"] = seq
            conn.execute(stmt, list(latest.values()))
        return written + len(latest)

    def _upsert_usage(self, rows: list[Mapping[str, Any]], run_id: int | None) -> int:
        """Usage records into usage_days, with the same newer-wins rule as `records`. Rows go through
        the driver's executemany (`_bulk`): a first sync writes one row per account and day."""
        latest: dict[tuple[str, date, str], dict[str, Any]] = {}
        seen_values: dict[Any, Any] = {}  # a page's few distinct days and times, parsed once each
        for row in rows:
            item = _usage_row(row, run_id, seen_values)
            key = (item["source"], item["day"], item["account_ref"])
            seen = latest.get(key)
            if seen is None or _not_older(item["updated_at"], seen["updated_at"]):
                latest[key] = item
        stmt = self._insert(usage_days)
        new = stmt.excluded
        newer = or_(new.updated_at.is_(None), usage_days.c.updated_at.is_(None),
                    new.updated_at >= usage_days.c.updated_at)
        replaced = ("updated_at", "deleted", "metrics", "extra", *USAGE_COLUMNS)
        stmt = stmt.on_conflict_do_update(
            index_elements=[usage_days.c.source, usage_days.c.day, usage_days.c.account_ref],
            set_={**{name: case((newer, new[name]), else_=usage_days.c[name]) for name in replaced},
                  "last_seen_run": func.coalesce(new.last_seen_run, usage_days.c.last_seen_run)})
        with self.engine.begin() as conn:
            for batch in _chunks(list(latest.values()), 50_000):
                self._bulk(conn, stmt, batch)
            self._mark_usage_stale(conn, ((source, day) for source, day, _ in latest))
        return len(latest)

    def get_record(self, source: str, kind: str, source_id: str) -> dict[str, Any] | None:
        if kind == USAGE:
            try:
                account, day = _usage_key(source_id)
            except ValueError:
                return None
            with self.engine.connect() as conn:
                row = conn.execute(select(usage_days).where(
                    usage_days.c.source == source, usage_days.c.day == day,
                    usage_days.c.account_ref == account)).first()
            return _usage_record(row) if row else None
        with self.engine.connect() as conn:
            row = conn.execute(select(records).where(
                records.c.source == source, records.c.kind == kind, records.c.source_id == source_id)).first()
        return dict(row._mapping) if row else None

    def iter_records(self, kind: str | None = None, source: str | None = None,
                     include_deleted: bool = False, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Records ordered by (kind, source, source_id), read in keyset-paginated batches, so memory
        stays bounded and no connection is held while the caller works on a batch. Usage records
        (kept in usage_days) come in their table's order within a source: by day, then account."""
        groups = select(records.c.kind, records.c.source).where(
            *self._filters(kind, source, include_deleted)).distinct().order_by(records.c.kind, records.c.source)
        with self.engine.connect() as conn:
            pairs = [tuple(p) for p in conn.execute(groups).all()]
        if kind in (None, USAGE):
            pairs = sorted(set(pairs) | {(USAGE, s) for s in self.usage_sources() if source in (None, s)})
        for group_kind, group_source in pairs:
            if group_kind == USAGE:
                yield from self._iter_usage(group_source, include_deleted, batch_size)
                continue
            # per (kind, source) the keyset is one column: an index range scan, never a re-scan
            last: str | None = None
            while True:
                query = select(records).where(*self._filters(group_kind, group_source, include_deleted))
                if last is not None:
                    query = query.where(records.c.source_id > last)
                query = query.order_by(records.c.source_id).limit(batch_size)
                with self.engine.connect() as conn:
                    page = [r._asdict() for r in conn.execute(query)]
                yield from page
                if len(page) < batch_size:
                    break
                last = page[-1]["source_id"]

    def _iter_usage(self, source: str, include_deleted: bool, batch_size: int) -> Iterator[dict[str, Any]]:
        t = usage_days
        last: tuple[date, str] | None = None
        while True:
            query = select(t).where(*self._usage_filters(source, include_deleted))
            if last is not None:  # keyset on (day, account_ref); the plain `day >=` bounds the key range
                query = query.where(t.c.day >= last[0], or_(t.c.day > last[0], and_(t.c.day == last[0],
                                                                                   t.c.account_ref > last[1])))
            with self.engine.connect() as conn:
                page = conn.execute(query.order_by(t.c.day, t.c.account_ref).limit(batch_size)).all()
            yield from (_usage_record(row) for row in page)
            if len(page) < batch_size:
                return
            last = (page[-1].day, page[-1].account_ref)

    def count_records(self, kind: str | None = None, source: str | None = None,
                      include_deleted: bool = False) -> int:
        query = select(func.count()).select_from(records).where(*self._filters(kind, source, include_deleted))
        with self.engine.connect() as conn:
            total = int(conn.execute(query).scalar() or 0)
            if kind in (None, USAGE):
                total += int(conn.execute(select(func.count()).select_from(usage_days).where(
                    *self._usage_filters(source, include_deleted))).scalar() or 0)
        return total

    @staticmethod
    def _usage_filters(source: str | None, include_deleted: bool) -> list[Any]:
        out = []
        if source is not None:
            out.append(usage_days.c.source == source)
        if not include_deleted:
            out.append(usage_days.c.deleted.is_(False))
        return out

    @staticmethod
    def _filters(kind: str | None, source: str | None, include_deleted: bool) -> list[Any]:
        out = []
        if kind is not None:
            out.append(records.c.kind == kind)
        if source is not None:
            out.append(records.c.source == source)
        if not include_deleted:
            out.append(records.c.deleted.is_(False))
        return out

    # -- cursors -------------------------------------------------------------------------------

    def get_cursor(self, source: str, stream: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(cursors.c.value).where(
                cursors.c.source == source, cursors.c.stream == stream)).scalar()

    def set_cursor(self, source: str, stream: str, value: str | None) -> None:
        stmt = self._insert(cursors).values(source=source, stream=stream, value=value, updated_at=utcnow())
        stmt = stmt.on_conflict_do_update(index_elements=[cursors.c.source, cursors.c.stream],
                                          set_={"value": stmt.excluded.value,
                                                "updated_at": stmt.excluded.updated_at})
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def all_cursors(self) -> dict[tuple[str, str], str | None]:
        with self.engine.connect() as conn:
            return {(r.source, r.stream): r.value for r in conn.execute(select(cursors))}

    # -- runs ----------------------------------------------------------------------------------

    def start_run(self, job: str) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(insert(runs).values(job=job, started_at=utcnow(), status="running",
                                                      counts={}, api_calls=0, writes=0, errors=0))
            return int(result.inserted_primary_key[0])

    def finish_run(self, run_id: int, status: str = "ok", counts: Mapping[str, Any] | None = None,
                   api_calls: int = 0, writes: int = 0, errors: int = 0, message: str | None = None) -> None:
        if status not in RUN_STATUSES or status == "running":
            raise ValueError(f"status must be one of ok, partial, failed; got {status!r}")
        values = {"finished_at": utcnow(), "status": status, "counts": dict(counts or {}),
                  "api_calls": api_calls, "writes": writes, "errors": errors,
                  "message": scrub(message)[:4000] if message else None}
        with self.engine.begin() as conn:
            if conn.execute(update(runs).where(runs.c.id == run_id).values(**values)).rowcount != 1:
                raise KeyError(f"no run with id {run_id}")

    def get_run(self, run_id: int) -> Run | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
        return Run(**row._mapping) if row else None

    def list_runs(self, limit: int = 20, job: str | None = None) -> list[Run]:
        """The most recent runs first."""
        query = select(runs).order_by(runs.c.id.desc()).limit(limit)
        if job is not None:
            query = query.where(runs.c.job == job)
        with self.engine.connect() as conn:
            return [Run(**r._mapping) for r in conn.execute(query)]

    # -- quarantine ----------------------------------------------------------------------------

    def add_quarantine(self, run_id: int | None, source: str, kind: str, source_id: str | None,
                       reason: str, raw: Any = None) -> int:
        """Keep a record that could not be processed, with why; the sync goes on without it."""
        text = None
        if raw is not None:
            try:
                text = raw if isinstance(raw, str) else json.dumps(raw, default=str, sort_keys=True)
            except (TypeError, ValueError):
                text = repr(raw)
            text = scrub(text)
            if len(text) > RAW_LIMIT:
                text = text[:RAW_LIMIT] + f"...[truncated {len(text) - RAW_LIMIT} characters]"
        with self.engine.begin() as conn:
            result = conn.execute(insert(quarantine).values(
                run_id=run_id, source=source, kind=kind,
                source_id=None if source_id is None else str(source_id)[:255],
                reason=scrub(reason)[:2000], raw=text, at=utcnow()))
            return int(result.inserted_primary_key[0])

    def list_quarantine(self, run_id: int | None = None, limit: int = 100) -> list[QuarantinedRecord]:
        query = select(quarantine).order_by(quarantine.c.id.desc()).limit(limit)
        if run_id is not None:
            query = query.where(quarantine.c.run_id == run_id)
        with self.engine.connect() as conn:
            return [QuarantinedRecord(**r._mapping) for r in conn.execute(query)]

    # -- identity (schema version 2; the logic lives in sync/identity.py) -------------------------

    def iter_fields(self, kind: str, fields: Sequence[str], source: str | None = None,
                    include_deleted: bool = False, batch_size: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
        """Batches of (source, source_id, *payload fields) of the records of `kind`, keyset-paginated.

        The database extracts the fields, so no whole payload is built in Python, and rows come
        straight from the driver; every value is text or None (a JSON object or list as its JSON
        text, a number as its digits).
        """
        if kind == USAGE:  # usage_days has no payload column: rebuilt rows, fields as text
            yield from _usage_fields(self.iter_records(USAGE, source, include_deleted, batch_size), fields,
                                     batch_size)
            return
        values = [records.c.payload[name].as_string() for name in fields]
        groups = select(records.c.source).where(*self._filters(kind, source, include_deleted)).distinct()
        with self.engine.connect() as conn:
            sources = sorted(conn.execute(groups).scalars())
        for group_source in sources:
            last: str | None = None
            while True:
                query = select(records.c.source, records.c.source_id, *values).where(
                    *self._filters(kind, group_source, include_deleted))
                if last is not None:
                    query = query.where(records.c.source_id > last)
                page = self._raw_rows(query.order_by(records.c.source_id).limit(batch_size))
                if page:
                    yield page
                if len(page) < batch_size:
                    break
                last = page[-1][1]

    def _raw_rows(self, query: Any) -> list[tuple[Any, ...]]:
        """All rows of a query of plain text/number columns as the driver returns them (no SQLAlchemy
        row objects: the identity tables and JSON fields are read by the hundred thousand)."""
        with self.engine.connect() as conn:
            result = conn.execute(query)
            try:
                return result.cursor.fetchall()  # the DBAPI cursor: SQLAlchemy bound the parameters
            finally:
                result.close()

    def records_marker(self, kinds: Sequence[str]) -> list[Any]:
        """Cheap aggregates over the records of `kinds` that move whenever one is added, changed or
        deleted by a sync: count, deleted count, max last_seen_run, max updated_at."""
        query = select(func.count(), func.sum(case((records.c.deleted.is_(True), 1), else_=0)),
                       func.max(records.c.last_seen_run), func.max(records.c.updated_at)).where(
            records.c.kind.in_(list(kinds)))
        with self.engine.connect() as conn:
            count, deleted, run, updated = conn.execute(query).one()
            if USAGE in kinds:
                t = usage_days
                more = conn.execute(select(func.count(), func.sum(case((t.c.deleted.is_(True), 1), else_=0)),
                                           func.max(t.c.last_seen_run), func.max(t.c.updated_at))).one()
                count, deleted = (count or 0) + (more[0] or 0), (deleted or 0) + (more[1] or 0)
                run = max((r for r in (run, more[2]) if r is not None), default=None)
                updated = max((u for u in (updated, more[3]) if u is not None), default=None)
        if isinstance(updated, datetime):
            updated = updated.isoformat()
        return [int(count or 0), int(deleted or 0), run, None if updated is None else str(updated)]

    def read_identity(self, table: str, columns: Sequence[str] | None = None) -> list[tuple[Any, ...]]:
        """All rows of one identity table (`identity_links`, ...) as tuples of `columns` (default: all)."""
        t = IDENTITY_TABLES[table]
        cols = [t.c[name] for name in columns] if columns else list(t.columns)
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(*cols)).fetchall()]

    def iter_identity(self, table: str, columns: Sequence[str], batch_size: int = 100_000) -> Iterator[list[tuple]]:
        """Batches of rows of one identity table, keyset-paginated on its primary key; only for plain
        text and number columns (values come straight from the driver)."""
        t = IDENTITY_TABLES[table]
        pk = [c for c in t.primary_key.columns]
        cols = [t.c[name] for name in columns]
        where: list[Any] = []
        while True:
            query = select(*pk, *cols).where(*where).order_by(*pk).limit(batch_size)
            page = self._raw_rows(query)
            if page:
                yield [row[len(pk):] for row in page]
            if len(page) < batch_size:
                return
            where = [tuple_(*pk) > tuple_(*[literal(v) for v in page[-1][:len(pk)]])]

    def identity_state(self, name: str) -> Any:
        t = IDENTITY_TABLES["identity_state"]
        with self.engine.connect() as conn:
            return conn.execute(select(t.c.value).where(t.c.name == name)).scalar()

    def write_identity(self, inserts: Mapping[str, Any] | None = None, upserts: Mapping[str, Any] | None = None,
                       deletes: Mapping[str, Any] | None = None, chunk: int = 20_000) -> int:
        """Apply changes to identity tables in one transaction; returns the rows touched.

        Per table name (as in `IDENTITY_TABLES`): `inserts` are new rows, `upserts` rows that may exist
        (every non-key column is replaced), `deletes` primary keys. Rows are an iterable of dicts or a
        pandas DataFrame (the fast way for large tables), written in chunks.
        """
        touched = 0
        with self.engine.begin() as conn:
            for name, keys in (deletes or {}).items():
                t = IDENTITY_TABLES[name]
                pk = [c.name for c in t.primary_key.columns]
                stmt = delete(t).where(*[t.c[c] == bindparam(f"k_{c}") for c in pk])
                for batch in _chunks(keys, chunk):
                    touched += self._bulk(conn, stmt, _prefixed(batch, pk), t)
            for name, rows in (inserts or {}).items():
                for batch in _chunks(rows, chunk):
                    touched += self._bulk(conn, insert(IDENTITY_TABLES[name]), batch)
            for name, rows in (upserts or {}).items():
                t = IDENTITY_TABLES[name]
                pk = [c.name for c in t.primary_key.columns]
                stmt = self._insert(t)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[t.c[c] for c in pk],
                    set_={c.name: stmt.excluded[c.name] for c in t.columns if c.name not in pk})
                for batch in _chunks(rows, chunk):
                    touched += self._bulk(conn, stmt, batch)
        return touched

    def _bulk(self, conn: Connection, stmt: Any, rows: Any, table: Table | None = None) -> int:
        """Execute `stmt` once per row through the driver's executemany, column by column: SQLAlchemy's
        per-row parameter processing costs more than the database's own work on the large identity
        tables. Values still pass through their columns' bind processors (UTC datetimes, JSON)."""
        data = _columns(rows)
        if not data or not len(next(iter(data.values()))):
            return 0
        dialect = self.engine.dialect
        compiled = stmt.compile(dialect=dialect, column_keys=list(data) if table is None else None)
        order = list(compiled.positiontup) if compiled.positional else list(compiled.bind_names.values())
        source = table if table is not None else stmt.table
        values = []
        for key in order:
            column = source.c[key.removeprefix("k_") if table is not None else key]
            process = column.type._cached_bind_processor(dialect)
            items = data[key]
            if process is not None:
                first = items[0]
                if all(v is first for v in items):  # one value for every row (this run's timestamp)
                    items = [process(first)] * len(items)
                elif isinstance(first, (date, datetime)):  # a page's few distinct days: each processed once
                    memo: dict[Any, Any] = {}
                    items = [memo[v] if v in memo else memo.setdefault(v, process(v)) for v in items]
                else:
                    items = [process(v) for v in items]
            values.append(items)
        params: list[Any] = list(zip(*values))
        if not compiled.positional:
            params = [dict(zip(order, p)) for p in params]
        conn.exec_driver_sql(str(compiled), params)
        return len(params)


def _usage_key(source_id: str, days: dict[Any, Any] | None = None) -> tuple[str, date]:
    """(account_ref, day) of a usage record's source_id "{account_ref}|{day}"."""
    account, _, text = str(source_id).rpartition("|")
    if not account:
        raise ValueError(f"usage source_id {source_id!r} is not '{{account_ref}}|{{day}}'")
    if days is None:
        return account, date.fromisoformat(text)
    day = days.get(text)
    if day is None:
        day = days[text] = date.fromisoformat(text)
    return account, day


def _usage_row(row: Mapping[str, Any], run_id: int | None, seen: dict[Any, Any]) -> dict[str, Any]:
    """A usage record as a usage_days row: key and metric columns, and the payload's other fields.
    `seen` holds the days and times parsed so far, so equal values are one object (see `_bulk`)."""
    payload = row.get("payload") or {}
    account, day = _usage_key(row["source_id"], seen)
    if str(payload.get("account_ref", account)) != account or str(payload.get("day", day))[:10] != day.isoformat():
        raise ValueError(f"usage record {row['source_id']!r}: its source_id must be "
                         f"'{{account_ref}}|{{day}}' of its payload ({payload.get('account_ref')!r}, "
                         f"{payload.get('day')!r})")
    metrics = payload.get("metrics") or {}
    if not isinstance(metrics, Mapping):
        raise ValueError(f"usage record {row['source_id']!r}: metrics must be an object, got {metrics!r}")
    updated = row.get("updated_at")
    if updated is not None:
        key = ("t", updated)
        updated = seen[key] if key in seen else seen.setdefault(key, _as_utc(updated))
    out: dict[str, Any] = {"source": str(row["source"]), "day": day, "account_ref": account,
                           "updated_at": updated, "deleted": bool(row.get("deleted", False)),
                           "metrics": dict(metrics), "extra": None,
                           "first_seen_run": run_id, "last_seen_run": run_id, **_NO_METRICS}
    if len(payload) > len(_USAGE_FIELDS) or not _USAGE_FIELDS.issuperset(payload):
        out["extra"] = {k: v for k, v in payload.items() if k not in _USAGE_FIELDS} or None
    for name, value in metrics.items():
        column = USAGE_METRIC_COLUMNS.get(name)
        if column and isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
            out[column] = float(value) if out[column] is None else out[column] + float(value)  # 2 names, 1 column
    return out


_NO_METRICS = dict.fromkeys(USAGE_COLUMNS)


def _usage_record(row: Any) -> dict[str, Any]:
    """A usage_days row as the record `records` would hold (payload rebuilt from the columns)."""
    day = row.day.isoformat()
    source_id = f"{row.account_ref}|{day}"
    payload = {"source": row.source, "kind": USAGE, "source_id": source_id,
               "updated_at": row.updated_at.isoformat() if row.updated_at else None, "deleted": bool(row.deleted),
               "account_ref": row.account_ref, "day": day, "metrics": row.metrics, **(row.extra or {})}
    return {"source": row.source, "kind": USAGE, "source_id": source_id, "updated_at": row.updated_at,
            "deleted": bool(row.deleted), "payload": payload, "first_seen_run": row.first_seen_run,
            "last_seen_run": row.last_seen_run}


def _usage_fields(recs: Iterator[dict[str, Any]], fields: Sequence[str],
                  batch_size: int) -> Iterator[list[tuple[Any, ...]]]:
    """iter_fields' batches for usage records: objects and lists as JSON text, numbers as digits."""
    def text(value: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        return _dumps(value) if isinstance(value, (dict, list, bool)) else str(value)

    while batch := [(r["source"], r["source_id"], *[text(r["payload"].get(f)) for f in fields])
                    for r in islice(recs, batch_size)]:
        yield batch


def _columns(rows: Any) -> dict[str, list[Any]]:
    """{column: values} from a DataFrame (missing values as None) or a list of dicts."""
    if hasattr(rows, "columns"):
        out = {}
        for name in rows.columns:
            column = rows[name]
            items = column.tolist()
            if column.isna().any():  # NaN (pandas' missing value) goes to the database as NULL
                items = [None if isinstance(v, float) and v != v else v for v in items]
            out[str(name)] = items
        return out
    rows = list(rows)
    return {name: [r[name] for r in rows] for name in rows[0]} if rows else {}


def _prefixed(keys: Any, pk: list[str]) -> dict[str, list[Any]] | list[dict[str, Any]]:
    data = _columns(keys)
    return [{f"k_{c}": v for c, v in zip(pk, row)} for row in zip(*(data[c] for c in pk))] if data else []


def _chunks(rows: Any, size: int) -> Iterator[Any]:
    """Slices of a DataFrame, or lists from any iterable."""
    if hasattr(rows, "iloc"):
        for start in range(0, len(rows), size):
            yield rows.iloc[start:start + size]
        return
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def _as_utc(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"updated_at must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        raise ValueError("updated_at is a naive datetime: the store keeps UTC, pass an aware datetime")
    return value.astimezone(timezone.utc)


def _not_older(candidate: datetime | None, current: datetime | None) -> bool:
    return candidate is None or current is None or candidate >= current
