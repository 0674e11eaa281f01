"""Quick whole studies for the fault tests: the real `tui-tuner` command on the simulated server
with the fake GuideLLM, and the checks made after each fault (records, processes left)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import FAST_PROFILE, ROOT
from tui_tuner.core.config_load import load_config
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.study_dir import saved_overrides

FAKE_GUIDELLM = ROOT / "tests" / "fakes" / "fake_guidellm.py"


def sim_study(
    tmp_path: Path,
    model: Path,
    *,
    name: str,
    study: str = "",
    options: Sequence[int] = (8, 16),
    duration_s: float = 2,
    sim_args: Sequence[str] = ("--sim-time-scale", "4"),
    profile: str | None = None,
) -> Path:
    """A grid study over max_num_seqs on the simulated server; ``study`` adds keys to the
    study section. The server's profile file is written under ``tmp_path``, so its path in a
    command line marks this test's servers (see :func:`leftovers`). The baseline runs once and
    nothing is measured again (not the defaults, 3 and 3), so a test counts the trials it asks
    for, unless ``study`` sets ``noise_repeats`` or ``remeasure_top`` itself."""
    profile_file = tmp_path / f"{name}-profile.yaml"
    profile_file.write_text(profile if profile is not None else FAST_PROFILE.read_text())
    args = ["--sim-profile-file", str(profile_file), *sim_args]
    config = tmp_path / f"{name}.yaml"
    once = {"noise_repeats": 1, "remeasure_top": 0}
    plain = "".join(f"{key}: {value}, " for key, value in once.items() if f"{key}:" not in study)
    config.write_text(
        f"""
study: {{name: {name}, seed: 0, sampler: grid, {plain}{study}}}
server:
  command: ["tui-tuner", "sim-serve"]
  model: {model}
  extra_args: {json.dumps(args)}
  startup_timeout_s: 60
workload: {{prompt_tokens: 64, output_tokens: 16, streams: 2, duration_s: {duration_s},
           warmup_s: 1}}
search_space: {{max_num_seqs: {{options: {list(options)}}}}}
"""
    )
    return config


def tuner(command: str, target: Path, *extra: str) -> list[str]:
    """`tui-tuner tune CONFIG` or `resume STUDY_DIR`, headless, with the fake GuideLLM."""
    return [sys.executable, "-m", "tui_tuner", command, str(target), "--headless",
            "--guidellm", str(FAKE_GUIDELLM), *extra]  # fmt: skip


def start(cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)  # fmt: skip


def records(study_dir: Path) -> dict[int, TrialRecord]:
    config = load_config(study_dir / "config.yaml", saved_overrides(study_dir))
    store = StudyStore(config, default_storage_url(study_dir))
    return {r.number: r for r in store.records()}


def wait_for(events: Path, needle: str, proc: subprocess.Popen[Any], timeout: float = 90) -> None:
    """Until ``needle`` is in the event stream (the tuner must not end first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if events.exists() and needle in events.read_text():
            return
        assert proc.poll() is None, f"the tuner ended (code {proc.returncode}) before {needle}"
        time.sleep(0.05)
    pytest.fail(f"never saw {needle!r}")


def leftovers(marker: str, family: Iterable[psutil.Process] = ()) -> list[str]:
    """Live processes of ``family`` (the tuner's, seen before a fault) or naming ``marker``."""
    alive = {p.pid: p for p in family if _alive(p)}
    for p in psutil.process_iter(["cmdline"]):
        if marker in " ".join(p.info["cmdline"] or []) and _alive(p):
            alive[p.pid] = p
    return [" ".join(p.cmdline()) for p in alive.values() if _alive(p)]


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
