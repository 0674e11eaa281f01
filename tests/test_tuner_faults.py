"""The tuner itself stopped by a signal at every phase of a trial, then resumed.

SIGINT (Ctrl-C), SIGTERM (a kill or a scheduler), SIGHUP (a dropped SSH session) and SIGKILL
(nothing can be cleaned up by the tuner itself: the reaper does it) each hit one study five times,
once in each phase of a trial (launching, ready, warmup, measuring, teardown), each time followed
by `tui-tuner resume`. After every hit: the tuner is gone, every process it started is gone, every
finished trial is unchanged, and the last resume finishes the study.

The simulated server runs slowly here (time scale 0.03) so that the short phases last long
enough to be hit, and takes 2 s to shut down so that teardown does too; GuideLLM is the quick fake
of tests/fakes (its figures are the fixture's: these tests check the tuner, not a measurement).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import psutil
import pytest

from tests.conftest import ROOT
from tui_tuner.compose import saved_overrides
from tui_tuner.core.config_load import load_config
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.study import StudyStore, default_storage_url

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

FAKE_GUIDELLM = ROOT / "tests" / "fakes" / "fake_guidellm.py"
PHASES = ("launching", "ready", "warmup", "measuring", "teardown")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL)


def write_config(tmp_path: Path, model: Path) -> Path:
    profile = tmp_path / "slow-shutdown.yaml"
    profile.write_text(
        "base: llama-8b-h100\n"
        "startup: {process_s: 1.0, profile_s: 0.5, compile_s: 2.0, capture_s_per_size: 0.01,"
        " shutdown_s: 8.0}\n"
        "gpu: {disk_gb_s: 50.0}\n"
    )
    # The profile's path, under tmp_path, marks the servers of this test in the process table.
    args = ["--sim-profile-file", str(profile), "--sim-time-scale", "0.03",
            "--sim-startup-scale", "4"]  # fmt: skip
    config = tmp_path / "signals.yaml"
    config.write_text(
        f"""
study: {{name: signals, seed: 0, sampler: grid, n_trials: 2}}
server:
  command: ["tui-tuner", "sim-serve"]
  model: {model}
  extra_args: {json.dumps(args)}
  startup_timeout_s: 60
workload: {{prompt_tokens: 64, output_tokens: 16, streams: 2, duration_s: 3, warmup_s: 1}}
search_space: {{max_num_seqs: {{options: [16]}}}}
"""
    )
    return config


def records(study: Path) -> dict[int, TrialRecord]:
    config = load_config(study / "config.yaml", saved_overrides(study))
    return {r.number: r for r in StudyStore(config, default_storage_url(study)).records()}


def phase_events(events: Path) -> list[dict[str, Any]]:
    if not events.exists():
        return []
    whole = events.read_text().split("\n")[:-1]  # the last piece may be a line being written
    return [e for e in map(json.loads, whole) if e["kind"] == "trial_phase"]


def wait_for_phase(events: Path, phase: str, after: set[int], proc: subprocess.Popen[Any]) -> int:
    """The number of the first trial not in ``after`` to enter ``phase``, as soon as it does."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for e in phase_events(events):
            if e["phase"] == phase and e["number"] not in after:
                return int(e["number"])
        assert proc.poll() is None, f"the tuner ended (code {proc.returncode}) before {phase}"
        time.sleep(0.02)
    pytest.fail(f"no trial reached {phase}")


def leftovers(marker: str, family: list[psutil.Process]) -> list[str]:
    """Processes started by the tuner (seen before the signal, or naming this test's files)
    that are still alive."""
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


def start(cmd: list[str], out: IO[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, cwd=ROOT)


@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_a_signal_in_every_phase_loses_nothing_and_leaves_nothing(
    tmp_path: Path, tiny_model: Path, sig: signal.Signals
) -> None:
    config, study = write_config(tmp_path, tiny_model), tmp_path / "study"
    common = ["--headless", "--guidellm", str(FAKE_GUIDELLM)]
    tune = [sys.executable, "-m", "tui_tuner", "tune", str(config), "--study-dir", str(study)]
    resume = [sys.executable, "-m", "tui_tuner", "resume", str(study)]
    hit_in: dict[int, str] = {}
    for cycle, phase in enumerate(PHASES):
        events = tmp_path / f"events-{cycle}.jsonl"
        before = records(study) if cycle else {}
        log = (tmp_path / f"tuner-{cycle}.log").open("w")
        proc = start([*(resume if cycle else tune), *common, "--events-jsonl", str(events)], log)
        # The first run lets the baseline (trial 0) finish, so there is a finished trial to keep;
        # a resumed run hits the first trial it runs (a waiting one, or a new one).
        ended = {n for n, r in before.items() if r.state != "waiting"} if cycle else {0}
        number = wait_for_phase(events, phase, ended, proc)
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(sig)
        code = proc.wait(60)
        log.close()
        hit_in[number] = phase
        deadline = time.monotonic() + 30  # the reaper's SIGTERM grace, then SIGKILL
        while leftovers(str(tmp_path), family) and time.monotonic() < deadline:
            time.sleep(0.2)
        output = (tmp_path / f"tuner-{cycle}.log").read_text()
        assert not leftovers(str(tmp_path), family), (phase, output[-2000:])
        assert code == (-9 if sig == signal.SIGKILL else 130), (phase, code, output[-2000:])
        after = records(study)
        for n, record in before.items():
            if record.state == "complete":
                assert after[n] == record, f"trial {n} changed by {sig.name} in {phase}"
        if sig != signal.SIGKILL:
            assert "resume with: tui-tuner resume" in output, output[-2000:]
            hit = after[number]
            # Stopped before its measurement ended, it runs again on resume; in teardown its
            # measurement is whole and it is kept.
            kept = phase == "teardown" and hit.state == "complete"
            assert kept or hit.note.startswith("interrupted"), (phase, hit)
    final_events = tmp_path / "events-final.jsonl"
    result = subprocess.run([*resume, *common, "--events-jsonl", str(final_events)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    done = records(study)
    complete = [r for r in done.values() if r.state == "complete"]
    assert {bool(r.baseline) for r in complete} == {True, False}, done  # both configurations
    assert all(r.state == "complete" or r.note.startswith("interrupted") for r in done.values())
    assert not leftovers(str(tmp_path), [])
