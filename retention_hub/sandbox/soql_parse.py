"""SOQL syntax: tokens, the parse tree and the recursive-descent parser of the subset `soql.py`
evaluates. Grammar accepted:

    SELECT (field path | COUNT() | FIELDS(ALL|STANDARD|CUSTOM)) [, ...] FROM object
    [WHERE condition] [ORDER BY path [ASC|DESC] [NULLS FIRST|LAST] [, ...]] [LIMIT n] [OFFSET n]

A condition level is all-AND or all-OR (SOQL requires parentheses to mix them); NOT negates a term.
Constructs Salesforce has but the sandbox does not evaluate (GROUP BY, HAVING, sub-queries, TYPEOF,
WITH, FOR, bind variables, aggregates other than COUNT()) are refused with MALFORMED_QUERY, naming
the construct. Error messages carry Salesforce's ``ERROR at Row:r:Column:c`` pointer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .records import parse_time

UNSUPPORTED = {"GROUP": "GROUP BY", "HAVING": "HAVING", "WITH": "WITH", "FOR": "FOR", "USING": "USING SCOPE",
               "TYPEOF": "TYPEOF", "INCLUDES": "INCLUDES", "EXCLUDES": "EXCLUDES", "ALL": "ALL ROWS"}
AGGREGATES = {"SUM", "AVG", "MIN", "MAX", "COUNT_DISTINCT", "TOLABEL", "FORMAT", "CONVERTCURRENCY",
              "CALENDAR_MONTH", "CALENDAR_YEAR", "DAY_ONLY", "GROUPING", "DISTANCE"}
N_LITERALS = {"LAST_N_DAYS", "NEXT_N_DAYS", "N_DAYS_AGO", "N_DAYS_FROM_NOW"}
DATE_LITERALS = {"TODAY", "YESTERDAY", "TOMORROW", "LAST_WEEK", "THIS_WEEK", "NEXT_WEEK", "LAST_MONTH",
                 "THIS_MONTH", "NEXT_MONTH", "LAST_90_DAYS", "NEXT_90_DAYS", "LAST_YEAR", "THIS_YEAR",
                 "NEXT_YEAR"} | N_LITERALS


class SoqlError(Exception):
    """A query Salesforce would refuse: `code` is its errorCode, `message` its message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


# -- tokens --------------------------------------------------------------------------------------
_TOKEN = re.compile(r"""
  (?P<ws>\s+)
| (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2}))
| (?P<date>\d{4}-\d{2}-\d{2})(?![\dT])
| (?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))
| (?P<string>'(?:[^'\\]|\\.)*')
| (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
| (?P<op><>|!=|<=|>=|=|<|>)
| (?P<punct>[(),:])
""", re.X | re.S)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\",
            "_": "\\_", "%": "\\%"}


@dataclass(frozen=True)
class Tok:
    kind: str
    value: str
    pos: int

    @property
    def word(self) -> str:
        return self.value.upper() if self.kind == "ident" else ""


def tokenize(text: str) -> list[Tok]:
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise error_at(text, pos, "MALFORMED_QUERY", f"unexpected token: '{text[pos]}'")
        if m.lastgroup != "ws":
            tokens.append(Tok(m.lastgroup or "", m.group(), pos))
        pos = m.end()
    tokens.append(Tok("eof", "<EOF>", len(text)))
    return tokens


def error_at(text: str, pos: int, code: str, message: str) -> SoqlError:
    """Salesforce's error text: the query line, a caret, the row/column, then the message."""
    row = text.count("\n", 0, pos) + 1
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    line = text[start:end if end >= 0 else len(text)]
    col = pos - start + 1
    cut = max(0, col - 1 - 60) if len(line) > 120 else 0
    snippet = line[cut:cut + 120]
    return SoqlError(code, f"\n{snippet}\n{' ' * (col - 1 - cut)}^\nERROR at Row:{row}:Column:{col}\n{message}")


