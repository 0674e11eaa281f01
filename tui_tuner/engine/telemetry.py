"""The live figures a display shows beside a study: the GPUs and the running servers' own.

About once a second, while a display wants them, `Telemetry` reads the GPUs (in a thread: NVML
calls block) and each running trial's server ``/metrics`` (several with ``study.workers``), and
emits what changed as events.
It learns which server runs from the study's own events (`observe`): a trial's server is read
from the moment it is ready until its teardown starts. A reading that fails is skipped, never
fatal: a server still starting or just stopped has nothing to say.
"""

from __future__ import annotations

import asyncio
import contextlib

from tui_tuner.core.events import (
    Event,
    EventSink,
    GpuSampled,
    ServerFiguresRead,
    TrialFinished,
    TrialPhaseChanged,
    TrialStarted,
)
from tui_tuner.core.telemetry import GpuState, ServerFigures
from tui_tuner.engine.ports import GpuSampler, ScrapeFailed, ServerFiguresSource

__all__ = ["Telemetry"]

PERIOD_S = 1.0


class Telemetry:
    def __init__(
        self,
        gpus: GpuSampler,
        server: ServerFiguresSource,
        emit: EventSink,
        *,
        period_s: float = PERIOD_S,
    ) -> None:
        self._gpus, self._server, self._emit, self._period_s = gpus, server, emit, period_s
        #: The running trials' servers (several with ``study.workers``): url, readable now.
        self._servers: dict[int, tuple[str, bool]] = {}
        self._last_gpu: GpuState | None = None
        self._shown: dict[int, ServerFigures | None] = {}  # what was said, by trial
        self._idle = True  # what was said last: no server is read

    def observe(self, event: Event) -> None:
        """Follow the study's events: which trials' servers may be read now."""
        if isinstance(event, TrialStarted):
            self._servers[event.number] = (event.base_url, False)
        elif isinstance(event, TrialPhaseChanged) and event.number in self._servers:
            url = self._servers[event.number][0]
            readable = bool(url) and event.phase not in ("launching", "teardown")
            self._servers[event.number] = (url, readable)
        elif isinstance(event, TrialFinished):
            self._servers.pop(event.record.number, None)

    async def run(self) -> None:
        """Read and emit until cancelled; closes the server source on the way out."""
        try:
            while True:
                await self.read_once()
                await asyncio.sleep(self._period_s)
        finally:
            await self._server.close()

    async def read_once(self) -> None:
        state = await asyncio.to_thread(self._gpus.sample)
        if state != self._last_gpu:  # an unchanged sample costs a display nothing
            self._last_gpu = state
            self._emit(GpuSampled(state))
        await self._read_server()

    async def _read_server(self) -> None:
        readable = {trial: url for trial, (url, ok) in self._servers.items() if ok}
        for trial in [t for t in self._shown if t not in readable]:
            del self._shown[trial]
        if not readable:
            if not self._idle:  # said once: the display clears its figures
                self._idle = True
                self._emit(ServerFiguresRead(None, None))
            return
        self._idle = False
        for trial, url in readable.items():
            with contextlib.suppress(ScrapeFailed):
                figures = await self._server.poll(url)
                if self._servers.get(trial) == (url, True):  # still the same server
                    self._show(trial, figures)

    def _show(self, trial: int, figures: ServerFigures | None) -> None:
        if trial not in self._shown or self._shown[trial] != figures:
            self._shown[trial] = figures
            self._emit(ServerFiguresRead(trial, figures))
