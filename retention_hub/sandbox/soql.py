"""The SOQL subset the Salesforce emulator answers: parse, check against the org's schema, evaluate.

Supported: ``SELECT`` field paths (parent relationships up to five levels, e.g. ``Owner.Email``),
``COUNT()`` and ``FIELDS(ALL|STANDARD|CUSTOM)``; ``FROM`` one object; ``WHERE`` with
``= != <> < <= > >= LIKE IN NOT IN``, ``AND``/``OR``/``NOT`` and parentheses (SOQL refuses to mix
``AND`` and ``OR`` without parentheses, so this does too); literals: strings with backslash escapes,
numbers, ``true``/``false``/``null``, dates, datetimes (``Z``, ``+hh:mm`` and ``+hhmm`` zones) and
the relative date literals in `DATE_LITERALS`; ``ORDER BY`` (``ASC``/``DESC``, ``NULLS FIRST|LAST``),
``LIMIT`` and ``OFFSET``. Everything else (GROUP BY, HAVING, sub-queries, TYPEOF, WITH, FOR, bind
variables, other aggregates) is answered with ``MALFORMED_QUERY``, as the real parser answers what it
cannot parse. Errors carry Salesforce's messages, including the ``ERROR at Row:r:Column:c`` pointer.
Text compares case-insensitively, dates and datetimes compare as time values, relative dates use UTC.
"""
from __future__ import annotations

import functools
import operator
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Callable, Iterable, Protocol

from .records import parse_time, sf_id_checksum
from .soql_parse import Lit, Logic, Query, SoqlError, Tok, error_at, parse

__all__ = ["NO_COLUMN", "SoqlError", "SoqlSchema", "CompiledQuery", "compile_query", "id18", "normalizer"]

STRINGY = {"string", "textarea", "picklist", "multipicklist", "combobox", "email", "phone", "url",
           "encryptedstring"}
IDS = {"id", "reference"}
NUMERIC = {"double", "currency", "percent", "int", "long"}
NAME_ENTITY = {"id": "Id", "name": "Name", "type": "Type"}  # what a polymorphic lookup (What/Who) exposes
MAX_OFFSET = 2000
NO_COLUMN = ("No such column '{f}' on entity '{o}'. If you are attempting to use a custom field, be sure to "
              "append the '__c' after the custom field name. Please reference your WSDL or the describe call "
              "for the appropriate names.")
_NO_RELATION = ("Didn't understand relationship '{r}' in field path. If you are attempting to use a custom "
                "relationship, be sure to append the '__r' after the custom relationship name. Please "
                "reference your WSDL or the describe call for the appropriate names.")
_NO_TYPE = ("sObject type '{o}' is not supported. If you are attempting to use a custom object, be sure to "
            "append the '__c' after the entity name. Please reference your WSDL or the describe call for the "
            "appropriate names.")


class SoqlSchema(Protocol):
    """What the evaluator needs from the org: object names, describe fields, records by id."""

    def sobject_name(self, name: str) -> str | None: ...

    def field_map(self, sobject: str) -> dict[str, dict]: ...  # lower-case API name -> describe field

    def record(self, sobject: str | None, rec_id: str) -> tuple[str, dict] | None: ...


# -- relative date literals ------------------------------------------------------------------
def _month_start(d: date, months: int) -> date:
    y, m = divmod(d.year * 12 + d.month - 1 + months, 12)
    return date(y, m + 1, 1)


def date_range(word: str, n: int | None, today: date) -> tuple[date, date]:
    """[start, end) in days of a relative date literal (UTC; weeks start on Sunday as in en_US)."""
    one = timedelta(days=1)
    week = today - timedelta(days=(today.weekday() + 1) % 7)
    n = n or 0
    table: dict[str, Callable[[], tuple[date, date]]] = {
        "TODAY": lambda: (today, today + one),
        "YESTERDAY": lambda: (today - one, today),
        "TOMORROW": lambda: (today + one, today + 2 * one),
        "LAST_WEEK": lambda: (week - 7 * one, week),
        "THIS_WEEK": lambda: (week, week + 7 * one),
        "NEXT_WEEK": lambda: (week + 7 * one, week + 14 * one),
        "LAST_MONTH": lambda: (_month_start(today, -1), _month_start(today, 0)),
        "THIS_MONTH": lambda: (_month_start(today, 0), _month_start(today, 1)),
        "NEXT_MONTH": lambda: (_month_start(today, 1), _month_start(today, 2)),
        "LAST_90_DAYS": lambda: (today - 90 * one, today + one),
        "NEXT_90_DAYS": lambda: (today + one, today + 91 * one),
        "LAST_YEAR": lambda: (date(today.year - 1, 1, 1), date(today.year, 1, 1)),
        "THIS_YEAR": lambda: (date(today.year, 1, 1), date(today.year + 1, 1, 1)),
        "NEXT_YEAR": lambda: (date(today.year + 1, 1, 1), date(today.year + 2, 1, 1)),
        # LAST_N_DAYS:n includes today (the documented and observed behaviour)
        "LAST_N_DAYS": lambda: (today - n * one, today + one),
        "NEXT_N_DAYS": lambda: (today + one, today + (n + 1) * one),
        "N_DAYS_AGO": lambda: (today - n * one, today - (n - 1) * one),
        "N_DAYS_FROM_NOW": lambda: (today + n * one, today + (n + 1) * one),
    }
    return table[word]()


