"""One HTTP policy for every vendor: timeouts, retries, rate limits, a daily budget, error classes.

Each connector talks through its vendor's official SDK, so the policy wraps *calls* rather than
sockets: `Caller.call(fn, ...)` waits for the client-side rate limiter, checks the daily budget,
runs `fn`, classifies any exception once with the connector's `classify` function, and retries
transient failures with tenacity (exponential backoff with jitter, `Retry-After` honoured, bounded
attempts). Connectors pass `session()` to requests-based SDKs so every request has a timeout.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import requests
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

T = TypeVar("T")


class SourceError(Exception):
    """A problem with one source, its message naming the source and what to do."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


class AuthError(SourceError):
    """Bad credentials or missing permissions: retrying cannot help, the run stops for this source."""


class TransientError(SourceError):
    """Throttling, a 5xx, a timeout or a dropped connection: retried with backoff."""

    def __init__(self, source: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(source, message)
        self.retry_after = retry_after


class BudgetExhausted(SourceError):
    """The source's daily API budget is (nearly) used up: the run stops cleanly with state saved."""


class RequestError(SourceError):
    """The vendor rejected the request itself (a bug or an unsupported setting): not retried."""


@dataclass
class Policy:
    """Per-source settings; defaults sit under each vendor's documented limits."""

    timeout: float = 30.0  # seconds, connect and read
    max_attempts: int = 6
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    rate_per_second: float = 10.0
    burst: int = 10
    max_retry_after: float = 120.0  # a longer Retry-After is a stop, not a wait


# Client-side pace per vendor, under the documented limits (see DESIGN.md "Vendor limits").
VENDOR_POLICIES: dict[str, Policy] = {
    "salesforce": Policy(rate_per_second=20, burst=20),  # no per-second limit; the daily one is the budget
    "hubspot": Policy(rate_per_second=17, burst=10),  # 190 per 10 s
    "zendesk": Policy(rate_per_second=10, burst=10),  # 700 per minute (Enterprise)
    "stripe": Policy(rate_per_second=80, burst=20),  # 100 reads per second (live)
    "usage": Policy(rate_per_second=1000, burst=1000),
}


class RateLimiter:
    """Token bucket shared by every thread calling one source."""

    def __init__(self, rate_per_second: float, burst: int) -> None:
        self.rate, self.capacity = rate_per_second, float(burst)
        self.tokens, self.updated = float(burst), time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until one is there; returns the seconds waited."""
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            self.tokens -= 1
            wait = 0.0 if self.tokens >= 0 else -self.tokens / self.rate
        if wait:
            time.sleep(wait)
        return wait


@dataclass
class Budget:
    """A daily API budget: `limit` calls, of which `used` are spent; stop `reserve` short of it."""

    source: str
    limit: int | None = None
    used: int = 0
    reserve: int = 0

    def observe(self, used: int, limit: int) -> None:
        """Update from the vendor's own counter (e.g. Salesforce's Sforce-Limit-Info header)."""
        self.used, self.limit = used, limit if self.limit is None else min(self.limit, limit)

    def spend(self) -> None:
        if self.limit is not None and self.used + self.reserve >= self.limit:
            raise BudgetExhausted(self.source, f"daily API budget reached ({self.used} of {self.limit} calls, "
                                               f"{self.reserve} kept in reserve); the run stopped with its "
                                               "state saved and the next run continues from there")
        self.used += 1


@dataclass
class Caller:
    """Runs SDK calls for one source under the policy, counting calls per stream."""

    source: str
    classify: Callable[[BaseException], BaseException | None]
    policy: Policy = field(default_factory=Policy)
    budget: Budget | None = None
    calls: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.policy.rate_per_second, self.policy.burst)
        self.budget = self.budget or Budget(self.source)

    def call(self, fn: Callable[..., T], *args: Any, stream: str = "", **kwargs: Any) -> T:
        """Call `fn(*args, **kwargs)` with rate limiting, budget, classification and retries."""
        exp = wait_exponential_jitter(multiplier=self.policy.backoff_initial, max=self.policy.backoff_max)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            after = getattr(exc, "retry_after", None) or 0.0
            return max(after, exp(state))

        retrying = Retrying(retry=retry_if_exception_type(TransientError), wait=wait, sleep=self.sleep,
                            stop=stop_after_attempt(self.policy.max_attempts), reraise=True,
                            before_sleep=lambda _: self.retries.update([stream]))
        for attempt in retrying:
            with attempt:
                self.limiter.acquire()
                assert self.budget is not None
                self.budget.spend()
                self.calls[stream] += 1
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:  # classified once, here
                    mapped = self.classify(exc)
                    if mapped is None:
                        raise
                    if isinstance(mapped, TransientError) and (mapped.retry_after or 0) > self.policy.max_retry_after:
                        raise TransientError(self.source, f"asked to wait {mapped.retry_after:.0f} s, longer than "
                                                          f"the {self.policy.max_retry_after:.0f} s allowed; "
                                                          "the next run continues") from exc
                    raise mapped from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


class _TimeoutAdapter(HTTPAdapter):
    def __init__(self, timeout: float, **kwargs: Any) -> None:
        self.timeout = timeout
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, **kwargs)


def session(policy: Policy, verify: str | bool = True) -> requests.Session:
    """A requests session whose every request has the policy's timeout and no retries of its own
    (retries belong to `Caller`); `verify` may name a CA bundle (the sandbox's certificate)."""
    s = requests.Session()
    adapter = _TimeoutAdapter(policy.timeout, max_retries=0)
    s.mount("https://", adapter)
    s.mount("http://", adapter)
    s.verify = verify
    # REQUESTS_CA_BUNDLE would override `verify`; the configured CA is what must be trusted
    s.trust_env = verify is True
    return s


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a Retry-After header given in seconds (the form every vendor here uses)."""
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None
