"""Daily product usage read back fast: each (source, day) of `usage_days` packed into one row of arrays.

`usage_days` (schema v3) holds one typed row per source account and day: the canonical form, which
every record method reads and writes. Reading a window of it costs the driver about 3 µs a row, and
scoring 100,000 accounts reads 200 days of two sources: 30 million rows, a minute and a half.
`usage_packed` (schema v5) holds each (source, day) as one row instead: the day's accounts as int32
codes into `usage_refs` and its metrics as a float32 matrix, so the same window is a few hundred blobs.

The packed rows are derived, and kept in step so they are never wrong, only sometimes missing:
- every write to usage_days marks its (source, day) stale (blobs NULL), in the same transaction;
- `pack_usage` packs the stale days (the sync engine calls it at the end of every sync);
- `usage_frame` takes packed days from their blobs and stale ones from usage_days.
Invariant: every (source, day) with rows in usage_days has a row in usage_packed (the v5 migration
adds one for each day already stored).

Schema (version 5)
------------------
usage_refs     source, code INT (primary key), account_ref: the dictionary of a source's accounts
usage_packed   source, day DATE (primary key), n_rows INT NULL (NULL: stale), metric_names TEXT NULL
               (comma list: the USAGE_COLUMNS present that day), codes BLOB NULL (int32 per row),
               metric_values BLOB NULL (float32, one run of n_rows per metric, in metric_names order)
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, timezone
from operator import itemgetter
from typing import Any

import numpy as np
from sqlalchemy import (Column, Date, Integer, LargeBinary, MetaData, PrimaryKeyConstraint, String, Table, Text,
                        UniqueConstraint, bindparam, func, insert, select, update)
from sqlalchemy.engine import Connection

# the typed metric columns of usage_days, and the metric names (as connectors emit them) stored in each
USAGE_COLUMNS = ("active_users", "sessions", "events", "features_used", "api_calls")
USAGE_METRIC_COLUMNS: dict[str, str] = {**{c: c for c in USAGE_COLUMNS},
                                        "api_call": "api_calls"}  # a Stripe meter's usual event name
EPOCH = date(1970, 1, 1)
_NS_PER_DAY = 86_400 * 10**9


def as_day(value: Any) -> date:
    """A calendar day from a date, an ISO text or an aware datetime / pandas Timestamp (its UTC day)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if len(value) > 10 else date.fromisoformat(value)
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        return (value.astimezone(timezone.utc) if value.tzinfo else value).date()
    if isinstance(value, date):
        return value
    raise TypeError(f"expected a day, got {type(value).__name__}")


def define(md: MetaData) -> dict[str, Table]:
    """The packed-usage tables of version 5, bound to `md`."""
    return {
        "usage_refs": Table(
            "usage_refs", md,
            Column("source", String(32), nullable=False),
            Column("code", Integer, nullable=False, autoincrement=False),
            Column("account_ref", String(255), nullable=False),
            PrimaryKeyConstraint("source", "code"),
            UniqueConstraint("source", "account_ref", name="uq_usage_refs_account")),
        "usage_packed": Table(
            "usage_packed", md,
            Column("source", String(32), nullable=False),
            Column("day", Date, nullable=False),
            Column("n_rows", Integer, nullable=True),
            Column("metric_names", Text, nullable=True),
            Column("codes", LargeBinary, nullable=True),
            Column("metric_values", LargeBinary, nullable=True),
            PrimaryKeyConstraint("source", "day")),  # a rowid table: SQLite keeps large blobs best there
    }


def migrate(conn: Connection, usage_days: Table) -> None:
    """Create the v5 tables and a stale row for every (source, day) already in usage_days."""
    md = MetaData()
    tables = define(md)
    md.create_all(conn, checkfirst=True)
    days = select(usage_days.c.source, usage_days.c.day).distinct()
    conn.execute(insert(tables["usage_packed"]).from_select(["source", "day"], days))


