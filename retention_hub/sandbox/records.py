"""Vendor-native formats shared by the world generator and the emulators.

Every record the sandbox holds is stored in its vendor's own field names and value formats,
so the emulators return it with little more than the vendor's envelope:

- Salesforce: a dict of API field name -> value, as SOQL returns it (no ``attributes``).
  Datetimes are strings ``2026-11-23T10:00:00.000+0000``, dates ``2026-11-23``.
- HubSpot: ``{"id", "properties": {name: str|None}, "createdAt", "updatedAt", "archived"}``;
  every property value is a string, as HubSpot sends them; times ``2026-11-23T10:00:00.000Z``.
- Zendesk: the JSON object as the API sends it; integer ids; times ``2026-11-23T10:00:00Z``.
- Stripe: the JSON object as API version 2024-04-10 sends it; unix-second integers.
"""
from __future__ import annotations

import random
import string
from datetime import date, datetime, timezone

STRIPE_API_VERSION = "2024-04-10"
SALESFORCE_API_VERSION = "59.0"

_B62 = string.digits + string.ascii_letters


def utc(dt: datetime) -> datetime:
    """Return ``dt`` as an aware UTC datetime (naive values are taken to be UTC)."""
    if dt.tzinfo is timezone.utc:
        return dt
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def sf_time(dt: datetime) -> str:
    # isoformat is implemented in C and several times faster than strftime on the generator's hot path
    return utc(dt).replace(tzinfo=None).isoformat(timespec="milliseconds") + "+0000"


def sf_date(d: date | datetime) -> str:
    return d.strftime("%Y-%m-%d")


def hs_time(dt: datetime) -> str:
    return utc(dt).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def hs_millis(dt: datetime) -> str:
    """HubSpot date/datetime property value: epoch milliseconds as a string."""
    return str(int(utc(dt).timestamp() * 1000))


def zd_time(dt: datetime) -> str:
    return utc(dt).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def unix(dt: datetime) -> int:
    return int(utc(dt).timestamp())


def parse_time(value: str) -> datetime:
    """Parse any of the vendor timestamp strings above (or a bare date) to aware UTC."""
    v = value.strip()
    if len(v) == 10:
        return datetime.strptime(v, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    if v.endswith("Z"):
        v = v[:-1] + "+00:00"
    if len(v) >= 5 and v[-5] in "+-" and v[-3] != ":":
        v = v[:-2] + ":" + v[-2:]
    return utc(datetime.fromisoformat(v))


def sf_id_checksum(id15: str) -> str:
    """The 3-character suffix that turns a 15-character Salesforce id into the 18-character form."""
    alphabet = string.ascii_uppercase + "012345"
    out = ""
    for i in range(3):
        chunk = id15[i * 5:(i + 1) * 5]
        bits = sum(1 << j for j, ch in enumerate(chunk) if ch.isupper())
        out += alphabet[bits]
    return out


class IdMint:
    """Deterministic id factory for every vendor (one per world, seeded)."""

    SF_PREFIX = {
        "Account": "001", "Contact": "003", "Opportunity": "006", "Case": "500",
        "User": "005", "Task": "00T", "CustomField": "00N",
    }

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed ^ 0x5EED)
        self._sf_counter: dict[str, int] = {}
        self._hs_next = 1_000_000_001
        self._zd_next: dict[str, int] = {}

    def salesforce(self, sobject: str) -> str:
        prefix = self.SF_PREFIX.get(sobject, "a0" + str(len(sobject) % 10))
        n = self._sf_counter.get(sobject, 0) + 1
        self._sf_counter[sobject] = n
        # pod "5g" + "00000" + base-62 counter gives unique, realistic-looking ids
        body = "5g0000" + _b62(n).rjust(6, "0")
        id15 = (prefix + body)[:15]
        return id15 + sf_id_checksum(id15)

    def hubspot(self) -> str:
        self._hs_next += self._rng.randint(1, 97)
        return str(self._hs_next)

    def zendesk(self, kind: str) -> int:
        start = {"organizations": 360_000_000_001, "users": 370_000_000_001,
                 "tickets": 1, "satisfaction_ratings": 380_000_000_001}.get(kind, 390_000_000_001)
        n = self._zd_next.get(kind, start)
        self._zd_next[kind] = n + 1
        return n

    def stripe(self, prefix: str) -> str:
        return prefix + "_" + _b62(self._rng.getrandbits(83)).rjust(14, "0")[:14]


def _b62(n: int) -> str:
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = _B62[r] + out
    return out or "0"