# -- values --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1 << 17)
def _as_datetime(value: str) -> datetime:
    return parse_time(value)


def _tolerant(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A stored value that does not convert compares as null instead of failing the query."""
    def norm(v: Any) -> Any:
        if v is None:
            return None
        try:
            return convert(v)
        except (TypeError, ValueError):
            return None
    return norm


def normalizer(ftype: str) -> Callable[[Any], Any]:
    """Stored value -> comparable value for a describe type (None stays None)."""
    if ftype in STRINGY:
        return lambda v: None if v is None else str(v).casefold()
    if ftype in NUMERIC:
        return _tolerant(float)
    if ftype == "boolean":
        return lambda v: None if v is None else bool(v)
    if ftype == "date":
        return _tolerant(lambda v: date.fromisoformat(str(v)[:10]))
    if ftype == "datetime":
        return _tolerant(_as_datetime)
    return lambda v: v  # ids compare exactly (18-character form)


def id18(value: str) -> str:
    return value + sf_id_checksum(value) if len(value) == 15 else value


_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_OPS: dict[str, Callable[[Any, Any], bool]] = {"<": operator.lt, "<=": operator.le, ">": operator.gt,
                                               ">=": operator.ge}


# -- compiled query ------------------------------------------------------------------------------
@dataclass
class Column:
    """A resolved field path: parent hops (lookup field, relationship name, target object or None
    when polymorphic) and the final field's canonical name and type."""

    hops: list[tuple[str, str, str | None]]
    name: str
    ftype: str
    describe: dict
    name_entity: bool = False  # the last hop is polymorphic: only Id, Name, Type exist

    @property
    def key(self) -> str:
        return ".".join([h[1] for h in self.hops] + [self.name]).lower()


@dataclass
class CompiledQuery:
    sobject: str
    count_only: bool
    columns: list[Column]
    predicate: Callable[[dict], bool] | None
    order: list[tuple[Callable[[dict], Any], bool, bool]]
    limit: int | None
    offset: int
    schema: SoqlSchema

    def run(self, records: Iterable[dict]) -> list[dict]:
        """Filter, sort, then apply OFFSET and LIMIT; returns the stored records."""
        pred = self.predicate
        rows = [r for r in records if pred(r)] if pred else list(records)
        for key, desc, nulls_first in reversed(self.order):  # stable sorts, least significant key first
            keyed = [(key(r), r) for r in rows]
            present = [kr for kr in keyed if kr[0] is not None]
            missing = [r for k, r in keyed if k is None]
            present.sort(key=lambda kr: kr[0], reverse=desc)
            ordered = [r for _, r in present]
            rows = missing + ordered if nulls_first else ordered + missing
        if self.offset:
            rows = rows[self.offset:]
        if self.limit is not None:
            rows = rows[:self.limit]
        return rows

    def project(self, rec: dict, attributes: Callable[[str, str], dict]) -> dict:
        """One result row in the REST shape: attributes, then the selected fields (parents nested)."""
        out: dict[str, Any] = {"attributes": attributes(self.sobject, rec["Id"])}
        for col in self.columns:
            container, cur, ptype = out, rec, self.sobject
            for ref, rel, target in col.hops:
                pid = cur.get(ref)
                found = self.schema.record(target, pid) if pid else None
                if found is None:
                    container.setdefault(rel, None)
                    break
                ptype, cur = found
                nested = container.get(rel)
                if nested is None:
                    nested = container[rel] = {"attributes": attributes(ptype, cur["Id"])}
                container = nested
            else:
                container[col.name] = ptype if col.name_entity and col.name == "Type" else cur.get(col.name)
        return out


class _Compiler:
    def __init__(self, text: str, schema: SoqlSchema, now: datetime) -> None:
        self.text, self.schema, self.today = text, schema, now.astimezone(timezone.utc).date()
        self.sobject = ""

    def err(self, pos: int, code: str, message: str) -> SoqlError:
        return error_at(self.text, pos, code, message)

    def compile(self, q: Query) -> CompiledQuery:
        assert q.sobject is not None
        sobject = self.schema.sobject_name(q.sobject.value)
        if sobject is None:
            raise self.err(q.sobject.pos, "INVALID_TYPE", _NO_TYPE.format(o=q.sobject.value))
        self.sobject = sobject
        columns = [self.resolve(t) for t in q.select]
        if q.fields_macro is not None:
            kind = q.fields_macro.word
            if kind in ("ALL", "CUSTOM") and (q.limit is None or q.limit > 200):
                raise self.err(q.fields_macro.pos, "MALFORMED_QUERY",
                               "The SOQL FIELDS function must have a LIMIT of at most 200")
            for f in self.schema.field_map(sobject).values():
                if kind == "ALL" or (kind == "CUSTOM") == bool(f.get("custom")):
                    columns.append(Column([], f["name"], f["type"], f))
        seen: set[str] = set()
        for tok, col in zip(q.select, columns):
            if col.key in seen:
                raise self.err(tok.pos, "MALFORMED_QUERY", f"duplicate field selected: {tok.value}")
            seen.add(col.key)
        if q.offset > MAX_OFFSET:
            raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", f"Maximum SOQL offset allowed is {MAX_OFFSET}")
        order = []
        for tok, desc, nulls_first in q.order:
            col = self.resolve(tok)
            if not col.describe.get("sortable", True):
                raise self.err(tok.pos, "INVALID_FIELD", f"field '{col.name}' can not be sorted in a query call")
            norm, get = normalizer(col.ftype), self.getter(col)
            order.append((lambda r, n=norm, g=get: n(g(r)), desc, (not desc) if nulls_first is None else nulls_first))
        predicate = self.condition(q.where) if q.where is not None else None
        return CompiledQuery(sobject, q.count, columns, predicate, order, q.limit, q.offset, self.schema)

    def resolve(self, tok: Tok) -> Column:
        names = tok.value.split(".")
        if len(names) > 6:
            raise self.err(tok.pos, "MALFORMED_QUERY", "Cannot follow more than 5 levels of relationships")
        obj: str | None = self.sobject
        hops: list[tuple[str, str, str | None]] = []
        for rel in names[:-1]:
            if obj is None:  # past a polymorphic lookup only Name-entity fields exist
                raise self.err(tok.pos, "INVALID_FIELD", _NO_RELATION.format(r=rel))
            ref = next((f for f in self.schema.field_map(obj).values() if f["type"] == "reference"
                        and (f.get("relationshipName") or "").lower() == rel.lower()), None)
            if ref is None:
                raise self.err(tok.pos, "INVALID_FIELD", _NO_RELATION.format(r=rel))
            targets = [t for t in ref.get("referenceTo") or [] if self.schema.sobject_name(t)]
            obj = targets[0] if len(targets) == 1 and len(ref["referenceTo"]) == 1 else None
            hops.append((ref["name"], ref["relationshipName"], obj))
        last = names[-1]
        if obj is None:
            canon = NAME_ENTITY.get(last.lower())
            if canon is None:
                raise self.err(tok.pos, "INVALID_FIELD", NO_COLUMN.format(f=last, o="Name"))
            ftype = "id" if canon == "Id" else "string"
            return Column(hops, canon, ftype, {"name": canon, "type": ftype}, name_entity=True)
        f = self.schema.field_map(obj).get(last.lower())
        if f is None:
            raise self.err(tok.pos, "INVALID_FIELD", NO_COLUMN.format(f=last, o=obj))
        return Column(hops, f["name"], f["type"], f)

    def getter(self, col: Column) -> Callable[[dict], Any]:
        name = col.name
        if not col.hops:
            return lambda rec: rec.get(name)
        schema, hops, type_of = self.schema, col.hops, col.name_entity and name == "Type"

        def get(rec: dict) -> Any:
            cur, ptype = rec, None
            for ref, _rel, target in hops:
                pid = cur.get(ref)
                found = schema.record(target, pid) if pid else None
                if found is None:
                    return None
                ptype, cur = found
            return ptype if type_of else cur.get(name)
        return get

    def condition(self, node: Any) -> Callable[[dict], bool]:
        if isinstance(node, Logic):
            parts = [self.condition(p) for p in node.parts]
            if node.op == "NOT":
                inner = parts[0]
                return lambda r: not inner(r)
            if node.op == "AND":
                return lambda r: all(p(r) for p in parts)
            return lambda r: any(p(r) for p in parts)
        col = self.resolve(node.path)
        if not col.describe.get("filterable", True):
            raise self.err(node.path.pos, "INVALID_FIELD",
                           f"field '{col.name}' can not be filtered in a query call")
        get, norm = self.getter(col), normalizer(col.ftype)
        if node.op in ("IN", "NOT IN"):
            values = {self.value(col, lit) for lit in node.value}
            if node.op == "IN":
                return lambda r: norm(get(r)) in values
            return lambda r: norm(get(r)) not in values  # SOQL keeps nulls in NOT IN and !=
        lit: Lit = node.value
        if node.op == "LIKE":
            if col.ftype not in STRINGY | IDS or lit.kind != "string":
                raise self.err(lit.pos, "INVALID_FIELD", f"invalid operator on field '{col.name}': LIKE "
                               "applies to text fields and needs a quoted pattern")
            rx = like_regex(lit.value)
            return lambda r: (v := get(r)) is not None and rx.fullmatch(str(v)) is not None
        if lit.kind == "range":
            return self.range_test(col, lit, node.op, get, norm)
        value = self.value(col, lit)
        if node.op == "=":
            return lambda r: norm(get(r)) == value
        if node.op == "!=":
            return lambda r: norm(get(r)) != value
        if value is None:
            return lambda r: False
        cmp = _OPS[node.op]
        return lambda r: (v := norm(get(r))) is not None and cmp(v, value)

    def value(self, col: Column, lit: Lit) -> Any:
        """Check a literal against the field's type (Salesforce's messages) and normalize it."""
        t, name = col.ftype, col.name

        def wrong(kind: str, quoted: bool) -> SoqlError:
            should = "should" if quoted else "should not"
            return self.err(lit.pos, "INVALID_FIELD", f"value of filter criterion for field '{name}' must be "
                            f"of type {kind} and {should} be enclosed in quotes")
        if lit.kind == "null":
            return None
        if lit.kind == "range":
            raise wrong({"date": "date", "datetime": "dateTime"}.get(t, t), False)
        if t in IDS:
            if lit.kind != "string":
                raise wrong("id", True)
            if not _ID_RE.match(lit.value):
                raise self.err(lit.pos, "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {lit.value}")
            return id18(lit.value)
        if t in STRINGY:
            if lit.kind != "string":
                raise wrong("string", True)
            return lit.value.replace("\\_", "_").replace("\\%", "%").casefold()
        if t in NUMERIC:
            if lit.kind != "number":
                raise wrong("int" if t == "int" else "double", False)
            return lit.value
        if t == "boolean":
            if lit.kind != "bool":
                raise wrong("boolean", False)
            return lit.value
        if t == "date":
            if lit.kind != "date":
                raise wrong("date", False)
            return lit.value
        if t == "datetime":
            if lit.kind != "datetime":
                raise wrong("dateTime", False)
            return lit.value
        return lit.value

    def range_test(self, col: Column, lit: Lit, op: str, get: Callable, norm: Callable) -> Callable[[dict], bool]:
        if col.ftype not in ("date", "datetime"):
            self.value(col, lit)  # raises the type error
        try:
            start, end = date_range(lit.value[0], lit.value[1], self.today)
        except (OverflowError, ValueError):
            raise self.err(lit.pos, "MALFORMED_QUERY", f"invalid date literal: {lit.value[0]}:{lit.value[1]}") \
                from None
        lo: Any = start
        hi: Any = end
        if col.ftype == "datetime":
            lo = datetime.combine(start, time(0), timezone.utc)
            hi = datetime.combine(end, time(0), timezone.utc)
        inside = {"=": lambda v: lo <= v < hi, "<": lambda v: v < lo, "<=": lambda v: v < hi,
                  ">": lambda v: v >= hi, ">=": lambda v: v >= lo}
        if op == "!=":
            return lambda r: (v := norm(get(r))) is None or not (lo <= v < hi)
        test = inside[op]
        return lambda r: (v := norm(get(r))) is not None and test(v)


def like_regex(pattern: str) -> re.Pattern[str]:
    """SOQL LIKE (case-insensitive; % any run, _ one character, \\% and \\_ literal) as a regex."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "_%":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.I | re.S)


def compile_query(text: str, schema: SoqlSchema, now: datetime) -> CompiledQuery:
    """Parse and check `text`; raises SoqlError with Salesforce's errorCode and message."""
    return _Compiler(text, schema, now).compile(parse(text))
