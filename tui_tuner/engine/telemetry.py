"""The live figures a display shows beside a study: the GPUs and the running server's own.

About once a second, while a display wants them, `Telemetry` reads the GPUs (in a thread: NVML
calls block) and the running trial's server ``/metrics``, and emits what changed as events.
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
        self._trial: int | None = None
        self._url = ""
        self._scraping = False
        self._last_gpu: GpuState | None = None
        self._shown: tuple[int | None, ServerFigures | None] = (None, None)

    def observe(self, event: Event) -> None:
        """Follow the study's events: which trial's server may be read now."""
        if isinstance(event, TrialStarted):
            self._trial, self._url, self._scraping = event.number, event.base_url, False
        elif isinstance(event, TrialPhaseChanged) and event.number == self._trial:
            self._scraping = bool(self._url) and event.phase not in ("launching", "teardown")
        elif isinstance(event, TrialFinished) and event.record.number == self._trial:
            self._trial, self._url, self._scraping = None, "", False

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
        trial, url = self._trial, self._url
        if not self._scraping:
            self._show(None, None)
            return
        figures: ServerFigures | None
        with contextlib.suppress(ScrapeFailed):
            figures = await self._server.poll(url)
            if (trial, url) == (self._trial, self._url):  # still the same server
                self._show(trial, figures)

    def _show(self, trial: int | None, figures: ServerFigures | None) -> None:
        if (trial, figures) != self._shown:
            self._shown = (trial, figures)
            self._emit(ServerFiguresRead(trial, figures))
