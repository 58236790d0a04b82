"""Billing meters: meter events in, event summaries out, over the world's daily usage sums.

The world keeps ``stripe_meter_usage[meter][customer][day_start] = value`` (already aggregated by
the meter's formula: a sum of values, or a count of events). Meter events posted through the API
add to those daily sums and are also kept per hour here, so hourly summaries place them in their
hour; the rest of a day's generated usage (known only as a daily sum) is reported in the hour that
starts the day (00:00 UTC).

Where Stripe's behaviour is not documented or not reproducible here: an event repeating an
identifier seen in the last 24 hours is answered with the first event and counted once; events for
an unknown meter or customer are accepted (Stripe reports them later, asynchronously) and counted
nowhere; values must be integers (as in 2024-04-10). Summaries require minute-aligned times,
accept ``value_grouping_window=day`` (newer than 2024-04-10) as well as ``hour``, cover every window
in the range (zeros included; windows are clock hours/days clipped to the range) and come newest
first.
"""
from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict, defaultdict
from typing import Any

from .stripe_params import StripeError, to_int
from .world import World

HOUR, DAY = 3600, 86400
WINDOWS = {"hour": HOUR, "day": DAY}
IDENTIFIER_TTL = DAY  # Stripe enforces identifier uniqueness over a rolling 24 hours
PAST_LIMIT, FUTURE_LIMIT = 35 * DAY, 300
MAX_BUCKETS = 50_000  # a sandbox guard: hourly summaries over years would only burn the lock


def summary_id(meter: str, customer: str, start: int, end: int) -> str:
    """Opaque-looking but decodable: pagination cursors need the summary's place back."""
    return "mtrusg_" + f"{meter}|{customer}|{start}|{end}".encode().hex()


def decode_summary_id(value: str) -> tuple[str, str, int, int] | None:
    if not value.startswith("mtrusg_"):
        return None
    try:
        meter, customer, start, end = bytes.fromhex(value[7:]).decode().split("|")
        return meter, customer, int(start), int(end)
    except (ValueError, UnicodeDecodeError):
        return None


class MeterLedger:
    """Hourly detail of API-posted meter events and the identifiers seen in the last 24 hours."""

    def __init__(self, world: World, max_identifiers: int = 200_000) -> None:
        self.world = world
        self.max_identifiers = max_identifiers
        # meter -> customer -> hour start -> value posted through the API
        self.hourly: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        self.identifiers: OrderedDict[str, tuple[int, dict]] = OrderedDict()

    def meter_for_event(self, event_name: str) -> dict | None:
        for meter in self.world.stripe.get("billing.meter", {}).values():
            if meter.get("event_name") == event_name and meter.get("status", "active") == "active":
                return meter
        return None

    def record(self, params: dict[str, Any], now: int, identifier: str) -> dict:
        """Apply one ``POST /v1/billing/meter_events`` (already checked for required params)."""
        self._forget_before(now - IDENTIFIER_TTL)
        seen = self.identifiers.get(identifier)
        if seen is not None:  # a retry of an event already counted: answer it again, count it once
            return seen[1]
        event_name, payload = params["event_name"], params["payload"]
        timestamp = now
        if params.get("timestamp") not in (None, ""):
            timestamp = to_int(params["timestamp"], "timestamp")
            if not now - PAST_LIMIT <= timestamp <= now + FUTURE_LIMIT:
                raise StripeError(400, "The timestamp must be within the past 35 calendar days and no more "
                                       "than 5 minutes in the future.", param="timestamp")
        meter = self.meter_for_event(event_name)
        customer_key = "stripe_customer_id"
        value_key = "value"
        if meter is not None:
            customer_key = (meter.get("customer_mapping") or {}).get("event_payload_key", customer_key)
            value_key = (meter.get("value_settings") or {}).get("event_payload_key", value_key)
        customer = payload.get(customer_key)
        if not isinstance(customer, str) or not customer:
            raise StripeError(400, f"Missing required param: payload[{customer_key}].",
                              code="parameter_missing", param=f"payload[{customer_key}]")
        raw_value = payload.get(value_key)
        if raw_value is None and meter is not None and _formula(meter) == "count":
            raw_value = "1"
        if not isinstance(raw_value, str) or not raw_value.strip().lstrip("-").isdigit():
            raise StripeError(400, f"Invalid integer: {raw_value if isinstance(raw_value, str) else ''}",
                              code="parameter_invalid_integer", param=f"payload[{value_key}]")
        event = {"object": "billing.meter_event", "created": now, "event_name": event_name,
                 "identifier": identifier, "livemode": False,
                 "payload": {k: v for k, v in payload.items()}, "timestamp": timestamp}
        # Stripe aggregates asynchronously and reports unknown meters or customers later in error
        # reports; the sandbox accepts such events and leaves them out of every summary.
        if meter is not None and customer in self.world.stripe.get("customer", {}):
            amount = 1 if _formula(meter) == "count" else int(raw_value)
            day, hour = timestamp - timestamp % DAY, timestamp - timestamp % HOUR
            daily = self.world.stripe_meter_usage[meter["id"]][customer]
            daily[day] = daily.get(day, 0) + amount
            hourly = self.hourly[meter["id"]][customer]
            hourly[hour] = hourly.get(hour, 0) + amount
        self.identifiers[identifier] = (now, event)
        while len(self.identifiers) > self.max_identifiers:
            self.identifiers.popitem(last=False)
        return event

    def _forget_before(self, cutoff: int) -> None:
        while self.identifiers:
            first = next(iter(self.identifiers.values()))
            if first[0] >= cutoff:
                break
            self.identifiers.popitem(last=False)

    def points(self, meter_id: str, customer: str, start: int, end: int) -> list[tuple[int, float]]:
        """(time, value) usage points in [start, end): API events in their hour, the rest of each
        day's sum at the day's start."""
        daily = self.world.stripe_meter_usage.get(meter_id, {}).get(customer, {})
        hourly = self.hourly.get(meter_id, {}).get(customer, {})
        posted_per_day: dict[int, float] = defaultdict(float)
        out = []
        for hour, value in hourly.items():
            posted_per_day[hour - hour % DAY] += value
            if start <= hour < end:
                out.append((hour, value))
        for day, value in daily.items():
            rest = value - posted_per_day.get(day, 0)
            if rest and start <= day < end:
                out.append((day, rest))
        return out

    def summaries(self, meter: dict, customer: str, start: int, end: int,
                  window: str | None) -> list[dict]:
        """Summary objects, oldest first: one for [start, end), or one per clock hour/day in it."""
        if window is None:
            bounds = [(start, end)]
        else:
            size = WINDOWS[window]
            if (end - start) // size > MAX_BUCKETS:
                raise StripeError(400, f"The range from start_time to end_time holds too many {window}s "
                                       f"for one request (at most {MAX_BUCKETS}).", param="end_time")
            bounds = []
            edge = start
            while edge < end:
                nxt = min(end, edge - edge % size + size)
                bounds.append((edge, nxt))
                edge = nxt
        totals = [0.0] * len(bounds)
        starts = [s for s, _ in bounds]
        for t, value in self.points(meter["id"], customer, start, end):
            totals[max(0, bisect_right(starts, t) - 1)] += value
        return [{"id": summary_id(meter["id"], customer, s, e), "object": "billing.meter_event_summary",
                 "aggregated_value": int(v) if float(v).is_integer() else v, "end_time": e,
                 "livemode": False, "meter": meter["id"], "start_time": s}
                for (s, e), v in zip(bounds, totals)]


def _formula(meter: dict) -> str:
    return (meter.get("default_aggregation") or {}).get("formula", "sum")

