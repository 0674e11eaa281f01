"""The storage-at-scale bench's contract (bench/storage_scale.py), at a tiny size: two workers
for a few seconds against its own PostgreSQL server, directly and (with grpcio) through
Optuna's gRPC proxy. Its last line is one JSON object, and every ask got its tell: the study
holds exactly the trials told, none left running. And what the bench found at 128 workers: a
worker of a shared study holds one PostgreSQL connection, not two."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.postgres import _bindir, postgres_server
from tui_tuner.core.config_load import load_config
from tui_tuner.engine.study import StudyStore

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "bench" / "search-chat-8b.yaml"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_a_tiny_run_tells_every_ask_and_prints_its_figures() -> None:
    if _bindir() is None:
        pytest.skip("PostgreSQL is not installed")
    modes = "direct,proxy" if importlib.util.find_spec("grpc") else "direct"
    argv = [sys.executable, str(ROOT / "bench" / "storage_scale.py"), "--workers", "2",
            "--seconds", "2", "--modes", modes, "--json"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=200, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "storage_scale"
    assert [level["mode"] for level in result["levels"]] == modes.split(",")
    for level in result["levels"]:
        assert level["workers"] == level["workers_running"] == 2, level
        assert level["asks"] > 0 and level["asks_per_s"] > 0, level
        assert level["ask_ms_p50"] <= level["ask_ms_p99"], level
        assert not level["errors"] and not level["open_errors"], level
        assert level["tells"] == level["asks"], level
        # no lost trial: the study holds exactly the trials told, each finished (and what is
        # left of the baseline's queued noise runs, if two seconds did not reach them)
        states = dict(level["trial_states"])
        waiting = states.pop("waiting", 0)
        assert states == {"complete": level["tells"]}, level
        assert level["trials"] == level["tells"] + waiting, level
        assert {"workers_cpu_s", "postgres_cpu_s", "proxy_cpu_s", "limit"} <= level["cpu"].keys()


def test_a_worker_holds_one_postgresql_connection() -> None:
    """Each worker of a shared study takes one of PostgreSQL's connections (100 by default),
    not the two that opening the storage used at once."""
    with postgres_server() as url:
        store = StudyStore(load_config(CONFIG, {"study.storage": url}), url)
        plan = store.ask(store.config.space)
        store.control()
        pool = store.storage.engine.pool
        held = pool.checkedin() + pool.checkedout()  # type: ignore[attr-defined]
        store.interrupt(plan, "the test ends")
        assert held == 1, pool.status()
