"""Whole studies through the `tui-tuner` command: real processes, real GuideLLM, real SQLite.

The simulated server stands in for vLLM (its throughput responds to the flags as vLLM's does);
fake serve commands fail in each failure class; the tuner is killed with SIGKILL mid-trial and
resumed. These are the slow tests: each trial costs GuideLLM's own 20-25 s of start-up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import FAST_PROFILE, ROOT
from tui_tuner.core.config_load import load_config
from tui_tuner.core.objectives import best_trials
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.study_dir import saved_overrides

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # each run has its own 600 s limit

SIM = ["tui-tuner", "sim-serve"]
SIM_ARGS = ["--sim-profile-file", str(FAST_PROFILE), "--sim-time-scale", "4"]


def write_config(tmp_path: Path, model: Path, *, name: str, body: str, command: list[str]) -> Path:
    """A study configuration with a small, quick workload and the given objective/space part."""
    text = f"""
study: {{name: {name}, seed: 0, sampler: grid, noise_repeats: 1, remeasure_top: 0}}
server:
  command: {json.dumps(command)}
  model: {model}
  extra_args: {json.dumps(SIM_ARGS)}
  startup_timeout_s: 60
workload: {{prompt_tokens: 128, output_tokens: 64, streams: 16, duration_s: 3, warmup_s: 1}}
{body}
"""
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def tune(config: Path, study_dir: Path, guidellm: Path, *extra: str, timeout: float = 600) -> Any:
    events = study_dir.parent / f"{study_dir.name}-events.jsonl"
    cmd = [sys.executable, "-m", "tui_tuner", "tune", str(config), "--headless",
           "--study-dir", str(study_dir), "--guidellm", str(guidellm),
           "--events-jsonl", str(events), *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def records(config: Path, study_dir: Path) -> list[TrialRecord]:
    cfg = load_config(config, saved_overrides(study_dir))
    return StudyStore(cfg, default_storage_url(study_dir)).records()


@pytest.mark.parametrize(
    ("objective", "space"),
    [
        ("{kind: throughput}", "{max_num_seqs: {options: [2, 64]}}"),
        ("{kind: latency}", "{max_num_seqs: {options: [2]}}"),
        ("{kind: pareto, sla: {p95_ttft_ms: 60000}}", "{max_num_seqs: {options: [2, 64]}}"),
    ],
    ids=["throughput", "latency", "pareto-sla"],
)
def test_headless_study_on_the_simulated_server(
    tmp_path: Path, tiny_model: Path, guidellm_exe: Path, objective: str, space: str
) -> None:
    body = f"objective: {objective}\nsearch_space: {space}\n"
    config = write_config(tmp_path, tiny_model, name="s", body=body, command=SIM)
    study_dir = tmp_path / "study"
    n = space.count(",") + 2  # the baseline and every option
    result = tune(config, study_dir, guidellm_exe, "--trials", str(n))
    assert result.returncode == 0, result.stdout + result.stderr
    done = records(config, study_dir)
    states = [(r.number, r.label, (r.failure or {}).get("message"), r.note) for r in done]
    assert len(done) == n and all(r.state == "complete" and r.measurement for r in done), states
    assert done[0].baseline and done[0].params == {}
    for r in done:
        assert r.timings["launching"] > 0 and r.timings["load_window_s"] > 2
        assert Path(r.files["report.json"]).is_file() and Path(r.files["server.log"]).is_file()
        # Each trial's key reached the server and real GuideLLM without a command line.
        assert r.command[-2] == "--port" and "--api-key" not in r.command
        assert not (Path(r.files["report.json"]).parent / "guidellm-backend.json").exists()
    out = result.stdout
    assert "SIMULATED" in out and "vllm serve " in out and "output tok/s" in out
    if "throughput" in objective:
        by = {r.params.get("max_num_seqs"): r.measurement.output_tok_s for r in done}  # type: ignore[union-attr]
        assert by[64] > 2 * by[2]  # the simulated scheduler: 2 slots for 16 streams is slow
        # 64 slots and the defaults' 1,024 both hold all 16 streams: either may win by noise,
        # and the command printed is the winner's (by the tuner's rule: a measurement GuideLLM
        # could not drive does not win while a clean one exists).
        winner = best_trials("throughput", done)[0]
        expected = "--max-num-seqs 64" if winner.params else f"vllm serve {tiny_model}\n"
        assert expected in out
    # The study directory: its config, a database and the trials' files, owner-only.
    assert (study_dir / "config.yaml").is_file() and (study_dir / "study.db").is_file()
    assert oct(study_dir.stat().st_mode & 0o777) == "0o700"
    note, command = (study_dir / "trials" / "0001" / "command.txt").read_text().splitlines()
    assert note.startswith("# VLLM_API_KEY") and command.startswith(sys.executable)
    events = [json.loads(line) for line in (tmp_path / "study-events.jsonl").open()]
    kinds = {e["kind"] for e in events}
    assert {"study_started", "trial_started", "trial_phase", "log", "trial_finished"} <= kinds


def test_failing_servers_end_as_classified_trials_and_the_study_goes_on(
    tmp_path: Path, tiny_model: Path, guidellm_exe: Path
) -> None:
    fake = [sys.executable, str(ROOT / "tests" / "fakes" / "fake_serve.py")]
    body = (
        "objective: {kind: throughput}\n"
        "search_space: {max_num_seqs: {options: [1, 2, 3, 5, 6, 7, 16]}}\n"
    )
    config = write_config(tmp_path, tiny_model, name="faults", body=body, command=fake)
    text = config.read_text().replace("startup_timeout_s: 60", "startup_timeout_s: 8")
    # Each failure that is not the flags' (3, 5, 6) runs again once: 9 failures in a row.
    text = text.replace("seed: 0,", "seed: 0, baseline: false, max_consecutive_failures: 20,")
    config.write_text(text)
    study_dir = tmp_path / "study"
    result = tune(config, study_dir, guidellm_exe, "--trials", "7")
    assert result.returncode == 0, result.stdout + result.stderr
    done = records(config, study_dir)
    again = sorted(r.params["max_num_seqs"] for r in done if r.rerun)
    assert again == [3, 5, 6], again  # the environment's failures ran again, once each
    by = {r.params["max_num_seqs"]: r for r in done}  # the last run of each
    classes = {seqs: r.failure_class for seqs, r in by.items()}
    assert classes == {
        1: "invalid_args",
        2: "oom_startup",
        3: "startup_timeout",
        5: "port_in_use",
        6: "gpu_busy",
        7: "server_crashed",
        16: None,
    }, {s: (r.failure or {}).get("message") for s, r in by.items()}
    assert by[16].state == "complete" and by[16].measurement is not None
    assert by[7].failure and by[7].failure["phase"] == "load"
    for r in by.values():
        if r.failure:
            assert r.failure["tail"] and r.command[0] == sys.executable
    assert "failed(gpu_busy)" in result.stdout or "gpu_busy" in result.stdout


def _family(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def test_kill_9_mid_trial_leaves_no_process_and_resume_finishes(
    tmp_path: Path, tiny_model: Path, guidellm_exe: Path
) -> None:
    body = "objective: {kind: throughput}\nsearch_space: {max_num_seqs: {options: [8, 64]}}\n"
    config = write_config(tmp_path, tiny_model, name="kill", body=body, command=SIM)
    study_dir = tmp_path / "study"
    events = tmp_path / "events.jsonl"
    cmd = [sys.executable, "-m", "tui_tuner", "tune", str(config), "--headless", "--trials", "3",
           "--study-dir", str(study_dir), "--guidellm", str(guidellm_exe),
           "--events-jsonl", str(events)]  # fmt: skip
    tuner = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    family: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # until trial 1's load generator is running
            seen = events.read_text() if events.exists() else ""
            if '"number": 1, "phase": "warmup"' in seen:
                break
            assert tuner.poll() is None, "the tuner ended early"
            time.sleep(0.2)
        else:
            pytest.fail("trial 1 never reached its load phase")
        time.sleep(2)  # GuideLLM has started its workers by now
        family = _family(tuner.pid)
        assert any("guidellm" in " ".join(p.cmdline()) for p in family)
        assert any("sim-serve" in " ".join(p.cmdline()) for p in family)
        tuner.send_signal(signal.SIGKILL)
        tuner.wait(10)
        deadline = time.monotonic() + 30
        while _alive(family[1:]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(family[1:]), [p.cmdline() for p in _alive(family[1:])]
    finally:
        for p in _alive(family):
            p.kill()
    before = records(config, study_dir)
    assert before[0].state == "complete" and before[1].state == "running"
    resume = [sys.executable, "-m", "tui_tuner", "resume", str(study_dir), "--headless",
              "--guidellm", str(guidellm_exe)]  # fmt: skip
    result = subprocess.run(resume, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    after = records(config, study_dir)
    assert after[0] == before[0]  # the finished trial is untouched
    assert after[1].state == "failed" and after[1].note.startswith("interrupted")
    complete = [r for r in after if r.state == "complete"]
    assert len(complete) == 3
    assert {r.params.get("max_num_seqs") for r in complete} == {None, 8, 64}
    assert "left running by a dead tuner" in result.stdout
    os.sync()
