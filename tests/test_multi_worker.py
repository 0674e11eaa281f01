"""Several workers on one study through a real PostgreSQL server.

Two `tui-tuner tune` processes, each with its own study directory (its own logs and trial
files), share one study in PostgreSQL, as two GPUs or two machines would. Together they measure
every configuration once, lose no trial, and obey a stop left in the storage by a third process.
The simulated server and the quick fake GuideLLM stand in for vLLM and GuideLLM.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.studies import sim_study, start, tuner
from tests.postgres import postgres_server
from tui_tuner.core.config_load import load_config
from tui_tuner.core.space import params_key
from tui_tuner.engine.study import StudyStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

OPTIONS = [4, 8, 16, 32, 64, 128]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def write_config(tmp_path: Path, model: Path, url: str, name: str) -> Path:
    budget = f'n_trials: {len(OPTIONS) + 1}, storage: "{url}"'
    return sim_study(tmp_path, model, name=name, study=budget, options=OPTIONS)


def worker(config: Path, study_dir: Path) -> subprocess.Popen[str]:
    return start(tuner("tune", config, "--study-dir", str(study_dir)))


def test_two_workers_share_a_study_and_measure_each_configuration_once(
    tmp_path: Path, tiny_model: Path, postgres_url: str
) -> None:
    config = write_config(tmp_path, tiny_model, postgres_url, "shared")
    workers = [worker(config, tmp_path / f"worker-{i}") for i in (1, 2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    for w, out in zip(workers, outputs, strict=True):
        assert w.returncode == 0, out[-3000:]
    records = StudyStore(load_config(config), postgres_url).records()
    measured = [r for r in records if r.state == "complete" and r.duplicate_of is None]
    runs = Counter("baseline" if r.baseline else params_key(r.params) for r in measured)
    assert len(runs) == len(OPTIONS) + 1, records  # every configuration and the baseline
    assert set(runs.values()) == {1}, runs  # none measured twice
    assert all(r.state in ("complete", "failed") for r in records)
    assert all(r.state == "complete" or r.note.startswith("skipped") for r in records), records
    for i in (1, 2):  # both did a share of the work, each in its own directory
        assert list((tmp_path / f"worker-{i}" / "trials").iterdir()), outputs[i - 1][-2000:]


def test_a_stop_in_the_storage_stops_every_worker(
    tmp_path: Path, tiny_model: Path, postgres_url: str
) -> None:
    config = write_config(tmp_path, tiny_model, postgres_url, "stopped")
    workers = [worker(config, tmp_path / f"worker-{i}") for i in (1, 2)]
    store = StudyStore(load_config(config), postgres_url)
    deadline = time.monotonic() + 120
    while not any(r.state == "complete" for r in store.records()):
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers)
        time.sleep(0.5)
    store.update_control(stop_at=time.time())
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    for w, out in zip(workers, outputs, strict=True):
        assert w.returncode == 130 or "stopped by a request in the study storage" in out, out
    records = store.records()
    assert any(r.state == "complete" for r in records)
    assert len([r for r in records if r.state == "complete"]) < len(OPTIONS) + 1
