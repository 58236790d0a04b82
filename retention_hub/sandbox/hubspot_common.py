"""What every HubSpot handler shares: auth, HubSpot's error and 429 bodies, rate-limit headers,
request parsing, record rendering, property definitions and the lookup indexes.

`HubSpotBase` is the emulator minus its routes; `hubspot_api.HubSpotEmulator` adds the object,
batch and search handlers, `hubspot_assoc` the associations and `hubspot_meta` properties/owners.
"""
from __future__ import annotations

import json
import random
import threading
import uuid
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Iterable, NoReturn

from werkzeug.wrappers import Request, Response

from . import hubspot_schema as schema
from .emulator import ApiError, Emulator, RateLimit, json_response
from .hubspot_search import SearchCache
from .records import hs_time
from .world import Knobs, World

SECONDLY, TEN_SECONDLY = "SECONDLY", "TEN_SECONDLY_ROLLING"
DAILY_LIMIT = 625_000  # Professional tier, per account per day (usage guidelines)
AUTH_MESSAGE = ("Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
                "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview")
_CATEGORY = {"NOT_FOUND": "OBJECT_NOT_FOUND", "BAD_REQUEST": "VALIDATION_ERROR", "RATE_LIMITED": "RATE_LIMITS"}


def _is_search(path: str) -> bool:
    return path.rstrip("/").endswith("/search")


