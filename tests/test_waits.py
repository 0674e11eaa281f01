"""Readiness and teardown wait no longer than they must: they poll, and the first look is soon."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.test_gpu import FakeNvml, _proc
from tui_tuner.adapters import gpu as gpu_module
from tui_tuner.adapters.gpu import NvmlGpus, wait_memory_released
from tui_tuner.adapters.processes import spawn_in_session
from tui_tuner.adapters.server_output import CappedLog, ServerOutput
from tui_tuner.adapters.vllm_server import RunningServer, ServerStartError, free_port, wait_healthy


async def test_gpu_memory_released_at_once_costs_milliseconds_not_a_poll() -> None:
    """The driver usually frees a stopped process's memory within milliseconds: the first look
    again comes after 20 ms, not after the half-second ceiling."""
    fake = FakeNvml(compute={0: [_proc(10, 20)]})
    gpus = NvmlGpus(fake)
    original = fake.nvmlDeviceGetComputeRunningProcesses
    calls = 0

    def freeing(h: int) -> list[SimpleNamespace]:
        nonlocal calls
        calls += 1
        if calls == 2:
            fake.compute.clear()
        return original(h)

    fake.nvmlDeviceGetComputeRunningProcesses = freeing  # type: ignore[method-assign]
    released, waited = await wait_memory_released(gpus, [10], timeout_s=5)
    assert released and waited < 0.25


async def test_gpu_polls_back_off_to_the_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    clock = iter(range(1000))

    class Clock:  # this module's clock only: asyncio's own must keep running
        @staticmethod
        def monotonic() -> float:
            return next(clock) * 0.3

    monkeypatch.setattr(gpu_module, "time", Clock)
    gpus = NvmlGpus(FakeNvml(compute={0: [_proc(10, 20)]}))
    released, _ = await wait_memory_released(gpus, [10], timeout_s=3.0)
    assert not released
    assert slept[:6] == [0.02, 0.04, 0.08, 0.16, 0.32, 0.5]
    assert max(slept) == 0.5


async def test_a_dead_server_is_seen_within_a_short_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wait_exit reads the return code every 50 ms: a crash under load is classified at once."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(seconds)

    command = [sys.executable, "-c", "import time; time.sleep(0.3); raise SystemExit(3)"]
    proc = await spawn_in_session(command)
    output = ServerOutput(CappedLog(tmp_path / "s.log"), lambda _: None)
    server = RunningServer(proc, "http://127.0.0.1:1", command, tmp_path / "s.log", output)
    reader = asyncio.create_task(proc.communicate())
    monkeypatch.setattr(asyncio, "sleep", sleep)
    assert await server.wait_exit() == 3
    await reader
    assert slept and set(slept) == {0.05}


async def test_health_is_polled_every_100_ms(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0.01)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    command = [sys.executable, "-c", "import time; time.sleep(30)"]
    proc = await spawn_in_session(command)
    output = ServerOutput(CappedLog(tmp_path / "s.log"), lambda _: None)
    url = f"http://127.0.0.1:{free_port()}"
    server = RunningServer(proc, url, command, tmp_path / "s.log", output)
    try:
        with pytest.raises(ServerStartError):
            await wait_healthy(server, timeout_s=0.3)
    finally:
        proc.kill()
        await proc.wait()
    assert slept and set(slept) == {0.1}
