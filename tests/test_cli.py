"""The `tui-tuner` command as a user types it: validate, dry runs, and the refusals that come
before anything starts. Each runs the real command in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SAMPLES = ROOT / "sample_configs"


def tui_tuner(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tui_tuner", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)  # fmt: skip


def test_validate_describes_the_study_and_its_space() -> None:
    result = tui_tuner("validate", str(SAMPLES / "max-throughput.yaml"))
    assert result.returncode == 0, result.stderr
    assert "max-throughput.yaml: valid" in result.stdout
    assert "search space:" in result.stdout and "max_num_seqs" in result.stdout


def test_dry_run_shows_the_commands_and_starts_nothing(tmp_path: Path) -> None:
    result = tui_tuner("validate", str(SAMPLES / "demo-sim.yaml"), "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dry run (nothing is started):" in result.stdout
    assert "server: VLLM_API_KEY='<random per trial>' " in result.stdout
    assert result.stdout.count("--host 127.0.0.1 --port 8000") == 2
    assert "load: GuideLLM concurrent, 32 concurrent streams" in result.stdout
    assert not any(tmp_path.iterdir())  # no study directory, no file


def test_a_bad_configuration_is_one_message_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: {name: x, n_trials: 0}\nserver: {model: /m}\nsearch_space: {}\n")
    for command in ("validate", "tune"):
        result = tui_tuner(command, str(bad), "--headless" if command == "tune" else "--dry-run")
        assert result.returncode == 2
        assert result.stderr.startswith("tui-tuner: error: invalid configuration in ")
        assert "bad.yaml:1: study.n_trials: 0 is not allowed" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout


def test_tune_refuses_a_missing_model_or_command_before_starting_anything(tmp_path: Path) -> None:
    config = tmp_path / "missing.yaml"
    config.write_text(
        "study: {name: missing, n_trials: 2}\n"
        f"server: {{command: [{tmp_path}/no-vllm, serve], model: {tmp_path}/no-model}}\n"
        "search_space: {max_num_seqs: {options: [8, 16]}}\n"
    )
    result = tui_tuner("tune", str(config), "--headless", "--study-dir", str(tmp_path / "s"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"server.command: '{tmp_path}/no-vllm' is not found" in result.stderr
    assert f"server.model: {tmp_path}/no-model does not exist" in result.stderr
    assert not (tmp_path / "s").exists()


def test_resume_of_a_directory_that_is_no_study(tmp_path: Path) -> None:
    result = tui_tuner("resume", str(tmp_path), "--headless")
    assert result.returncode == 2
    assert f"{tmp_path} is not a study directory: config.yaml is missing" in result.stderr
