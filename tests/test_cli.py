"""The `tui-tuner` command as a user types it: validate, dry runs, and the refusals that come
before anything starts. Each runs the real command in a subprocess."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST_PROFILE, ROOT
from tui_tuner.cli import build_parser, main

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
    assert "load: GuideLLM concurrent, 16 concurrent streams" in result.stdout
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


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`tui-tuner ARGS` in this process (faster than a subprocess, for the printing checks)."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_validate_takes_several_files_of_both_kinds_and_exits_with_the_worst(
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = [SAMPLES / "demo-sim.yaml", SAMPLES / "predecessor-format.yaml", FAST_PROFILE]
    code, out, err = _main(capsys, "validate", *map(str, files))
    assert code == 2
    assert "demo-sim.yaml: valid\n" in out
    assert "sim-profile-fast-start.yaml: valid simulator profile (not a study)" in out
    assert "predecessor-format.yaml: study.name: required" in err
    code, out, _ = _main(capsys, "validate", str(SAMPLES / "demo-sim.yaml"), str(FAST_PROFILE))
    assert code == 0 and out.count(": valid") == 2


def test_every_study_sample_validates_and_profiles_live_apart() -> None:
    studies = sorted(SAMPLES.glob("*.yaml"))
    assert studies and not any("profile" in p.name for p in studies)
    assert list((SAMPLES / "sim-profiles").glob("*.yaml"))
    others = [str(p) for p in studies if p.name != "predecessor-format.yaml"]
    result = tui_tuner("validate", *others)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": valid\n") == len(others)


def test_a_broken_simulator_profile_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "profile.yaml"
    bad.write_text("base: llama-8b-h100\ngpu: {warp_drive: 9}\n")
    code, _, err = _main(capsys, "validate", str(bad))
    assert code == 2
    assert "invalid simulator profile" in err and "warp_drive: unknown field" in err


def test_a_file_without_model_or_name_says_which_options_give_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    predecessor = str(SAMPLES / "predecessor-format.yaml")
    for command in ("validate", "tune"):
        code, _, err = _main(capsys, command, predecessor)
        assert code == 2
        assert "give --study-name NAME and --model MODEL on the command line" in err, err
        assert f"tui-tuner {command} {predecessor} --study-name NAME --model MODEL" in err
    code, out, _ = _main(capsys, "validate", predecessor, "--model", "org/m", "--study-name", "s")
    assert code == 0, out
    assert "study s:" in out


def test_brackets_in_the_file_are_printed_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "brackets.yaml"
    config.write_text(
        "study: {name: brackets, n_trials: 2}\n"
        "server: {command: [tui-tuner, sim-serve], model: 'org/[bold]m[/]'}\n"
        "search_space: {kv_cache_dtype: {options: [auto, fp8]}}\n"
    )
    code, out, _ = _main(capsys, "validate", str(config), "--dry-run")
    assert code == 0
    assert "kv_cache_dtype: options [auto, fp8]" in out
    assert "export would read: vllm serve 'org/[bold]m[/]'" in out.replace("\n", "")


def test_validate_counts_the_configurations_vllm_would_reject(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "half.yaml"
    space = (
        "search_space:\n  max_num_seqs: {options: [8, 16, 32, 64, 128, 256]}\n"
        "  max_num_batched_tokens: {options: [1024, 2048, 4096, 8192]}\n"
    )
    config.write_text(
        "study: {name: half, n_trials: 4}\n"
        "server: {command: [tui-tuner, sim-serve], model: m,"
        " flags: {max_model_len: 4096, enable_chunked_prefill: false}}\n" + space
    )
    code, out, _ = _main(capsys, "validate", str(config))
    text = " ".join(out.split())
    assert code == 0
    assert "vLLM would reject 12 of its 24 configurations at start-up" in text, text
    assert "e.g. max_num_seqs=8 max_num_batched_tokens=1024:" in text
    assert "max_num_batched_tokens (1024) is smaller than max_model_len (4096)" in text
    config.write_text(config.read_text().replace("chunked_prefill: false", "chunked_prefill: true"))
    code, out, _ = _main(capsys, "validate", str(config))
    assert code == 0 and "reject" not in out


def test_every_subcommand_and_argument_says_what_it_is() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        if name == "sim-serve":  # its own parser, `vllm serve`'s
            continue
        assert sub.description, name
        assert sub.epilog and f"tui-tuner {name}" in sub.epilog, name
        for action in sub._actions:
            assert action.help, (name, action.dest)
    text = parser.format_help()
    for name in commands.choices:
        line = next(line for line in text.splitlines() if line.strip().startswith(name))
        assert len(line.split()) > 1 or name == "make-tiny-model", line


def test_the_commands_in_sample_comments_exist() -> None:
    names = set(
        next(
            a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
        ).choices
    )
    for sample in SAMPLES.rglob("*.yaml"):
        for command in re.findall(
            r"(?:^#\s\s+(?:\S*/)?|Run: |`)tui-tuner ([a-z-]+)", sample.read_text(), re.M
        ):
            assert command in names, f"{sample.name} says `tui-tuner {command}`"
