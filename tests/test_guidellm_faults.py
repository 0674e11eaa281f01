"""Load-generator faults end to end: the `tui-tuner` command, the simulated server, a fake GuideLLM.

One headless study meets a different GuideLLM fault in its trials (tests/fakes/fake_guidellm.py
takes its mode from a list, one per run): it crashes, writes half a report, writes a report that
is not JSON, counts every request as errored, hangs past its load window ignoring SIGTERM, and
works. Each test below checks one trial of that study; every trial must end as a classified
result with the server stopped and nothing left running, and the study must resume. A fault of
the load generator says nothing about the flags: that configuration runs again at once (the
"ok" run after it); every request errored is the server's answer, so it does not.
A GuideLLM that is missing is refused before any server starts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import FAST_PROFILE, ROOT
from tui_tuner.core.config_load import load_config
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.study_dir import saved_overrides

pytestmark = pytest.mark.timeout(240)

FAKE = ROOT / "tests" / "fakes" / "fake_guidellm.py"
#: The fake's mode for each trial of the study, in order: each load-generator fault is followed by
#: the run of its configuration again.
MODES = ("crash", "ok", "truncated", "ok", "malformed", "ok", "errors", "hang", "ok")
#: The trials that spend the budget: the runs again and "errors".
COUNTED = 5
DURATION_S, GRACE_S = 1.0, 2.0
#: GuideLLM's SIGTERM grace (guidellm.process.run_guidellm's term_grace_s) before the SIGKILL.
TERM_GRACE_S = 5.0


def write_config(directory: Path, n_options: int) -> Path:
    """A quick study on the simulated server; every path in it lies under ``directory``, so
    every process it starts names ``directory`` on its command line."""
    profile = directory / "sim-profile.yaml"
    shutil.copyfile(FAST_PROFILE, profile)
    options = [8 * (i + 1) for i in range(n_options)]
    text = f"""
study: {{name: faults, n_trials: {n_options}, seed: 0, sampler: grid, baseline: false,
        max_consecutive_failures: 9, noise_repeats: 1, remeasure_top: 0}}
server:
  command: ["tui-tuner", "sim-serve"]
  model: sim-model
  extra_args: ["--sim-profile-file", "{profile}", "--sim-time-scale", "4"]
  startup_timeout_s: 60
workload:
  prompt_tokens: 64
  output_tokens: 16
  streams: 4
  duration_s: {DURATION_S}
  warmup_s: 0
  benchmark_grace_s: {GRACE_S}
search_space: {{max_num_seqs: {{options: {options}}}}}
"""
    path = directory / "faults.yaml"
    path.write_text(text)
    return path


def run_tuner(
    args: list[str], env: Mapping[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tui_tuner", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **env}
    )


def leftovers(marker: str, wait_s: float = 3.0) -> list[str]:
    """Command lines of live processes that mention ``marker`` (after a short grace, for a
    process that is already going)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            cmdline = " ".join(proc.info["cmdline"] or ())
            if marker in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(cmdline)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def records(config: Path, study_dir: Path) -> list[TrialRecord]:
    cfg = load_config(config, saved_overrides(study_dir))
    return StudyStore(cfg, default_storage_url(study_dir)).records()


@dataclass
class Study:
    directory: Path
    config: Path
    study_dir: Path
    result: subprocess.CompletedProcess[str]
    records: list[TrialRecord]
    pids: list[int]
    seconds: float

    def trial(self, mode: str) -> TrialRecord:
        """The (first) trial the fake ran in ``mode``."""
        return self.records[MODES.index(mode)]

    def after(self, record: TrialRecord) -> TrialRecord:
        return self.records[record.number + 1]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    directory = tmp_path_factory.mktemp("guidellm-faults")
    config = write_config(directory, COUNTED + 2)
    study_dir = directory / "study"
    runs = directory / "runs.txt"
    env = {"FAKE_GUIDELLM_MODE": ",".join(MODES), "FAKE_GUIDELLM_RUNS": str(runs)}
    started = time.monotonic()
    result = run_tuner(
        ["tune", str(config), "--headless", "--study-dir", str(study_dir), "--guidellm",
         str(FAKE), "--trials", str(COUNTED), "--events-jsonl",
         str(directory / "events.jsonl")],
        env,
    )  # fmt: skip
    seconds = time.monotonic() - started
    pids = [int(line) for line in runs.read_text().split()] if runs.exists() else []
    return Study(directory, config, study_dir, result, records(config, study_dir), pids, seconds)


def _check_ended_clean(study: Study, mode: str) -> TrialRecord:
    """The study ran through, this trial was the fake's run in ``mode``, and nothing of the
    study is still running."""
    assert study.result.returncode == 0, study.result.stdout + study.result.stderr
    assert "Traceback" not in study.result.stderr, study.result.stderr
    assert [r.number for r in study.records] == list(range(len(MODES)))
    assert len(study.pids) == len(MODES)  # one GuideLLM run per trial, in order
    assert not leftovers(str(study.directory))
    record = study.trial(mode)
    events = [json.loads(line) for line in (study.directory / "events.jsonl").open()]
    phases = [e["phase"] for e in events if e["kind"] == "trial_phase" and e.get("number") ==
              record.number]  # fmt: skip
    assert phases[-1] == "teardown", phases  # the server was stopped through its launcher
    return record


