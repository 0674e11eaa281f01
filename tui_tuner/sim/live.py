"""Runs the scheduler against the wall clock, for the HTTP server.

Each data-parallel replica is one asyncio task. A step's tokens are released when the wall clock
reaches the simulated end of that step (`sim_seconds / time_scale` after the replica's origin),
using absolute deadlines so that the simulator's own cost does not accumulate as drift. If the
machine cannot keep up, the replica falls behind its schedule; that lag is measured, exported in
/metrics and logged, because then the figures a client measures are no longer the model's.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tui_tuner.sim.hardware import EngineConfig
from tui_tuner.sim.metrics import EngineGauges, EngineMetrics
from tui_tuner.sim.profiles import Profile
from tui_tuner.sim.scheduler import Scheduler, SimRequest


class EngineDeadError(RuntimeError):
    """The simulated engine died (out of memory under load); in-flight requests fail."""


@dataclass(eq=False)
class Handle:
    """A request as the HTTP layer sees it: tokens to send, and whether it has ended."""

    request: SimRequest
    rng: random.Random
    pieces: list[str] = field(default_factory=list)
    sent_tokens: int = 0
    done: bool = False
    finish_reason: str = "length"
    error: BaseException | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class LoadCrash:
    """Out of memory under load: a step above `min_tokens` tokens kills the engine."""

    min_tokens: int
    message: str


class LiveReplica:
    def __init__(
        self,
        index: int,
        cfg: EngineConfig,
        profile: Profile,
        num_blocks: int,
        *,
        time_scale: float,
        noise: float,
        seed: int,
        next_piece: Callable[[random.Random], str],
        on_stats: Callable[[LiveReplica], None],
        on_fatal: Callable[[str], None],
        load_crash: LoadCrash | None = None,
    ) -> None:
        self.index, self.cfg = index, cfg
        self.scheduler = Scheduler(cfg, profile, num_blocks)
        self.metrics = EngineMetrics()
        self._scale, self._noise = time_scale, noise
        self._noise_rng = random.Random(seed * 7_919 + index)
        self._next_piece = next_piece
        self._on_stats, self._on_fatal, self._crash = on_stats, on_fatal, load_crash
        self._loop = asyncio.get_running_loop()
        self._wall0 = self._loop.time()
        self.sim_now = 0.0
        self.lag_s = 0.0
        self.max_lag_s = 0.0
        self._wake = asyncio.Event()
        self._handles: dict[SimRequest, Handle] = {}
        self._next_stats = 10.0
        self.dead = False

    def clock(self) -> float:
        """Simulated seconds since start, by the wall clock."""
        return (self._loop.time() - self._wall0) * self._scale

    @property
    def gauges(self) -> EngineGauges:
        s = self.scheduler
        return EngineGauges(len(s.running), len(s.waiting), s.kv.usage)

    @property
    def load(self) -> int:
        return len(self.scheduler.running) + len(self.scheduler.waiting)

    def submit(self, handle: Handle) -> None:
        if self.dead:
            raise EngineDeadError(
                "EngineCore encountered an issue. See stack trace for the root cause."
            )
        handle.request.arrival = self.clock()
        self._handles[handle.request] = handle
        self.scheduler.add(handle.request)
        self._wake.set()

    def abort(self, handle: Handle) -> None:
        if self._handles.pop(handle.request, None) is not None:
            self.scheduler.abort(handle.request)
            self.metrics.success["abort"] += 1

    async def run(self) -> None:
        sched = self.scheduler
        while not self.dead:
            if sched.idle:
                self._wake.clear()
                await self._wake.wait()
                self.sim_now = max(self.sim_now, self.clock())
                continue
            start = self.sim_now
            out = sched.step(start)
            duration = out.duration
            if self._noise:
                duration *= max(0.5, self._noise_rng.gauss(1.0, self._noise))
            if out.tokens == 0:
                duration = max(duration, 1e-3)  # nothing fits yet: wait like the engine loop
            self.sim_now = start + duration
            delay = self.sim_now / self._scale - (self._loop.time() - self._wall0)
            if delay > 0:
                await asyncio.sleep(delay)
                self.lag_s = 0.0
            else:
                self.lag_s = -delay
                self.max_lag_s = max(self.max_lag_s, self.lag_s)
                await asyncio.sleep(0)
            if self._crash and out.tokens >= self._crash.min_tokens:
                self._die(self._crash.message)
                return
            self._deliver(out.emitted, out.finished, out.tokens)
            if self.sim_now >= self._next_stats:
                self._next_stats = self.sim_now + 10.0
                self._on_stats(self)

    def _deliver(self, emitted: list[SimRequest], finished: list[SimRequest], tokens: int) -> None:
        m, now, interval = self.metrics, self.sim_now, self.cfg.stream_interval
        m.iteration_tokens.observe(tokens)
        done = set(finished)
        for req in emitted:
            handle = self._handles.get(req)
            if handle is None:
                continue
            handle.pieces.append(self._next_piece(handle.rng))
            if req.output_len == 1 and req.first_token_time is not None:
                m.ttft.observe(max(0.0, req.first_token_time - req.arrival))
            if req in done:
                self._finish(handle, now)
            elif len(handle.pieces) >= interval:
                handle.ready.set()

    def _finish(self, handle: Handle, now: float) -> None:
        req, m = handle.request, self.metrics
        del self._handles[req]
        handle.done = True
        handle.ready.set()
        m.success[handle.finish_reason] += 1
        first = req.first_token_time or now
        decode = now - first
        if req.output_len > 1:
            m.tpot.observe(decode / (req.output_len - 1))
            m.itl.observe(decode / (req.output_len - 1), count=req.output_len - 1)
        m.e2e.observe(max(0.0, now - req.arrival))
        m.queue.observe(max(0.0, (req.scheduled_time or now) - req.arrival))
        m.prompt_len.observe(req.prompt_len)
        m.gen_len.observe(req.output_len)

    def _die(self, message: str) -> None:
        self.dead = True
        error = EngineDeadError(
            "EngineCore encountered an issue. See stack trace for the root cause."
        )
        for handle in list(self._handles.values()):
            handle.error = error
            handle.done = True
            handle.ready.set()
        self._handles.clear()
        self._on_fatal(message)
