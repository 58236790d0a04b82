"""`rhub sync` killed with SIGKILL at several points, then run again, ends with the same store as an
uninterrupted sync."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from retention_hub.sandbox.runner import start_sandbox
from retention_hub.sync.store import Store

pytestmark = pytest.mark.slow
ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)
RHUB = str(Path(sys.executable).with_name("rhub"))


def contents(url: str) -> dict:
    with Store(url) as store:
        return {(r["source"], r["kind"], r["source_id"]): (r["deleted"], r["payload"])
                for r in store.iter_records(include_deleted=True)}


def config_with_store(sandbox_dir: Path, store_path: Path) -> Path:
    """The sandbox's hub.yaml with its own store; the warehouse (not an API) left out to keep it quick."""
    doc = yaml.safe_load((sandbox_dir / "hub.yaml").read_text())
    doc["store"]["url"] = f"sqlite:///{store_path}"
    doc["sources"].pop("usage", None)
    path = sandbox_dir / f"{store_path.stem}.yaml"  # beside hub.yaml, so its .env and paths resolve
    path.write_text(yaml.safe_dump(doc))
    return path


def run_sync(config: Path, kill_after: float | None = None) -> int:
    proc = subprocess.Popen([RHUB, "sync", "-c", str(config), "--json"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "CI": "true"})
    if kill_after is not None:
        time.sleep(kill_after)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode in (0, -signal.SIGKILL), err
    return proc.returncode


def test_sigkill_at_several_points_then_rerun(tmp_path: Path) -> None:
    sandbox = start_sandbox(tmp_path / "sandbox", accounts=150, seed=9, anchor=ANCHOR)
    sandbox.world.freeze_clock()  # runs are compared with each other: the world must not move between them
    try:
        clean = config_with_store(tmp_path / "sandbox", tmp_path / "clean.db")
        assert run_sync(clean) == 0
        expected = contents(f"sqlite:///{tmp_path / 'clean.db'}")
        assert len(expected) > 1000

        crashed = config_with_store(tmp_path / "sandbox", tmp_path / "crashed.db")
        kills = 0
        for delay in (1.5, 2.5, 3.5, 5.0):
            if run_sync(crashed, kill_after=delay) == -signal.SIGKILL:
                kills += 1
        assert kills >= 2, "the sync finished before it could be killed: use a bigger world"
        assert run_sync(crashed) == 0
        assert contents(f"sqlite:///{tmp_path / 'crashed.db'}") == expected
    finally:
        sandbox.stop()
