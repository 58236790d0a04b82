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
from datetime import date, datetime, timedelta, timezone

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


class Stamps:
    """Vendor time strings for integer milliseconds since `origin`, without building datetimes.

    The world generator formats millions of timestamps; each one here is a cached day string plus a
    cached time-of-day string, and equals what `sf_time`, `hs_time`, `zd_time`, `unix` and `sf_date`
    give for ``origin + timedelta(milliseconds=ms)`` (`origin` must be whole milliseconds, UTC).
    """

    DAY_MS = 86_400_000

    def __init__(self, origin: datetime) -> None:
        origin = utc(origin)
        if origin.microsecond % 1000:
            raise ValueError("the origin must be a whole number of milliseconds")
        self.origin = origin
        midnight = origin.replace(hour=0, minute=0, second=0, microsecond=0)
        self._offset = (origin - midnight) // timedelta(milliseconds=1)
        self._midnight = midnight
        self._epoch_ms = (origin - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)
        self._dates: dict[int, str] = {}
        self._hms = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]

    def at(self, ms: int) -> datetime:
        return self.origin + timedelta(milliseconds=ms)

    def _date(self, day: int) -> str:
        text = self._dates.get(day)
        if text is None:
            text = self._dates[day] = (self._midnight + timedelta(days=day)).strftime("%Y-%m-%d")
        return text

    def date(self, ms: int) -> str:
        """`sf_date`: 2026-11-23."""
        return self._date((ms + self._offset) // self.DAY_MS)

    def sf(self, ms: int) -> str:
        """`sf_time`: 2026-11-23T10:00:00.000+0000."""
        day, rest = divmod(ms + self._offset, self.DAY_MS)
        return f"{self._date(day)}T{self._hms[rest // 1000]}.{rest % 1000:03d}+0000"

    def hs(self, ms: int) -> str:
        """`hs_time`: 2026-11-23T10:00:00.000Z."""
        day, rest = divmod(ms + self._offset, self.DAY_MS)
        return f"{self._date(day)}T{self._hms[rest // 1000]}.{rest % 1000:03d}Z"

    def zd(self, ms: int) -> str:
        """`zd_time`: 2026-11-23T10:00:00Z."""
        day, rest = divmod(ms + self._offset, self.DAY_MS)
        return f"{self._date(day)}T{self._hms[rest // 1000]}Z"

    def midnight(self, ms: int) -> int:
        """The start (00:00 UTC) of the day `ms` falls on, in the same milliseconds."""
        return ms - (ms + self._offset) % self.DAY_MS

    def unix(self, ms: int) -> int:
        """`unix`: whole seconds since the epoch."""
        return (self._epoch_ms + ms) // 1000


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


_CHECKSUM_ALPHABET = string.ascii_uppercase + "012345"
_UPPER_BITS = str.maketrans({ch: "1" if ch.isupper() else "0" for ch in _B62})


def sf_id_checksum(id15: str) -> str:
    """The 3-character suffix that turns a 15-character Salesforce id into the 18-character form."""
    out = ""
    for i in range(3):
        chunk = id15[i * 5:(i + 1) * 5]
        if chunk.isalnum() and chunk.isascii():  # the usual case: one translate instead of a loop
            bits = int(chunk.translate(_UPPER_BITS)[::-1], 2)
        else:
            bits = sum(1 << j for j, ch in enumerate(chunk) if ch.isupper())
        out += _CHECKSUM_ALPHABET[bits]
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
        self._sf_head: dict[str, tuple[str, str]] = {}
        self._hs_next = 1_000_000_001
        self._zd_next: dict[str, int] = {}

    def salesforce(self, sobject: str) -> str:
        n = self._sf_counter.get(sobject, 0) + 1
        self._sf_counter[sobject] = n
        head = self._sf_head.get(sobject)
        if head is None:
            prefix = self.SF_PREFIX.get(sobject, "a0" + str(len(sobject) % 10))
            # pod "5g" + "0000" + base-62 counter gives unique, realistic-looking ids
            head = self._sf_head[sobject] = ((prefix + "5g0000")[:9],
                                             sf_id_checksum((prefix + "5g")[:5] + "0" * 10)[0])
        if n >= _B62_6 or len(head[0]) != 9:  # past the fixed-width counter: the general form
            id15 = (head[0] + _b62(n).rjust(6, "0"))[:15]
            return id15 + sf_id_checksum(id15)
        # the counter's three base-62 digit pairs; the checksum's 2nd and 3rd characters depend only on
        # which of the counter's characters are upper case (precomputed per pair)
        q, r2 = divmod(n, 3844)
        r0, r1 = divmod(q, 3844)
        return (head[0] + _B62_PAIRS[r0] + _B62_PAIRS[r1] + _B62_PAIRS[r2] + head[1]
                + _CHECKSUM_ALPHABET[(_PAIR_UPPER[r0] & 1) << 4]
                + _CHECKSUM_ALPHABET[_PAIR_UPPER[r0] >> 1 | _PAIR_UPPER[r1] << 1 | _PAIR_UPPER[r2] << 3])

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
        return prefix + "_" + _b62_fixed(self._rng.getrandbits(83), 14)


_B62_PAIRS = [a + b for a in _B62 for b in _B62]
_B62_6 = 62 ** 6
# per base-62 pair: bit 0 if its first character is upper case, bit 1 if its second is
_PAIR_UPPER = [a.isupper() | (b.isupper() << 1) for a in _B62 for b in _B62]


def _b62_fixed(n: int, width: int) -> str:
    """`n` in base 62, left-padded with zeros to `width` (even) characters; n < 62 ** width."""
    out = []
    for _ in range(width // 2):
        n, r = divmod(n, 3844)
        out.append(_B62_PAIRS[r])
    return "".join(reversed(out))


def _b62(n: int) -> str:
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = _B62[r] + out
    return out or "0"
