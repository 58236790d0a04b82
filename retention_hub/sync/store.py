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

Migrations: `MIGRATIONS` is an ordered list of functions taking a Connection; the store applies
the ones past its recorded version inside one transaction. A schema change appends a migration
and edits the `Table` objects below; migration functions never change once released.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (JSON, Boolean, Column, DateTime, Engine, Index, Integer, MetaData, String, Table,
                        Text, case, create_engine, event, func, insert, or_, select, update)
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


MIGRATIONS: list[Callable[[Connection], None]] = [_migrate_v1]
SCHEMA_VERSION = len(MIGRATIONS)

# The live schema, used by the queries below. It equals version 1 until a migration changes it.
metadata = MetaData()
_tables = _define_v1(metadata)
schema_version_table = _tables["schema_version"]
records = _tables["records"]
cursors = _tables["cursors"]
runs = _tables["runs"]
quarantine = _tables["quarantine"]


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
