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
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import ROOT
from tests.fakes.studies import leftovers, records, sim_study, start, tuner
from tui_tuner.adapters.guidellm import SCENARIO_NAME

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PHASES = ("launching", "ready", "warmup", "measuring", "teardown")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL)
#: The fast-start profile, but 8 simulated seconds (2 s at start-up scale 4) to shut down.
SLOW_SHUTDOWN = (
    "base: llama-8b-h100\n"
    "startup: {process_s: 1.0, profile_s: 0.5, compile_s: 2.0, capture_s_per_size: 0.01,"
    " shutdown_s: 8.0}\n"
    "gpu: {disk_gb_s: 50.0}\n"
)


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


@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_a_signal_in_every_phase_loses_nothing_and_leaves_nothing(
    tmp_path: Path, tiny_model: Path, sig: signal.Signals
) -> None:
    slow = ["--sim-time-scale", "0.03", "--sim-startup-scale", "4"]  # phases long enough to hit
    config = sim_study(tmp_path, tiny_model, name="signals", study="n_trials: 2", options=[16],
                       duration_s=3, profile=SLOW_SHUTDOWN, sim_args=slow)  # fmt: skip
    study = tmp_path / "study"
    for cycle, phase in enumerate(PHASES):
        events = tmp_path / f"events-{cycle}.jsonl"
        before = records(study) if cycle else {}
        run = ["--events-jsonl", str(events)]
        tune = tuner("tune", config, "--study-dir", str(study), *run)
        proc = start(tuner("resume", study, *run) if cycle else tune)
        # The first run lets the baseline (trial 0) finish, so there is a finished trial to keep;
        # a resumed run hits the first trial it runs (a waiting one, or a new one).
        ended = {n for n, r in before.items() if r.state != "waiting"} if cycle else {0}
        number = wait_for_phase(events, phase, ended, proc)
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
        code = proc.returncode
        deadline = time.monotonic() + 30  # the reaper's SIGTERM grace, then SIGKILL
        while leftovers(str(tmp_path), family) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not leftovers(str(tmp_path), family), (phase, output[-2000:])
        assert code == (-9 if sig == signal.SIGKILL else 130), (phase, code, output[-2000:])
        assert "Traceback" not in output, output[-3000:]
        after = records(study)
        for n, record in before.items():
            if record.state == "complete":
                assert after[n] == record, f"trial {n} changed by {sig.name} in {phase}"
        key_file = study / "trials" / f"{number:04d}" / SCENARIO_NAME
        if sig == signal.SIGKILL and phase == "measuring":
            assert key_file.exists()  # the next resume removes it (checked at the end)
        if sig != signal.SIGKILL:
            assert not key_file.exists()
            assert "resume with: " in output and "-m tui_tuner resume " in output, output[-2000:]
            hit = after[number]
            # Stopped before its measurement ended, it runs again on resume; in teardown its
            # measurement is whole and it is kept.
            kept = phase == "teardown" and hit.state == "complete"
            assert kept or hit.note.startswith("interrupted"), (phase, hit)
    result = subprocess.run(tuner("resume", study), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    done = records(study)
    complete = [r for r in done.values() if r.state == "complete"]
    assert {bool(r.baseline) for r in complete} == {True, False}, done  # both configurations
    assert all(r.state == "complete" or r.note.startswith("interrupted") for r in done.values())
    assert not leftovers(str(tmp_path), [])
    assert not list(study.glob(f"trials/*/{SCENARIO_NAME}"))


#: Runs the tuner with the summary's printer wrapped: the signals arrive while the answer prints.
_SIGNAL_DURING_SUMMARY = """
import os, signal, sys
import tui_tuner.headless as headless
printed = headless.end_of_study
def end_of_study(*args, **kwargs):
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        os.kill(os.getpid(), sig)
    yield from printed(*args, **kwargs)
headless.end_of_study = end_of_study
from tui_tuner.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_signal_while_the_answer_is_printed_does_not_lose_it(
    tmp_path: Path, tiny_model: Path
) -> None:
    """SIGTERM, SIGHUP and SIGINT after the study ended, while the best trial and its command
    are printed: the answer is printed whole, the exit code is the study's, and the signals
    are named."""
    config = sim_study(tmp_path, tiny_model, name="late", study="n_trials: 1, baseline: false",
                       options=(8,), duration_s=1)  # fmt: skip
    cmd = tuner("tune", config, "--study-dir", str(tmp_path / "study"))
    cmd[1:3] = ["-c", _SIGNAL_DURING_SUMMARY]  # `python -m tui_tuner` -> the script above
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert "vllm serve" in result.stdout and "best: trial 0" in result.stdout, result.stdout
    assert "SIGHUP, SIGINT, SIGTERM arrived after the study had ended" in result.stdout


#: Runs the tuner with its display wrapped: SIGTERM arrives with the first thing it shows (the
#: "GPU memory checks off" notice), while the study is being opened and before any trial.
_SIGNAL_WHILE_OPENING = """
import os, signal, sys
import tui_tuner.report.console as console
shown = console.ConsoleSink.__call__
def call(self, event):
    if not getattr(self, "_signalled", False):
        self._signalled = True
        os.kill(os.getpid(), signal.SIGTERM)
    return shown(self, event)
console.ConsoleSink.__call__ = call
from tui_tuner.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_signal_while_the_study_opens_stops_it_before_any_trial(
    tmp_path: Path, tiny_model: Path
) -> None:
    """A signal before the study loop runs (the storage opening takes seconds on a big study)
    stops it as cleanly as one between trials: exit 130, no trial started (it killed the tuner
    with the signal's default action)."""
    config = sim_study(tmp_path, tiny_model, name="opening", study="n_trials: 1, baseline: false",
                       options=(8,), duration_s=1)  # fmt: skip
    study = tmp_path / "study"
    cmd = tuner("tune", config, "--study-dir", str(study))
    cmd[1:3] = ["-c", _SIGNAL_WHILE_OPENING]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 130, output[-3000:]
    assert "stopped by SIGTERM" in output and "Traceback" not in output
    assert not (study / "trials").exists()
    assert not leftovers(str(tmp_path))