def _unescape(raw: str) -> str:
    """Body of a quoted literal -> text; LIKE wildcards stay escaped (\\_ and \\%)."""
    out, i = [], 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            nxt = raw[i + 1] if i + 1 < len(raw) else ""
            if nxt.lower() not in _ESCAPES:
                raise ValueError(f"Invalid string literal '{raw}'. Illegal escape sequence '\\{nxt}'")
            out.append(_ESCAPES[nxt.lower()])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


# -- syntax tree ---------------------------------------------------------------------------------
@dataclass
class Lit:
    kind: str  # string number datetime date bool null range
    value: Any
    pos: int


@dataclass
class Cmp:
    path: Tok
    op: str  # = != < <= > >= LIKE IN NOT IN
    value: Lit | list[Lit]


@dataclass
class Logic:
    op: str  # AND OR NOT
    parts: list[Any]


@dataclass
class Query:
    select: list[Tok] = field(default_factory=list)
    count: bool = False
    fields_macro: Tok | None = None
    sobject: Tok | None = None
    where: Any = None
    order: list[tuple[Tok, bool, bool | None]] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.toks, self.i = text, tokenize(text), 0

    @property
    def tok(self) -> Tok:
        return self.toks[self.i]

    def peek(self, ahead: int = 1) -> Tok:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def take(self) -> Tok:
        t = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return t

    def fail(self, tok: Tok | None = None, message: str | None = None) -> SoqlError:
        tok = tok or self.tok
        return error_at(self.text, tok.pos, "MALFORMED_QUERY", message or f"unexpected token: '{tok.value}'")

    def unsupported(self, tok: Tok, what: str) -> SoqlError:
        return self.fail(tok, f"unexpected token: '{tok.value}' ({what} is not supported by the Retention Hub "
                              "sandbox)")

    def expect_word(self, word: str) -> Tok:
        if self.tok.word != word:
            raise self.fail()
        return self.take()

    def expect(self, value: str) -> Tok:
        if self.tok.value != value or self.tok.kind not in ("punct", "op"):
            raise self.fail()
        return self.take()

    def parse(self) -> Query:
        q = Query()
        self.expect_word("SELECT")
        self.select_list(q)
        self.expect_word("FROM")
        if self.tok.kind != "ident" or "." in self.tok.value or self.tok.word in ("WHERE", "ORDER", "LIMIT"):
            raise self.fail()
        q.sobject = self.take()
        if self.tok.word in UNSUPPORTED:
            raise self.unsupported(self.tok, UNSUPPORTED[self.tok.word])
        if self.tok.word == "WHERE":
            self.take()
            q.where = self.condition()
        if self.tok.word in UNSUPPORTED:
            raise self.unsupported(self.tok, UNSUPPORTED[self.tok.word])
        if self.tok.word == "ORDER":
            self.take()
            self.expect_word("BY")
            q.order.append(self.order_item())
            while self.tok.value == ",":
                self.take()
                q.order.append(self.order_item())
        if self.tok.word == "LIMIT":
            self.take()
            q.limit = self.integer()
        if self.tok.word == "OFFSET":
            self.take()
            q.offset = self.integer()
        if self.tok.word in UNSUPPORTED:
            raise self.unsupported(self.tok, UNSUPPORTED[self.tok.word])
        if self.tok.kind != "eof":
            raise self.fail()
        return q

    def select_list(self, q: Query) -> None:
        while True:
            t = self.tok
            if t.value == "(":
                raise self.unsupported(t, "a relationship sub-query")
            if t.kind != "ident" or t.word == "FROM":
                raise self.fail()
            if self.peek().value == "(":
                word = t.word
                if word == "COUNT" and self.peek(2).value == ")":
                    self.i += 3
                    q.count = True
                elif word == "FIELDS":
                    self.i += 2
                    if self.tok.word not in ("ALL", "STANDARD", "CUSTOM"):
                        raise self.fail()
                    q.fields_macro = self.take()
                    self.expect(")")
                elif word in AGGREGATES or word == "COUNT":
                    raise self.unsupported(t, "COUNT(field)" if word == "COUNT" else f"{word}()")
                else:
                    raise self.fail(self.peek())
            elif t.word == "TYPEOF":
                raise self.unsupported(t, "TYPEOF")
            else:
                q.select.append(self.take())
            if self.tok.value != ",":
                break
            self.take()
        if q.count and (q.select or q.fields_macro):
            raise self.fail(q.select[0] if q.select else q.fields_macro)

    def order_item(self) -> tuple[Tok, bool, bool | None]:
        if self.tok.kind != "ident":
            raise self.fail()
        path, desc, nulls_first = self.take(), False, None
        if self.tok.word in ("ASC", "DESC"):
            desc = self.take().word == "DESC"
        if self.tok.word == "NULLS":
            self.take()
            if self.tok.word not in ("FIRST", "LAST"):
                raise self.fail()
            nulls_first = self.take().word == "FIRST"
        return path, desc, nulls_first

    def integer(self) -> int:
        t = self.tok
        if t.kind != "number" or not t.value.isdigit():
            raise self.fail()
        self.take()
        return int(t.value)

    # WHERE: SOQL has no precedence between AND and OR, so a level is all-AND or all-OR
    def condition(self) -> Any:
        parts = [self.term()]
        joiner = None
        while self.tok.word in ("AND", "OR"):
            if joiner is not None and self.tok.word != joiner:
                raise self.fail()
            joiner = self.take().word
            parts.append(self.term())
        return parts[0] if joiner is None else Logic(joiner, parts)

    def term(self) -> Any:
        if self.tok.value == "(" and self.tok.kind == "punct":
            self.take()
            inner = self.condition()
            self.expect(")")
            return inner
        if self.tok.word == "NOT":
            self.take()
            return Logic("NOT", [self.term()])
        return self.comparison()

    def comparison(self) -> Cmp:
        path = self.tok
        if path.kind != "ident":
            raise self.fail()
        self.take()
        if self.peek(0).value == "(":  # function call in WHERE, e.g. DAY_ONLY(...)
            raise self.unsupported(path, f"{path.value}()")
        t = self.tok
        if t.kind == "op":
            self.take()
            return Cmp(path, "!=" if t.value == "<>" else t.value, self.literal())
        word = t.word
        if word in ("INCLUDES", "EXCLUDES"):
            raise self.unsupported(t, word)
        if word == "LIKE":
            self.take()
            return Cmp(path, "LIKE", self.literal())
        negate = False
        if word == "NOT" and self.peek().word == "IN":
            self.take()
            negate = True
        if self.tok.word == "IN":
            self.take()
            self.expect("(")
            if self.tok.word == "SELECT":
                raise self.unsupported(self.tok, "a semi-join sub-query")
            values = [self.literal()]
            while self.tok.value == ",":
                self.take()
                values.append(self.literal())
            self.expect(")")
            return Cmp(path, "NOT IN" if negate else "IN", values)
        raise self.fail()

    def literal(self) -> Lit:
        t = self.take()
        if t.kind == "string":
            try:
                return Lit("string", _unescape(t.value[1:-1]), t.pos)
            except ValueError as exc:
                raise error_at(self.text, t.pos, "MALFORMED_QUERY", str(exc)) from None
        if t.kind == "number":
            return Lit("number", float(t.value), t.pos)
        if t.kind == "datetime":
            try:
                return Lit("datetime", parse_time(t.value), t.pos)
            except ValueError:
                raise self.fail(t) from None
        if t.kind == "date":
            try:
                return Lit("date", date.fromisoformat(t.value), t.pos)
            except ValueError:
                raise self.fail(t) from None
        if t.word in ("TRUE", "FALSE"):
            return Lit("bool", t.word == "TRUE", t.pos)
        if t.word == "NULL":
            return Lit("null", None, t.pos)
        if t.word in DATE_LITERALS:
            n = None
            if t.word in N_LITERALS:
                self.expect(":")
                n = self.integer()
            return Lit("range", (t.word, n), t.pos)
        if t.value == ":":
            raise self.unsupported(t, "a bind variable")
        raise self.fail(t)


def parse(text: str) -> Query:
    """Parse a SOQL query; raises SoqlError(MALFORMED_QUERY) with Salesforce's pointer."""
    return _Parser(text).parse()
