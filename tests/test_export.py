"""The exported best configuration: a runnable script and a vLLM ``--config`` file."""

from __future__ import annotations

import shlex
import stat
from datetime import datetime, timezone
from pathlib import Path

import yaml

from tui_tuner.core.config import ServerSettings, StudyConfig, StudySettings
from tui_tuner.core.measurement import Measurement
from tui_tuner.core.trial import TrialRecord
from tui_tuner.core.vllm_flags import FLAGS
from tui_tuner.report.export import COMMAND_FILE, CONFIG_FILE, config_entries, export_best

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
TRIAL_PARAMS: dict[str, object] = {
    "max_num_seqs": 128,
    "enforce_eager": False,
    "enable_prefix_caching": False,
    "enable_chunked_prefill": True,
    "gpu_memory_utilization": 0.85,
    "optimization_level": 1,
    "workload.streams": 64,
}


def _measurement(tok_s: float, p95_ms: float) -> Measurement:
    return Measurement(
        output_tok_s=tok_s,
        total_tok_s=tok_s * 2,
        requests_per_s=1.0,
        request_latency_p50_ms=p95_ms / 2,
        request_latency_p95_ms=p95_ms,
        request_latency_p99_ms=p95_ms * 1.2,
        ttft_p50_ms=10.0,
        ttft_p95_ms=20.0,
        ttft_p99_ms=30.0,
        itl_p50_ms=5.0,
        itl_p95_ms=8.0,
        tpot_p50_ms=5.0,
        successful_requests=100,
        errored_requests=0,
        incomplete_requests=0,
        achieved_concurrency=16.0,
        duration_s=60.0,
    )


def _record(
    number: int,
    tok_s: float,
    params: dict[str, object] | None = None,
    *,
    baseline: bool = False,
    feasible: bool = True,
) -> TrialRecord:
    return TrialRecord(
        number=number,
        state="complete",
        params=params or {},
        baseline=baseline,
        measurement=_measurement(tok_s, 900.0),
        constraints={"server_failed": 0.0, "sla": 0.0 if feasible else 5.0},
    )


def _config(**server: object) -> StudyConfig:
    settings = ServerSettings(model="org/model-1b", **server)  # type: ignore[arg-type]
    return StudyConfig(study=StudySettings(name="demo"), server=settings)


def _vllm_option_names() -> set[str]:
    names = {o.removeprefix("--") for f in FLAGS for o in f.option_strings if o.startswith("--")}
    names |= {"no-" + f.name.removeprefix("--") for f in FLAGS if f.kind == "bool"}
    return names


def test_baseline_best_has_no_tuning_flags(tmp_path: Path) -> None:
    records = [_record(0, 500.0, baseline=True), _record(1, 400.0, {"max_num_seqs": 64})]
    out = export_best(_config(), records, tmp_path, now=NOW)
    assert out is not None
    assert out.trial == 0
    assert out.command == "vllm serve org/model-1b"
    script = out.command_path.read_text()
    assert 'exec vllm serve org/model-1b "$@"\n' in script
    assert "the baseline" in script
    assert yaml.safe_load(out.config_path.read_text()) == {}


def test_trial_params_become_flags_and_config_keys(tmp_path: Path) -> None:
    config = _config(flags={"max_model_len": 2048, "compilation_config": {"mode": 3}})
    records = [_record(0, 500.0, baseline=True), _record(3, 900.0, TRIAL_PARAMS)]
    out = export_best(config, records, tmp_path, now=NOW)
    assert out is not None and out.trial == 3
    argv = shlex.split(out.command)
    assert argv[:3] == ["vllm", "serve", "org/model-1b"]
    for expected in (
        ["--max-model-len", "2048"],
        ["--compilation-config", '{"mode":3}'],
        ["--max-num-seqs", "128"],
        ["--no-enforce-eager"],
        ["--disable-prefix-caching"],
        ["--enable-chunked-prefill"],
        ["--gpu-memory-utilization", "0.85"],
        ["--optimization-level", "1"],
    ):
        i = argv.index(expected[0])
        assert argv[i : i + len(expected)] == expected
    assert "64" not in argv  # workload.streams is the load, not a server flag

    data = yaml.safe_load(out.config_path.read_text())
    assert data == {
        "max-model-len": 2048,
        "compilation-config": {"mode": 3},
        "max-num-seqs": 128,
        "no-enforce-eager": True,
        "disable-prefix-caching": True,
        "enable-chunked-prefill": True,
        "gpu-memory-utilization": 0.85,
        "optimization-level": 1,
    }
    assert set(data) <= _vllm_option_names()


