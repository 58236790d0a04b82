"""`rhub init` / `rhub validate` through click's runner and once as a real process; log scrubbing."""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from retention_hub import __version__
from retention_hub.cli import RhubGroup, main
from retention_hub.config import ConfigError, render_template
from retention_hub.log import JsonFormatter, SecretFilter, register_secret, scrub, setup_logging
from retention_hub.sync.store import StoreError

SECRET = "s3cr3t-VALUE-123"
RHUB = Path(sys.executable).parent / "rhub"
TEMPLATE_ENV = {"SALESFORCE_CLIENT_ID": "3MVG9-client", "SALESFORCE_CLIENT_SECRET": SECRET,
                "HUBSPOT_ACCESS_TOKEN": "pat-na1-abcdef", "ZENDESK_API_TOKEN": "zd-token-1",
                "STRIPE_API_KEY": "sk_test_123456"}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run(args: list[str], env: dict[str, str] | None = None) -> click.testing.Result:
    return CliRunner(env={"RHUB_CONFIG": None, **(env or {})}).invoke(main, args)


def assert_clean_failure(result: click.testing.Result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no crash inside
    for fragment in fragments:
        assert fragment in result.stderr
    assert SECRET not in result.output


def test_version_and_help() -> None:
    result = run(["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = run(["--help"])
    assert result.exit_code == 0 and "init" in result.output and "validate" in result.output


def test_init_writes_the_template_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "conf" / "hub.yaml"
    result = run(["init", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == render_template()
    out.write_text("edited\n")
    result = run(["init", "--out", str(out)])
    assert_clean_failure(result, "already exists", "--force")
    assert out.read_text() == "edited\n"
    result = run(["init", "--out", str(out), "--force"])
    assert result.exit_code == 0 and out.read_text() == render_template()


def test_init_then_validate(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    assert run(["init", "-o", str(path)]).exit_code == 0
    result = run(["validate", "--config", str(path)], env=TEMPLATE_ENV)
    assert result.exit_code == 0, result.output
    assert f"{path}: valid" in result.stdout
    for fragment in ("salesforce: https://yourcompany.my.salesforce.com, OAuth client_credentials",
                     "hubspot: https://api.hubapi.com", "stripe: https://api.stripe.com",
                     "usage: csv", "(disabled)", "salesforce: 11 fields, conflict policy flag",
                     "horizon 90 days", "red-escalation", "sync every 60 min"):
        assert fragment in result.stdout, fragment
    for value in TEMPLATE_ENV.values():
        if value != TEMPLATE_ENV["SALESFORCE_CLIENT_ID"]:  # the client id is not a secret
            assert value not in result.output


def test_validate_reads_rhub_config_env(tmp_path: Path) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text("sources:\n  stripe:\n    api_key: ${STRIPE_KEY}\n")
    result = run(["validate"], env={"RHUB_CONFIG": str(path), "STRIPE_KEY": SECRET})
    assert result.exit_code == 0, result.output
    assert "target     none" in result.stdout and SECRET not in result.output


@pytest.mark.parametrize("text, fragment", [
    (None, "file not found"),
    ("sources:\n  hubspot: [\n", "YAML syntax error: line 3, column 1"),
    ("sources:\n  hubspot:\n    access_token: ${TOKEN}\nscoring:\n  horizon_days: soon\n",
     "hub.yaml: scoring.horizon_days: Input should be a valid integer"),
    ("sources:\n  hubspot:\n    access_token: ${TOKEN}\n    acess: 1\n", "hub.yaml: sources.hubspot.acess: unknown key"),
    ("sources:\n  hubspot:\n    access_token: ${MISSING_TOKEN}\n",
     "hub.yaml: sources.hubspot.access_token: environment variable MISSING_TOKEN is not set"),
    (f"sources:\n  hubspot:\n    access_token: {SECRET}\n",
     "hub.yaml: sources.hubspot.access_token: a literal secret is not allowed"),
    ("sources:\n  hubspot:\n    access_token: ${TOKEN}\ntargets:\n  hubspot:\n    field_mappings: {score: x}\n",
     "hub.yaml: targets.hubspot.field_mappings.score: unknown hub value 'score'"),
])
def test_validate_errors_exit_2_without_traceback_or_secret(tmp_path: Path, text: str | None,
                                                            fragment: str) -> None:
    path = tmp_path / "hub.yaml"
    if text is not None:
        path.write_text(text)
    result = run(["validate", "-c", str(path)], env={"TOKEN": SECRET})
    assert_clean_failure(result, str(path), fragment)
    assert result.stdout == ""


def test_any_config_or_store_error_in_any_command_exits_2() -> None:
    @click.group(cls=RhubGroup)
    def app() -> None:
        pass

    @app.command()
    def bad_config() -> None:
        raise ConfigError("hub.yaml", [("schedules.sync", "broken")])

    @app.command()
    def bad_store() -> None:
        raise StoreError("the store is too new")

    result = CliRunner().invoke(app, ["bad-config"])
    assert result.exit_code == 2 and "hub.yaml: schedules.sync: broken" in result.stderr
    result = CliRunner().invoke(app, ["bad-store"])
    assert result.exit_code == 2 and "the store is too new" in result.stderr


def test_real_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RHUB_CONFIG"}
    path = tmp_path / "hub.yaml"
    done = subprocess.run([str(RHUB), "init", "--out", str(path)], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([str(RHUB), "--log-json", "validate", "--config", str(path)], capture_output=True,
                          text=True, env={**env, **TEMPLATE_ENV}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout and SECRET not in done.stdout + done.stderr
    path.write_text(f"sources:\n  stripe:\n    api_key: {SECRET}\n")
    done = subprocess.run([str(RHUB), "validate", "--config", str(path)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 2
    assert f"{path}: sources.stripe.api_key: a literal secret" in done.stderr
    assert "Traceback" not in done.stderr and SECRET not in done.stdout + done.stderr


# -- logging ---------------------------------------------------------------------------------------


def _capture(json_lines: bool) -> io.StringIO:
    stream = io.StringIO()
    handler = setup_logging(json=json_lines, level="DEBUG")
    handler.setStream(stream)
    return stream


def test_registered_secrets_are_scrubbed_everywhere() -> None:
    register_secret(SECRET)
    stream = _capture(json_lines=False)
    log = logging.getLogger("retention_hub.test")
    log.info("token is %s", SECRET)
    logging.getLogger("urllib3.connectionpool").warning("GET /v1/x?api_key=%s", "sk_live_abc")
    try:
        raise RuntimeError(f"refused {SECRET}")
    except RuntimeError:
        log.exception("call failed")
    log.info("header", extra={"detail": f"Authorization: Bearer {SECRET}"})
    out = stream.getvalue()
    assert SECRET not in out and "sk_live_abc" not in out
    assert "token is ***" in out and "api_key=***" in out and "RuntimeError: refused ***" in out


def test_json_logs_are_scrubbed_json_lines() -> None:
    register_secret(SECRET)
    stream = _capture(json_lines=True)
    logging.getLogger("retention_hub.test").warning("using %s", SECRET, extra={"run_id": 7})
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["msg"] == "using ***" and line["level"] == "WARNING" and line["run_id"] == 7
    assert line["logger"] == "retention_hub.test"


@pytest.mark.parametrize("text, expected", [
    ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
    ("{'Authorization': 'Basic dXNlcjpwYXNz'}", "{'Authorization': 'Basic ***'}"),
    ("POST /token grant_type=refresh&access_token=xyz&x=1", "POST /token grant_type=refresh&access_token=***&x=1"),
    ('{"client_secret": "abc", "n": 1}', '{"client_secret": "***", "n": 1}'),
    ("postgresql+psycopg://rhub:pw@db/rhub", "postgresql+psycopg://rhub:***@db/rhub"),
    ("nothing to hide", "nothing to hide"),
])
def test_scrub_patterns(text: str, expected: str) -> None:
    assert scrub(text) == expected


def test_validate_registers_loaded_secrets(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("sources:\n  hubspot:\n    access_token: ${TOKEN}\n")
    other = "pat-na1-only-in-env-77"
    assert run(["validate", "-c", str(path)], env={"TOKEN": other}).exit_code == 0
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "leaked %s", (other,), None)
    SecretFilter().filter(record)
    assert record.getMessage() == "leaked ***"
    assert "***" in JsonFormatter().format(record)
