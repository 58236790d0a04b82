"""The state store each sync test runs against: SQLite always, PostgreSQL too when
RHUB_TEST_POSTGRES_URL is set (its tables dropped before and after each test)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from retention_hub.sync.store import Store, metadata

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("RHUB_TEST_POSTGRES_URL") else [])
TEST_TABLES = ["extra_v2"]  # made by test_store's migration test


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for name in [*metadata.tables, *TEST_TABLES]:
            conn.execute(text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'hub.db'}"
        return
    url = os.environ["RHUB_TEST_POSTGRES_URL"]
    _reset_postgres(url)
    yield url
    _reset_postgres(url)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store(store_url) as s:
        yield s
