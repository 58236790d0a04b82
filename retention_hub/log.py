"""Logging set-up: plain or JSON lines on stderr, with every secret scrubbed from every record.

Secrets reach the scrubber two ways: values registered with `register_secret` (the config loader
registers every credential it loads), and well-known patterns (`Authorization: Bearer ...`,
`api_key=...`, `access_token=...`, `"client_secret": "..."`) that catch credentials we were never
told about, e.g. inside an SDK's debug output or an exception message.
"""
from __future__ import annotations

import json as jsonlib
import logging
import re
import sys
import threading
import traceback
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
_MIN_SECRET_LEN = 4  # shorter values would mask ordinary words; they are not credentials anyway

_lock = threading.Lock()
_secrets: set[str] = set()
_secret_re: re.Pattern[str] | None = None

_KEY_NAMES = r"access_token|refresh_token|id_token|client_secret|api_key|api_token|apikey|password|secret"
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization: Bearer xyz / Authorization: Basic xyz (header dumps, curl lines)
    (re.compile(r"(?i)(\bauthorization\b[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token)\s+)?)[^\s\"',}]+"),
     r"\1" + MASK),
    # key=value in query strings and form bodies
    (re.compile(rf"(?i)(\b(?:{_KEY_NAMES})=)[^&\s\"',}}]+"), r"\1" + MASK),
    # "key": "value" in JSON or Python reprs
    (re.compile(rf"(?i)([\"'](?:{_KEY_NAMES})[\"']\s*:\s*[\"'])[^\"']+"), r"\1" + MASK),
    # user:password@host in URLs
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@/\s]+(@)"), r"\1" + MASK + r"\2"),
]
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_HANDLER_MARK = "_rhub_handler"


def register_secret(value: str | None) -> None:
    """Scrub `value` (and its URL-encoded forms) from every log record from now on."""
    global _secret_re
    if not value or len(value) < _MIN_SECRET_LEN:
        return
    with _lock:
        before = len(_secrets)
        _secrets.update({value, quote(value, safe=""), quote_plus(value)})
        if len(_secrets) != before:
            # longest first so a secret that contains another is masked whole
            ordered = sorted(_secrets, key=len, reverse=True)
            _secret_re = re.compile("|".join(re.escape(s) for s in ordered))


def scrub(text: str) -> str:
    """`text` with registered secrets and credential-looking patterns masked."""
    if not text:
        return text
    pattern = _secret_re
    if pattern is not None:
        text = pattern.sub(MASK, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


class SecretFilter(logging.Filter):
    """Rewrites each record so that its message, exception and stack text are scrubbed.

    Installed on handlers (not loggers) because logger filters do not see records that propagate
    from child loggers, e.g. urllib3's or an SDK's.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not kill logging; keep what we can
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
            record.exc_info = None  # the formatter would otherwise re-render the raw exception
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _RESERVED and isinstance(value, str):
                setattr(record, key, scrub(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, any `extra=` fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_text:
            out["exc"] = record.exc_text
        elif record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return jsonlib.dumps(out, default=str)


def setup_logging(json: bool = False, level: int | str = logging.INFO) -> logging.Handler:
    """Log to stderr (JSON lines if `json`), replacing a handler an earlier call installed."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(SecretFilter())
    handler.setFormatter(JsonFormatter() if json else
                         logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # the HTTP stack logs full URLs and headers at DEBUG; keep it quieter unless asked explicitly
    if root.level > logging.DEBUG:
        # urllib3 logs URLs and headers; stripe-python logs every request and response at INFO
        for noisy in ("urllib3", "stripe"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
