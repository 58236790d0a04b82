"""``GET /v1/customers/search``: a subset of Stripe's Search Query Language.

Supported: clauses ``field:value`` (exact, case-insensitive for text as Stripe matches),
``field~"sub"`` (substring, at least 3 characters), ``-field:value`` (negation),
``created>|>=|<|<=N``, ``metadata["key"]:"value"``, and ``null`` values; clauses joined by all
``AND`` or all ``OR`` (Stripe forbids mixing them), at most 10. Fields: email, name, phone,
created, metadata. Results come newest first; ``next_page`` is an opaque cursor.
"""
from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING, Any, Callable

from .stripe_lists import page
from .stripe_params import StripeError, get_int, get_str
from .stripe_render import list_object

if TYPE_CHECKING:
    from .stripe_api import StripeEmulator

_CLAUSE = re.compile(
    r"""\s*(?P<neg>-)?(?P<field>[a-z_]+)(?:\[(?P<q1>["'])(?P<key>[^"']+)(?P=q1)\])?"""
    r"""\s*(?P<op>:|~|>=|<=|>|<)\s*(?:(?P<q2>["'])(?P<text>.*?)(?P=q2)|(?P<bare>[^\s"']+))\s*""")
TEXT_FIELDS = ("email", "name", "phone")


def _clause(match: re.Match[str]) -> Callable[[dict], bool]:
    field, op, neg = match["field"], match["op"], bool(match["neg"])
    value = match["text"] if match["q2"] else match["bare"]
    if field == "metadata":
        if not match["key"] or op != ":":
            raise _invalid("metadata takes the form metadata[\"key\"]:\"value\"")
        key = match["key"]
        test = (lambda r: (r.get("metadata") or {}).get(key) == value)
    elif field == "created":
        if match["q2"] or not re.fullmatch(r"\d+", value or "") or op == "~":
            raise _invalid("created takes an integer and one of : > >= < <=")
        bound = int(value)
        compare = {":": int.__eq__, ">": int.__gt__, ">=": int.__ge__, "<": int.__lt__, "<=": int.__le__}[op]
        test = (lambda r: compare(r["created"], bound))
    elif field in TEXT_FIELDS:
        if op in (">", ">=", "<", "<="):
            raise _invalid(f"{field} does not support {op}")
        if not match["q2"] and value != "null":
            raise _invalid(f"the value for {field} must be quoted")
        if op == "~":
            if len(value) < 3:
                raise _invalid("substring matches need at least 3 characters")
            needle = value.lower()
            test = (lambda r: needle in (r.get(field) or "").lower())
        elif not match["q2"]:  # null: the field is not set
            test = (lambda r: r.get(field) is None)
        else:
            wanted = value.lower()
            test = (lambda r: (r.get(field) or "").lower() == wanted)
    else:
        raise _invalid(f"Field '{field}' is an unsupported search field for resource `customers`. "
                       "See http://stripe.com/docs/search#query-fields-for-customers for a list of "
                       "supported fields.", raw=True)
    return (lambda r: not test(r)) if neg else test


def _invalid(reason: str, raw: bool = False) -> StripeError:
    message = reason if raw else f"We were unable to parse your search query: {reason}."
    return StripeError(400, message, param="query")


def parse_query(query: str) -> Callable[[dict], bool]:
    parts = re.split(r"\s+(AND|OR)\s+", query.strip())
    clauses, joins = parts[0::2], set(parts[1::2])
    if len(joins) > 1:
        raise _invalid("Stripe search does not support using OR and AND in the same query", raw=True)
    if len(clauses) > 10:
        raise _invalid("a query can have at most 10 clauses")
    tests = []
    for text in clauses:
        match = _CLAUSE.fullmatch(text)
        if match is None:
            raise _invalid(f"could not read the clause '{text}'")
        tests.append(_clause(match))
    combine = any if joins == {"OR"} else all
    return lambda r: combine(t(r) for t in tests)


def search_customers(emulator: "StripeEmulator", params: dict[str, Any]) -> dict:
    query = get_str(params, "query", max_length=10000)
    if not query:
        raise StripeError(400, "Missing required param: query.", code="parameter_missing", param="query")
    limit = get_int(params, "limit", 10, minimum=1, maximum=100)
    test = parse_query(query)
    keys = emulator.index.keys("customer", ("search", query),
                               lambda r: not r.get("_deleted") and test(r))
    after = None
    token = get_str(params, "page")
    if token:
        try:
            created, rec_id = base64.urlsafe_b64decode(token.encode()).decode().split("|", 1)
            after = (int(created), rec_id)
        except (ValueError, UnicodeDecodeError):
            raise StripeError(400, f"Invalid page: {token}", param="page") from None
    chosen, more = page(keys, limit, after=after)
    table = emulator.world.stripe["customer"]
    out = list_object([emulator.renderer.render("customer", table[i]) for _, i in chosen],
                      "/v1/customers/search", has_more=more)
    out["object"] = "search_result"
    out["next_page"] = (base64.urlsafe_b64encode(f"{chosen[-1][0]}|{chosen[-1][1]}".encode()).decode()
                        if more and chosen else None)
    return out
