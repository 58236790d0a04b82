"""Product usage from where it really lives: a table in any SQLAlchemy database (a warehouse, or a
SQLite file) or a CSV file, one row per account and day with numeric metric columns.

`usage` stream: one record per account x day (``source_id`` ``"{account}|{day}"``, payload
``account_ref``, ``day`` and ``metrics``: ``{column: value}`` of the row's non-null metric columns; a row
whose metrics are all null is no record), read incrementally by day. Only complete days are read
(``day < until``'s date); the first run (or a full refresh) reads them all, or only the last
``history_days`` days when that is set (``day >= today - history_days``). The cursor is the
last day read; the next run reads from that day on, inclusively, because late rows for it may still
land. A fingerprint of that day's rows is kept in the cursor, so the day is emitted again only if
it changed. Tables are read in keyset pages ordered by (day, account), `page_size` rows each; a
CSV file is scanned in chunks of `page_size` rows (a file cannot be queried, so every run reads it
once through).

`accounts` stream: the accounts table (``workspaces`` in the sandbox: workspace_id, name, domain,
stripe_customer_id) as `account` records whose ``external_ids`` (e.g. ``{"stripe": "cus_..."}``) let
identity resolution link usage to billing and CRM records. Such tables rarely carry a modification
time, so each run reads the table in full and emits only the rows of the hash buckets whose
fingerprint changed since the last run. A row removed from the table is not reported as deleted.
For CSV, the accounts table is the file ``<accounts_table>.csv`` beside the usage file, if present.
"""
from __future__ import annotations

import hashlib
import logging
import math
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..config.models import UsageSource
from .http import VENDOR_POLICIES, AuthError, Caller, Policy, RequestError, TransientError
from .records import dump_cursor, load_cursor, Page, Quarantined, record

log = logging.getLogger(__name__)

SOURCE = "usage"
PAGE_ROWS = 10_000
BUCKETS = 64  # fingerprint buckets of the accounts table
NAME_COLUMNS = ("name", "workspace_name", "account_name", "company_name")
DOMAIN_COLUMNS = ("domain", "website")
TIME_COLUMNS = ("updated_at", "modified_at", "created_at")
EXTERNAL_COLUMNS = {"stripe_customer_id": "stripe", "stripe_id": "stripe", "salesforce_account_id": "salesforce",
                    "sfdc_account_id": "salesforce", "hubspot_company_id": "hubspot",
                    "zendesk_organization_id": "zendesk"}
AUTH_WORDS = ("password", "authentication", "access denied", "permission denied", "not authorized")
TRANSIENT_WORDS = ("locked", "busy", "timeout", "timed out", "could not connect", "connection", "server closed",
                   "too many clients", "deadlock")


def _day(value: Any) -> str | None:
    """A day as ISO ``YYYY-MM-DD`` from a date, a datetime or text starting with one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    text = str(value).strip()[:10]
    date.fromisoformat(text)  # a malformed day is an error, not a silently wrong cursor
    return text


def _number(value: Any) -> int | float | None:
    """A JSON-safe metric value (numpy and Decimal included); None for nulls and NaN."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    value = float(value)
    if math.isnan(value):
        return None
    return int(value) if value.is_integer() else value


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _day_end(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day) + timedelta(days=1), time(), timezone.utc)


class Fingerprint:
    """An order-independent fingerprint of rows (a CSV file's rows come in any order)."""

    def __init__(self) -> None:
        self.count, self.total = 0, 0

    def add(self, row: Iterable[Any]) -> None:
        digest = hashlib.blake2b("\x1f".join(map(str, row)).encode(), digest_size=8).digest()
        self.count += 1
        self.total = (self.total + int.from_bytes(digest, "big")) % (1 << 64)

    def value(self) -> str:
        return f"{self.count}:{self.total:016x}"


