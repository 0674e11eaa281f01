"""What the engine needs from the outside world, as Protocols; `adapters/` implements them.

The engine never starts a process, opens a socket or loads NVML itself. The assembly
(`compose.py`) hands it a launcher, a benchmarker, a GPU watcher and the telemetry samplers;
tests hand it fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tui_tuner.core.config import WorkloadSettings
from tui_tuner.core.load_curve import GoodputSearch
from tui_tuner.core.measurement import Measurement
from tui_tuner.core.telemetry import GpuState, ServerFigures

__all__ = [
    "BenchRequest",
    "BenchmarkFailed",
    "Benchmarker",
    "GpuSampler",
    "GpuWatcher",
    "LaunchRequest",
    "ProgressCallback",
    "ScrapeFailed",
    "ServerFiguresSource",
    "ServerHandle",
    "ServerLauncher",
    "ServerStartFailed",
]


class ServerStartFailed(Exception):
    """The server exited or never became healthy. ``reason``: ``exited`` or ``startup_timeout``."""

    def __init__(self, reason: str, message: str, exit_code: int | None, tail: list[str]) -> None:
        super().__init__(message)
        self.reason, self.exit_code, self.tail = reason, exit_code, tail


class BenchmarkFailed(Exception):
    """The load generator produced no usable measurement.

    ``errored``/``successful`` are the request counts when a report was read (a report with
    only errors means the server failed every request, not that the benchmark broke).
    """

    def __init__(
        self, message: str, tail: list[str], *, successful: int = 0, errored: int = 0
    ) -> None:
        super().__init__(message)
        self.tail, self.successful, self.errored = tail, successful, errored


@dataclass(frozen=True)
class LaunchRequest:
    argv: list[str]
    env: dict[str, str]
    host: str
    port: int
    log_path: Path
    startup_timeout_s: float
    stop_grace_s: float


class ServerHandle(Protocol):
    @property
    def base_url(self) -> str: ...

    @property
    def returncode(self) -> int | None:
        """None while the server runs."""

    @property
    def tail(self) -> list[str]:
        """The last lines it printed."""

    @property
    def pids_seen(self) -> Collection[int]:
        """Every process of the server seen so far (leader and descendants)."""

    async def wait_exit(self) -> int:
        """Return the exit code once the server process has exited."""


class ServerLauncher(Protocol):
    def free_port(self, host: str) -> int: ...

    def launch(
        self, request: LaunchRequest, on_line: Callable[[str], None]
    ) -> AbstractAsyncContextManager[ServerHandle]:
        """Start the server and wait until it is healthy (else raise ServerStartFailed); on exit
        stop it and everything it started, whatever happened inside."""

    async def smoke_test(self, server: ServerHandle, model: str, api_key: str | None) -> None:
        """Send one real completion; raise BenchmarkFailed if the server cannot answer it."""


@dataclass(frozen=True)
class BenchRequest:
    target: str
    model: str
    api_key: str | None
    workload: WorkloadSettings
    #: The load actually applied (the workload's, or a searched value).
    streams: int | None
    rate: float | None
    tokenizer: str | None
    report_path: Path
    log_path: Path
    timeout_s: float
    #: Search the highest load meeting the SLA from ``streams`` up (GuideLLM's goodput
    #: profile: one run, several levels) instead of measuring ``streams`` alone.
    goodput: GoodputSearch | None = None


class ProgressCallback(Protocol):
    """(status, elapsed_s, successful, errored, output_tok_s[, requests_s]) from the load
    generator's progress: ``requests_s`` (cumulative, as its tokens/s) dates its figures, which
    count from its first request, not from ``elapsed_s``'s start (the early stop needs it)."""

    def __call__(
        self,
        status: str,
        elapsed: float,
        ok: int,
        err: int,
        tok_s: float,
        requests_s: float = ...,
        /,
    ) -> None: ...


class Benchmarker(Protocol):
    async def run(
        self,
        request: BenchRequest,
        on_line: Callable[[str], None],
        on_progress: ProgressCallback,
    ) -> Measurement:
        """Apply the load and return the measurement, or raise BenchmarkFailed."""


class GpuWatcher(Protocol):
    async def wait_released(self, pids: Collection[int], timeout_s: float) -> tuple[bool, float]:
        """Wait until no GPU memory is held by ``pids``: (released, seconds waited)."""


class GpuSampler(Protocol):
    """The GPUs' state now (NVML). Called from a worker thread, about once a second."""

    def sample(self) -> GpuState:
        """Every GPU now, or ``available=False`` with the reason; never raises. Blocking."""


class ScrapeFailed(Exception):
    """A server's own figures could not be read (still starting, gone, too slow)."""


class ServerFiguresSource(Protocol):
    """What the running server says about itself (its ``/metrics``), read on the event loop
    about once a second while a trial runs."""

    async def poll(self, base_url: str) -> ServerFigures | None:
        """The figures of the server at ``base_url``; None if it reports none. Raises
        ScrapeFailed when it cannot be read."""

    async def close(self) -> None:
        """Release what polling holds (connections). Polling after close opens them again."""
