"""Stripe's idempotent requests: a POST with an ``Idempotency-Key`` runs once; a retry with the same
key and parameters gets the first answer again (``Idempotent-Replayed: true``); the same key with
other parameters or another endpoint is an ``idempotency_error``. Keys live 24 hours (world time).

Only successful (2xx) results are kept: Stripe saves a result once the endpoint began executing,
and a request that failed validation can be retried with the same key.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from werkzeug.wrappers import Response

from .stripe_params import StripeError

TTL = 86400


@dataclass(frozen=True)
class Stored:
    endpoint: str  # "POST /v1/customers"
    params: str  # canonical JSON of the parsed parameters
    status: int
    body: str
    request_id: str
    at: int  # world time, unix seconds


class IdempotencyStore:
    """Results by key, oldest first; at most `max_keys` and none older than 24 hours."""

    def __init__(self, max_keys: int = 200_000) -> None:
        self.max_keys = max_keys
        self._results: OrderedDict[str, Stored] = OrderedDict()

    def replay(self, key: str, endpoint: str, params: str, now: int) -> Response | None:
        """The first answer for `key`, or None if the key is new; Stripe's 400 on a mismatch."""
        while self._results:
            oldest = next(iter(self._results.values()))
            if oldest.at > now - TTL:
                break
            self._results.popitem(last=False)
        stored = self._results.get(key)
        if stored is None:
            return None
        if stored.endpoint != endpoint:
            raise StripeError(400, "Keys for idempotent requests can only be used for the same endpoint "
                                   f"they were first used for ('{stored.endpoint}' vs '{endpoint}'). "
                                   f"Try using a key other than '{key}' if you meant to execute a "
                                   "different request.", type="idempotency_error")
        if stored.params != params:
            raise StripeError(400, "Keys for idempotent requests can only be used with the same parameters "
                                   f"they were first used with. Try using a key other than '{key}' if you "
                                   "meant to execute a different request.", type="idempotency_error")
        return Response(stored.body, status=stored.status, content_type="application/json; charset=utf-8",
                        headers={"Idempotent-Replayed": "true", "Original-Request": stored.request_id,
                                 "Idempotency-Key": key})

    def remember(self, key: str, result: Stored) -> None:
        if 200 <= result.status < 300:
            self._results[key] = result
            self._results.move_to_end(key)
            while len(self._results) > self.max_keys:
                self._results.popitem(last=False)