def test_header_names_study_trial_and_measurement(tmp_path: Path) -> None:
    out = export_best(_config(), [_record(2, 1234.56, {"max_num_seqs": 8})], tmp_path, now=NOW)
    assert out is not None
    for path in (out.command_path, out.config_path):
        text = path.read_text()
        assert "study: demo" in text
        assert "trial: 2" in text
        assert "1234.6 output tok/s" in text and "900 ms" in text
        assert "2026-11-22T12:00:00+00:00" in text
        assert "SIMULATED" not in text
    assert out.command_path.read_text().startswith("#!/bin/sh\n")
    assert "vllm serve org/model-1b --config" in out.config_path.read_text()


def test_simulated_study_warns_and_drops_sim_options(tmp_path: Path) -> None:
    config = _config(
        command=("sim-serve",),
        extra_args=("--sim-profile", "fast.yaml", "--sim-seed=3", "--seed", "7"),
        env={"VLLM_CPU_KVCACHE_SPACE": "1", "HF_TOKEN": "hf_secret"},
    )
    out = export_best(config, [_record(1, 300.0, {"max_num_seqs": 16})], tmp_path, now=NOW)
    assert out is not None
    assert "--sim" not in out.command and "fast.yaml" not in out.command
    assert out.command == "vllm serve org/model-1b --max-num-seqs 16 --seed 7"
    script = out.command_path.read_text()
    config_text = out.config_path.read_text()
    assert "SIMULATED" in script and "SIMULATED" in config_text
    assert "export VLLM_CPU_KVCACHE_SPACE=1\n" in script
    assert "hf_secret" not in script and "HF_TOKEN" in script
    assert "--sim" not in config_text
    assert "pass on the command line: --seed 7" in config_text
    assert yaml.safe_load(config_text) == {"max-num-seqs": 16}


def test_file_modes(tmp_path: Path) -> None:
    (tmp_path / COMMAND_FILE).write_text("old")
    (tmp_path / COMMAND_FILE).chmod(0o644)
    out = export_best(_config(), [_record(1, 300.0)], tmp_path, now=NOW)
    assert out is not None
    assert out.command_path == tmp_path / COMMAND_FILE
    assert out.config_path == tmp_path / CONFIG_FILE
    assert stat.S_IMODE(out.command_path.stat().st_mode) == 0o700
    assert stat.S_IMODE(out.config_path.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))


def test_no_feasible_trial_exports_nothing(tmp_path: Path) -> None:
    failed = TrialRecord(number=0, state="failed", failure={"class": "oom_startup"})
    infeasible = _record(1, 800.0, {"max_num_seqs": 512}, feasible=False)
    assert export_best(_config(), [failed, infeasible], tmp_path, now=NOW) is None
    assert export_best(_config(), [], tmp_path, now=NOW) is None
    assert not (tmp_path / COMMAND_FILE).exists()


def test_best_skips_infeasible_faster_trial(tmp_path: Path) -> None:
    records = [_record(1, 800.0, {"max_num_seqs": 512}, feasible=False), _record(2, 600.0)]
    out = export_best(_config(), records, tmp_path, now=NOW)
    assert out is not None and out.trial == 2


def test_config_entries_json_text_list_and_tuner_only_flags() -> None:
    server = ServerSettings(
        model="m",
        flags={"cudagraph_capture_sizes": [1, 2, 4], "port": 9000, "host": "0.0.0.0"},
    )
    params = {"compilation_config": '{"cudagraph_mode": "PIECEWISE"}', "async_scheduling": True}
    assert config_entries(server, params) == {
        "cudagraph-capture-sizes": [1, 2, 4],
        "compilation-config": {"cudagraph_mode": "PIECEWISE"},
        "async-scheduling": True,
    }


def test_config_entries_later_bool_replaces_earlier_spelling() -> None:
    server = ServerSettings(model="m", flags={"enable_prefix_caching": True})
    entries = config_entries(server, {"enable_prefix_caching": False})
    assert entries == {"disable-prefix-caching": True}


def test_a_stepped_float_is_written_as_the_user_wrote_it_in_every_command() -> None:
    """The sampler gives 0.80 + 1 x 0.05 = 0.8500000000000001; the server's command line, the
    end-of-study command and the exports all say 0.85 (the end of `make demo` said 0.85...01)."""
    from tui_tuner.core.commands import serve_command
    from tui_tuner.core.config import ServerSettings

    command = serve_command(ServerSettings(model="m"), {"gpu_memory_utilization": 0.80 + 0.05})
    assert command.endswith("--gpu-memory-utilization 0.85"), command
