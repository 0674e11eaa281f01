"""The study loop against fake adapters: budgets, failures as results, duplicates, control.

No process is started here; the fakes decide per parameter set what a "server" does. The
end-to-end behaviour with real processes is in test_study_sim.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from tui_tuner.core.config import (
    ObjectiveSettings,
    ServerSettings,
    SlaTerm,
    StudyConfig,
    StudySettings,
    WorkloadSettings,
)
from tui_tuner.core.events import Event, StudyFinished, TrialFinished, TrialPhaseChanged
from tui_tuner.core.measurement import Measurement
from tui_tuner.core.space import Param, SearchSpace
from tui_tuner.engine.orchestrator import Orchestrator
from tui_tuner.engine.ports import (
    BenchmarkFailed,
    BenchRequest,
    LaunchRequest,
    ProgressCallback,
    ServerHandle,
    ServerStartFailed,
)
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.engine.trial_runner import TrialRunner


def measurement(tok_s: float, p95_ms: float = 1000.0, ttft_p95_ms: float = 100.0) -> Measurement:
    return Measurement(
        output_tok_s=tok_s,
        total_tok_s=tok_s * 2,
        requests_per_s=tok_s / 100,
        request_latency_p50_ms=p95_ms / 2,
        request_latency_p95_ms=p95_ms,
        request_latency_p99_ms=p95_ms * 1.1,
        ttft_p50_ms=ttft_p95_ms / 2,
        ttft_p95_ms=ttft_p95_ms,
        ttft_p99_ms=ttft_p95_ms * 1.1,
        itl_p50_ms=10.0,
        itl_p95_ms=12.0,
        tpot_p50_ms=10.0,
        successful_requests=100,
        errored_requests=0,
        incomplete_requests=0,
        achieved_concurrency=8.0,
        duration_s=10.0,
    )


@dataclass
class FakeServer:
    base_url: str = "http://127.0.0.1:1"
    returncode: int | None = None
    tail: list[str] = field(default_factory=lambda: ["INFO ready"])
    pids_seen: set[int] = field(default_factory=lambda: {4242})
    died: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_exit(self) -> int:
        await self.died.wait()
        assert self.returncode is not None
        return self.returncode


def seqs_of(argv: list[str]) -> int | None:
    return int(argv[argv.index("--max-num-seqs") + 1]) if "--max-num-seqs" in argv else None


@dataclass
class Fakes:
    """Behaviour by --max-num-seqs value: 1 -> argparse error, 3 -> OOM, 5 -> dies under load,
    7 -> slow benchmark (for prune/stop); otherwise throughput = 100 x seqs."""

    launched: list[list[str]] = field(default_factory=list)
    stopped: int = 0
    bench_started: asyncio.Event = field(default_factory=asyncio.Event)

    def free_port(self, host: str) -> int:
        return 40000 + len(self.launched)

    @contextlib.asynccontextmanager
    async def _launch(self, request: LaunchRequest) -> AsyncIterator[ServerHandle]:
        self.launched.append(request.argv)
        seqs = seqs_of(request.argv)
        if seqs == 1:
            tail = ["vllm serve: error: argument --max-num-seqs: invalid int value: 'x'"]
            raise ServerStartFailed("exited", "exited", 2, tail)
        if seqs == 3:
            tail = ["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"]
            raise ServerStartFailed("exited", "exited", 1, tail)
        server = FakeServer()
        try:
            yield server
        finally:
            self.stopped += 1

    def launch(
        self, request: LaunchRequest, on_line: Callable[[str], None]
    ) -> contextlib.AbstractAsyncContextManager[ServerHandle]:
        on_line("INFO starting")
        return self._launch(request)

    async def smoke_test(self, server: ServerHandle, model: str, api_key: str | None) -> None:
        assert api_key  # a random key per trial reaches the client
        return None

    async def run(
        self, request: BenchRequest, on_line: Callable[[str], None], on_progress: ProgressCallback
    ) -> Measurement:
        argv = self.launched[-1]
        seqs = seqs_of(argv) or 10
        on_progress("warmup", 0.0, 0, 0, 0.0)
        on_progress("active", 1.0, 5, 0, 50.0)
        self.bench_started.set()
        if seqs == 5:
            raise BenchmarkFailed("GuideLLM exited with code 1", ["boom"], errored=9)
        if seqs == 7:
            await asyncio.sleep(60)
        return measurement(100.0 * seqs, p95_ms=1000.0 + seqs)

    async def wait_released(self, pids: Collection[int], timeout_s: float) -> tuple[bool, float]:
        return True, 0.0


def make_config(
    tmp_path: Path,
    options: list[int],
    *,
    n_trials: int = 4,
    kind: str = "throughput",
    sla: tuple[SlaTerm, ...] = (),
    failures: int = 5,
) -> StudyConfig:
    return StudyConfig(
        study=StudySettings(
            name="t", n_trials=n_trials, seed=1, sampler="grid", max_consecutive_failures=failures
        ),
        server=ServerSettings(model="m", command=("fake-serve",)),
        workload=WorkloadSettings(duration_s=1, warmup_s=0),
        objective=ObjectiveSettings(kind=kind, sla=sla),  # type: ignore[arg-type]
        space=SearchSpace(
            (Param("max_num_seqs", "max_num_seqs", "options", options=tuple(options)),)
        ),
    )


def build(tmp_path: Path, config: StudyConfig, fakes: Fakes) -> tuple[Orchestrator, list[Event]]:
    events: list[Event] = []
    store = StudyStore(config, default_storage_url(tmp_path))
    runner = TrialRunner(config, tmp_path, fakes, fakes, fakes, events.append)
    return Orchestrator(config, store, runner, events.append, study_dir=tmp_path), events


def finished(events: list[Event]) -> list[TrialFinished]:
    return [e for e in events if isinstance(e, TrialFinished)]


async def test_baseline_first_then_measured_trials(tmp_path: Path) -> None:
    fakes = Fakes()
    orch, events = build(tmp_path, make_config(tmp_path, [8, 16, 32]), fakes)
    outcome = await orch.run()
    records = outcome.records
    assert [r.baseline for r in records] == [True, False, False, False]
    assert "--max-num-seqs" not in fakes.launched[0]  # the baseline is vLLM's defaults
    assert fakes.stopped == 4  # every server was stopped
    assert {r.params["max_num_seqs"] for r in records[1:]} == {8, 16, 32}
    assert all(r.state == "complete" and r.measurement is not None for r in records)
    assert records[1].timings.keys() >= {"launching", "ready", "warmup", "measuring", "teardown"}
    assert outcome.reason.startswith(("budget reached", "every configuration"))
    assert (tmp_path / "trials" / "0001" / "command.txt").read_text().count("***") == 1
    phases = [e.phase for e in events if isinstance(e, TrialPhaseChanged) and e.number == 1]
    assert phases == ["launching", "ready", "warmup", "measuring", "teardown"]


async def test_failures_are_results_and_classified(tmp_path: Path) -> None:
    fakes = Fakes()
    config = make_config(tmp_path, [1, 3, 5, 16], n_trials=5)
    orch, _events = build(tmp_path, config, fakes)
    outcome = await orch.run()
    by_seqs = {r.params.get("max_num_seqs"): r for r in outcome.records if not r.baseline}
    assert by_seqs[1].failure_class == "invalid_args"
    assert by_seqs[3].failure_class == "oom_startup"
    assert by_seqs[5].failure_class == "too_many_errors"
    assert by_seqs[16].state == "complete"
    for r in (by_seqs[1], by_seqs[3]):
        assert r.state == "failed" and r.command and r.failure and r.failure["tail"]
    # A failed configuration is told as infeasible with the worst value, so samplers avoid it.
    assert by_seqs[3].values == (0.0,) and by_seqs[3].feasible is False
    assert fakes.stopped == 3  # servers that started were stopped (baseline, 5, 16)


async def test_consecutive_failures_stop_the_study(tmp_path: Path) -> None:
    fakes = Fakes()
    config = make_config(tmp_path, [1, 3], n_trials=10, failures=2)
    orch, _ = build(tmp_path, config, fakes)
    outcome = await orch.run()
    assert "2 trials failed in a row" in outcome.reason
    assert outcome.resumable


async def test_a_failed_configuration_is_never_launched_again(tmp_path: Path) -> None:
    fakes = Fakes()
    config = replace(make_config(tmp_path, [3], n_trials=6), study=StudySettings(
        name="t", n_trials=6, seed=1, sampler="random"))  # fmt: skip
    orch, _ = build(tmp_path, config, fakes)
    outcome = await orch.run()
    launched_with_3 = [a for a in fakes.launched if seqs_of(a) == 3]
    assert len(launched_with_3) == 1
    assert "every configuration" in outcome.reason


async def test_sla_makes_trials_infeasible_and_best_feasible(tmp_path: Path) -> None:
    from tui_tuner.core.objectives import best_trials

    fakes = Fakes()
    sla = (SlaTerm("p95_request_latency_ms", "request_latency_p95_ms", 1020.0),)
    config = make_config(tmp_path, [8, 16, 32], sla=sla)
    orch, _ = build(tmp_path, config, fakes)
    outcome = await orch.run()
    by_seqs = {r.params.get("max_num_seqs"): r for r in outcome.records if not r.baseline}
    assert by_seqs[32].feasible is False  # p95 1032 ms > 1020
    best = best_trials("throughput", outcome.records)
    assert [b.params["max_num_seqs"] for b in best] == [16]


async def test_prune_stops_the_running_trial(tmp_path: Path) -> None:
    fakes = Fakes()
    config = replace(make_config(tmp_path, [7], n_trials=2), study=StudySettings(
        name="t", n_trials=2, seed=1, sampler="random", baseline=False))  # fmt: skip
    orch, _events = build(tmp_path, config, fakes)
    task = asyncio.ensure_future(orch.run())
    await asyncio.wait_for(fakes.bench_started.wait(), 10)
    assert orch.prune(0)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.records[0].state == "pruned"
    assert "pruned by the user during measuring" in outcome.records[0].note
    assert fakes.stopped == 1


async def test_stop_interrupts_and_requeues_for_resume(tmp_path: Path) -> None:
    fakes = Fakes()
    config = replace(make_config(tmp_path, [7], n_trials=2), study=StudySettings(
        name="t", n_trials=2, seed=1, sampler="random", baseline=False))  # fmt: skip
    orch, events = build(tmp_path, config, fakes)
    task = asyncio.ensure_future(orch.run())
    await asyncio.wait_for(fakes.bench_started.wait(), 10)
    orch.stop("stopped by SIGINT")
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.resumable and outcome.reason == "stopped by SIGINT"
    assert fakes.stopped == 1
    states = [(r.number, r.state) for r in outcome.records]
    assert states == [(0, "failed"), (1, "waiting")]  # queued again with the same params
    assert outcome.records[1].params == {} or outcome.records[1].state == "waiting"
    assert not any(isinstance(e, StudyFinished) and not e.resumable for e in events)


async def test_pause_waits_after_the_running_trial(tmp_path: Path) -> None:
    fakes = Fakes()
    orch, events = build(tmp_path, make_config(tmp_path, [8, 16, 32]), fakes)
    task = asyncio.ensure_future(orch.run())
    await asyncio.wait_for(fakes.bench_started.wait(), 10)
    orch.pause()
    await asyncio.sleep(0.3)
    assert len(finished(events)) == 1 and not task.done()
    orch.resume()
    outcome = await asyncio.wait_for(task, 10)
    assert len(outcome.records) == 4


@pytest.mark.parametrize("kind", ["latency", "pareto"])
async def test_other_objectives(tmp_path: Path, kind: str) -> None:
    fakes = Fakes()
    orch, _ = build(tmp_path, make_config(tmp_path, [8, 16], kind=kind, n_trials=3), fakes)
    outcome = await orch.run()
    values = [r.values for r in outcome.records]
    assert all(v is not None and len(v) == (2 if kind == "pareto" else 1) for v in values)
