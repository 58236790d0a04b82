"""`rhub identity run | export | review` through click's runner, on a small store."""
from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from retention_hub.cli import main
from retention_hub.connectors.records import record
from retention_hub.sync.store import Store

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def account(source: str, source_id: str, name: str | None, **fields: object) -> dict:
    return record(source, "account", source_id, T0, name=name, external_ids=fields.pop("external_ids", {}), **fields)


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    """A hub.yaml whose store holds two companies and a pair of records that only a typo separates."""
    config = tmp_path / "hub.yaml"
    config.write_text(f"store:\n  url: sqlite:///{tmp_path / 'hub.db'}\n"
                      "sources:\n  usage:\n    kind: csv\n    path: usage.csv\n")
    with Store(f"sqlite:///{tmp_path / 'hub.db'}") as store:
        store.upsert_records([
            account("salesforce", "001A", "Acme, Inc.", domain="acme.com", country="US"),
            account("hubspot", "h1", "Acme", domain="acme.com", country="US"),
            account("stripe", "cus_1", None, email="billing@acme.com"),
            account("salesforce", "001B", "Initech Systems", country="US"),
            account("hubspot", "h2", "Intiech Systems", country="US"),
        ], run_id=1)
    return config


def rhub(*args: str) -> object:
    return CliRunner(env={"RHUB_CONFIG": None}).invoke(main, list(args), catch_exceptions=False)


def test_run_prints_the_summary(hub: Path) -> None:
    result = rhub("identity", "run", "-c", str(hub), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["records"] == 5 and summary["unified"] == 3 and summary["review"] == 1
    assert summary["matched_pairs"] == {"hubspot+salesforce": 1, "hubspot+stripe": 1, "salesforce+stripe": 1}
    table = rhub("identity", "run", "-c", str(hub))
    assert table.exit_code == 0 and "unified accounts" in table.output and "in review" in table.output


def test_export_unifies_only_when_the_store_changed(hub: Path, tmp_path: Path) -> None:
    out = tmp_path / "links.csv"
    first = rhub("identity", "export", "-c", str(hub), "--out", str(out), "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["ran"] is True
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5 and set(rows[0]) == {"unified_id", "source", "source_id", "method", "confidence"}
    acme = {r["unified_id"] for r in rows if r["source_id"] in ("001A", "h1", "cus_1")}
    assert len(acme) == 1
    again = rhub("identity", "export", "-c", str(hub), "--out", str(out), "--json")
    assert json.loads(again.output)["ran"] is False  # nothing changed: no new unification
    with Store(f"sqlite:///{tmp_path / 'hub.db'}") as store:
        store.upsert_records([account("zendesk", "z1", "Acme", domain_names=["acme.com"])], run_id=2)
    third = rhub("identity", "export", "-c", str(hub), "--out", str(out), "--json")
    assert json.loads(third.output)["ran"] is True
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and {r["unified_id"] for r in rows if r["source_id"] == "z1"} == acme


def test_review_export_then_import_turns_decisions_into_overrides(hub: Path, tmp_path: Path) -> None:
    review = tmp_path / "review.csv"
    result = rhub("identity", "review", "-c", str(hub), "--out", str(review))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(review.open()))
    assert len(rows) == 1
    row = rows[0]
    assert {row["left_name"], row["right_name"]} == {"Initech Systems", "Intiech Systems"}
    assert row["decision"] == "" and float(row["confidence"]) < 0.9
    row["decision"] = "accept"
    with review.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    imported = rhub("identity", "review", "-c", str(hub), "--import", str(review), "--json")
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.output) == {"imported": 1, "accepted": 1, "rejected": 0}
    out = tmp_path / "links.csv"
    export = rhub("identity", "export", "-c", str(hub), "--out", str(out), "--json")
    summary = json.loads(export.output)
    assert summary["ran"] is True and summary["review"] == 0 and summary["unified"] == 2
    links = {r["source_id"]: r for r in csv.DictReader(out.open())}
    assert links["001B"]["unified_id"] == links["h2"]["unified_id"]
    assert "override" in (links["001B"]["method"], links["h2"]["method"])


def test_usage_and_file_errors_exit_2(hub: Path, tmp_path: Path) -> None:
    assert rhub("identity", "review", "-c", str(hub)).exit_code == 2
    bad = tmp_path / "decisions.csv"
    bad.write_text("left_source,left_id,right_source,right_id,decision\nsalesforce,001B,hubspot,h2,maybe\n")
    result = rhub("identity", "review", "-c", str(hub), "--import", str(bad))
    assert result.exit_code == 2 and "line 2" in result.output and "accept or reject" in result.output
    (tmp_path / "overrides.csv").write_text("source,source_id,relation\nstripe,cus_1,same\n")
    hub.write_text(hub.read_text() + "identity:\n  overrides_file: overrides.csv\n")
    result = rhub("identity", "run", "-c", str(hub))
    assert result.exit_code == 2 and "overrides.csv" in result.output and "line 2" in result.output
    missing = rhub("identity", "run", "-c", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2