class UsageConnector:
    """Reads daily product usage (and the accounts it belongs to) from a table or a CSV file."""

    source = SOURCE

    def __init__(self, config: UsageSource, policy: Policy | None = None, page_size: int = PAGE_ROWS) -> None:
        self.config = config
        self.page_size = max(1, page_size)
        self.caller = Caller(SOURCE, self._classify, policy or VENDOR_POLICIES[SOURCE])
        self._engine: Any = None
        self._tables: dict[str, Any] = {}

    def streams(self) -> list[str]:
        return (["accounts"] if self.config.accounts_table else []) + ["usage"]

    def api_calls(self) -> dict[str, int]:
        return dict(self.caller.calls)

    def read(self, stream: str, cursor: str | None, until: datetime, full_refresh: bool = False) -> Iterator[Page]:
        key = {"usage": "resume", "accounts": "buckets"}.get(stream, "")
        state = None if full_refresh else _load(cursor, key)
        if stream == "usage":
            today = until.astimezone(timezone.utc).date()
            days = self.config.history_days
            first = None if state is not None or days is None else (today - timedelta(days=days)).isoformat()
            return self._read_usage(state, today.isoformat(), first)
        if stream == "accounts" and self.config.accounts_table:
            return self._read_accounts(state)
        raise RequestError(SOURCE, f"unknown stream {stream!r} (streams: {', '.join(self.streams())})")

    # -- where the data is ----------------------------------------------------------------------------
    @property
    def location(self) -> str:
        """Where the data is, for messages (a database URL without its password)."""
        if self.config.url is None:
            return str(self.config.path)
        from sqlalchemy.engine import make_url

        return make_url(self.config.url).render_as_string(hide_password=True)

    def _classify(self, exc: BaseException) -> BaseException | None:
        from sqlalchemy import exc as sa

        where = self.location
        if isinstance(exc, sa.NoSuchTableError):
            return RequestError(SOURCE, f"no table {exc} in {where}: check sources.usage.table / accounts_table")
        if isinstance(exc, sa.DBAPIError):
            text = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            lowered = text.lower()
            if any(w in lowered for w in AUTH_WORDS):
                return AuthError(SOURCE, f"the database refused the credentials or access ({text}): "
                                         "check the user and password in sources.usage.url")
            if exc.connection_invalidated or (isinstance(exc, sa.OperationalError)
                                              and any(w in lowered for w in TRANSIENT_WORDS)):
                return TransientError(SOURCE, f"database unavailable: {text}")
            return RequestError(SOURCE, f"query failed on {where}: {text}")
        if isinstance(exc, (OSError, UnicodeDecodeError)) or type(exc).__module__.startswith("pandas"):
            return RequestError(SOURCE, f"cannot read {where}: {exc}")
        return None

    def _db(self) -> Any:
        if self._engine is None:
            from sqlalchemy import create_engine

            if self.config.kind == "sqlite" and self.config.url is None:
                path = Path(self.config.path)  # type: ignore[arg-type]
                if not path.is_file():
                    raise RequestError(SOURCE, f"file not found: {path} (sources.usage.path)")
                # read-only: a connector never writes, and SQLite would create a missing file
                url = f"sqlite:///file:{path.resolve()}?mode=ro&uri=true"
            else:
                url = self.config.url
            self._engine = create_engine(url)
        return self._engine

    def _table(self, name: str, stream: str) -> Any:
        if name not in self._tables:
            from sqlalchemy import MetaData, Table

            self._tables[name] = self.caller.call(Table, name, MetaData(), autoload_with=self._db(), stream=stream)
        return self._tables[name]

    def _query(self, statement: Any, stream: str) -> list[tuple]:
        def run() -> list[tuple]:
            with self._db().connect() as conn:
                return [tuple(r) for r in conn.execute(statement)]
        return self.caller.call(run, stream=stream)

    def _csv_chunks(self, path: Path, stream: str, dtypes: dict[str, Any]) -> Iterator[Any]:
        import pandas as pd

        if not path.is_file():
            raise RequestError(SOURCE, f"file not found: {path}")
        reader = self.caller.call(pd.read_csv, path, chunksize=self.page_size, dtype=dtypes, stream=stream)
        with reader:
            while (chunk := self.caller.call(next, reader, None, stream=stream)) is not None:
                yield chunk

    # -- usage ----------------------------------------------------------------------------------------
    def _metrics(self, numeric: list[str], present: list[str]) -> list[str]:
        key, day = self.config.account_column, self.config.day_column
        for column, setting in ((key, "account_column"), (day, "day_column")):
            if column not in present:
                raise RequestError(SOURCE, f"{self.location} has no column {column!r}: fix sources.usage.{setting} "
                                           f"(columns: {', '.join(present)})")
        if self.config.metrics is None:
            metrics = [c for c in numeric if c not in (key, day)]
        else:
            metrics = list(self.config.metrics)
            unknown = [m for m in metrics if m not in present]
            if unknown:
                raise RequestError(SOURCE, f"{self.location} has no column {', '.join(unknown)}: fix "
                                           f"sources.usage.metrics (columns: {', '.join(present)})")
            text = [m for m in metrics if m not in numeric]
            if text:
                raise RequestError(SOURCE, f"column {', '.join(text)} of {self.location} is not numeric: fix "
                                           f"sources.usage.metrics (numeric columns: {', '.join(numeric)})")
        if not metrics:
            raise RequestError(SOURCE, f"{self.location} has no numeric column to use as a metric: "
                                       "set sources.usage.metrics")
        return metrics

    def _read_usage(self, state: dict | None, stop: str, first: str | None = None) -> Iterator[Page]:
        """Pages of the days before `stop`: from the cursor's day, else from `first` (None: all)."""
        low = state["resume"] if state else first
        rows = self._csv_usage(low, stop) if self.config.kind == "csv" else self._sql_usage(low, stop)
        yield from _UsagePages(state, rows)

    def _sql_usage(self, low: str | None, stop: str) -> Iterator[tuple[list[str], list[tuple], bool]]:
        """(metrics, rows (account, day, *values) ordered by day and account, resumable) per query."""
        from sqlalchemy import Date, DateTime, Numeric, and_, or_, select
        from sqlalchemy.types import Float, Integer

        table = self._table(self.config.table, "usage")
        numeric = [c.name for c in table.columns if isinstance(c.type, (Integer, Float, Numeric))]
        metrics = self._metrics(numeric, [c.name for c in table.columns])
        key, day = table.c[self.config.account_column], table.c[self.config.day_column]

        def bound(iso: str) -> Any:  # compare in the column's own type
            if isinstance(day.type, DateTime):
                return datetime.combine(date.fromisoformat(iso), time())
            return date.fromisoformat(iso) if isinstance(day.type, Date) else iso

        base = select(key, day, *[table.c[m] for m in metrics]).where(day < bound(stop))
        if low is not None:
            base = base.where(day >= bound(low))
        base = base.order_by(day, key).limit(self.page_size)
        last: tuple | None = None
        while True:
            # keyset paging; the plain `day >= last day` lets the (day, account) index bound the scan
            query = base if last is None else base.where(
                day >= last[1], or_(day > last[1], and_(day == last[1], key > last[0])))
            rows = self._query(query, "usage")
            if rows:
                last = rows[-1][:2]
            yield metrics, rows, True
            if len(rows) < self.page_size:
                return

    def _csv_usage(self, low: str | None, stop: str) -> Iterator[tuple[list[str], list[tuple], bool]]:
        import pandas as pd

        key, day = self.config.account_column, self.config.day_column
        metrics: list[str] | None = None
        for chunk in self._csv_chunks(Path(self.config.path), "usage", {key: str, day: str}):  # type: ignore[arg-type]
            if metrics is None:
                numeric = [c for c in chunk.columns if pd.api.types.is_numeric_dtype(chunk[c])]
                metrics = self._metrics(numeric, [str(c) for c in chunk.columns])
            days = chunk[day].astype(str).str.slice(0, 10)
            keep = (days < stop) & (days >= low) if low else days < stop
            part = chunk.loc[keep, [key, day, *metrics]]
            yield metrics, list(part.itertuples(index=False, name=None)), False

    # -- accounts -------------------------------------------------------------------------------------
    def _read_accounts(self, state: dict | None) -> Iterator[Page]:
        columns, rows = self._csv_accounts() if self.config.kind == "csv" else self._sql_accounts()
        if columns is None:
            return
        old = (state or {}).get("buckets") or {}
        prints = [Fingerprint() for _ in range(BUCKETS)]
        members: list[list[tuple]] = [[] for _ in range(BUCKETS)]
        for row in rows:
            bucket = _bucket(row[0])
            prints[bucket].add(row)
            members[bucket].append(row)
        buckets = {str(b): p.value() for b, p in enumerate(prints) if p.count}
        changed = [b for b in range(BUCKETS) if buckets.get(str(b)) != old.get(str(b))]
        records: list[dict] = []
        bad: list[Quarantined] = []
        for b in changed:
            for row in members[b]:
                try:
                    records.append(self._account(columns, row))
                except (TypeError, ValueError) as exc:
                    bad.append(Quarantined("account", str(row[0]), f"cannot map: {exc}", dict(zip(columns, row))))
        for start in range(0, max(len(records), 1), self.page_size):
            last = start + self.page_size >= len(records)
            yield Page(records[start:start + self.page_size], _dump({"buckets": buckets}) if last else None,
                       bad if last else [])

    def _account(self, columns: list[str], row: tuple) -> dict:
        values = dict(zip(columns, row))
        name = next((values[c] for c in NAME_COLUMNS if values.get(c)), None)
        domain = next((values[c] for c in DOMAIN_COLUMNS if values.get(c)), None)
        if isinstance(domain, str):
            domain = domain.lower().split("://")[-1].removeprefix("www.").split("/")[0] or None
        external = {system: str(values[c]) for c, system in EXTERNAL_COLUMNS.items() if values.get(c)}
        stamp = next((values[c] for c in TIME_COLUMNS if values.get(c)), None)
        updated = None
        if stamp is not None:
            updated = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(str(stamp))
            updated = updated.replace(tzinfo=timezone.utc) if updated.tzinfo is None else updated
        return record(SOURCE, "account", row[0], updated, name=name, domain=domain, website=None, parent_id=None,
                      owner_id=None, industry=None, country=None, segment=None, external_ids=external,
                      created_at=str(values["created_at"]) if values.get("created_at") else None)

    def _account_columns(self, present: list[str]) -> list[str]:
        key = self.config.account_column
        if key not in present:
            raise RequestError(SOURCE, f"the accounts table {self.config.accounts_table!r} has no column {key!r} "
                                       "(the usage table's account_column names its key)")
        wanted = (*NAME_COLUMNS, *DOMAIN_COLUMNS, *TIME_COLUMNS, *EXTERNAL_COLUMNS)
        return [key, *[c for c in present if c in wanted and c != key]]

    def _sql_accounts(self) -> tuple[list[str] | None, list[tuple]]:
        from sqlalchemy import select

        table = self._table(self.config.accounts_table, "accounts")  # type: ignore[arg-type]
        columns = self._account_columns([c.name for c in table.columns])
        key = table.c[columns[0]]
        base = select(*[table.c[c] for c in columns]).order_by(key).limit(self.page_size)
        rows: list[tuple] = []
        while True:
            page = self._query(base if not rows else base.where(key > rows[-1][0]), "accounts")
            rows += [(str(r[0]), *r[1:]) for r in page if r[0] is not None]
            if len(page) < self.page_size:
                return columns, rows

    def _csv_accounts(self) -> tuple[list[str] | None, list[tuple]]:
        path = Path(self.config.path).parent / f"{self.config.accounts_table}.csv"  # type: ignore[arg-type]
        if not path.is_file():
            log.info("usage.accounts: no %s beside the usage file; no accounts to read", path.name)
            return None, []
        columns: list[str] | None = None
        rows: list[tuple] = []
        for chunk in self._csv_chunks(path, "accounts", {self.config.account_column: str}):
            if columns is None:
                columns = self._account_columns([str(c) for c in chunk.columns])
            part = chunk[columns].astype(object).where(chunk[columns].notna(), None)
            rows += [r for r in part.itertuples(index=False, name=None) if not _blank(r[0])]
        return columns, rows


