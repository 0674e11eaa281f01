"""The live figures beside a study (engine/telemetry.py): which server is read when, what is
emitted, and what a failed reading does. Fakes stand in for NVML and a server's /metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from tui_tuner.core.events import (
    Event,
    GpuSampled,
    ServerFiguresRead,
    TrialFinished,
    TrialPhaseChanged,
    TrialStarted,
)
from tui_tuner.core.telemetry import GpuSample, GpuState, ServerFigures
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.ports import ScrapeFailed
from tui_tuner.engine.telemetry import Telemetry

NO_GPU = GpuState(False, "no NVIDIA GPU found (NVML: NVML Shared Library Not Found)", ())


def figures(kv: float, at: float = 0.0) -> ServerFigures:
    return ServerFigures(True, "H100", kv, 3, 0, 100.0, 1000.0, at)


@dataclass
class FakeGpus:
    states: list[GpuState] = field(default_factory=lambda: [NO_GPU])

    def sample(self) -> GpuState:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


@dataclass
class FakeServer:
    answers: list[ServerFigures | Exception | None] = field(default_factory=list)
    polled: list[str] = field(default_factory=list)
    closed: int = 0

    async def poll(self, base_url: str) -> ServerFigures | None:
        self.polled.append(base_url)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close(self) -> None:
        self.closed += 1


def started(number: int, port: int) -> TrialStarted:
    return TrialStarted(number, {}, False, ("vllm",), "d", f"http://127.0.0.1:{port}")


async def test_a_server_is_read_from_ready_until_its_teardown() -> None:
    seen: list[Event] = []
    server = FakeServer([figures(10.0), figures(20.0)])
    watch = Telemetry(FakeGpus(), server, seen.append)
    watch.observe(started(1, 8001))
    await watch.read_once()  # launching: nothing to read yet
    assert server.polled == []
    assert seen == [GpuSampled(NO_GPU)]
    watch.observe(TrialPhaseChanged(1, "ready", 3.0))
    await watch.read_once()
    watch.observe(TrialPhaseChanged(1, "measuring", 4.0))
    await watch.read_once()
    assert server.polled == ["http://127.0.0.1:8001"] * 2
    assert seen[1:] == [ServerFiguresRead(1, figures(10.0)), ServerFiguresRead(1, figures(20.0))]
    watch.observe(TrialPhaseChanged(1, "teardown", 9.0))
    await watch.read_once()  # the figures shown go away, once
    await watch.read_once()
    assert seen[3:] == [ServerFiguresRead(None, None)]
    assert len(server.polled) == 2


async def test_an_unchanged_gpu_sample_is_not_emitted_again() -> None:
    one = GpuState(True, "", (GpuSample(0, "H100", 50.0, 1.0, 80.0, 300.0, 60.0),))
    two = GpuState(True, "", (GpuSample(0, "H100", 90.0, 1.0, 80.0, 300.0, 60.0),))
    seen: list[Event] = []
    watch = Telemetry(FakeGpus([one, one, two]), FakeServer(), seen.append)
    for _ in range(3):
        await watch.read_once()
    assert seen == [GpuSampled(one), GpuSampled(two)]


async def test_a_failed_reading_keeps_what_is_shown() -> None:
    seen: list[Event] = []
    server = FakeServer([figures(10.0), ScrapeFailed("no answer in 1 s"), figures(30.0)])
    watch = Telemetry(FakeGpus(), server, seen.append)
    watch.observe(started(1, 8001))
    watch.observe(TrialPhaseChanged(1, "ready", 3.0))
    for _ in range(3):
        await watch.read_once()
    shown = [e.figures for e in seen if isinstance(e, ServerFiguresRead)]
    assert shown == [figures(10.0), figures(30.0)]


async def test_the_next_trial_is_read_at_its_own_address() -> None:
    seen: list[Event] = []
    server = FakeServer([figures(10.0), figures(50.0)])
    watch = Telemetry(FakeGpus(), server, seen.append)
    watch.observe(started(1, 8001))
    watch.observe(TrialPhaseChanged(1, "ready", 3.0))
    await watch.read_once()
    watch.observe(TrialFinished(TrialRecord(1, "complete")))
    watch.observe(started(2, 8002))
    watch.observe(TrialPhaseChanged(2, "warmup", 3.0))
    await watch.read_once()
    assert server.polled == ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]
    assert [e.number for e in seen if isinstance(e, ServerFiguresRead)] == [1, 2]


async def test_run_reads_until_cancelled_and_closes_the_source() -> None:
    seen: list[Event] = []
    server = FakeServer()
    watch = Telemetry(FakeGpus(), server, seen.append, period_s=0.01)
    task = asyncio.ensure_future(watch.run())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [GpuSampled(NO_GPU)] and server.closed == 1


async def test_every_running_trials_server_is_read_with_several_side_by_side() -> None:
    seen: list[Event] = []
    server = FakeServer([figures(10.0), figures(30.0), figures(10.0), ScrapeFailed("gone")])
    watch = Telemetry(FakeGpus(), server, seen.append)
    for number, port in ((1, 8001), (2, 8002)):
        watch.observe(started(number, port))
        watch.observe(TrialPhaseChanged(number, "measuring", 1.0))
    await watch.read_once()
    assert server.polled == ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]
    assert seen[1:] == [ServerFiguresRead(1, figures(10.0)), ServerFiguresRead(2, figures(30.0))]
    watch.observe(TrialPhaseChanged(2, "teardown", 5.0))  # one lane's trial ends; one runs on
    await watch.read_once()  # trial 1 unchanged: nothing said; trial 2 no longer read
    assert server.polled[2:] == ["http://127.0.0.1:8001"]
    assert len(seen) == 3
    watch.observe(TrialPhaseChanged(1, "teardown", 6.0))
    await watch.read_once()
    assert seen[3:] == [ServerFiguresRead(None, None)]