class HubSpotBase(Emulator):
    """Shared machinery of the HubSpot emulator (no routes of its own)."""

    vendor = "hubspot"
    # Private apps on Professional/Enterprise: 190 requests per 10 s; the search endpoints have their
    # own limit of 5 requests per second and do not count against (or report) the general one.
    rate_limits = [RateLimit(TEN_SECONDLY, 190, 10.0, r"^(?!.*/search/?$)"),
                   RateLimit(SECONDLY, 5, 1.0, r"/search/?$")]

    def __init__(self, world: World, credentials: dict[str, str], knobs: Knobs | None = None) -> None:
        super().__init__(world, credentials, knobs)
        self._ids_rng = random.Random(world.seed ^ 0x4B5)
        # its own lock: the base class calls `throttled` while holding `_stats_lock`
        self._ids_lock = threading.Lock()
        self._write_seq: Counter[str] = Counter()  # API writes per object type (cache stamps)
        self._sorted: dict[str, tuple[int, list[str]]] = {}
        self._unique: dict[tuple[str, str], tuple[Any, dict[str, str]]] = {}
        self._observed: dict[str, tuple[Any, dict[str, set[str]]]] = {}
        self._defs: dict[str, tuple[Any, dict[str, dict]]] = {}
        self.defs_seq = 0  # bumped by every definition change made through the API
        self.search_cache = SearchCache()
        self._daily: tuple[str, int] = ("", 0)

    # -- vendor hooks ----------------------------------------------------------------------------
    def authenticate(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.credentials.get("access_token"):
            raise ApiError(401, {"status": "error", "message": AUTH_MESSAGE,
                                 "correlationId": self.correlation_id(), "category": "INVALID_AUTHENTICATION"})

    def error_body(self, status: int, code: str, message: str) -> Any:
        body: dict[str, Any] = {"status": "error", "message": message, "correlationId": self.correlation_id()}
        if code in _CATEGORY and not (code == "NOT_FOUND" and status != 404):  # a 405 has no category
            body["category"] = _CATEGORY[code]
        return body

    def throttled(self, limit: RateLimit, retry_after: float) -> Response:
        # HubSpot's documented 429: errorType RATE_LIMIT and the policy that was exhausted.
        policy = limit.name if limit.name in (SECONDLY, TEN_SECONDLY) else TEN_SECONDLY
        body = {"status": "error", "message": f"You have reached your {policy.lower()} limit.",
                "errorType": "RATE_LIMIT", "correlationId": self.correlation_id(), "policyName": policy}
        return json_response(body, 429)

    def extra_headers(self, request: Request) -> dict[str, str]:
        headers = {"X-HubSpot-Correlation-Id": self.correlation_id()}
        if _is_search(request.path):
            return headers  # documented: search responses carry no rate-limit headers
        day = self.world.now().date().isoformat()
        with self._stats_lock:
            used = self._daily[1] + 1 if self._daily[0] == day else 1
            self._daily = (day, used)
        headers.update({
            "X-HubSpot-RateLimit-Daily": str(DAILY_LIMIT),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, DAILY_LIMIT - used)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            "X-HubSpot-RateLimit-Max": str(self.rate_limits[0].limit),
            "X-HubSpot-RateLimit-Remaining": str(self.window_remaining(self.rate_limits[0])),
        })
        return headers

    # -- small helpers ---------------------------------------------------------------------------
    def correlation_id(self) -> str:
        with self._ids_lock:
            return str(uuid.UUID(int=self._ids_rng.getrandbits(128), version=4))

    def now_iso(self) -> str:
        return hs_time(self.world.now())

    def fail(self, status: int, message: str, category: str | None = "VALIDATION_ERROR",
             **extra: Any) -> NoReturn:
        body: dict[str, Any] = {"status": "error", "message": message, "correlationId": self.correlation_id()}
        if category:
            body["category"] = category
        body.update({k: v for k, v in extra.items() if v is not None})
        raise ApiError(status, body)

    def body_json(self, request: Request, required: bool = True) -> Any:
        """The JSON body, or HubSpot's 400 for text that is not JSON."""
        raw = request.get_data(cache=True)
        if not raw.strip():
            if required:
                self.fail(400, "Invalid input JSON: the request body is empty")
            return None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            where = f" on line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            self.fail(400, f"Invalid input JSON{where}: {reason}")

    def object_type(self, name: str) -> str:
        resolved = schema.resolve_type(name)
        if resolved is None:
            self.fail(400, f"Unable to infer object type from: {name}")
        return resolved

    def int_arg(self, request: Request, name: str, default: int, low: int, high: int) -> int:
        raw = request.args.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            self.fail(400, f"Unable to parse query parameter {name}: {raw!r} is not an integer")
        if not low <= value <= high:
            self.fail(400, f"{name} must be between {low} and {high}, got {value}")
        return value

    @staticmethod
    def bool_arg(request: Request, name: str) -> bool:
        return (request.args.get(name) or "false").strip().lower() == "true"

    @staticmethod
    def list_arg(request: Request, name: str) -> list[str] | None:
        """A `multi` or comma-separated query list (the SDK sends `a&a`, curl users `a,b`)."""
        values = request.args.getlist(name)
        if not values:
            return None
        return [p.strip() for v in values for p in v.split(",") if p.strip()]

    def page_link(self, request: Request, after: str) -> str:
        args = [(k, v) for k, v in request.args.items(multi=True) if k != "after"] + [("after", after)]
        query = "&".join(f"{k}={v}" for k, v in args)
        return f"{request.host_url.rstrip('/')}{request.path}?{query}"

    # -- records ---------------------------------------------------------------------------------
    def table(self, object_type: str) -> dict[str, dict]:
        return self.world.hubspot.setdefault(object_type, {})

    def stamp(self, object_type: str) -> tuple[int, int, int]:
        """Changes whenever the table may have changed: creates, API writes, the world advancing."""
        return len(self.table(object_type)), self._write_seq[object_type], self.world.version

    def sorted_ids(self, object_type: str) -> list[str]:
        """All ids of a type in id order (ids are never removed, so the length is a valid stamp)."""
        table = self.table(object_type)
        cached = self._sorted.get(object_type)
        if cached is None or cached[0] != len(table):
            cached = (len(table), sorted(table, key=int))
            self._sorted[object_type] = cached
        return cached[1]

    @staticmethod
    def value(object_type: str, rec: dict, name: str) -> Any:
        """A property value, including the ones HubSpot derives (record id, contact lastmodifieddate)."""
        props = rec["properties"]
        if name == "hs_object_id":
            return rec["id"]
        if object_type == "contacts" and name == "lastmodifieddate":
            return props.get("hs_lastmodifieddate") or props.get("lastmodifieddate")
        if object_type == "tasks" and name == "hs_createdate":
            return props.get("hs_createdate") or props.get("createdate")
        return props.get(name)

    def properties_out(self, object_type: str, rec: dict, requested: Iterable[str] | None,
                       everything: bool = False) -> dict[str, Any]:
        """The `properties` of a reply: defaults, or the requested ones plus those always sent."""
        if everything:
            names = set(rec["properties"]) | set(schema.ALWAYS_PROPERTIES[object_type])
        elif requested is None:
            names = set(schema.DEFAULT_PROPERTIES[object_type])
        else:
            defs = self.definitions(object_type)
            names = {n for n in requested if n in defs or n in rec["properties"]}
            names |= set(schema.ALWAYS_PROPERTIES[object_type])
        defs = self.definitions(object_type)
        out = {}
        for name in sorted(names):
            value = self.value(object_type, rec, name)
            if value and (defs.get(name) or {}).get("type") == "datetime" and str(value).isdigit():
                value = hs_time(datetime.fromtimestamp(int(value) / 1000, tz=timezone.utc))
            out[name] = value
        return out

    def object_json(self, object_type: str, rec: dict, requested: Iterable[str] | None = None,
                    everything: bool = False) -> dict[str, Any]:
        out = {"id": rec["id"], "properties": self.properties_out(object_type, rec, requested, everything),
               "createdAt": rec["createdAt"], "updatedAt": rec["updatedAt"], "archived": bool(rec.get("archived"))}
        if rec.get("archived") and rec.get("archivedAt"):
            out["archivedAt"] = rec["archivedAt"]
        return out

    def unique_properties(self, object_type: str) -> set[str]:
        return {name for name, d in self.definitions(object_type).items() if d.get("hasUniqueValue")}

    def unique_index(self, object_type: str, prop: str) -> dict[str, str]:
        """Lower-cased value -> id of the live record holding it, rebuilt only when the table changed."""
        key, stamp = (object_type, prop), self.stamp(object_type)
        cached = self._unique.get(key)
        if cached is None or cached[0] != stamp:
            mapping: dict[str, str] = {}
            for rec_id in self.sorted_ids(object_type):
                rec = self.table(object_type)[rec_id]
                value = rec["properties"].get(prop)
                if value and not rec.get("archived"):
                    mapping.setdefault(str(value).lower(), rec_id)
            cached = (stamp, mapping)
            self._unique[key] = cached
        return cached[1]

    def find(self, object_type: str, key: str, id_property: str | None = None,
             archived: bool = False) -> dict | None:
        """The record whose id (or unique `id_property` value) is `key`; archived ones only if asked."""
        if id_property and id_property != "hs_object_id":
            rec_id = self.unique_index(object_type, id_property).get(key.strip().lower())
            rec = self.table(object_type).get(rec_id) if rec_id else None
        else:
            rec = self.table(object_type).get(key.strip())
        if rec is None or bool(rec.get("archived")) != archived:
            return None
        return rec

    def check_id_property(self, object_type: str, id_property: str | None) -> None:
        if id_property and id_property != "hs_object_id" and id_property not in self.unique_properties(object_type):
            if id_property not in self.definitions(object_type):
                self.fail(400, f'Property "{id_property}" does not exist', "VALIDATION_ERROR")
            self.fail(400, f"{id_property} is not a unique property, so it can't be used as an idProperty")

    def write(self, object_type: str, properties: dict[str, Any], rec_id: str | None = None) -> dict:
        """Create or update through `world.hs_put`, keeping the lookup indexes current."""
        before = self.stamp(object_type)
        old = dict(self.table(object_type)[rec_id]["properties"]) if rec_id else {}
        rec = self.world.hs_put(object_type, properties, rec_id)
        self._write_seq[object_type] += 1
        after = self.stamp(object_type)
        for (t, prop), (stamp, mapping) in list(self._unique.items()):
            if t != object_type or stamp != before:
                continue
            if old.get(prop) and mapping.get(str(old[prop]).lower()) == rec["id"]:
                del mapping[str(old[prop]).lower()]
            if rec["properties"].get(prop):
                mapping.setdefault(str(rec["properties"][prop]).lower(), rec["id"])
            self._unique[(t, prop)] = (after, mapping)
        return rec

    def archive(self, object_type: str, rec_id: str) -> None:
        self.world.hs_archive(object_type, rec_id)
        self._write_seq[object_type] += 1

    # -- property definitions --------------------------------------------------------------------
    def observed_options(self, object_type: str) -> dict[str, set[str]]:
        """Values the world's records hold in built-in enumeration properties: the sandbox portal's
        options include them, as a real portal's options include every value its records hold."""
        stamp = (len(self.table(object_type)), self.world.version)
        cached = self._observed.get(object_type)
        if cached is None or cached[0] != stamp:
            names = [n for n in schema.builtin_names(object_type)
                     if (d := schema.builtin_definition(object_type, n)) and d["type"] == "enumeration"]
            seen: dict[str, set[str]] = {n: set() for n in names}
            for rec in self.table(object_type).values():
                props = rec["properties"]
                for name in names:
                    value = props.get(name)
                    if value:
                        seen[name].update(value.split(";") if name == "hs_ticket_category" else [value])
            cached = (stamp, seen)
            self._observed[object_type] = cached
        return cached[1]

    def owner_options(self) -> list[tuple[str, str]]:
        owners = sorted(self.world.hs_owners.values(), key=lambda o: int(o["id"]))
        return [(str(o["id"]), (f"{o.get('firstName') or ''} {o.get('lastName') or ''}".strip()
                                or o.get("email") or str(o["id"]))) for o in owners]

    def definitions(self, object_type: str) -> dict[str, dict]:
        """name -> v3 property JSON of every property of the type (built-in, then custom)."""
        custom = self.world.hs_custom_properties.get(object_type, {})
        stamp = (len(self.table(object_type)), self.world.version, len(self.world.hs_owners),
                 self.defs_seq, tuple(sorted((n, id(d), len(d)) for n, d in custom.items())))
        cached = self._defs.get(object_type)
        if cached is None or cached[0] != stamp:
            observed, owners = self.observed_options(object_type), self.owner_options()
            defs = {n: schema.builtin_definition(object_type, n, observed.get(n, ()), owners)
                    for n in schema.builtin_names(object_type)}
            defs.update({n: schema.normalize_custom(n, d, object_type) for n, d in custom.items()
                         if not d.get("archived")})
            cached = (stamp, defs)  # type: ignore[assignment]
            self._defs[object_type] = cached
        return cached[1]  # type: ignore[return-value]

    def clean_properties(self, object_type: str, properties: Any) -> tuple[dict[str, Any], list[schema.PropertyError]]:
        """Validate a write's `properties` map; return the values to store and the errors found."""
        if not isinstance(properties, dict):
            self.fail(400, "Invalid input JSON: `properties` must be an object of property names to values")
        defs, clean, errors = self.definitions(object_type), {}, []
        for name, raw in properties.items():
            definition = defs.get(name)
            if definition is None:
                errors.append(schema.missing_error(name))
            elif definition["modificationMetadata"].get("readOnlyValue"):
                errors.append(schema.read_only_error(name))
            else:
                value, error = schema.coerce_value(name, raw, definition)
                if error:
                    errors.append(error)
                else:
                    clean[name] = value
        return clean, errors

    def validation_failure(self, errors: list[schema.PropertyError]) -> NoReturn:
        raise ApiError(400, schema.validation_body(errors, self.correlation_id()))

    def batch_reply(self, results: list[dict], errors: list[dict], started: str, ok_status: int) -> Response:
        """HubSpot's batch envelope; 207 Multi-Status when some inputs failed."""
        body: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            body.update({"numErrors": len(errors), "errors": errors})
        body.update({"startedAt": started, "completedAt": self.now_iso()})
        return json_response(body, 207 if errors else ok_status)

    @staticmethod
    def batch_error(category: str, message: str, context: dict[str, list[str]],
                    sub_category: str | None = None) -> dict[str, Any]:
        # `errors` and `links` are required by HubSpot's published schema (and the Python SDK).
        error = {"status": "error", "category": category, "message": message, "context": context,
                 "errors": [], "links": {}}
        if sub_category:
            error["subCategory"] = sub_category
        return error

    def batch_inputs(self, body: Any, maximum: int = 100) -> list[Any]:
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            self.fail(400, "Invalid input JSON: the request body needs an `inputs` list")
        inputs = body["inputs"]
        if len(inputs) > maximum:
            self.fail(400, f"The maximum number of inputs supported in a batch request is {maximum}. "
                           f"Please reduce the number of items and try again")
        return inputs
