"""Stripe's request side: form-encoded bracket parameters, their validation, and Stripe's error body.

Stripe v1 takes ``application/x-www-form-urlencoded`` bodies (and query strings) with Rack-style
brackets: ``metadata[plan]=pro``, ``expand[]=customer``, ``expand[0]=customer``,
``items[0][price]=price_1``, ``created[gte]=1700000000``. `parse_form` turns the pairs into nested
dicts; arrays stay dicts keyed by index until `as_list` reads them, because a metadata key may
itself be a digit.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from .emulator import ApiError

DOCS = "https://stripe.com/docs/error-codes/"
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


class StripeError(ApiError):
    """An error in Stripe's format: ``{"error": {"type", "message", "code"?, "param"?, "doc_url"?}}``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        error: dict[str, Any] = {}
        if code:
            error["code"] = code
            error["doc_url"] = DOCS + code.replace("_", "-")
        error["message"] = message
        if param:
            error["param"] = param
        error["type"] = type
        super().__init__(status, {"error": error}, headers)


def missing(kind: str, rec_id: str, param: str = "id") -> StripeError:
    """Stripe's 404 for an unknown id: ``No such customer: 'cus_x'``."""
    return StripeError(404, f"No such {kind}: '{rec_id}'", code="resource_missing", param=param)


def unknown_parameter(name: str) -> StripeError:
    return StripeError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)


def parse_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nest ``a[b][c]=v`` pairs; ``a[]=v`` appends (kept as an index-keyed dict, see `as_list`)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head]
        if rest:
            rest = "[" + rest
            parts += _SEGMENT.findall(rest)
            if _SEGMENT.sub("", rest):  # stray brackets such as "a[b" or "a]b"
                raise StripeError(400, f"Invalid parameter name: {key}", param=head)
        if not head:
            raise StripeError(400, f"Invalid parameter name: {key}")
        node: dict[str, Any] = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":  # "[]": the next free index
                part = str(len(node))
            if last:
                if isinstance(node.get(part), dict):
                    raise StripeError(400, f"Invalid hash: {key} is given both as a value and as a hash",
                                      param=display(parts[:i + 1]))
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    # "metadata=" (unset) followed by metadata[k]=v: the hash wins, as in Rack
                    child = node[part] = {} if child == "" else _conflict(parts[:i + 1])
                node = child
    return root


def _conflict(parts: list[str]) -> dict:
    raise StripeError(400, f"Invalid hash: {display(parts)} is given both as a value and as a hash",
                      param=display(parts))


def display(parts: list[str]) -> str:
    return parts[0] + "".join(f"[{p}]" for p in parts[1:])


def as_list(value: Any, name: str) -> list[Any]:
    """An array parameter: ``x[]=a&x[]=b`` or ``x[0]=a&x[1]=b`` (a bare ``x=a`` counts as one item)."""
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        if not all(k.isdigit() for k in value):
            raise StripeError(400, "Invalid array", param=name)
        return [value[k] for k in sorted(value, key=int)]
    return [value]


def check_known(params: dict[str, Any], allowed: Iterable[str]) -> None:
    allowed = set(allowed)
    for name in params:
        if name not in allowed:
            raise unknown_parameter(name)


def get_int(params: dict[str, Any], name: str, default: int | None = None, *,
            minimum: int | None = None, maximum: int | None = None) -> int | None:
    raw = params.get(name)
    if raw is None:
        return default
    value = to_int(raw, name)
    if minimum is not None and value < minimum:
        raise StripeError(400, f"This value must be greater than or equal to {minimum}.", param=name)
    if maximum is not None and value > maximum:
        raise StripeError(400, f"This value must be less than or equal to {maximum}.", param=name)
    return value


def to_int(raw: Any, name: str) -> int:
    if isinstance(raw, str) and re.fullmatch(r"[+-]?\d{1,18}", raw.strip()):
        return int(raw)
    shown = raw if isinstance(raw, str) else "(a hash)"
    raise StripeError(400, f"Invalid integer: {shown}", code="parameter_invalid_integer", param=name)


def get_bool(params: dict[str, Any], name: str) -> bool | None:
    raw = params.get(name)
    if raw is None:
        return None
    if raw in ("true", "false"):
        return raw == "true"
    shown = raw if isinstance(raw, str) else "(a hash)"
    raise StripeError(400, f"Invalid boolean: {shown}", param=name)


def get_str(params: dict[str, Any], name: str, *, max_length: int = 5000,
            choices: Iterable[str] | None = None) -> str | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise StripeError(400, f"Invalid string: {name} must be a string, not a hash", param=name)
    if len(raw) > max_length:
        raise StripeError(400, f"Invalid string: {raw[:20]}...; must be at most {max_length} characters",
                          param=name)
    if choices is not None and raw not in set(choices):
        raise StripeError(400, f"Invalid {name}: must be one of {', '.join(choices)}", param=name)
    return raw


def require(params: dict[str, Any], name: str) -> Any:
    if params.get(name) in (None, ""):
        raise StripeError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
    return params[name]


def time_range(params: dict[str, Any], name: str) -> tuple[int | None, int | None]:
    """``created=<int>`` or ``created[gt|gte|lt|lte]=<int>`` -> inclusive (low, high) bounds."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None, None
    if not isinstance(raw, dict):
        value = to_int(raw, name)
        return value, value
    low: int | None = None
    high: int | None = None
    for op, text in raw.items():
        if op not in ("gt", "gte", "lt", "lte"):
            raise unknown_parameter(f"{name}[{op}]")
        value = to_int(text, f"{name}[{op}]")
        if op == "gt":
            low = max(low, value + 1) if low is not None else value + 1
        elif op == "gte":
            low = max(low, value) if low is not None else value
        elif op == "lt":
            high = min(high, value - 1) if high is not None else value - 1
        else:
            high = min(high, value) if high is not None else value
    return low, high


def metadata_update(current: dict[str, str] | None, raw: Any) -> dict[str, str]:
    """Stripe's metadata semantics: keys merge, ``metadata[k]=`` deletes k, ``metadata=`` clears all."""
    if raw == "":
        return {}
    if not isinstance(raw, dict):
        raise StripeError(400, "Invalid object", param="metadata")
    result = dict(current or {})
    for key, value in raw.items():
        if not isinstance(value, str):
            raise StripeError(400, "Invalid value: metadata values must be strings", param=f"metadata[{key}]")
        if len(key) > 40:
            raise StripeError(400, f"Metadata keys can have up to 40 characters; '{key}' has {len(key)}.",
                              param=f"metadata[{key}]")
        if len(value) > 500:
            raise StripeError(400, "Metadata values can have up to 500 characters.", param=f"metadata[{key}]")
        if value == "":
            result.pop(key, None)
        else:
            result[key] = value
    if len(result) > 50:
        raise StripeError(400, "Metadata can have up to 50 keys.", param="metadata")
    return result
