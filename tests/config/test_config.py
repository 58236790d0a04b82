"""hub.yaml loading: defaults, ${VAR} expansion, env_file, secrets, every error class, template and
sandbox round-trips."""
from __future__ import annotations

import sqlite3
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from retention_hub.config import ConfigError, HubConfig, load_config, render_template, sandbox_config
from retention_hub.config.models import (DEFAULT_HUBSPOT_PROPERTIES, DEFAULT_SALESFORCE_FIELDS, HubSpotSource,
                                         Schedule)
from retention_hub.sandbox.server import Sandbox, make_certificate, make_credentials
from retention_hub.sandbox.world import World

SECRET = "s3cr3t-VALUE-123"
MINIMAL = "sources:\n  hubspot:\n    access_token: ${HS_TOKEN}\n"
TEMPLATE_ENV = {"SALESFORCE_CLIENT_ID": "3MVG9-client", "SALESFORCE_CLIENT_SECRET": SECRET,
                "HUBSPOT_ACCESS_TOKEN": "pat-na1-abcdef", "ZENDESK_API_TOKEN": "zd-token-1",
                "STRIPE_API_KEY": "sk_test_123456"}


def write(tmp_path: Path, text: str, name: str = "hub.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env if env is not None else {"HS_TOKEN": SECRET})
    message = str(info.value)
    assert SECRET not in message
    assert str(path) in message
    return message


# -- valid files ---------------------------------------------------------------------------------


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), {"HS_TOKEN": SECRET})
    assert config.version == 1
    assert config.store.url == "sqlite:///.rhub/hub.db"
    assert config.sources.hubspot.base_url == "https://api.hubapi.com"
    assert config.sources.hubspot.access_token.get_secret_value() == SECRET
    assert list(config.sources.enabled()) == ["hubspot"]
    assert config.targets.salesforce is None and config.targets.hubspot is None
    assert config.scoring.horizon_days == 90
    assert (config.scoring.tiers.green, config.scoring.tiers.yellow) == (70, 40)
    assert [s.name for s in config.scoring.scorecards] == ["default"]
    assert {p.name for p in config.playbooks} >= {"red-escalation", "payment-recovery", "renewal-30"}
    assert all(0 <= p.holdout_share <= 0.5 for p in config.playbooks)
    assert set(config.schedules.jobs()) == {"sync", "score", "writeback", "renewal_scan", "report"}
    assert (config.identity.auto_accept, config.identity.review_threshold) == (0.9, 0.6)
    assert config.path == tmp_path / "hub.yaml"


def test_secret_never_in_repr_str_or_json(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + "  stripe: {api_key: '${HS_TOKEN}'}\n"), {"HS_TOKEN": SECRET})
    for text in (repr(config), str(config), config.model_dump_json(), repr(config.sources.stripe)):
        assert SECRET not in text
    assert config.sources.stripe.api_key.get_secret_value() == SECRET