def _check_failed(record: TrialRecord, cls: str) -> Mapping[str, object]:
    assert record.state == "failed" and record.failure_class == cls, record.failure
    assert record.failure is not None and record.failure["phase"] == "load"
    return record.failure


def _check_ran_again(study: Study, record: TrialRecord) -> None:
    """A load-generator fault: the same configuration was measured by the next trial."""
    again = study.after(record)
    assert record.rerun and "it runs again" in record.note, record.note
    assert again.params == record.params and again.note == f"runs trial {record.number} again"
    assert again.state == "complete" and again.measurement is not None


def test_a_crashed_guidellm_fails_the_trial_with_its_last_lines_and_the_study_goes_on(
    study: Study,
) -> None:
    failure = _check_failed(_check_ended_clean(study, "crash"), "benchmark_failed")
    assert "GuideLLM exited with code 1" in str(failure["message"])
    assert "RuntimeError: fake GuideLLM crashed" in failure["tail"]  # type: ignore[operator]
    _check_ran_again(study, study.trial("crash"))


def test_a_truncated_report_fails_the_trial_naming_the_report(study: Study) -> None:
    failure = _check_failed(_check_ended_clean(study, "truncated"), "benchmark_failed")
    assert "report.json" in str(failure["message"]), failure["message"]
    _check_ran_again(study, study.trial("truncated"))


def test_a_report_that_is_not_json_fails_the_trial_naming_the_report(study: Study) -> None:
    failure = _check_failed(_check_ended_clean(study, "malformed"), "benchmark_failed")
    assert "report.json" in str(failure["message"]), failure["message"]
    _check_ran_again(study, study.trial("malformed"))


def test_every_request_errored_is_too_many_errors(study: Study) -> None:
    record = _check_ended_clean(study, "errors")
    failure = _check_failed(record, "too_many_errors")
    assert "finished requests failed (100%), above the limit of 5%" in str(failure["message"])
    assert not record.rerun and study.after(record).params != record.params


def test_a_hung_guidellm_is_killed_after_its_grace_and_the_next_trial_runs(study: Study) -> None:
    record = _check_ended_clean(study, "hang")
    failure = _check_failed(record, "benchmark_failed")
    assert f"did not finish within {DURATION_S + GRACE_S:g} s" in str(failure["message"])
    # It ignores SIGTERM: only the SIGKILL after the runner's grace ends it, and promptly.
    held = record.timings["load_generator_s"]
    assert DURATION_S + GRACE_S <= held < DURATION_S + GRACE_S + TERM_GRACE_S + 5, held
    assert (
        not psutil.pid_exists(study.pids[MODES.index("hang")])
        or psutil.Process(study.pids[MODES.index("hang")]).status() == psutil.STATUS_ZOMBIE
    )
    _check_ran_again(study, record)


def test_after_the_faults_the_study_resumes_and_keeps_its_trials(study: Study) -> None:
    _check_ended_clean(study, "ok")
    before = [(r.number, r.state, r.params, r.failure, r.measurement) for r in study.records]
    result = run_tuner(
        ["resume", str(study.study_dir), "--headless", "--guidellm", str(FAKE),
         "--trials", str(COUNTED + 1)],
        {"FAKE_GUIDELLM_MODE": "ok"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    after = records(study.config, study.study_dir)
    assert [(r.number, r.state, r.params, r.failure, r.measurement) for r in after[:-1]] == before
    assert after[-1].state == "complete" and after[-1].measurement is not None
    assert not leftovers(str(study.directory))


# -- GuideLLM missing: one line, before any server starts ---------------------------------------


def _check_refused_up_front(result: subprocess.CompletedProcess[str], directory: Path) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tui-tuner: error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (directory / "study" / "trials").exists()  # no trial, so no server, started
    assert not leftovers(str(directory), wait_s=0)
    return lines[0]


@pytest.mark.parametrize("path", ["missing", "not-executable"])
def test_a_bad_guidellm_path_is_refused_before_any_server_starts(tmp_path: Path, path: str) -> None:
    config = write_config(tmp_path, 2)
    exe = tmp_path / path
    if path == "not-executable":
        exe.write_text(FAKE.read_text())
    result = run_tuner(
        ["tune", str(config), "--headless", "--study-dir", str(tmp_path / "study"),
         "--guidellm", str(exe)],
        {},
        timeout=60,
    )  # fmt: skip
    line = _check_refused_up_front(result, tmp_path)
    assert str(exe) in line
    if path == "not-executable":
        assert "is not executable" in line


def test_guidellm_not_installed_is_refused_before_any_server_starts(tmp_path: Path) -> None:
    bare_path = "/usr/bin:/bin"
    if shutil.which("guidellm", path=bare_path):
        pytest.skip("guidellm is installed system-wide here")
    config = write_config(tmp_path, 2)
    env = {**os.environ, "HOME": str(tmp_path / "home"), "PATH": bare_path}
    env.pop("TUI_TUNER_GUIDELLM", None)
    cmd = [sys.executable, "-m", "tui_tuner", "tune", str(config), "--headless",
           "--study-dir", str(tmp_path / "study")]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    line = _check_refused_up_front(result, tmp_path)
    assert "GuideLLM 0.8.1 not found" in line and "make guidellm" in line
