"""Fake adapters for engine and UI tests: servers and benchmarks decided by --max-num-seqs.

No process is started: ``Fakes`` implements the launcher, benchmarker and GPU-watcher ports.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path

from tui_tuner.core.config import (
    ObjectiveSettings,
    ServerSettings,
    SlaTerm,
    StudyConfig,
    StudySettings,
    WorkloadSettings,
)
from tui_tuner.core.measurement import Measurement
from tui_tuner.core.space import Param, SearchSpace
from tui_tuner.engine.ports import (
    BenchmarkFailed,
    BenchRequest,
    LaunchRequest,
    ProgressCallback,
    ServerHandle,
    ServerStartFailed,
)


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
    #: The API key each server found in its environment, and each client was given.
    server_keys: list[str | None] = field(default_factory=list)
    client_keys: list[str | None] = field(default_factory=list)
    stopped: int = 0
    servers: list[FakeServer] = field(default_factory=list)
    #: Servers that got as far as running (a start-up failure never does).
    started_servers: int = 0
    #: With False, --max-num-seqs 7 measures at once like any other value.
    slow: bool = True
    bench_started: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when a server is being stopped, which then takes ``stop_s`` seconds.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    stop_s: float = 0.0
    #: Faults that are not the configuration's, by --max-num-seqs value: how many of its runs
    #: meet each (then it runs normally): GuideLLM killed, the server killed from outside, the
    #: server frozen for 15 s inside the window.
    bench_crashes: dict[int, int] = field(default_factory=dict)
    killed: dict[int, int] = field(default_factory=dict)
    stalls: dict[int, int] = field(default_factory=dict)
    #: With a value, the benchmark logs only "started" and measures after that many seconds.
    quiet_s: float = 0.0

    def _fault(self, faults: dict[int, int], seqs: int) -> bool:
        if faults.get(seqs, 0) <= 0:
            return False
        faults[seqs] -= 1
        return True

    def free_port(self, host: str) -> int:
        return 40000 + len(self.launched)

    @contextlib.asynccontextmanager
    async def _launch(self, request: LaunchRequest) -> AsyncIterator[ServerHandle]:
        self.launched.append(request.argv)
        self.server_keys.append(request.env.get("VLLM_API_KEY"))
        seqs = seqs_of(request.argv)
        if seqs == 1:
            tail = ["vllm serve: error: argument --max-num-seqs: invalid int value: 'x'"]
            raise ServerStartFailed("exited", "exited", 2, tail)
        if seqs == 3:
            tail = ["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"]
            raise ServerStartFailed("exited", "exited", 1, tail)
        server = FakeServer()
        self.servers.append(server)
        self.started_servers += 1
        try:
            yield server
        finally:
            self.stopping.set()
            await asyncio.sleep(self.stop_s)
            self.stopped += 1

    def launch(
        self, request: LaunchRequest, on_line: Callable[[str], None]
    ) -> contextlib.AbstractAsyncContextManager[ServerHandle]:
        on_line("INFO starting")
        return self._launch(request)

    async def smoke_test(self, server: ServerHandle, model: str, api_key: str | None) -> None:
        assert api_key  # a random key per trial reaches the client
        self.client_keys.append(api_key)
        return None

    async def run(
        self, request: BenchRequest, on_line: Callable[[str], None], on_progress: ProgressCallback
    ) -> Measurement:
        argv = self.launched[-1]
        seqs = seqs_of(argv) or 10
        if self.quiet_s:  # as GuideLLM: "started", then nothing for its 10 s interval
            on_progress("started", 0.0, 0, 0, 0.0)
            await asyncio.sleep(self.quiet_s)
            return measurement(100.0 * seqs)
        on_progress("warmup", 0.0, 0, 0, 0.0)
        on_progress("active", 1.0, 5, 0, 50.0)
        self.bench_started.set()
        if seqs == 5:
            raise BenchmarkFailed("GuideLLM exited with code 1", ["boom"], errored=9)
        if seqs == 7 and self.slow:
            await asyncio.sleep(60)
        if self._fault(self.bench_crashes, seqs):
            raise BenchmarkFailed("GuideLLM exited with code -9", ["Killed"])
        if self._fault(self.killed, seqs):
            server = self.servers[-1]
            server.returncode, server.tail = -9, ["INFO serving"]
            server.died.set()
            await asyncio.sleep(60)
        m = measurement(100.0 * seqs, p95_ms=1000.0 + seqs)
        if self._fault(self.stalls, seqs):
            m = replace(m, output_tok_s=m.output_tok_s / 2, stall_s=15.0)
        return m

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
        study=StudySettings(  # one baseline run, nothing measured again: the trials asked for
            name="t",
            n_trials=n_trials,
            seed=1,
            sampler="grid",
            max_consecutive_failures=failures,
            noise_repeats=1,
            remeasure_top=0,
        ),
        server=ServerSettings(model="m", command=("fake-serve",)),
        workload=WorkloadSettings(duration_s=1, warmup_s=0),
        objective=ObjectiveSettings(kind=kind, sla=sla),  # type: ignore[arg-type]
        space=SearchSpace(
            (Param("max_num_seqs", "max_num_seqs", "options", options=tuple(options)),)
        ),
    )