class UsageTables:
    """Store methods for usage_days and its packed copy (mixed into `sync.store.Store`)."""

    engine: Any
    usage_tables: dict[str, Table]
    _insert: Callable[[Table], Any]  # the store's dialect-specific insert (it has on_conflict_do_update)

    def _mark_usage_stale(self, conn: Connection, keys: Iterable[tuple[str, date]]) -> None:
        """Days whose usage_days rows changed in this transaction: their packed copy is out of date."""
        t = self.usage_tables["usage_packed"]
        rows = [{"source": s, "day": d} for s, d in sorted(set(keys))]
        if not rows:
            return
        stmt = self._insert(t)
        stmt = stmt.on_conflict_do_update(index_elements=[t.c.source, t.c.day],
                                          set_={"n_rows": None, "metric_names": None, "codes": None,
                                                "metric_values": None})
        conn.execute(stmt, rows)

    def usage_sources(self) -> list[str]:
        """The sources with usage, one index seek each (no scan of the table)."""
        t = self.usage_tables["usage_packed"]
        out: list[str] = []
        with self.engine.connect() as conn:
            while True:
                query = select(func.min(t.c.source))
                if out:
                    query = query.where(t.c.source > out[-1])
                found = conn.execute(query).scalar()
                if found is None:
                    return out
                out.append(found)

    def pack_usage(self) -> int:
        """Pack every stale day (one transaction per day, so an interrupted pack keeps what it did).
        Returns how many days were packed."""
        p, refs = self.usage_tables["usage_packed"], self.usage_tables["usage_refs"]
        with self.engine.connect() as conn:
            stale = conn.execute(select(p.c.source, p.c.day).where(p.c.n_rows.is_(None))
                                 .order_by(p.c.source, p.c.day)).fetchall()
        dictionaries: dict[str, dict[str, int]] = {}
        for source, day in stale:
            with self.engine.begin() as conn:
                known = dictionaries.get(source)
                if known is None:
                    known = dictionaries[source] = dict(conn.execute(
                        select(refs.c.account_ref, refs.c.code).where(refs.c.source == source)).fetchall())
                rows = self._usage_rows(conn, source, day)
                accounts = list(map(itemgetter(0), rows))
                fresh = [ref for ref in accounts if ref not in known]
                if fresh:
                    start = len(known)
                    conn.execute(insert(refs), [{"source": source, "code": start + i, "account_ref": ref}
                                                for i, ref in enumerate(fresh)])
                    known.update((ref, start + i) for i, ref in enumerate(fresh))
                codes = np.fromiter(map(known.__getitem__, accounts), dtype=np.int32, count=len(rows))
                names, blocks = [], []
                for i, name in enumerate(USAGE_COLUMNS):
                    values = list(map(itemgetter(i + 1), rows))
                    if values.count(None) == len(values):
                        continue  # a metric the source never has (a warehouse's api_calls) takes no room
                    names.append(name)
                    blocks.append(np.asarray(values, dtype=np.float32))  # None -> NaN
                matrix = np.concatenate(blocks) if blocks else np.empty(0, np.float32)
                conn.execute(update(p).where(p.c.source == source, p.c.day == day).values(
                    n_rows=len(rows), metric_names=",".join(names), codes=codes.tobytes(),
                    metric_values=matrix.astype("<f4").tobytes()))
        return len(stale)

    def _usage_rows(self, conn: Connection, source: str, day: date) -> list[tuple[Any, ...]]:
        t = self.usage_tables["usage_days"]
        query = select(t.c.account_ref, *[t.c[name] for name in USAGE_COLUMNS]).where(
            t.c.source == source, t.c.day == day, t.c.deleted.is_(False))
        result = conn.execute(query)
        try:  # the driver's plain tuples: SQLAlchemy rows cost more than the database's own work here
            return result.cursor.fetchall()
        finally:
            result.close()

    def usage_frame(self, start_day: Any = None, end_day: Any = None,
                    sources: Sequence[str] | None = None, chunk: int = 50_000) -> Any:
        """Live daily usage with start_day < day <= end_day (None: unbounded) as a pandas DataFrame.

        Columns: source and account_ref (Categorical), day (datetime64[ns, UTC], midnight of the day),
        and the canonical metrics of `USAGE_COLUMNS` as float32 (NaN where the row has no such
        metric). Packed days come from their blobs; stale ones from usage_days' typed columns (never
        the JSON), one select per day fetched in chunks of `chunk` rows straight into numpy arrays.
        """
        t, p, refs = (self.usage_tables[n] for n in ("usage_days", "usage_packed", "usage_refs"))
        wanted = list(sources) if sources is not None else self.usage_sources()
        query = select(t.c.account_ref, *[t.c[name] for name in USAGE_COLUMNS]).where(
            t.c.source == bindparam("source"), t.c.day == bindparam("day", type_=Date()), t.c.deleted.is_(False))
        reader = _UsageReader(chunk)
        with self.engine.connect() as conn:
            for code, source in enumerate(wanted):
                window = [p.c.source == source]
                if start_day is not None:
                    window.append(p.c.day > as_day(start_day))
                if end_day is not None:
                    window.append(p.c.day <= as_day(end_day))
                days = conn.execute(select(p.c.day, p.c.n_rows).where(*window).order_by(p.c.day)).fetchall()
                reader.reserve(sum(n for _, n in days if n) + chunk)
                lookup = None
                for day, n_rows in days:
                    number = (day - EPOCH).days
                    if n_rows is None:  # stale: the typed rows
                        result = conn.execute(query, {"source": source, "day": day})
                        try:
                            reader.read(result.cursor, code, number)
                        finally:
                            result.close()
                        continue
                    if lookup is None:  # the source's dictionary, once, as codes into the reader's accounts
                        names = conn.execute(select(refs.c.code, refs.c.account_ref).where(
                            refs.c.source == source)).fetchall()
                        lookup = reader.lookup(names)
                    names_text, codes, values = conn.execute(
                        select(p.c.metric_names, p.c.codes, p.c.metric_values).where(
                            p.c.source == source, p.c.day == day)).one()
                    reader.add_packed(code, number, lookup[np.frombuffer(codes, dtype=np.int32)],
                                      names_text.split(",") if names_text else [],
                                      np.frombuffer(values, dtype="<f4"))
        return reader.frame(wanted)


