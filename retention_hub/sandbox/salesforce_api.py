"""Emulated Salesforce REST API (served over HTTPS by server.py) for simple-salesforce and plain HTTP.

Paths, parameters, headers, status codes and JSON shapes follow Salesforce's REST API (any API
version v20.0 and later in paths; records.SALESFORCE_API_VERSION is the one listed as newest):
OAuth token grants, versions and resources, /limits, describes, SOQL query/queryAll with cursors,
record CRUD, sObject Collections (composite/sobjects) and the Tooling API's CustomField.

Limits: Salesforce has no per-second limit, so `rate_limits` is empty; the daily API request limit
(`daily_api_limit`, rolling over with the world's UTC date) answers 403 REQUEST_LIMIT_EXCEEDED and
every API reply carries ``Sforce-Limit-Info: api-usage=N/MAX``. The injected-throttle knob answers
403 REQUEST_LIMIT_EXCEEDED "ConcurrentPerOrgLongTxn Limit exceeded." because the real REST API
never sends 429.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from .emulator import ApiError, Emulator, RateLimit, json_response
from .records import SALESFORCE_API_VERSION, parse_time, sf_time
from .salesforce_collections import COLLECTION_RULES, CollectionsMixin
from .salesforce_schema import (ID_RE, NOT_FOUND, OrgSchema, ToolingSchema, define_custom_field, derive, handler,
                                load_data, sf_error, tooling_id)
from .soql import NO_COLUMN, compile_query, id18

P = "/services/data/<version>"
VERSION_RE = re.compile(r"^v(\d{2,3})\.(\d)$")
OLDEST_VERSION = 20
SEASONS = ("Winter", "Spring", "Summer")
DEFAULT_BATCH, MIN_BATCH = 2000, 200
REPLICATION_DAYS, RECYCLE_BIN_DAYS = 30, 15  # how far back updated/deleted reach
MAX_CURSORS, CURSOR_IDLE_SECONDS = 10, 15 * 60  # Salesforce keeps 10 open cursors per user, 15 min idle


@dataclass
class Cursor:
    """A frozen query result served page by page through nextRecordsUrl."""

    rows: list[dict]
    batch: int
    prefix: str  # e.g. /services/data/v59.0/query
    used: float = field(default_factory=time.monotonic)


class SalesforceEmulator(CollectionsMixin, Emulator):
    """Salesforce's REST API over the world's `salesforce` tables (see the module docstring)."""

    vendor = "salesforce"
    rate_limits: list[RateLimit] = []  # Salesforce REST has no per-second limit; see daily_api_limit
    rules = [
        Rule("/services/oauth2/token", endpoint="oauth_token", methods=["POST"]),
        Rule("/services/data", endpoint="versions", methods=["GET"]),
        Rule(P, endpoint="resources", methods=["GET"]),
        Rule(f"{P}/limits", endpoint="limits", methods=["GET"]),
        Rule(f"{P}/sobjects", endpoint="global_describe", methods=["GET"]),
        Rule(f"{P}/sobjects/<sobject>", endpoint="sobject_info", methods=["GET"]),
        Rule(f"{P}/sobjects/<sobject>", endpoint="create_record", methods=["POST"]),
        Rule(f"{P}/sobjects/<sobject>/describe", endpoint="describe", methods=["GET"]),
        Rule(f"{P}/sobjects/<sobject>/updated", endpoint="get_updated", methods=["GET"]),
        Rule(f"{P}/sobjects/<sobject>/deleted", endpoint="get_deleted", methods=["GET"]),
        Rule(f"{P}/sobjects/<sobject>/<record_id>", endpoint="get_record", methods=["GET"]),
        Rule(f"{P}/sobjects/<sobject>/<record_id>", endpoint="update_record", methods=["PATCH"]),
        Rule(f"{P}/sobjects/<sobject>/<record_id>", endpoint="delete_record", methods=["DELETE"]),
        Rule(f"{P}/query", endpoint="query", methods=["GET"]),
        Rule(f"{P}/queryAll", endpoint="query_all", methods=["GET"]),
        Rule(f"{P}/query/<locator>", endpoint="query_more", methods=["GET"]),
        Rule(f"{P}/queryAll/<locator>", endpoint="query_more", methods=["GET"]),
        Rule(f"{P}/tooling/sobjects/<sobject>", endpoint="tooling_create", methods=["POST"]),
        Rule(f"{P}/tooling/sobjects/<sobject>/<record_id>", endpoint="tooling_record", methods=["GET", "DELETE"]),
        Rule(f"{P}/tooling/query", endpoint="tooling_query", methods=["GET"]),
        Rule(f"{P}/tooling/query/<locator>", endpoint="query_more", methods=["GET"]),
        *COLLECTION_RULES,
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schema = OrgSchema(self.world)
        self.tooling = ToolingSchema(self.world)
        self.daily_api_limit = 100_000
        self.api_used = 0
        self._usage_day = self.world.now().date()
        self._usage_lock = threading.Lock()
        self._tokens: OrderedDict[str, None] = OrderedDict()  # issued access tokens, newest last
        self._cursors: OrderedDict[str, Cursor] = OrderedDict()
        self._cursor_seq = 0

    # -- vendor hooks --------------------------------------------------------------------------------
    def error_body(self, status: int, code: str, message: str) -> Any:
        if status >= 500:
            code = "UNKNOWN_EXCEPTION" if status == 500 else "SERVER_UNAVAILABLE"
        elif status == 405:
            code, message = "METHOD_NOT_ALLOWED", "HTTP Method not allowed for this resource"
        elif code == "NOT_FOUND" and message.startswith(NOT_FOUND):
            message = NOT_FOUND
        return [{"message": message, "errorCode": code}]

    def throttled(self, limit: RateLimit, retry_after: float) -> Response:
        # The REST API never answers 429; concurrency limits come back as 403 REQUEST_LIMIT_EXCEEDED.
        return json_response([{"message": "ConcurrentPerOrgLongTxn Limit exceeded.",
                               "errorCode": "REQUEST_LIMIT_EXCEEDED"}], 403)

    def extra_headers(self, request: Request) -> dict[str, str]:
        if request.path.startswith("/services/data/v"):
            return {"Sforce-Limit-Info": f"api-usage={self.api_used}/{self.daily_api_limit}"}
        return {}

    def authenticate(self, request: Request) -> None:
        path = request.path.rstrip("/")
        if path.startswith("/services/oauth2") or path == "/services/data":
            return  # the token endpoint and the versions list need no session
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() not in ("bearer", "oauth") or not (
                token == self.credentials["access_token"] or token in self._tokens):
            raise ApiError(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}],
                           {"WWW-Authenticate": 'Token realm="Salesforce"'})
        with self._usage_lock:
            today = self.world.now().date()
            if today != self._usage_day:  # the allowance is daily: a new world day starts a new count
                self._usage_day, self.api_used = today, 0
            if self.api_used >= self.daily_api_limit:
                raise sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            self.api_used += 1

    # -- helpers -------------------------------------------------------------------------------------
    @staticmethod
    def _version(version: str) -> str:
        m = VERSION_RE.match(version)
        if m is None or int(m.group(1)) < OLDEST_VERSION:
            raise sf_error(404, "NOT_FOUND", NOT_FOUND)
        return f"{int(m.group(1))}.{m.group(2)}"

    def _sobject(self, name: str) -> str:
        sobject = self.schema.sobject_name(name)
        if sobject is None:
            raise sf_error(404, "NOT_FOUND", NOT_FOUND)
        return sobject

    @staticmethod
    def _json(request: Request) -> Any:
        raw = request.get_data(as_text=True)
        try:
            return json.loads(raw) if raw.strip() else None
        except json.JSONDecodeError as exc:
            raise sf_error(400, "JSON_PARSER_ERROR", f"Unexpected character at [line:{exc.lineno}, "
                           f"column:{exc.colno}]: {exc.msg}") from None

    def _api_user(self) -> str | None:
        users = self.world.salesforce.get("User", {})
        for user in users.values():
            if user.get("Username") == self.credentials.get("username"):
                return user["Id"]
        return next(iter(users), None)

    def _render(self, version: str, sobject: str, rec: dict, fields: list[str] | None = None) -> dict:
        """A record as GET /sobjects/{Object}/{Id} returns it: attributes, then its fields."""
        fmap = self.schema.field_map(sobject)
        out: dict[str, Any] = {"attributes": self._attrs(version)(sobject, rec["Id"])}
        names = [f["name"] for f in fmap.values()] if fields is None else fields + (
            [] if "Id" in fields else ["Id"])
        for name in names:
            out[name] = rec.get(name)
        return out

    def _fields_param(self, sobject: str, raw: str | list | None) -> list[str] | None:
        if raw is None:
            return None
        names = [n.strip() for n in (raw.split(",") if isinstance(raw, str) else raw) if str(n).strip()]
        fmap, out = self.schema.field_map(sobject), []
        for name in names:
            f = fmap.get(str(name).lower())
            if f is None:
                raise sf_error(400, "INVALID_FIELD", NO_COLUMN.format(f=name, o=sobject))
            out.append(f["name"])
        return out

    @staticmethod
    def _attrs(version: str, tooling: bool = False) -> Callable[[str, str], dict]:
        base = f"/services/data/v{version}/{'tooling/' if tooling else ''}sobjects/"
        return lambda sobject, rec_id: {"type": sobject, "url": f"{base}{sobject}/{rec_id}"}

    def _write(self, sobject: str, values: dict, record: dict | None) -> dict:
        """Apply a checked create (record None) or update through world.sf_put."""
        now = self.world.now()
        if record is None and "ownerid" in self.schema.field_map(sobject) and not values.get("OwnerId"):
            owner = self._api_user()
            if owner:
                values["OwnerId"] = owner
        values.update(derive(sobject, record or {}, values, now))
        if record is not None:
            values["Id"] = record["Id"]
        return self.world.sf_put(sobject, values, at=now)

    # -- OAuth ---------------------------------------------------------------------------------------
    def oauth_token(self, request: Request) -> Response:
        form, creds = request.form, self.credentials
        grant = form.get("grant_type")

        def fail(error: str, description: str) -> Response:
            return json_response({"error": error, "error_description": description}, 400)
        if grant not in ("password", "refresh_token", "client_credentials"):
            return fail("unsupported_grant_type", "grant type not supported")
        if form.get("client_id") != creds["client_id"]:
            return fail("invalid_client_id", "client identifier invalid")
        secret = form.get("client_secret")
        if grant == "refresh_token":  # the secret is optional for refresh, but must be right if sent
            if secret is not None and secret != creds["client_secret"]:
                return fail("invalid_client", "invalid client credentials")
            if form.get("refresh_token") != creds["refresh_token"]:
                return fail("invalid_grant", "expired access/refresh token")
        else:
            if secret != creds["client_secret"]:
                return fail("invalid_client", "invalid client credentials")
            if grant == "password" and (form.get("username") != creds["username"]
                                        or form.get("password") != creds["password"]):
                return fail("invalid_grant", "authentication failure")
        org = creds["organization_id"]
        token = f"{org}!AQ{secrets.token_urlsafe(72)}"
        self._tokens[token] = None
        while len(self._tokens) > 1000:  # bounded: the oldest issued tokens expire first
            self._tokens.popitem(last=False)
        instance = request.host_url.rstrip("/")
        ident = f"{instance}/id/{org}/{self._api_user() or '005000000000000AAA'}"
        issued = str(int(time.time() * 1000))
        signature = base64.b64encode(hmac.new(creds["client_secret"].encode(), (ident + issued).encode(),
                                              hashlib.sha256).digest()).decode()
        return json_response({"access_token": token, "instance_url": instance, "id": ident,
                              "token_type": "Bearer", "issued_at": issued, "signature": signature})

    # -- versions, resources, limits ----------------------------------------------------------------
    def versions(self, request: Request) -> list[dict]:
        newest = int(float(SALESFORCE_API_VERSION))
        return [{"label": f"{SEASONS[(v - 20) % 3]} '{11 + (v - 20) // 3:02d}", "url": f"/services/data/v{v}.0",
                 "version": f"{v}.0"} for v in range(OLDEST_VERSION, newest + 1)]

    @handler
    def resources(self, request: Request, version: str) -> dict:
        v = self._version(version)
        return {name: f"/services/data/v{v}/{name}"
                for name in ("tooling", "composite", "limits", "query", "queryAll", "sobjects")}

    @handler
    def limits(self, request: Request, version: str) -> dict:
        self._version(version)
        limits = json.loads(load_data("limits.json"))
        limits["DailyApiRequests"] = {"Max": self.daily_api_limit,
                                      "Remaining": max(0, self.daily_api_limit - self.api_used)}
        return limits

    # -- describe --------------------------------------------------------------------------------------
    @handler
    def global_describe(self, request: Request, version: str) -> dict:
        return self.schema.global_describe(self._version(version))

    @handler
    def sobject_info(self, request: Request, version: str, sobject: str) -> dict:
        v, sobject = self._version(version), self._sobject(sobject)
        return {"objectDescribe": self.schema.global_entry(sobject, v), "recentItems": []}

    @handler
    def describe(self, request: Request, version: str, sobject: str) -> dict:
        v, sobject = self._version(version), self._sobject(sobject)
        return self.schema.describe(sobject, v, request.host_url.rstrip("/"))

    # -- replication: GET /sobjects/{Object}/updated and /deleted ---------------------------------------
    @handler
    def get_updated(self, request: Request, version: str, sobject: str) -> dict:
        return self._replication(request, version, sobject, deleted=False)

    @handler
    def get_deleted(self, request: Request, version: str, sobject: str) -> dict:
        return self._replication(request, version, sobject, deleted=True)

    def _replication(self, request: Request, version: str, sobject: str, deleted: bool) -> dict:
        """Ids changed (or deleted) in [start, end): times are taken to the minute, start at most 30
        days back, deletions are kept 15 days (Salesforce's recycle bin)."""
        self._version(version)
        sobject = self._sobject(sobject)
        bounds = []
        for key in ("start", "end"):
            raw = request.args.get(key)
            if not raw:
                raise sf_error(400, "MISSING_ARGUMENT", f"Missing required parameter: {key}")
            try:  # a literal "+" in the query string arrives as a space
                bounds.append(parse_time(raw.replace(" ", "+")).replace(second=0, microsecond=0))
            except ValueError:
                raise sf_error(400, "INVALID_REPLICATION_DATE", f"Invalid {key} date: {raw}") from None
        start, end = bounds
        now = self.world.now()
        if end < start:
            raise sf_error(400, "INVALID_REPLICATION_DATE", "EndDate can not be earlier than StartDate")
        if start < now - timedelta(days=REPLICATION_DAYS):
            raise sf_error(400, "INVALID_REPLICATION_DATE", "startDate cannot be more than 30 days ago")
        latest = min(end, now.replace(second=0, microsecond=0))
        earliest = (now - timedelta(days=RECYCLE_BIN_DAYS)).replace(second=0, microsecond=0)
        low = max(start, earliest) if deleted else start
        hits = [r for r in self.world.salesforce.get(sobject, {}).values()
                if bool(r.get("IsDeleted")) == deleted and low <= _stamp(r) < latest]
        if deleted:
            return {"deletedRecords": [{"id": r["Id"], "deletedDate": r["SystemModstamp"]} for r in hits],
                    "earliestDateAvailable": sf_time(earliest), "latestDateCovered": sf_time(latest)}
        return {"ids": [r["Id"] for r in hits], "latestDateCovered": sf_time(latest)}

    # -- records ---------------------------------------------------------------------------------------
    def _existing(self, sobject: str, record_id: str, for_write: bool) -> dict:
        if not ID_RE.match(record_id):
            raise sf_error(404, "NOT_FOUND", f"Provided external ID field does not exist or is not "
                           f"accessible: {record_id}")
        rec = self.world.salesforce.get(sobject, {}).get(id18(record_id))
        if rec is None or (rec.get("IsDeleted") and not for_write):
            raise sf_error(404, "NOT_FOUND", NOT_FOUND)
        if rec.get("IsDeleted"):
            raise sf_error(404, "ENTITY_IS_DELETED", "entity is deleted", [])
        return rec

    @handler
    def get_record(self, request: Request, version: str, sobject: str, record_id: str) -> dict:
        v, sobject = self._version(version), self._sobject(sobject)
        rec = self._existing(sobject, record_id, for_write=False)
        return self._render(v, sobject, rec, self._fields_param(sobject, request.args.get("fields")))

    @handler
    def update_record(self, request: Request, version: str, sobject: str, record_id: str) -> Response:
        self._version(version)
        sobject = self._sobject(sobject)
        rec = self._existing(sobject, record_id, for_write=True)
        body = self._json(request)
        if not isinstance(body, dict):
            raise sf_error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        values, errors = self.schema.prepare(sobject, body, creating=False)
        if errors:
            raise ApiError(400, [{"message": e.message, "errorCode": e.code, "fields": e.fields} for e in errors])
        self._write(sobject, values, rec)
        return Response(status=204)

    @handler
    def create_record(self, request: Request, version: str, sobject: str) -> Response:
        v, sobject = self._version(version), self._sobject(sobject)
        body = self._json(request)
        if not isinstance(body, dict):
            raise sf_error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        values, errors = self.schema.prepare(sobject, body, creating=True)
        if errors:
            raise ApiError(400, [{"message": e.message, "errorCode": e.code, "fields": e.fields} for e in errors])
        rec = self._write(sobject, values, None)
        return json_response({"id": rec["Id"], "errors": [], "success": True}, 201,
                             {"Location": f"/services/data/v{v}/sobjects/{sobject}/{rec['Id']}"})

    @handler
    def delete_record(self, request: Request, version: str, sobject: str, record_id: str) -> Response:
        self._version(version)
        sobject = self._sobject(sobject)
        rec = self._existing(sobject, record_id, for_write=True)
        if not self.schema.deletable(sobject):
            raise sf_error(400, "INVALID_TYPE_FOR_OPERATION", "entity type cannot be deleted", [])
        self.world.sf_delete(sobject, rec["Id"])
        return Response(status=204)

    # -- queries ----------------------------------------------------------------------------------------
    @handler
    def query(self, request: Request, version: str) -> dict:
        return self._query(request, self._version(version), "query", include_deleted=False)

    @handler
    def query_all(self, request: Request, version: str) -> dict:
        return self._query(request, self._version(version), "queryAll", include_deleted=True)

    @handler
    def tooling_query(self, request: Request, version: str) -> dict:
        return self._query(request, self._version(version), "tooling/query", include_deleted=False)

    def _query(self, request: Request, version: str, endpoint: str, include_deleted: bool) -> dict:
        text = request.args.get("q")
        if not text or not text.strip():
            raise sf_error(400, "MALFORMED_QUERY", "A query string has to be specified")
        tooling = endpoint.startswith("tooling")
        schema = self.tooling if tooling else self.schema
        compiled = compile_query(text, schema, self.world.now())
        source = self.tooling.rows() if tooling else self.world.salesforce.get(compiled.sobject, {}).values()
        if not include_deleted:
            source = (r for r in source if not r.get("IsDeleted"))
        rows = compiled.run(source)
        if compiled.count_only:
            return {"totalSize": len(rows), "done": True, "records": []}
        attrs = self._attrs(version, tooling)
        projected = [compiled.project(r, attrs) for r in rows]
        match = re.search(r"batchSize\s*=\s*(\d+)", request.headers.get("Sforce-Query-Options", ""))
        batch = min(DEFAULT_BATCH, max(MIN_BATCH, int(match.group(1)))) if match else DEFAULT_BATCH
        if len(projected) <= batch:
            return {"totalSize": len(projected), "done": True, "records": projected}
        locator = self._open_cursor(Cursor(projected, batch, f"/services/data/v{version}/{endpoint}"))
        return self._page(locator, 0)

    def _open_cursor(self, cursor: Cursor) -> str:
        now = time.monotonic()
        for key in [k for k, c in self._cursors.items() if now - c.used > CURSOR_IDLE_SECONDS]:
            del self._cursors[key]
        while len(self._cursors) >= MAX_CURSORS:  # the oldest cursor is released, as Salesforce does
            self._cursors.popitem(last=False)
        self._cursor_seq += 1
        id15 = f"01g5g{self._cursor_seq:010d}"
        locator = id18(id15)
        self._cursors[locator] = cursor
        return locator

    def _page(self, locator: str, offset: int) -> dict:
        cursor = self._cursors[locator]
        cursor.used = time.monotonic()
        self._cursors.move_to_end(locator)
        end = offset + cursor.batch
        page: dict[str, Any] = {"totalSize": len(cursor.rows), "done": end >= len(cursor.rows)}
        if page["done"]:
            del self._cursors[locator]
        else:
            page["nextRecordsUrl"] = f"{cursor.prefix}/{locator}-{end}"
        page["records"] = cursor.rows[offset:end]
        return page

    @handler
    def query_more(self, request: Request, version: str, locator: str) -> dict:
        self._version(version)
        key, _, offset = locator.partition("-")
        if key not in self._cursors or (offset and not offset.isdigit()):
            raise sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(key, int(offset or 0))

    # -- Tooling API: CustomField ----------------------------------------------------------------------
    @handler
    def tooling_create(self, request: Request, version: str, sobject: str) -> Response:
        v = self._version(version)
        if sobject.lower() != "customfield":
            raise sf_error(404, "NOT_FOUND", NOT_FOUND)
        table, stored = define_custom_field(self.world, self.schema, self._json(request))
        rec_id = tooling_id(table, stored)
        return json_response({"id": rec_id, "errors": [], "success": True}, 201,
                             {"Location": f"/services/data/v{v}/tooling/sobjects/CustomField/{rec_id}"})

    @handler
    def tooling_record(self, request: Request, version: str, sobject: str, record_id: str) -> Any:
        v = self._version(version)
        found = self.tooling.find(id18(record_id)) if sobject.lower() == "customfield" and \
            ID_RE.match(record_id) else None
        if found is None:
            raise sf_error(404, "NOT_FOUND", NOT_FOUND)
        table, stored = found
        if request.method == "DELETE":
            del self.world.sf_custom_fields[table][stored["name"]]
            for rec in self.world.salesforce.get(table, {}).values():  # the field's data goes with it
                rec.pop(stored["name"], None)
            return Response(status=204)
        row = next(r for r in self.tooling.rows() if r["Id"] == id18(record_id))
        describe = self.schema.custom_describe(stored)
        metadata = {"label": describe["label"], "type": describe["type"], "length": describe.get("length"),
                    "precision": describe.get("precision"), "scale": describe.get("scale"),
                    "required": not describe.get("nillable", True), "externalId": describe.get("externalId"),
                    "description": stored.get("_description")}
        return {"attributes": self._attrs(v, tooling=True)("CustomField", row["Id"]), **row, "Metadata": metadata}


def _stamp(rec: dict) -> datetime:
    return parse_time(rec["SystemModstamp"])
