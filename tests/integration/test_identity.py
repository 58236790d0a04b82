"""Identity unification of a synced sandbox, measured against the sandbox's ground truth."""
from __future__ import annotations

import csv
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pytest

from retention_hub.config import load_config
from retention_hub.connectors import build_connectors
from retention_hub.connectors.zendesk import ZendeskConnector
from retention_hub.sandbox.runner import start_sandbox
from retention_hub.sync.engine import sync
from retention_hub.sync.identity import account_map, people_map, unified_accounts, unify
from retention_hub.sync.store import Store

pytestmark = pytest.mark.slow
ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)
STREAMS = {"salesforce": ["accounts", "contacts"], "hubspot": ["companies", "contacts"],
           "zendesk": ["organizations", "users"], "stripe": ["customers"], "usage": ["accounts"]}


def pairwise(truth: Path, unified: dict[tuple[str, str], str]) -> tuple[float, float]:
    """Precision and recall over pairs of truth records (one unified id = predicted the same)."""
    by_customer: dict[str, list[str]] = defaultdict(list)
    with truth.open() as f:
        for row in csv.DictReader(f):
            key = (row["source"], row["source_id"])
            by_customer[row["customer_key"]].append(unified.get(key, f"missing:{key}"))
    true_pairs = sum(len(v) * (len(v) - 1) // 2 for v in by_customer.values())
    same = sum(n * (n - 1) // 2 for v in by_customer.values() for n in Counter(v).values())
    predicted = sum(n * (n - 1) // 2 for n in Counter(u for v in by_customer.values() for u in v).values())
    return same / predicted, same / true_pairs


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("identity")
    running = start_sandbox(directory / "sb", accounts=300, seed=11, anchor=ANCHOR)
    try:
        config = load_config(running.directory / "hub.yaml")
        connectors = [ZendeskConnector(config.sources.zendesk, exports_per_minute=1000)
                      if isinstance(c, ZendeskConnector) else c for c in build_connectors(config)]
        url = f"sqlite:///{directory / 'hub.db'}"
        with Store(url) as store:
            assert sync(store, connectors, STREAMS, until=running.world.now()).status == "ok"
        yield url, running.directory / "truth" / "identity.csv", config
    finally:
        running.stop()


def test_unification_matches_the_ground_truth(synced) -> None:
    url, truth, config = synced
    with Store(url) as store:
        result = unify(store, config.identity)
        links = account_map(store)
        precision, recall = pairwise(truth, links)
        assert precision >= 0.99 and recall >= 0.97, (precision, recall, result.summary())
        # every truth record is linked, and so are the warehouse workspaces
        with truth.open() as f:
            assert all((r["source"], r["source_id"]) in links for r in csv.DictReader(f))
        workspaces = [u for (s, _), u in links.items() if s == "usage"]
        assert len(workspaces) == 300 and sum(u in set(v for (s, _), v in links.items() if s == "stripe")
                                              for u in workspaces) > 250
        assert result.people_linked >= 0.95 * result.people
        assert len(people_map(store)) == result.people_linked
        assert unified_accounts(store)["parent_unified_id"].notna().any()  # subsidiaries roll up
        again = unify(store, config.identity)
        assert again.written == 0 and account_map(store) == links
