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

Migrations: `MIGRATIONS` is an ordered list of functions taking a Connection; the store applies
the ones past its recorded version inside one transaction. A schema change appends a migration
and edits the `Table` objects below; migration functions never change once released.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import (JSON, Boolean, Column, DateTime, Engine, Float, Index, Integer, MetaData, String, Table,
                        Text, bindparam, case, create_engine, delete, event, func, insert, literal, or_, select,
                        tuple_, update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.types import TypeDecorator

from ..log import register_secret, scrub

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


MIGRATIONS: list[Callable[[Connection], None]] = [_migrate_v1, _migrate_v2]
SCHEMA_VERSION = len(MIGRATIONS)

# The live schema, used by the queries below: version 1 plus the identity tables of version 2.
metadata = MetaData()
_tables = {**_define_v1(metadata), **_define_v2(metadata)}
schema_version_table = _tables["schema_version"]
records = _tables["records"]
cursors = _tables["cursors"]
runs = _tables["runs"]
quarantine = _tables["quarantine"]
IDENTITY_TABLES: dict[str, Table] = {name: t for name, t in _tables.items() if name.startswith("identity_")}


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


class Store:
    """Access to the state store at `url`; creates or migrates the schema on first use."""

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
        for row in rows:
            key = (str(row["source"]), str(row["kind"]), str(row["source_id"]))
            item = {"source": key[0], "kind": key[1], "source_id": key[2],
                    "updated_at": _as_utc(row.get("updated_at")), "deleted": bool(row.get("deleted", False)),
                    "payload": row["payload"], "first_seen_run": run_id, "last_seen_run": run_id}
            seen = latest.get(key)
            # within one batch keep the newest version (a statement may not touch a row twice)
            if seen is None or _not_older(item["updated_at"], seen["updated_at"]):
                latest[key] = item
        if not latest:
            return 0
        stmt = self._insert(records)
        new = stmt.excluded
        newer = or_(new.updated_at.is_(None), records.c.updated_at.is_(None),
                    new.updated_at >= records.c.updated_at)
        stmt = stmt.on_conflict_do_update(
            index_elements=[records.c.source, records.c.kind, records.c.source_id],
            set_={"updated_at": case((newer, new.updated_at), else_=records.c.updated_at),
                  "deleted": case((newer, new.deleted), else_=records.c.deleted),
                  "payload": case((newer, new.payload), else_=records.c.payload),
                  "last_seen_run": func.coalesce(new.last_seen_run, records.c.last_seen_run)})
        with self.engine.begin() as conn:
            conn.execute(stmt, list(latest.values()))
        return len(latest)

    def get_record(self, source: str, kind: str, source_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(records).where(
                records.c.source == source, records.c.kind == kind, records.c.source_id == source_id)).first()
        return dict(row._mapping) if row else None

    def iter_records(self, kind: str | None = None, source: str | None = None,
                     include_deleted: bool = False, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Records ordered by (kind, source, source_id), read in keyset-paginated batches, so memory
        stays bounded and no connection is held while the caller works on a batch."""
        groups = select(records.c.kind, records.c.source).where(
            *self._filters(kind, source, include_deleted)).distinct().order_by(records.c.kind, records.c.source)
        with self.engine.connect() as conn:
            pairs = conn.execute(groups).all()
        for group_kind, group_source in pairs:
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

    def count_records(self, kind: str | None = None, source: str | None = None,
                      include_deleted: bool = False) -> int:
        query = select(func.count()).select_from(records).where(*self._filters(kind, source, include_deleted))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

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
                else:
                    items = [process(v) for v in items]
            values.append(items)
        params: list[Any] = list(zip(*values))
        if not compiled.positional:
            params = [dict(zip(order, p)) for p in params]
        conn.exec_driver_sql(str(compiled), params)
        return len(params)


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
