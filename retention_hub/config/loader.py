"""Reading `hub.yaml`: YAML -> env_file -> ${VAR} expansion -> pydantic models -> `HubConfig`.

Every problem becomes one `ConfigError` whose lines read `FILE: KEY.PATH: what is wrong`. Messages
are built here from pydantic's error location and our own wording, never from pydantic's rendered
text, so no input value (which may be a secret) can leak into them.
"""
from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from ..log import register_secret
from .models import (DEFAULT_HUBSPOT_PROPERTIES, DEFAULT_PLAYBOOKS, DEFAULT_SALESFORCE_FIELDS,
                     DEFAULT_SCORECARDS, EnvText, FieldError, HubConfig)

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_PURE_REF = re.compile(rf"\$\{{{_NAME}\}}")


class ConfigError(Exception):
    """A problem with the configuration; the message names the file and the key."""

    def __init__(self, file: str | Path, problems: list[tuple[str, str]] | str) -> None:
        if isinstance(problems, str):
            problems = [("", problems)]
        self.file = str(file)
        self.problems = problems
        super().__init__("\n".join(f"{self.file}: {key}: {what}" if key else f"{self.file}: {what}"
                                   for key, what in problems))


# -- public API ----------------------------------------------------------------------------------


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> HubConfig:
    """Load and validate `path`; raise `ConfigError` on any problem."""
    path = Path(path)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(shown, "file not found (create one with `rhub init`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(shown, f"cannot read the file: {getattr(exc, 'strerror', None) or exc}") from None
    raw = _parse_yaml(text, shown)
    base_dir = path.resolve().parent
    env = dict(environ if environ is not None else os.environ)
    env_file = raw.get("env_file")
    if env_file is not None:
        if not isinstance(env_file, str) or not env_file.strip():
            raise ConfigError(shown, [("env_file", "must be a file path")])
        file_env = read_env_file(base_dir / Path(env_file).expanduser(), shown)
        env = {**file_env, **env}  # the real environment wins over the file
    problems: list[tuple[str, str]] = []
    data = {key: (value if key == "env_file" else _expand(value, env, problems, (key,)))
            for key, value in raw.items()}
    if problems:
        raise ConfigError(shown, problems)
    try:
        config = HubConfig.model_validate(data, context={"strict_secrets": True, "base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(shown, [_describe(err) for err in exc.errors(include_input=False)]) from None
    config._path = path
    _register_secrets(config)
    return config


def render_template() -> str:
    """The commented `hub.yaml` template that `rhub init` writes."""
    return resources.files("retention_hub.config").joinpath("template.yaml").read_text(encoding="utf-8")


def read_env_file(path: Path, config_file: str = "") -> dict[str, str]:
    """KEY=VALUE lines (blank lines, `# comments` and a leading `export ` allowed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(config_file or path, [("env_file", f"cannot read {path}: {exc.strerror}")]) from None
    out: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not re.fullmatch(_NAME, key):
            # the line is not echoed: it may hold a secret
            raise ConfigError(path, f"line {lineno}: expected KEY=VALUE")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


def sandbox_config(info: dict[str, Any], store_url: str, env_file: str = ".env") -> tuple[str, str]:
    """(hub.yaml text, env file text) for a running sandbox described by its sandbox.json `info`.

    Secrets go to the env file as RHUB_SANDBOX_* variables that hub.yaml references; hub.yaml names
    `env_file` so it loads from anywhere as long as both files sit side by side.
    """
    env: dict[str, str] = {}

    def ref(name: str, value: Any) -> str:
        env[f"RHUB_SANDBOX_{name}"] = str(value)
        return f"${{RHUB_SANDBOX_{name}}}"

    from sqlalchemy.engine import make_url

    url = make_url(store_url)
    if url.password:  # keep even the store's password out of hub.yaml
        marker = "RHUBPASSWORDMARKER"
        store_url = url.set(password=marker).render_as_string(hide_password=False).replace(
            marker, ref("STORE_PASSWORD", quote_plus(str(url.password))))

    sources: dict[str, Any] = {}
    sf = info.get("salesforce") or {}
    if sf.get("instance_url"):
        # access_token auth; the OAuth client is in the env file too, for switching to auth.grant
        sources["salesforce"] = {"instance_url": sf["instance_url"],
                                 "auth": {"access_token": ref("SALESFORCE_ACCESS_TOKEN", sf["access_token"])}}
        for key in ("client_id", "client_secret", "refresh_token", "username", "password"):
            if sf.get(key):
                ref(f"SALESFORCE_{key.upper()}", sf[key])
        if sf.get("ca_cert") not in (None, "", "None"):
            sources["salesforce"]["ca_cert"] = str(sf["ca_cert"])
    hs = info.get("hubspot") or {}
    if hs.get("base_url"):
        sources["hubspot"] = {"base_url": hs["base_url"],
                              "access_token": ref("HUBSPOT_ACCESS_TOKEN", hs["access_token"])}
    zd = info.get("zendesk") or {}
    if zd.get("base_url"):
        sources["zendesk"] = {"subdomain": zd["subdomain"], "email": zd["email"],
                              "api_token": ref("ZENDESK_API_TOKEN", zd["api_token"]), "base_url": zd["base_url"]}
    st = info.get("stripe") or {}
    if st.get("base_url"):
        sources["stripe"] = {"base_url": st["base_url"], "api_key": ref("STRIPE_API_KEY", st["api_key"])}
    if info.get("usage_db"):
        sources["usage"] = {"kind": "sqlite", "path": str(info["usage_db"]), "table": "usage_daily"}

    targets: dict[str, Any] = {}
    if "salesforce" in sources:
        targets["salesforce"] = {"field_mappings": dict(DEFAULT_SALESFORCE_FIELDS), "conflict_policy": "flag",
                                 "tasks": {"enabled": True, "owner": "account_owner",
                                           "close_when_cleared": True}}
    if "hubspot" in sources:
        targets["hubspot"] = {"field_mappings": dict(DEFAULT_HUBSPOT_PROPERTIES), "conflict_policy": "flag",
                              "property_group": "retention_hub",
                              "tasks": {"enabled": True, "owner": "account_owner", "close_when_cleared": True}}
    doc = {
        "version": 1,
        "env_file": env_file,
        "store": {"url": store_url},
        "sources": sources,
        "targets": targets,
        "scoring": {"horizon_days": 90, "tiers": {"green": 70, "yellow": 40}, "scorecards": DEFAULT_SCORECARDS},
        "playbooks": DEFAULT_PLAYBOOKS,
        "schedules": {"timezone": "UTC", "sync": {"interval_minutes": 15}, "score": "15 5 * * *",
                      "writeback": "45 5 * * *", "renewal_scan": "0 6 * * *", "report": "0 7 * * 1"},
        "identity": {"auto_accept": 0.9, "review_threshold": 0.6},
    }
    header = ("# Retention Hub configuration for the local sandbox (written by `rhub sandbox`).\n"
              f"# Credentials live in {env_file} next to this file; they exist only in this sandbox.\n")
    env_lines = ["# Retention Hub sandbox credentials: valid only against the local emulators."]
    for key, value in env.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"{key}: a value with a line break cannot be written to an env file")
        env_lines.append(f'{key}="{value}"' if re.search(r"[\s#'\"]", value) else f"{key}={value}")
    return header + yaml.safe_dump(doc, sort_keys=False, width=110), "\n".join(env_lines) + "\n"


# -- YAML ----------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (YAML would silently keep the last one)."""


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, typing.Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _parse_yaml(text: str, shown: str) -> dict[str, Any]:
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        # problem/context only: str(exc) would quote the offending line, which may hold a secret
        what = "; ".join(p for p in (exc.context, exc.problem) if p)
        lines = text.splitlines()
        if mark and "flow" in what and mark.line < len(lines) and "${" in lines[mark.line]:
            # `{key: ${VAR}}` is the usual cause: inside { } or [ ] the { of ${ opens a mapping
            what += " (inside { } or [ ], quote ${VAR} references: '${VAR}')"
        raise ConfigError(shown, f"YAML syntax error: {where}{what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(shown, f"YAML error: {type(exc).__name__}") from None
    if raw is None:
        raise ConfigError(shown, "the file is empty (start from `rhub init`)")
    if not isinstance(raw, dict):
        raise ConfigError(shown, "the top level must be a mapping of sections (sources:, targets:, ...)")
    return raw


# -- ${VAR} expansion ----------------------------------------------------------------------------


def _expand(node: Any, env: Mapping[str, str], problems: list[tuple[str, str]],
            path: tuple[str | int, ...]) -> Any:
    """`node` with ${VAR} references in its strings replaced; problems are appended, not raised,
    so that one run reports every missing variable."""
    if isinstance(node, dict):
        return {key: _expand(value, env, problems, path + (key,)) for key, value in node.items()}
    if isinstance(node, list):
        return [_expand(value, env, problems, path + (i,)) for i, value in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        found: list[str] = []
        value = _expand_text(node, env, found)
        problems.extend((_key_path(path), p) for p in found)
        return value
    return node


def _expand_text(text: str, env: Mapping[str, str], problems: list[str]) -> EnvText:

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"  # an escaped literal
        name, has_default, default = match.group(1).partition(":-")
        if not re.fullmatch(_NAME, name):
            problems.append("invalid ${...} reference (write ${NAME} or ${NAME:-default}; "
                            "NAME is letters, digits and _)")
            return ""
        value = env.get(name)
        if value is None or (value == "" and has_default):  # POSIX :- also replaces an empty value
            if has_default:
                return default
            problems.append(f"environment variable {name} is not set (export it, or define it in the "
                            "file named by env_file)")
            return ""
        return value

    value = _REF.sub(substitute, text)
    if not problems and "${" in _REF.sub("", text):
        problems.append("unclosed ${ (write ${NAME})")
    return EnvText(value, raw=text, pure_ref=bool(_PURE_REF.fullmatch(text)))


# -- turning pydantic errors into messages -------------------------------------------------------

_TAG = re.compile(r"^(function-|json-or-python|lax-or-strict|tagged-union|union\[|nullable\[)|\[.*\]$")


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _describe(err: Mapping[str, Any]) -> tuple[str, str]:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and _TAG.search(p)))
    kind, ctx = err["type"], err.get("ctx") or {}
    error = ctx.get("error")
    if isinstance(error, FieldError):
        loc += error.path
    if kind in ("value_error", "assertion_error") and error is not None:
        what = str(error)
    elif kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        what = "unknown key"
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            what += f"; did you mean {close[0]!r}?"
        elif allowed:
            what += f" (allowed: {', '.join(allowed)})"
    elif kind == "missing":
        what = "is required"
    elif kind == "literal_secret" and loc[-1:] == ("url",):
        what = (f"{err['msg']}; put ${{DB_PASSWORD}} in its place in the URL and set DB_PASSWORD in "
                "the environment (or in the env_file)")
    elif kind == "literal_secret":
        name = "_".join(str(p) for p in loc if isinstance(p, str) and p not in ("sources", "auth")).upper()
        what = (f"{err['msg']}; write it as ${{{name}}} and set {name} in the environment "
                "(or in the env_file), or as {file: path}")
    else:
        what = err["msg"]
    return _key_path(loc), what


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model at `loc` accepts (for 'did you mean')."""
    current: Any = HubConfig
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    """`X | None` -> X; Annotated[X, ...] -> X."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _register_secrets(node: Any) -> None:
    """Hand every loaded credential to the log scrubber."""
    if isinstance(node, SecretStr):
        register_secret(node.get_secret_value())
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            value = getattr(node, name)
            if name == "url" and isinstance(value, str):
                from sqlalchemy.engine import make_url

                password = make_url(value).password
                if password:
                    register_secret(str(password))
            _register_secrets(value)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _register_secrets(item)
    elif isinstance(node, dict):
        for item in node.values():
            _register_secrets(item)
