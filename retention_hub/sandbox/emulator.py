"""What every vendor emulator shares: routing, credentials, knobs (latency, rate limits, faults),
request statistics and the ``/__sandbox/*`` control endpoints.

A vendor module subclasses `Emulator`, lists its routes as werkzeug `Rule`s whose endpoint is the
name of a handler method, and implements the vendor's error, 401 and 429 formats. Handlers run
under the world lock and return a `Response` or a JSON-able value (sent as 200).
"""
from __future__ import annotations

import json
import logging
import random
import re
import socket
import threading
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .world import Knobs, World

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Raised by a handler to answer with the vendor's error body."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body}")
        self.status, self.body, self.headers = status, body, headers or {}


@dataclass(frozen=True)
class RateLimit:
    """A documented vendor limit: at most `limit` requests per `window` seconds on matching paths."""

    name: str
    limit: int
    window: float
    path_pattern: str = ""  # regex on the path; empty matches every request

    def matches(self, path: str) -> bool:
        return not self.path_pattern or re.search(self.path_pattern, path) is not None


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=status,
                    headers=headers, content_type="application/json; charset=utf-8")


def template_of(rule: Rule) -> str:
    """`/v1/customers/<id>` -> `/v1/customers/{id}` (converters dropped)."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)


class Emulator:
    """Base WSGI application for one vendor."""

    vendor = ""
    rules: list[Rule] = []
    rate_limits: list[RateLimit] = []  # enforced when knobs.rate_limits == "real"

    def __init__(self, world: World, credentials: dict[str, str], knobs: Knobs | None = None) -> None:
        self.world, self.credentials = world, credentials
        self.knobs = knobs or Knobs()
        self.url_map = Map([Rule(r.rule, endpoint=r.endpoint, methods=r.methods) for r in self.rules],
                           strict_slashes=False, merge_slashes=False)
        self._stats: Counter[tuple[str, str, int]] = Counter()
        self._stats_lock = threading.Lock()
        self._rng = random.Random(self.knobs.seed)
        self._windows: dict[str, deque[float]] = {}

    # -- to implement per vendor -------------------------------------------------------------
    def authenticate(self, request: Request) -> None:
        """Raise ApiError(401, ...) in the vendor's format when the credentials are wrong."""

    def error_body(self, status: int, code: str, message: str) -> Any:
        raise NotImplementedError

    def throttled(self, limit: RateLimit, retry_after: float) -> Response:
        """The vendor's 429 for an exceeded limit."""
        return self._error(429, "RATE_LIMITED", f"{limit.name} limit exceeded",
                           {"Retry-After": str(max(1, round(retry_after)))})

    def extra_headers(self, request: Request) -> dict[str, str]:
        """Headers the vendor adds to every answer (rate-limit counters and the like)."""
        return {}

    # -- the WSGI entry point ------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        template, response = request.path, None
        try:
            if request.path.startswith("/__sandbox/"):
                response = self._control(request)
            else:
                adapter = self.url_map.bind_to_environ(environ)
                try:
                    rule, values = adapter.match(return_rule=True)
                    template = template_of(rule)
                except (NotFound, MethodNotAllowed) as exc:
                    raise ApiError(exc.code or 404, self.error_body(
                        exc.code or 404, "NOT_FOUND",
                        f"The requested resource does not exist: {request.method} {request.path}")) from None
                response = self._faults(request, environ) or self._throttle(request)
                if response is None:
                    self.authenticate(request)
                    with self.world.lock:
                        self.world.catch_up()
                        result = getattr(self, rule.endpoint)(request, **values)
                    response = result if isinstance(result, Response) else json_response(result)
        except ApiError as exc:
            response = json_response(exc.body, exc.status, exc.headers)
        except HTTPException as exc:
            response = self._error(exc.code or 400, "BAD_REQUEST", exc.description or "bad request")
        except Exception:  # an emulator bug must answer 500, never kill the server
            log.error("%s emulator failed on %s %s\n%s", self.vendor, request.method, request.path,
                      traceback.format_exc())
            response = self._error(500, "INTERNAL_ERROR", "An internal server error occurred.")
        if not request.path.startswith("/__sandbox/"):
            for key, value in self.extra_headers(request).items():
                response.headers.setdefault(key, value)
            with self._stats_lock:
                self._stats[(request.method, template, response.status_code)] += 1
        return response(environ, start_response)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        return json_response(self.error_body(status, code, message), status, headers)

    # -- knobs -------------------------------------------------------------------------------
    def _roll(self, rate: float) -> bool:
        with self._stats_lock:
            return rate > 0 and self._rng.random() < rate

    def _faults(self, request: Request, environ: dict) -> Response | None:
        k = self.knobs
        if k.latency_ms:
            time.sleep(k.latency_ms / 1000)
        if self._roll(k.drop_rate):
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return Response(b"", status=502)  # never reaches the client: the socket is closed
        if self._roll(k.timeout_rate):
            time.sleep(k.timeout_seconds)
            return self._error(503, "SERVER_UNAVAILABLE", "Service unavailable (timeout injected)")
        if self._roll(k.error_rate):
            status = self._rng.choice([500, 502, 503])
            return self._error(status, "SERVER_ERROR", "Injected server error; please retry.")
        if self._roll(k.throttle_rate):
            return self.throttled(RateLimit("injected", 1, 1.0), 1.0)
        return None

    def _throttle(self, request: Request) -> Response | None:
        if self.knobs.rate_limits != "real":
            return None
        now = time.monotonic()
        with self._stats_lock:
            for limit in self.rate_limits:
                if not limit.matches(request.path):
                    continue
                window = self._windows.setdefault(limit.name, deque())
                while window and window[0] <= now - limit.window:
                    window.popleft()
                if len(window) >= limit.limit:
                    return self.throttled(limit, window[0] + limit.window - now)
            for limit in self.rate_limits:
                if limit.matches(request.path):
                    self._windows[limit.name].append(now)
        return None

    def window_remaining(self, limit: RateLimit) -> int:
        """Requests left in `limit`'s current window (for the vendor's rate-limit headers)."""
        now = time.monotonic()
        window = self._windows.get(limit.name, deque())
        return max(0, limit.limit - sum(1 for t in window if t > now - limit.window))

    # -- /__sandbox/* --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            rows = [{"method": m, "path": p, "status": s, "count": c}
                    for (m, p, s), c in sorted(self._stats.items())]
        return {"total": sum(r["count"] for r in rows), "requests": rows}

    def _control(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path == "/__sandbox/stats" and method == "GET":
            return json_response(self.stats())
        if path == "/__sandbox/stats/reset" and method == "POST":
            with self._stats_lock:
                self._stats.clear()
            return json_response({"total": 0, "requests": []})
        if path == "/__sandbox/advance" and method == "POST":
            try:
                days = int(request.args.get("days", "1"))
                now = self.world.advance(days)
            except ValueError as exc:
                return json_response({"error": f"days: {exc}"}, 400)
            return json_response({"now": now.isoformat(), "days_advanced": self.world.days_advanced})
        if path == "/__sandbox/knobs":
            if method == "POST":
                try:
                    self.knobs.update(request.get_json(force=True) or {})
                except (ValueError, TypeError) as exc:
                    return json_response({"error": str(exc)}, 400)
            return json_response(vars(self.knobs))
        return json_response({"error": f"unknown sandbox endpoint {method} {path}"}, 404)