def test_defaults_and_env_expansion_for_plain_values(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        sources:
          zendesk:
            subdomain: ${ZD_SUB:-acme}
            email: ops@acme.test
            api_token: ${ZD_TOKEN}
        scoring:
          horizon_days: ${HORIZON:-30}
          tiers: {green: "${GREEN}", yellow: 35}
        playbooks:
          - name: literal
            steps: [{key: a, subject: "Costs $${{PRICE}} now"}]
        """)
    config = load_config(path, {"ZD_TOKEN": SECRET, "GREEN": "80"})
    assert config.sources.zendesk.subdomain == "acme"
    assert config.sources.zendesk.url == "https://acme.zendesk.com"
    assert config.scoring.horizon_days == 30 and config.scoring.tiers.green == 80
    assert config.playbooks[0].steps[0].subject == "Costs ${{PRICE}} now"  # a template: renders ${PRICE}
    config = load_config(path, {"ZD_TOKEN": SECRET, "GREEN": "80", "HORIZON": "120", "ZD_SUB": "globex"})
    assert config.scoring.horizon_days == 120 and config.sources.zendesk.subdomain == "globex"
    # POSIX ':-': an empty variable takes the default too
    assert load_config(path, {"ZD_TOKEN": SECRET, "GREEN": "80", "HORIZON": ""}).scoring.horizon_days == 30


def test_env_file_is_read_and_real_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "hub.env").write_text(
        "# comment\n\nexport HS_TOKEN=from-file-token\nSTRIPE_KEY=\"sk_test_quoted value\"\n")
    path = write(tmp_path / "conf", "env_file: hub.env\n" + MINIMAL + "  stripe: {api_key: '${STRIPE_KEY}'}\n")
    config = load_config(path, {})
    assert config.sources.hubspot.access_token.get_secret_value() == "from-file-token"
    assert config.sources.stripe.api_key.get_secret_value() == "sk_test_quoted value"
    config = load_config(path, {"HS_TOKEN": "from-environment"})
    assert config.sources.hubspot.access_token.get_secret_value() == "from-environment"


def test_secret_from_file_relative_to_config(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "hs").write_text(SECRET + "\n")
    config = load_config(write(tmp_path, "sources:\n  hubspot:\n    access_token: {file: secrets/hs}\n"), {})
    assert config.sources.hubspot.access_token.get_secret_value() == SECRET


def test_salesforce_oauth_grants(tmp_path: Path) -> None:
    base = textwrap.dedent("""\
        sources:
          salesforce:
            instance_url: https://acme.my.salesforce.com/
            api_version: 60.0
            auth:
              client_id: my-client
              client_secret: ${CS}
        """)
    env = {"CS": SECRET, "RT": "refresh-token-1", "PW": "pw-12345"}
    config = load_config(write(tmp_path, base), env)
    sf = config.sources.salesforce
    assert sf.auth.grant == "client_credentials" and sf.instance_url == "https://acme.my.salesforce.com"
    assert sf.api_version == "60.0"
    config = load_config(write(tmp_path, base + "      refresh_token: ${RT}\n"), env)
    assert config.sources.salesforce.auth.grant == "refresh_token"
    config = load_config(write(tmp_path, base + "      grant: password\n      username: u@acme.test\n"
                                                "      password: ${PW}\n"), env)
    assert config.sources.salesforce.auth.password.get_secret_value() == "pw-12345"


def test_models_accept_plain_strings_when_built_in_code() -> None:
    # other modules' tests build configs directly: only files loaded by load_config are strict
    assert HubSpotSource(access_token="pat-123").access_token.get_secret_value() == "pat-123"
    assert Schedule.model_validate("*/5 * * * *").cron == "*/5 * * * *"


# -- every error class ---------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nope.yaml")
    assert "file not found" in message and "rhub init" in message


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, f"sources:\n  hubspot: {{access_token: '{SECRET}'\n  stripe: [\n")
    message = error_of(path)
    assert "YAML syntax error" in message and "line " in message and "column " in message


def test_unquoted_reference_in_flow_mapping_gets_a_hint(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "sources:\n  hubspot: {access_token: ${HS_TOKEN}}\n"))
    assert "line 2" in message and "quote ${VAR} references" in message


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, MINIMAL + "  hubspot:\n    access_token: ${HS_TOKEN}\n"))
    assert "duplicate key 'hubspot'" in message and "line 4" in message


@pytest.mark.parametrize("text, key, what", [
    ("scoring:\n  horizon_days: lots\n", "scoring.horizon_days", "valid integer"),
    ("storage:\n  url: sqlite://\n", "storage", "did you mean 'store'"),
    ("targets:\n  hubspot:\n    field_mappings: {health_scor: retention_score}\n",
     "targets.hubspot.field_mappings.health_scor", "unknown hub value"),
    ("targets:\n  hubspot:\n    field_mappings: {tier: Bad-Name}\n",
     "targets.hubspot.field_mappings.tier", "not a valid field name"),
    ("targets:\n  hubspot:\n    conflict_policy: newest\n", "targets.hubspot.conflict_policy", "hub_wins"),
    ("targets:\n  salesforce: {}\n", "targets.salesforce", "needs sources.salesforce"),
    ("schedules:\n  sync: '* * *'\n", "schedules.sync", "5 fields"),
    ("schedules:\n  score: '99 * * * *'\n", "schedules.score", "invalid cron"),
    ("schedules:\n  report: {interval_minutes: 0}\n", "schedules.report.interval_minutes", "greater than"),
    ("schedules:\n  reprot: '0 7 * * 1'\n", "schedules.reprot", "did you mean 'report'"),
    ("scoring:\n  tiers: {green: 30, yellow: 40}\n", "scoring.tiers.green", "greater than yellow"),
    ("scoring:\n  scorecards:\n    - name: a\n      components:\n"
     "        - {name: c, weight: 0, feature: f, direction: higher_is_better, method: percentile}\n",
     "scoring.scorecards[0].components[0].weight", "greater than 0"),
    ("scoring:\n  scorecards:\n    - name: a\n      components:\n"
     "        - {name: c, weight: 1, feature: f, direction: higher_is_better, thresholds: [1, 1]}\n",
     "scoring.scorecards[0].components[0].thresholds", "strictly increasing"),
    ("scoring:\n  scorecards:\n    - name: a\n      segment: {field: segment, values: [SMB]}\n      components:\n"
     "        - {name: c, weight: 1, feature: f, direction: higher_is_better, method: percentile}\n",
     "scoring.scorecards", "exactly one scorecard must have no segment"),
    ("playbooks:\n  - {name: p, steps: [{key: a, subject: s}]}\n  - {name: p, steps: [{key: b, subject: s}]}\n",
     "playbooks[1].name", "duplicate name 'p'"),
    ("playbooks:\n  - {name: p, steps: [{key: a, subject: s}, {key: a, subject: t}]}\n",
     "playbooks[0].steps[1].key", "duplicate key 'a'"),
    ("playbooks:\n  - {name: p, holdout_share: 0.7, steps: [{key: a, subject: s}]}\n",
     "playbooks[0].holdout_share", "less than or equal to 0.5"),
    ("playbooks:\n  - {name: p, when: {tier: [orange]}, steps: [{key: a, subject: s}]}\n",
     "playbooks[0].when.tier[0]", "'green'"),
    ("identity: {auto_accept: 0.5, review_threshold: 0.7}\n", "identity.review_threshold", "auto_accept"),
    ("store:\n  url: postgresql+psycopg://rhub:" + SECRET + "@db/rhub\n", "store.url", "literal password"),
    ("store:\n  url: not a url\n", "store.url", "not a database URL"),
    ("version: 2\n", "version", "Input should be 1"),
])
def test_error_names_file_and_key(tmp_path: Path, text: str, key: str, what: str) -> None:
    message = error_of(write(tmp_path, MINIMAL + text))
    assert f"hub.yaml: {key}: " in message
    assert what in message


@pytest.mark.parametrize("text, key, what", [
    ("sources:\n  hubspot: {base_url: https://x.test}\n", "sources.hubspot.access_token", "is required"),
    ("sources:\n  hubspot:\n    access_token: ${HS_TOKEN}\n    base_urll: https://x.test\n",
     "sources.hubspot.base_urll", "did you mean 'base_url'"),
    ("sources:\n  hubspot: {access_token: '${HS_TOKEN}', enabled: false}\n", "sources", "no source is enabled"),
    ("sources:\n  zendesk: {subdomain: Acme Corp, email: a@b.c, api_token: '${HS_TOKEN}'}\n",
     "sources.zendesk.subdomain", "pattern"),
    ("sources:\n  salesforce:\n    instance_url: ftp://acme\n    auth: {access_token: '${HS_TOKEN}'}\n",
     "sources.salesforce.instance_url", "http(s) URL"),
    ("sources:\n  salesforce:\n    instance_url: https://acme.test\n    auth: {client_id: x}\n",
     "sources.salesforce.auth.client_secret", "required for OAuth"),
    ("sources:\n  salesforce:\n    instance_url: https://acme.test\n    auth: {access_token: '${HS_TOKEN}', "
     "client_id: x}\n", "sources.salesforce.auth.client_id", "not both"),
    ("sources:\n  salesforce:\n    instance_url: https://acme.test\n    auth: {client_id: x, client_secret: "
     "'${HS_TOKEN}', grant: password}\n", "sources.salesforce.auth.username", "grant password"),
    ("sources:\n  salesforce:\n    instance_url: https://acme.test\n    ca_cert: missing.pem\n"
     "    auth: {access_token: '${HS_TOKEN}'}\n", "sources.salesforce.ca_cert", "file not found"),
    ("sources:\n  usage: {kind: sqlite}\n", "sources.usage.path", "exactly one of path or url"),
    ("sources:\n  hubspot: {access_token: {file: nope.txt}}\n", "sources.hubspot.access_token",
     "cannot read the secret file"),
])
def test_source_errors(tmp_path: Path, text: str, key: str, what: str) -> None:
    message = error_of(write(tmp_path, text))
    assert f"hub.yaml: {key}: " in message
    assert what in message


def test_missing_env_vars_are_all_reported(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "  stripe: {api_key: '${STRIPE_KEY}'}\n")
    message = error_of(path, {})
    assert "hub.yaml: sources.hubspot.access_token: environment variable HS_TOKEN is not set" in message
    assert "hub.yaml: sources.stripe.api_key: environment variable STRIPE_KEY is not set" in message


@pytest.mark.parametrize("value", [SECRET, "'prefix-${HS_TOKEN}'", f"'${{HS_TOKEN:-{SECRET}}}'"])
def test_literal_secret_is_an_error(tmp_path: Path, value: str) -> None:
    message = error_of(write(tmp_path, f"sources:\n  hubspot:\n    access_token: {value}\n"))
    assert "hub.yaml: sources.hubspot.access_token: " in message
    assert "${" in message  # tells how to write it


def test_literal_secret_suggests_a_variable_name(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, f"sources:\n  stripe:\n    api_key: {SECRET}\n"))
    assert "write it as ${STRIPE_API_KEY}" in message


def test_bad_references(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, MINIMAL + "scoring:\n  horizon_days: ${1BAD}\n"))
    assert "hub.yaml: scoring.horizon_days: invalid ${...} reference" in message
    message = error_of(write(tmp_path, MINIMAL + "scoring:\n  horizon_days: ${HORIZON\n"))
    assert "hub.yaml: scoring.horizon_days: unclosed ${" in message


def test_env_file_errors_do_not_echo_values(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "env_file: missing.env\n" + MINIMAL))
    assert "env_file: cannot read" in message
    (tmp_path / "bad.env").write_text(f"GOOD=1\n{SECRET}\n")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "env_file: bad.env\n" + MINIMAL), {})
    assert "bad.env: line 2: expected KEY=VALUE" in str(info.value)
    assert SECRET not in str(info.value)


def test_not_a_mapping_and_empty(tmp_path: Path) -> None:
    assert "the file is empty" in error_of(write(tmp_path, ""))
    assert "top level must be a mapping" in error_of(write(tmp_path, "- a\n- b\n"))


# -- template and sandbox round-trips ------------------------------------------------------------


def test_template_round_trip(tmp_path: Path) -> None:
    text = render_template()
    assert text.count("\n#") > 30  # it is a commented template
    for vendor in ("salesforce.com", "hubapi.com", "zendesk", "api.stripe.com"):
        assert vendor in text
    path = write(tmp_path, text)
    config = load_config(path, TEMPLATE_ENV)
    assert set(config.sources.enabled()) == {"salesforce", "hubspot", "zendesk", "stripe"}
    assert config.sources.salesforce.auth.client_secret.get_secret_value() == SECRET
    assert config.targets.salesforce.field_mappings == DEFAULT_SALESFORCE_FIELDS
    assert config.targets.hubspot.field_mappings == DEFAULT_HUBSPOT_PROPERTIES
    message = error_of(path, {})
    for name in TEMPLATE_ENV:
        assert f"environment variable {name} is not set" in message


def _sandbox_info(tmp_path: Path, vendors: tuple[str, ...]) -> dict:
    world = World(seed=1, anchor=datetime(2026, 11, 1, tzinfo=timezone.utc))
    world.usage_db = tmp_path / "warehouse.db"
    with sqlite3.connect(world.usage_db) as db:
        db.execute("create table usage_daily(workspace_id, day, active_users, sessions, events, features_used)")
    sandbox = Sandbox(world, tmp_path / "sb", make_credentials())
    sandbox.ca_cert, _ = make_certificate(tmp_path / "sb")
    ports = {"salesforce": 8443, "hubspot": 8101, "zendesk": 8102, "stripe": 8103}
    for vendor in vendors:
        sandbox.urls[vendor] = f"{'https' if vendor == 'salesforce' else 'http'}://127.0.0.1:{ports[vendor]}"
    return sandbox.info()


def test_sandbox_config_round_trip(tmp_path: Path) -> None:
    info = _sandbox_info(tmp_path, ("salesforce", "hubspot", "zendesk", "stripe"))
    hub_text, env_text = sandbox_config(info, "sqlite:///" + str(tmp_path / "hub.db"))
    secrets = [info["salesforce"]["access_token"], info["salesforce"]["client_secret"],
               info["hubspot"]["access_token"], info["zendesk"]["api_token"], info["stripe"]["api_key"]]
    for secret in secrets:
        assert secret not in hub_text and secret in env_text
    assert "${RHUB_SANDBOX_HUBSPOT_ACCESS_TOKEN}" in hub_text
    out = tmp_path / "out"
    out.mkdir()
    (out / "hub.yaml").write_text(hub_text)
    (out / ".env").write_text(env_text)
    config = load_config(out / "hub.yaml", {})  # nothing from the environment: all from .env
    sources = config.sources
    assert sources.salesforce.instance_url == info["salesforce"]["instance_url"]
    assert sources.salesforce.auth.access_token.get_secret_value() == info["salesforce"]["access_token"]
    assert sources.salesforce.ca_cert == Path(info["salesforce"]["ca_cert"])
    assert sources.hubspot.base_url == info["hubspot"]["base_url"]
    assert sources.hubspot.access_token.get_secret_value() == info["hubspot"]["access_token"]
    assert sources.zendesk.url == info["zendesk"]["base_url"]
    assert sources.zendesk.api_token.get_secret_value() == info["zendesk"]["api_token"]
    assert sources.stripe.api_key.get_secret_value() == info["stripe"]["api_key"]
    assert sources.usage.kind == "sqlite" and sources.usage.path == Path(info["usage_db"])
    assert sources.usage.table == "usage_daily"
    assert config.targets.salesforce.field_mappings["health_score"] == "Health_Score__c"
    assert config.targets.hubspot.field_mappings["health_score"] == "retention_health_score"
    assert config.store.url == "sqlite:///" + str(tmp_path / "hub.db")
    assert config.playbooks and config.scoring.scorecards and config.schedules.jobs()


def test_sandbox_config_subset_and_store_password(tmp_path: Path) -> None:
    info = _sandbox_info(tmp_path, ("hubspot",))
    info["usage_db"] = None
    hub_text, env_text = sandbox_config(info, f"postgresql+psycopg://rhub:{SECRET}@127.0.0.1/rhub",
                                        env_file="sandbox.env")
    assert SECRET not in hub_text and SECRET in env_text
    doc = yaml.safe_load(hub_text)
    assert set(doc["sources"]) == {"hubspot"} and set(doc["targets"]) == {"hubspot"}
    (tmp_path / "hub.yaml").write_text(hub_text)
    (tmp_path / "sandbox.env").write_text(env_text)
    config = load_config(tmp_path / "hub.yaml", {})
    assert config.store.url == f"postgresql+psycopg://rhub:{SECRET}@127.0.0.1/rhub"
    assert SECRET not in config.store.safe_url and SECRET not in repr(config)
    assert isinstance(config, HubConfig)
