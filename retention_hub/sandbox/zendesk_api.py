"""Zendesk Support API emulator: the endpoints a retention hub (and zenpy) use, with Zendesk's own
paths (with or without `.json`), parameters, pagination, headers, status codes and error bodies.

Covered: cursor-based incremental ticket and user exports, the time-based incremental organization
export, lists with cursor and offset pagination, shows, show_many, users/me, and ticket and
organization writes through `World.zd_put`. Object shapes live in `zendesk_objects`, paging in
`zendesk_paging`. Every URL in a reply is absolute on the emulator's own base (request.host_url),
because clients follow `after_url` / `links.next` / `next_page` as given.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import time
from datetime import datetime
from typing import Any, Callable, Iterable
from urllib.parse import quote, urlencode

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from .emulator import ApiError, Emulator, RateLimit, json_response
from .records import parse_time, unix, zd_time
from .zendesk_objects import (API_VIA, USER_ROLES, audit_json, organization_json, parse_include,
                              record_invalid, satisfaction_rating_json, ticket_json, ticket_sideloads,
                              user_json, user_sideloads, validate_organization, validate_ticket)
from .zendesk_paging import (CursorError, IndexCache, Key, cursor_page, decode_export_cursor,
                             decode_list_cursor, encode_export_cursor, encode_list_cursor,
                             export_page, fingerprint, offset_page, parse_int, time_page)

NOT_FOUND = {"error": "RecordNotFound", "description": "Not found"}
MAX_CURSOR_PAGE = 100  # page[size] limit on list endpoints
MAX_OFFSET_RECORDS = 10_000  # offset pagination stops after the first 10,000 records (400 beyond)
MAX_EXPORT_PAGE = 1000  # per_page limit (and default) of incremental exports
MAX_SHOW_MANY = 100
EXPORT_LAG_SECONDS = 60  # exports never return the most recent minute
SCORES = ("offered", "unoffered", "received", "received_with_comment", "received_without_comment",
          "good", "good_with_comment", "good_without_comment", "bad", "bad_with_comment",
          "bad_without_comment")
SYNTHETIC_ME_ID = 369_999_999_999  # the API user when the world holds no user with its email


def _routes(*specs: tuple[str, str, list[str]]) -> list[Rule]:
    """Zendesk answers each path with and without the `.json` suffix."""
    rules = []
    for path, endpoint, methods in specs:
        rules.append(Rule(path + ".json", endpoint=endpoint, methods=methods))
        rules.append(Rule(path, endpoint=endpoint, methods=methods))
    return rules


def _ts(value: Any) -> int:
    """Zendesk time string -> unix seconds (0 when absent)."""
    if not value:
        return 0
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return unix(parse_time(str(value)))


def bad_request(description: str, error: str = "InvalidValue") -> ApiError:
    return ApiError(400, {"error": error, "description": description})


class ZendeskEmulator(Emulator):
    """The Zendesk Support API over the shared world's `zendesk` tables."""

    vendor = "zendesk"
    PLAN_LIMIT = RateLimit("api", 700, 60.0)  # Enterprise plan, requests per minute
    EXPORT_LIMIT = RateLimit("incremental_exports", 10, 60.0, r"^/api/v2/incremental/")
    rate_limits = [PLAN_LIMIT, EXPORT_LIMIT]
    rules = _routes(
        ("/api/v2/incremental/tickets/cursor", "incremental_tickets", ["GET"]),
        ("/api/v2/incremental/users/cursor", "incremental_users", ["GET"]),
        ("/api/v2/incremental/organizations", "incremental_organizations", ["GET"]),
        ("/api/v2/organizations", "list_organizations", ["GET"]),
        ("/api/v2/organizations", "create_organization", ["POST"]),
        ("/api/v2/organizations/show_many", "show_many_organizations", ["GET"]),
        ("/api/v2/organizations/<int:org_id>", "show_organization", ["GET"]),
        ("/api/v2/organizations/<int:org_id>", "update_organization", ["PUT"]),
        ("/api/v2/organizations/<int:org_id>/tickets", "organization_tickets", ["GET"]),
        ("/api/v2/organizations/<int:org_id>/users", "organization_users", ["GET"]),
        ("/api/v2/users", "list_users", ["GET"]),
        ("/api/v2/users/me", "show_me", ["GET"]),
        ("/api/v2/users/show_many", "show_many_users", ["GET"]),
        ("/api/v2/users/<int:user_id>", "show_user", ["GET"]),
        ("/api/v2/tickets", "list_tickets", ["GET"]),
        ("/api/v2/tickets", "create_ticket", ["POST"]),
        ("/api/v2/tickets/show_many", "show_many_tickets", ["GET"]),
        ("/api/v2/tickets/<int:ticket_id>", "show_ticket", ["GET"]),
        ("/api/v2/tickets/<int:ticket_id>", "update_ticket", ["PUT"]),
        ("/api/v2/satisfaction_ratings", "list_satisfaction_ratings", ["GET"]),
        ("/api/v2/satisfaction_ratings/<int:rating_id>", "show_satisfaction_rating", ["GET"]),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._indexes = IndexCache()

    # -- vendor hooks ----------------------------------------------------------------------------
    def authenticate(self, request: Request) -> None:
        """Basic `{email}/token:{api_token}`, or `Bearer <api_token>` as an OAuth token."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        email, token = self.credentials["email"], self.credentials["api_token"]
        if scheme.lower() == "basic":
            try:
                user, _, secret = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                user, secret = "", ""
            if (user.lower() == f"{email}/token".lower()
                    and hmac.compare_digest(secret.encode(), token.encode())):
                return
        elif scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
            return
        raise ApiError(401, self.error_body(401, "UNAUTHORIZED", ""),
                       {"WWW-Authenticate": 'Basic realm="Web Password"'})

    def error_body(self, status: int, code: str, message: str) -> Any:
        if status == 401:
            return {"error": "Couldn't authenticate you"}
        if status in (404, 405):
            return {"error": "InvalidEndpoint", "description": "Not found"}
        if status == 429:
            return {"error": "APIRateLimitExceeded",
                    "description": "Number of allowed API requests per minute exceeded"}
        if status == 503:
            return {"error": "ServiceUnavailable", "description": message or "Service Unavailable"}
        if status >= 500:
            return {"error": "InternalError", "description": message or "Internal Server Error"}
        return {"error": "InvalidValue", "description": message}

    def throttled(self, limit: RateLimit, retry_after: float) -> Response:
        description = ("Number of allowed incremental export API requests per minute exceeded"
                       if limit is self.EXPORT_LIMIT else
                       "Number of allowed API requests per minute exceeded")
        return json_response({"error": "APIRateLimitExceeded", "description": description}, 429,
                             {"Retry-After": str(max(1, math.ceil(retry_after)))})

    def extra_headers(self, request: Request) -> dict[str, str]:
        """Account-wide rate-limit counters, sent on every reply as Zendesk does."""
        limit, now = self.PLAN_LIMIT, time.monotonic()
        with self._stats_lock:  # the base class appends to the windows under this lock
            live = [t for t in self._windows.get(limit.name, ()) if t > now - limit.window]
        remaining = str(max(0, limit.limit - len(live)))
        reset = math.ceil(live[0] + limit.window - now) if live else int(limit.window)
        return {"X-Rate-Limit": str(limit.limit), "X-Rate-Limit-Remaining": remaining,
                "ratelimit-limit": str(limit.limit), "ratelimit-remaining": remaining,
                "ratelimit-reset": str(max(1, reset)), "X-Zendesk-API-Version": "v2"}

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def zendesk(self) -> dict[str, dict[int, dict]]:
        return self.world.zendesk

    @staticmethod
    def _base(request: Request) -> str:
        return request.host_url.rstrip("/")

    def _me(self) -> dict:
        """The user the API credentials belong to."""
        email = self.credentials["email"].lower()
        for user in self.zendesk["users"].values():  # only on users/me and writes: a scan is fine
            if str(user.get("email") or "").lower() == email:
                return user
        anchor = zd_time(self.world.anchor)
        return {"id": SYNTHETIC_ME_ID, "name": "Sandbox Admin", "email": self.credentials["email"],
                "role": "admin", "verified": True, "active": True, "created_at": anchor,
                "updated_at": anchor}

    def _record(self, kind: str, rec_id: int) -> dict:
        rec = self.zendesk[kind].get(rec_id)
        if rec is None or (kind == "tickets" and rec.get("status") == "deleted"):
            raise ApiError(404, NOT_FOUND)
        return rec

    @staticmethod
    def _payload(request: Request, root: str) -> Any:
        try:
            body = json.loads(request.get_data(as_text=True) or "null")
        except ValueError:
            raise bad_request("The request body is not valid JSON", "InvalidJSON") from None
        if not isinstance(body, dict) or root not in body:
            raise bad_request(f"param is missing or the value is empty: {root}", "ParameterMissing")
        return body[root]

    @staticmethod
    def _url(request: Request, path: str, replace: dict[str, Any], drop: Iterable[str] = ()) -> str:
        """Absolute URL for another page of this query: same params, some replaced or dropped."""
        gone = set(replace) | set(drop)
        params = [(k, str(v)) for k, v in replace.items() if v is not None]
        params += [(k, v) for k, v in request.args.items(multi=True) if k not in gone]
        query = urlencode(params, quote_via=quote, safe="[],")
        return f"{request.host_url.rstrip('/')}{path}" + (f"?{query}" if query else "")

    # -- lists: cursor and offset pagination -----------------------------------------------------
    def _sort(self, request: Request, allowed: tuple[str, ...]) -> tuple[str, bool]:
        """`sort=-updated_at` (cursor) or `sort_by=..&sort_order=desc` (offset) -> (field, desc)."""
        args = request.args
        if args.get("sort"):
            raw = args["sort"]
            field, desc = raw.lstrip("-"), raw.startswith("-")
        else:
            field = args.get("sort_by") or "id"
            desc = (args.get("sort_order") or "asc").lower() == "desc"
            if (args.get("sort_order") or "asc").lower() not in ("asc", "desc"):
                raise bad_request("sort_order must be asc or desc")
        if field not in allowed:
            raise bad_request(f"Invalid sort field: {field}")
        return field, desc

    def _list(self, request: Request, kind: str, root: str, query: tuple,
              predicate: Callable[[dict], bool], serialize: Callable[[dict, str], dict],
              sideloads: Callable[[list[dict]], dict] | None = None,
              sortable: tuple[str, ...] = ("id",)) -> dict:
        field, desc = self._sort(request, sortable)
        order = ("-" if desc else "") + field
        table = self.zendesk[kind]

        def build() -> Iterable[Key]:
            sign = -1 if desc else 1
            for rec in table.values():
                if predicate(rec):
                    value = rec["id"] if field == "id" else _ts(rec.get(field))
                    yield sign * value, sign * rec["id"]

        keys = self._indexes.keys((kind, query, order), fingerprint(table), build)
        args, base, path = request.args, self._base(request), request.path
        if any(k.startswith("page[") for k in args):
            size = parse_int(args.get("page[size]", str(MAX_CURSOR_PAGE)))
            if size is None or not 1 <= size <= MAX_CURSOR_PAGE:
                raise ApiError(400, {"error": "InvalidPaginationParameter", "description":
                                     f"page[size] must be an integer from 1 to {MAX_CURSOR_PAGE}"})
            if args.get("page[after]") and args.get("page[before]"):
                raise ApiError(400, {"error": "InvalidPaginationParameter", "description":
                                     "page[after] and page[before] cannot be used together"})
            try:
                after = decode_list_cursor(args["page[after]"], order) if args.get("page[after]") else None
                before = decode_list_cursor(args["page[before]"], order) if args.get("page[before]") else None
            except CursorError:
                raise ApiError(400, {"error": "InvalidPaginationParameter",
                                     "description": "Invalid cursor"}) from None
            page = cursor_page(keys, size, after, before)
            records = [table[k[1] if not desc else -k[1]] for k in page.keys]
            after_c = encode_list_cursor(order, page.keys[-1]) if page.keys else None
            before_c = encode_list_cursor(order, page.keys[0]) if page.keys else None
            body: dict[str, Any] = {root: [serialize(r, base) for r in records]}
            body.update(sideloads(records) if sideloads else {})
            nav = {"page[size]": size}
            body["meta"] = {"has_more": page.has_more, "after_cursor": after_c, "before_cursor": before_c}
            body["links"] = {
                "prev": self._url(request, path, {**nav, "page[before]": before_c}, ["page[after]"])
                if before_c else None,
                "next": self._url(request, path, {**nav, "page[after]": after_c}, ["page[before]"])
                if after_c else None}
            return body
        page_no = parse_int(args.get("page", "1"))
        per_page = parse_int(args.get("per_page", "100"))
        if page_no is None or page_no < 1 or per_page is None or per_page < 1:
            raise bad_request("page and per_page must be positive integers")
        per_page = min(per_page, 100)  # Zendesk caps offset pages at 100 records
        if (page_no - 1) * per_page >= MAX_OFFSET_RECORDS:
            raise bad_request("Offset pagination is limited to the first 10000 records; "
                              "use cursor pagination (page[size]) to go further",
                              "InvalidPaginationParameter")
        page = offset_page(keys, page_no, per_page)
        records = [table[k[1] if not desc else -k[1]] for k in page.keys]
        body = {root: [serialize(r, base) for r in records]}
        body.update(sideloads(records) if sideloads else {})
        body["next_page"] = (self._url(request, path, {"page": page_no + 1, "per_page": per_page})
                             if page.has_more else None)
        body["previous_page"] = (self._url(request, path, {"page": page_no - 1, "per_page": per_page})
                                 if page_no > 1 else None)
        body["count"] = len(keys)
        return body

    def _ticket_sideloads(self, request: Request) -> Callable[[list[dict]], dict]:
        include, base = parse_include(request.args.get("include")), self._base(request)
        return lambda recs: ticket_sideloads(recs, include, self.zendesk, base,
                                             self._me() if "users" in include else None)

    def _user_sideloads(self, request: Request) -> Callable[[list[dict]], dict]:
        include, base = parse_include(request.args.get("include")), self._base(request)
        return lambda recs: user_sideloads(recs, include, self.zendesk, base)

    def list_organizations(self, request: Request) -> dict:
        return self._list(request, "organizations", "organizations", (), lambda r: True, organization_json)

    def list_users(self, request: Request) -> dict:
        roles = tuple(sorted(set(request.args.getlist("role") + request.args.getlist("role[]"))))
        if any(role not in USER_ROLES for role in roles):
            raise bad_request(f"role must be one of {', '.join(USER_ROLES)}")
        return self._list(request, "users", "users", ("role",) + roles,
                          (lambda r: r.get("role") in roles) if roles else (lambda r: True),
                          user_json, self._user_sideloads(request))

    def list_tickets(self, request: Request) -> dict:
        return self._list(request, "tickets", "tickets", (), lambda r: r.get("status") != "deleted",
                          ticket_json, self._ticket_sideloads(request),
                          sortable=("id", "created_at", "updated_at"))

    def organization_tickets(self, request: Request, org_id: int) -> dict:
        self._record("organizations", org_id)
        return self._list(request, "tickets", "tickets", ("organization", org_id),
                          lambda r: r.get("organization_id") == org_id and r.get("status") != "deleted",
                          ticket_json, self._ticket_sideloads(request),
                          sortable=("id", "created_at", "updated_at"))

    def organization_users(self, request: Request, org_id: int) -> dict:
        self._record("organizations", org_id)
        return self._list(request, "users", "users", ("organization", org_id),
                          lambda r: r.get("organization_id") == org_id, user_json,
                          self._user_sideloads(request))

    def list_satisfaction_ratings(self, request: Request) -> dict:
        args = request.args
        score = (args.get("score") or "").lower() or None
        if score is not None and score not in SCORES:
            raise bad_request(f"score must be one of {', '.join(SCORES)}")
        start, end = args.get("start_time"), args.get("end_time")
        start_ts, end_ts = parse_int(start), parse_int(end)
        if (start and start_ts is None) or (end and end_ts is None):
            raise bad_request("start_time and end_time must be Unix epoch times")

        def matches(rec: dict) -> bool:
            created = _ts(rec.get("created_at"))
            if (start_ts is not None and created < start_ts) or (end_ts is not None and created > end_ts):
                return False
            return score is None or _score_matches(rec, score)

        return self._list(request, "satisfaction_ratings", "satisfaction_ratings",
                          ("csat", score, start_ts, end_ts), matches, satisfaction_rating_json)

    # -- shows -----------------------------------------------------------------------------------
    def show_ticket(self, request: Request, ticket_id: int) -> dict:
        rec = self._record("tickets", ticket_id)
        return {"ticket": ticket_json(rec, self._base(request)), **self._ticket_sideloads(request)([rec])}

    def show_user(self, request: Request, user_id: int) -> dict:
        rec = self._record("users", user_id)
        return {"user": user_json(rec, self._base(request)), **self._user_sideloads(request)([rec])}

    def show_organization(self, request: Request, org_id: int) -> dict:
        return {"organization": organization_json(self._record("organizations", org_id), self._base(request))}

    def show_satisfaction_rating(self, request: Request, rating_id: int) -> dict:
        rec = self._record("satisfaction_ratings", rating_id)
        return {"satisfaction_rating": satisfaction_rating_json(rec, self._base(request))}

    def show_me(self, request: Request) -> dict:
        return {"user": user_json(self._me(), self._base(request))}

    def _show_many(self, request: Request, kind: str, serialize: Callable[[dict, str], dict],
                   sideloads: Callable[[list[dict]], dict] | None = None) -> dict:
        raw = request.args.get("ids") or ""
        try:
            ids = [int(part) for part in raw.split(",") if part.strip()]
        except ValueError:
            raise bad_request("ids must be a comma-separated list of integers") from None
        if not ids:
            raise bad_request("ids is required")
        if len(ids) > MAX_SHOW_MANY:
            raise ApiError(400, {"error": "TooManyValues",
                                 "description": f"You may request at most {MAX_SHOW_MANY} ids"})
        table = self.zendesk[kind]
        records = [table[i] for i in dict.fromkeys(ids) if i in table
                   and not (kind == "tickets" and table[i].get("status") == "deleted")]
        body: dict[str, Any] = {kind: [serialize(r, self._base(request)) for r in records]}
        body.update(sideloads(records) if sideloads else {})
        body.update({"next_page": None, "previous_page": None, "count": len(records)})
        return body

    def show_many_tickets(self, request: Request) -> dict:
        return self._show_many(request, "tickets", ticket_json, self._ticket_sideloads(request))

    def show_many_users(self, request: Request) -> dict:
        return self._show_many(request, "users", user_json, self._user_sideloads(request))

    def show_many_organizations(self, request: Request) -> dict:
        return self._show_many(request, "organizations", organization_json)

    # -- incremental exports ---------------------------------------------------------------------
    def _export_params(self, request: Request) -> tuple[int, int]:
        """-> (per_page, cutoff); validates per_page (above 1000 is capped, as Zendesk does)."""
        raw = request.args.get("per_page")
        per_page = parse_int(raw) if raw else MAX_EXPORT_PAGE
        if per_page is None or per_page < 1:
            raise bad_request("per_page must be a positive integer")
        return min(per_page, MAX_EXPORT_PAGE), unix(self.world.now()) - EXPORT_LAG_SECONDS

    def _start_time(self, request: Request) -> int:
        """The required `start_time`: an integer, not in the future, at least a minute old."""
        raw = request.args.get("start_time")
        if raw is None or raw.strip() == "":
            raise bad_request("start_time is required (a Unix epoch time in seconds)")
        start = parse_int(raw)
        if start is None or start < 0:
            raise bad_request("start_time must be a Unix epoch time in seconds")
        now = unix(self.world.now())
        if start > now:
            raise bad_request("start_time cannot be in the future")
        if start > now - EXPORT_LAG_SECONDS:
            raise ApiError(422, {"error": "InvalidValue", "description":
                                 "Too recent start_time. Use a start_time older than 1 minute"})
        return start

    def _cursor_export(self, request: Request, kind: str, stamp: Callable[[dict], int],
                       keep: Callable[[int], bool], sideloads: Callable[[list[dict]], dict]) -> dict:
        """Shared body of the cursor-based ticket and user exports, ordered by (stamp, id)."""
        per_page, cutoff = self._export_params(request)
        table = self.zendesk[kind]
        cursor = request.args.get("cursor") or ""  # Zendesk's samples send an empty cursor
        if cursor:
            try:
                position, before = decode_export_cursor(cursor)
            except CursorError:
                raise bad_request("Invalid cursor") from None
        else:
            position, before = (self._start_time(request), 0), False
        keys = self._indexes.keys((kind, "export"), fingerprint(table),
                                  lambda: ((stamp(r), r["id"]) for r in table.values()))
        page = export_page(keys, position, before, cutoff, per_page, keep)
        records = [table[k[1]] for k in page.keys]
        if page.keys:
            after_key = page.keys[-1]
        else:  # nothing new: hand back the same position so the next poll resumes there
            after_key = position if not before else (position[0], position[1] - 1)
        first = page.keys[0] if page.keys else None
        has_older = first is not None and keys and keys[0] < first
        after_c = encode_export_cursor(after_key)
        before_c = encode_export_cursor(first, before=True) if has_older and first else None
        path, drop = f"/api/v2/incremental/{kind}/cursor.json", ["start_time", "cursor"]
        serialize, base = (ticket_json if kind == "tickets" else user_json), self._base(request)
        body: dict[str, Any] = {kind: [serialize(r, base) for r in records], **sideloads(records)}
        body.update({
            "after_url": self._url(request, path, {"cursor": after_c}, drop), "after_cursor": after_c,
            "before_url": self._url(request, path, {"cursor": before_c}, drop) if before_c else None,
            "before_cursor": before_c, "end_of_stream": page.end_of_stream})
        return body

    def incremental_tickets(self, request: Request) -> dict:
        table = self.zendesk["tickets"]
        exclude_deleted = (request.args.get("exclude_deleted") or "").lower() in ("true", "1")
        keep = ((lambda i: table[i].get("status") != "deleted") if exclude_deleted else (lambda i: True))
        return self._cursor_export(
            request, "tickets", lambda r: int(r.get("generated_timestamp") or _ts(r.get("updated_at"))),
            keep, self._ticket_sideloads(request))

    def incremental_users(self, request: Request) -> dict:
        return self._cursor_export(request, "users", lambda r: _ts(r.get("updated_at")),
                                   lambda i: True, self._user_sideloads(request))

    def incremental_organizations(self, request: Request) -> dict:
        """Time-based export: `start_time` in, `end_time` + `next_page` out."""
        per_page, cutoff = self._export_params(request)
        start = self._start_time(request)
        table = self.zendesk["organizations"]
        keys = self._indexes.keys(("organizations", "export"), fingerprint(table),
                                  lambda: ((_ts(r.get("updated_at")), r["id"]) for r in table.values()))
        page = time_page(keys, start, cutoff, per_page)
        base = self._base(request)
        return {"organizations": [organization_json(table[k[1]], base) for k in page.keys],
                "count": len(page.keys), "end_of_stream": page.end_of_stream,
                "end_time": page.end_time,
                "next_page": self._url(request, "/api/v2/incremental/organizations.json",
                                       {"start_time": page.end_time})}

    # -- writes ----------------------------------------------------------------------------------
    def _requester_from(self, data: Any) -> int | None:
        """`"requester": {"name", "email"}`: the user with that email, created if Zendesk has none."""
        requester = data.get("requester") if isinstance(data, dict) else None
        if requester is None:
            return None
        email = requester.get("email") if isinstance(requester, dict) else None
        if not isinstance(email, str) or "@" not in email:
            raise record_invalid({"requester": [{"description": "Requester: Email is invalid",
                                                 "error": "InvalidValue"}]})
        for user in self.zendesk["users"].values():  # writes are rare: a scan is fine
            if str(user.get("email") or "").lower() == email.lower():
                return user["id"]
        name = requester.get("name") if isinstance(requester.get("name"), str) else email.split("@")[0]
        return self.world.zd_put("users", {"name": name, "email": email, "role": "end-user",
                                           "organization_id": None, "active": True, "verified": False,
                                           "external_id": None, "tags": [], "user_fields": {}})["id"]

    def create_ticket(self, request: Request) -> Response:
        me = self._me()
        data = self._payload(request, "ticket")
        fields, comment = validate_ticket(data, self.zendesk, True, me["id"])
        if "requester_id" not in fields and (new_requester := self._requester_from(data)) is not None:
            fields["requester_id"] = new_requester
        tags = list(dict.fromkeys(fields.pop("tags", []) + fields.pop("additional_tags", [])))
        fields.pop("remove_tags", None)
        requester_id = fields.get("requester_id") or me["id"]
        requester = self.zendesk["users"].get(requester_id) or {}
        obj = {"subject": None, "type": None, "priority": None, "group_id": None, "assignee_id": None,
               "external_id": None, "custom_fields": [], "satisfaction_rating": None, **fields,
               "requester_id": requester_id, "submitter_id": fields.get("submitter_id") or me["id"],
               "organization_id": fields.get("organization_id", requester.get("organization_id")),
               "status": fields.get("status") or ("open" if fields.get("assignee_id") else "new"),
               "tags": tags, "via": API_VIA}
        rec = self.world.zd_put("tickets", obj)
        changes = [(k, rec.get(k), None) for k in ("subject", "status", "priority", "type", "requester_id",
                                                   "assignee_id", "organization_id", "tags")
                   if rec.get(k) not in (None, [])]
        audit = audit_json(self.world.ids.zendesk("ticket_audits"), rec["id"], me["id"],
                           rec["updated_at"], changes, True, comment)
        body = {"ticket": ticket_json(rec, self._base(request)), "audit": audit}
        return json_response(body, 201, {"Location": body["ticket"]["url"]})

    def update_ticket(self, request: Request, ticket_id: int) -> dict:
        rec = self._record("tickets", ticket_id)
        me = self._me()
        fields, comment = validate_ticket(self._payload(request, "ticket"), self.zendesk, False,
                                          me["id"], current=rec)
        tags = fields.pop("tags", None)
        tags = list(rec.get("tags") or []) if tags is None else tags
        removed = fields.pop("remove_tags", [])
        tags = [t for t in dict.fromkeys(tags + fields.pop("additional_tags", [])) if t not in removed]
        if tags != list(rec.get("tags") or []):
            fields["tags"] = tags
        changes = [(k, v, rec.get(k)) for k, v in fields.items() if rec.get(k) != v]
        if changes or comment:
            update: dict[str, Any] = {"id": ticket_id, **{k: v for k, v, _ in changes}}
            if update.get("status") == "solved":  # keep the metric set the side-load serves in step
                update["_metric_set"] = {**(rec.get("_metric_set") or {}), "solved_at": zd_time(self.world.now())}
            rec = self.world.zd_put("tickets", update)
        audit = audit_json(self.world.ids.zendesk("ticket_audits"), ticket_id, me["id"],
                           rec["updated_at"], changes, False, comment)
        return {"ticket": ticket_json(rec, self._base(request)), "audit": audit}

    def create_organization(self, request: Request) -> Response:
        fields = validate_organization(self._payload(request, "organization"), self.zendesk, True)
        rec = self.world.zd_put("organizations", {
            "domain_names": [], "external_id": None, "details": None, "notes": None, "tags": [],
            "group_id": None, "shared_tickets": False, "shared_comments": False,
            "organization_fields": {}, **fields})
        body = {"organization": organization_json(rec, self._base(request))}
        return json_response(body, 201, {"Location": body["organization"]["url"]})

    def update_organization(self, request: Request, org_id: int) -> dict:
        rec = self._record("organizations", org_id)
        fields = validate_organization(self._payload(request, "organization"), self.zendesk, False, org_id)
        changed = {k: v for k, v in fields.items() if rec.get(k) != v}
        if changed:
            rec = self.world.zd_put("organizations", {"id": org_id, **changed})
        return {"organization": organization_json(rec, self._base(request))}


def _score_matches(rec: dict, score: str) -> bool:
    """Zendesk's `score=` filter values (an unqualified score covers with and without comment)."""
    actual = rec.get("score")
    has_comment = bool(rec.get("comment"))
    base, _, qualifier = score.partition("_with")
    if score in ("offered", "unoffered"):
        return actual == score
    if base.startswith("received"):
        ok = actual in ("good", "bad")
    else:
        ok = actual == base
    if qualifier == "_comment":
        return ok and has_comment
    if qualifier == "out_comment":
        return ok and not has_comment
    return ok
