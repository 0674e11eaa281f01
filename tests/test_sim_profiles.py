"""Simulator profile files and the tiny-model command: bad input gets one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST_PROFILE
from tui_tuner.cli import main
from tui_tuner.sim.profiles import PROFILES, load_profile_file


def test_sample_profile_file_loads() -> None:
    profile = load_profile_file(FAST_PROFILE)
    base = PROFILES["llama-8b-h100"]
    assert profile.model == base.model and profile.gpu.memory_gib == base.gpu.memory_gib
    assert profile.startup.compile_s == 2.0 and profile.gpu.disk_gb_s == 50.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"gpu:\n  memroy_gib: 3\n", "gpu.memroy_gib: unknown field (allowed: "),
        (b"gpu: 3\n", "gpu: expected a mapping, got int"),
        (b"model:\n  layers: -1\n", "model.layers: must not be negative, got -1"),
        (b"startup:\n  compile_s: fast\n", "startup.compile_s: expected a number, got 'fast'"),
        (b"base: nope\n", "base: unknown simulator profile 'nope'"),
        (b"base: [\n", "not valid YAML"),
        (b"- 1\n- 2\n", "expected a mapping with `base:`"),
        (b"\xff\xfe\x00bad", "cannot read"),
    ],
)
def test_bad_profile_files_name_the_file_and_field(
    tmp_path: Path, content: bytes, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "profile.yaml"
    path.write_bytes(content)
    assert main(["sim-serve", "m", "--sim-profile-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err and "Traceback" not in err


def test_make_tiny_model_refuses_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = subprocess.run(
        [sys.executable, "-m", "tui_tuner", "make-tiny-model", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "is a non-empty directory that is not a tui-tuner tiny model" in result.stderr
    assert "Traceback" not in result.stderr and (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--trials", "0"], "argument --trials: must be positive, got 0"),
        (["tune", "x.yaml", "--trials", "2.5"], "argument --trials: not a whole number: '2.5'"),
    ],
)
def test_cli_rejects_bad_numbers(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags",
    [["--sim-time-scale", "0"], ["--sim-startup-scale", "-2"], ["--sim-noise", "-0.1"],
     ["--sim-gpu-busy-gib", "-1"]],
)  # fmt: skip
def test_sim_options_must_make_sense(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim-serve", "m", *flags]) == 2
    assert "vllm serve: error: --sim-" in capsys.readouterr().err
