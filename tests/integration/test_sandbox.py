"""The whole sandbox: a generated world served by all four emulators, read through the official SDKs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

from retention_hub.sandbox.runner import start_sandbox
from retention_hub.sandbox.smoke import salesforce_client, smoke, stripe_client

pytestmark = pytest.mark.slow
ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    running = start_sandbox(tmp_path_factory.mktemp("sandbox"), accounts=250, seed=5, anchor=ANCHOR)
    yield running
    running.stop()


def test_sandbox_json_has_the_documented_shape(sandbox) -> None:
    info = json.loads((sandbox.directory / "sandbox.json").read_text())
    assert {"instance_url", "access_token", "token_url", "client_id", "client_secret", "ca_cert"} <= set(info["salesforce"])
    assert set(info["hubspot"]) == {"base_url", "access_token"}
    assert set(info["zendesk"]) == {"base_url", "subdomain", "email", "api_token"}
    assert set(info["stripe"]) == {"base_url", "api_key"}
    assert Path(info["truth_dir"]).joinpath("identity.csv").exists()
    assert (sandbox.directory / "sandbox.json").stat().st_mode & 0o077 == 0
    for url in sandbox.urls.values():
        assert "//127.0.0.1:" in url


def test_every_sdk_reads_the_world(sandbox) -> None:
    answers = smoke(sandbox.info())
    assert set(answers) == {"salesforce", "hubspot", "zendesk", "stripe"}
    accounts = len([a for a in sandbox.world.salesforce["Account"].values() if not a["IsDeleted"]])
    assert answers["salesforce"].startswith(f"{accounts} accounts")


def test_hub_yaml_written_for_the_sandbox_loads(sandbox) -> None:
    from retention_hub.config import load_config

    config = load_config(sandbox.directory / "hub.yaml")
    assert set(config.sources.enabled()) == {"salesforce", "hubspot", "zendesk", "stripe", "usage"}
    secret = sandbox.credentials["stripe"]["api_key"]
    assert secret not in (sandbox.directory / "hub.yaml").read_text()


def test_advance_through_one_emulator_is_seen_by_all(sandbox) -> None:
    info = sandbox.info()
    sf = salesforce_client(info["salesforce"])
    st = stripe_client(info["stripe"])
    before = sf.query("SELECT COUNT() FROM Task")["totalSize"]
    before_events = len(st.v1.events.list(params={"limit": 100}).data)
    answer = requests.post(sandbox.urls["hubspot"] + "/__sandbox/advance?days=10", timeout=30)
    assert answer.status_code == 200 and answer.json()["days_advanced"] == 10
    assert sf.query("SELECT COUNT() FROM Task")["totalSize"] > before or \
        len(st.v1.events.list(params={"limit": 100}).data) != before_events


def test_stats_count_requests_by_template(sandbox) -> None:
    base = sandbox.urls["stripe"]
    requests.post(base + "/__sandbox/stats/reset", timeout=5)
    st = stripe_client(sandbox.info()["stripe"])
    customer = next(iter(sandbox.world.stripe["customer"]))
    st.v1.customers.retrieve(customer)
    st.v1.customers.retrieve(customer)
    stats = requests.get(base + "/__sandbox/stats", timeout=5).json()
    assert stats["total"] == 2
    assert stats["requests"] == [{"method": "GET", "path": "/v1/customers/{customer}", "status": 200, "count": 2}] \
        or stats["requests"][0]["path"].startswith("/v1/customers/{")


def test_knobs_inject_faults_in_the_vendor_format(sandbox) -> None:
    base = sandbox.urls["stripe"]
    requests.post(base + "/__sandbox/knobs", json={"error_rate": 1.0}, timeout=5)
    try:
        key = sandbox.credentials["stripe"]["api_key"]
        answer = requests.get(base + "/v1/customers", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert answer.status_code >= 500
        assert answer.json()["error"]["type"] == "api_error"
    finally:
        requests.post(base + "/__sandbox/knobs", json={"error_rate": 0.0}, timeout=5)
    bad = requests.post(base + "/__sandbox/knobs", json={"no_such_knob": 1}, timeout=5)
    assert bad.status_code == 400


def test_rhub_sandbox_up_serves_until_sigterm(tmp_path: Path) -> None:
    rhub = Path(sys.executable).with_name("rhub")
    proc = subprocess.Popen([str(rhub), "sandbox", "up", "--accounts", "60", "--dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CI": "true"})
    try:
        lines = []
        for line in proc.stdout:  # the last line says it is serving
            lines.append(line)
            if line.startswith("Serving on 127.0.0.1"):
                break
        assert proc.poll() is None, proc.stderr.read()
        assert any("oracle ROC AUC" in line for line in lines)
        info = json.loads((tmp_path / "sandbox.json").read_text())
        assert requests.get(info["hubspot"]["base_url"] + "/__sandbox/stats", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_rhub_demo_runs_the_pipeline_that_exists(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from retention_hub.cli import main

    result = CliRunner().invoke(main, ["demo", "--accounts", "120", "--dir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    for expected in ("ROC AUC", "valid", "schema version", "salesforce", "hubspot", "zendesk", "stripe",
                     "API calls of the SDK reads", "Synced"):
        assert expected in result.output
    from retention_hub.sync.store import Store

    with Store(f"sqlite:///{tmp_path / 'demo' / 'hub.db'}") as store:
        runs = store.list_runs()
    jobs = {run.job: run for run in runs}
    assert jobs["demo"].status == "ok" and jobs["demo"].api_calls >= 5
    assert jobs["sync"].status == "ok" and jobs["sync"].api_calls > 10
