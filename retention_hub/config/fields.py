"""Building blocks of the config models: the secret type, ${VAR}-expanded text, path and URL checks.

`Secret` is strict only when the validation context says `strict_secrets` (as `loader.load_config`
does): then a credential must come from a `${ENV_VAR}` reference or a `{file: path}`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationInfo
from pydantic_core import PydanticCustomError


class EnvText(str):
    """A string that came out of `${VAR}` expansion; remembers how it was written in the file."""

    raw: str
    pure_ref: bool  # the raw text was exactly one ${NAME}, with no default and nothing around it

    def __new__(cls, value: str, raw: str, pure_ref: bool) -> "EnvText":
        obj = super().__new__(cls, value)
        obj.raw, obj.pure_ref = raw, pure_ref
        return obj


class FieldError(ValueError):
    """A validation error about `path` below the model being validated."""

    def __init__(self, message: str, *path: str | int) -> None:
        super().__init__(message)
        self.path = path


def _context(info: ValidationInfo) -> dict[str, Any]:
    return info.context if isinstance(info.context, dict) else {}


def resolve_path(value: str | Path, info: ValidationInfo) -> Path:
    """`value` as a path; relative ones are taken from the config file's directory when known."""
    path = Path(value).expanduser()
    base = _context(info).get("base_dir")
    return path if path.is_absolute() or base is None else Path(base) / path


def _secret(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, SecretStr):
        return value
    if isinstance(value, dict):
        if set(value) != {"file"} or not isinstance(value["file"], str):
            raise PydanticCustomError("secret_form", "a secret is written as ${ENV_VAR} or as {file: path}")
        path = resolve_path(value["file"], info)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PydanticCustomError("secret_file", "cannot read the secret file {path}: {reason}",
                                      {"path": str(path), "reason": exc.strerror or type(exc).__name__})
        if not text:
            raise PydanticCustomError("secret_file", "the secret file {path} is empty", {"path": str(path)})
        return SecretStr(text)
    if isinstance(value, str):
        if _context(info).get("strict_secrets"):
            if not isinstance(value, EnvText):
                raise PydanticCustomError("literal_secret", "a literal secret is not allowed in the file")
            if not value.pure_ref:
                raise PydanticCustomError(
                    "literal_secret", "a secret must be exactly one ${ENV_VAR} reference, with no default "
                    "value and no text around it")
        if not value.strip():
            raise PydanticCustomError("secret_empty", "the secret is empty")
        return SecretStr(value.strip())
    raise PydanticCustomError("secret_form", "a secret is written as ${ENV_VAR} or as {file: path}")


Secret = Annotated[SecretStr, BeforeValidator(_secret)]


def _http_url(value: Any) -> Any:
    if isinstance(value, str):
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PydanticCustomError("url", "must be an http(s) URL such as https://example.com")
        return value.strip().rstrip("/")
    return value


HttpUrl = Annotated[str, BeforeValidator(_http_url)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=80)]


class Model(BaseModel):
    """Base: unknown keys are errors, values never echoed in errors, assignments validated."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, validate_assignment=True)


def check_database_url(value: Any, info: ValidationInfo) -> Any:
    """A SQLAlchemy URL whose password, if any, came from ${VAR} expansion rather than the file."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not isinstance(value, str):
        return value
    try:
        url = make_url(value)
    except ArgumentError:
        raise PydanticCustomError("database_url", "is not a database URL (e.g. sqlite:///.rhub/hub.db or "
                                  "postgresql+psycopg://rhub:${PGPASSWORD}@host/db)") from None
    password = url.password
    if password and _context(info).get("strict_secrets"):
        raw = value.raw if isinstance(value, EnvText) else value
        if str(password) in raw:
            raise PydanticCustomError("literal_secret", "the URL holds a literal password")
    return value


def unique_names(names: list[str], where: str, key: str) -> None:
    """Raise FieldError at where[i].key for the first repeated name."""
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise FieldError(f"duplicate {key} {name!r}", where, i, key)
        seen.add(name)