class _UsagePages:
    """Turns row pages into record pages: skips the re-read day if unchanged, keeps the cursor."""

    def __init__(self, state: dict | None, pages: Iterator[tuple[list[str], list[tuple], bool]]) -> None:
        self.pages = pages
        self.resume = state["resume"] if state else None
        self.old_digest = state.get("digest") if state else None
        self.reread: list[tuple] = []  # rows of the day re-read, held until known to have changed
        self.reread_print = Fingerprint()
        self.max_day: str | None = self.resume
        self.max_rows: list[tuple] = []  # rows of the latest day so far: fingerprinted at the end
        self.decided = self.old_digest is None  # whether the re-read day was emitted or found unchanged

    def __iter__(self) -> Iterator[Page]:
        metrics: list[str] = []
        for metrics, rows, ordered in self.pages:
            records, bad = self._records(metrics, rows)
            if ordered and not self.decided and self.max_day != self.resume:
                records = self._decide(metrics) + records  # ordered: the re-read day is complete
            # ordered reads save the last day reached (its fingerprint is not known yet), but only once
            # the re-read day is settled; a file read in any order saves its cursor at the end only
            cursor = (_dump({"resume": self.max_day, "digest": None}) if ordered and self.decided and self.max_day
                      else None)
            if records or bad:
                yield Page(records, cursor, bad)
        records = [] if self.decided else self._decide(metrics)
        if self.max_day is None:
            return  # nothing read at all: keep no cursor
        latest = Fingerprint()
        for row in self.max_rows:
            latest.add(row)
        yield Page(records, _dump({"resume": self.max_day, "digest": latest.value()}))

    def _decide(self, metrics: list[str]) -> list[dict]:
        """The re-read day's records if its rows changed since the last run, else none."""
        self.decided = True
        changed = self.reread_print.value() != self.old_digest
        rows, self.reread = self.reread, []
        return self._convert(metrics, rows) if changed else []

    def _records(self, metrics: list[str], rows: list[tuple]) -> tuple[list[dict], list[Quarantined]]:
        fresh: list[tuple] = []
        bad: list[Quarantined] = []
        for row in rows:
            try:
                day = _day(row[1])
                metric_values = [_number(v) for v in row[2:]]
            except ValueError as exc:
                bad.append(Quarantined("usage", f"{row[0]}|{row[1]}", f"unreadable row: {exc}",
                                       [str(v) for v in row]))
                continue
            if day is None or _blank(row[0]):
                bad.append(Quarantined("usage", None, "row without an account or a day", [str(v) for v in row]))
                continue
            norm = (str(row[0]), day, *metric_values)
            if self.max_day is None or day > self.max_day:
                self.max_day, self.max_rows = day, []
            if day == self.max_day:
                self.max_rows.append(norm)
            if self.old_digest is not None and day == self.resume:
                self.reread.append(norm)
                self.reread_print.add(norm)
            else:
                fresh.append(norm)
        return self._convert(metrics, fresh), bad

    @staticmethod
    def _convert(metrics: list[str], rows: list[tuple]) -> list[dict]:
        """One record per account and day, with the row's non-null metrics."""
        out: list[dict] = []
        for account, day, *values in rows:
            present = {metric: value for metric, value in zip(metrics, values) if value is not None}
            if present:
                out.append(record(SOURCE, "usage", f"{account}|{day}", _day_end(day), account_ref=account,
                                  day=day, metrics=present))
        return out


def _bucket(key: Any) -> int:
    return int.from_bytes(hashlib.blake2b(str(key).encode(), digest_size=2).digest(), "big") % BUCKETS


def _dump(state: dict) -> str:
    return dump_cursor(state)


def _load(cursor: str | None, key: str) -> dict | None:
    return load_cursor(SOURCE, cursor, (key,))
