"""The README's main job, `tui-tuner demo`, end to end: simulated servers, real GuideLLM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow


def test_demo_measures_both_configurations_and_cleans_up(
    guidellm_exe: Path, tmp_path: Path
) -> None:
    work = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "tui_tuner", "demo", "--duration", "4", "--streams", "8",
         "--work-dir", str(work), "--guidellm", str(guidellm_exe)],
        capture_output=True, text=True, timeout=400, env={"COLUMNS": "120", "PATH": "/usr/bin:/bin",
                                                          "HOME": str(Path.home())},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "SIMULATED vLLM (llama-8b-h100" in out
    assert "baseline" in out and "max-num-seqs 8" in out
    assert "% output tok/s against the baseline" in out
    for trial in ("baseline", "max-num-seqs-8"):
        for name in ("server.log", "guidellm.log", "report.json"):
            assert (work / trial / name).is_file(), f"{trial}/{name} missing"
        assert "SIMULATED" in (work / trial / "server.log").read_text()
    leftovers = [
        p.pid for p in psutil.process_iter(["cmdline"])
        if any(str(work) in part for part in (p.info["cmdline"] or []))
    ]  # fmt: skip
    assert leftovers == []


def test_demo_without_guidellm_says_how_to_install(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tui_tuner", "demo", "--guidellm", str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 2
    assert "GuideLLM 0.8.1 not found" in result.stderr and "make guidellm" in result.stderr
    assert "Traceback" not in result.stderr