class _UsageReader:
    """Usage of one source and day at a time, written straight into preallocated numpy buffers
    (grown geometrically when short), then one DataFrame over them. From the driver (`read`), what is
    done per row is kept to C loops: columns by itemgetter, floats by numpy, account codes by hash
    lookups (or none at all when a chunk lists the same accounts as the previous day's chunk at that
    place, the usual case). From a packed day (`add_packed`), nothing is done per row at all."""

    def __init__(self, chunk: int) -> None:
        import pandas as pd

        self.chunk = chunk
        self.accounts = pd.Index([], dtype=object)  # account_ref categories, in order of first appearance
        self.block = np.empty((len(USAGE_COLUMNS), 1), np.float32)  # pandas' own layout
        self.codes = np.empty(1, np.int32)
        self.rows = 0
        self.runs: list[tuple[int, int, int]] = []  # (source code, day number, rows) of each chunk
        self.previous: dict[tuple[int, int], tuple[list[str], Any]] = {}  # (source, offset) -> its refs, codes

    def reserve(self, n: int) -> None:
        if self.rows + n <= self.codes.size:
            return
        size = max(self.rows + n, int(self.codes.size * 1.5))  # geometric: a poor estimate costs little
        block, codes = np.empty((self.block.shape[0], size), np.float32), np.empty(size, np.int32)
        block[:, :self.rows], codes[:self.rows] = self.block[:, :self.rows], self.codes[:self.rows]
        self.block, self.codes = block, codes

    def _codes_of(self, refs: list[str]) -> np.ndarray:
        import pandas as pd

        keys = np.asarray(refs, dtype=object)
        found = self.accounts.get_indexer(keys)
        if (found < 0).any():
            self.accounts = self.accounts.append(pd.Index(pd.unique(keys[found < 0]), dtype=object))
            found = self.accounts.get_indexer(keys)
        return found.astype(np.int32)

    def lookup(self, names: list[tuple[int, str]]) -> np.ndarray:
        """A source dictionary's (code, account_ref) pairs as an array: dictionary code -> account code."""
        out = np.full(max((c for c, _ in names), default=-1) + 1, -1, np.int32)
        if names:
            out[[c for c, _ in names]] = self._codes_of([r for _, r in names])
        return out

    def read(self, cursor: Any, source: int, day: int) -> None:
        offset = 0
        while rows := cursor.fetchmany(self.chunk):
            n = len(rows)
            self.reserve(n)
            at = slice(self.rows, self.rows + n)
            refs = list(map(itemgetter(0), rows))
            seen = self.previous.get((source, offset))
            if seen is not None and seen[0] == refs:
                self.codes[at] = seen[1]
            else:
                self.codes[at] = self._codes_of(refs)
                self.previous[(source, offset)] = (refs, self.codes[at].copy())
            for i in range(len(USAGE_COLUMNS)):
                values = list(map(itemgetter(i + 1), rows))
                # a metric the source never has (api_calls of a warehouse) costs no per-value conversion
                self.block[i, at] = np.nan if values.count(None) == n else np.asarray(values, dtype=np.float32)
            self.runs.append((source, day, n))
            self.rows += n
            offset += n

    def add_packed(self, source: int, day: int, codes: np.ndarray, names: list[str], values: np.ndarray) -> None:
        n = codes.size
        if not n:
            return
        self.reserve(n)
        at = slice(self.rows, self.rows + n)
        self.codes[at] = codes
        present = dict(zip(names, range(len(names))))
        for i, name in enumerate(USAGE_COLUMNS):
            j = present.get(name)
            self.block[i, at] = np.nan if j is None else values[j * n:(j + 1) * n]
        self.runs.append((source, day, n))
        self.rows += n

    def frame(self, sources: list[str]) -> Any:
        import pandas as pd

        self.previous.clear()
        runs = np.array(self.runs, dtype=np.int64).reshape(-1, 3)
        days = np.repeat(runs[:, 1] * _NS_PER_DAY, runs[:, 2]).view("datetime64[ns]")
        keys = pd.DataFrame({
            "source": pd.Categorical.from_codes(np.repeat(runs[:, 0].astype(np.int16), runs[:, 2]),
                                                categories=pd.Index(sources, dtype=object)),
            "account_ref": pd.Categorical.from_codes(self.codes[:self.rows], categories=self.accounts),
            "day": pd.Series(days, copy=False).dt.tz_localize("UTC").array}, copy=False)
        del days
        # side by side without a copy (DataFrame.insert or a dict of float columns would copy them)
        metrics = pd.DataFrame(self.block[:, :self.rows].T, columns=list(USAGE_COLUMNS), copy=False)
        return pd.concat([keys, metrics], axis=1)
