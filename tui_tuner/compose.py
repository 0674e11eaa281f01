"""The assembly: the real adapters put together with the engine, and the study run under signals.

The one place that names both the engine and the adapters. `tui-tuner tune`, `resume` and
`demo` call `run_study`, headless or under the TUI (which passes its own event sink and signal
handler, and asks for telemetry: the GPUs' and the running server's figures as events). Nothing
here decides anything about tuning; it only wires.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Collection
from pathlib import Path

from tui_tuner.core.config import StudyConfig
from tui_tuner.core.early_stop import Incumbents
from tui_tuner.core.errors import UserError
from tui_tuner.core.events import Event, Notice
from tui_tuner.core.gpus import lane_count
from tui_tuner.core.stop import StopKind
from tui_tuner.engine.control import SharedLogs
from tui_tuner.engine.gpu_pool import GpuPool
from tui_tuner.engine.lanes import Lanes
from tui_tuner.engine.orchestrator import Orchestrator, StudyOutcome
from tui_tuner.engine.steering import Steering
from tui_tuner.engine.telemetry import Telemetry
from tui_tuner.engine.trial_runner import TrialRunner
from tui_tuner.study_dir import StudySetup

__all__ = ["SIGNALS", "LateSignals", "find_load_generator", "load_adapters", "run_study"]

#: The signals that stop a study: Ctrl-C, a kill or a scheduler, a dropped SSH session.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class LateSignals:
    """Signals that arrive once the study has ended, while its answer (the best trial and its
    `vllm serve` line) is printed: remembered, not obeyed, so that the answer the study computed
    is not lost to a kill. A context manager around the study and the printing: handed to
    `run_study`, it holds them from the instant the study's own handlers go (`hold`), and gives
    them their default action back on exit."""

    def __init__(self) -> None:
        self.received: list[signal.Signals] = []
        self._held: set[signal.Signals] = set()

    def _remember(self, signum: int, frame: object) -> None:
        self.received.append(signal.Signals(signum))

    def hold(self, *sigs: signal.Signals) -> None:
        for sig in sigs or SIGNALS:
            signal.signal(sig, self._remember)
            self._held.add(sig)

    def __enter__(self) -> LateSignals:
        return self

    def __exit__(self, *exc: object) -> None:
        for sig in self._held:
            signal.signal(
                sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            )
        self._held.clear()


def find_load_generator(setup: StudySetup, explicit: str | None) -> Path:
    """The GuideLLM executable the study will use; raises a UserError naming where it looked,
    so a missing one is said before any UI opens."""
    from tui_tuner.adapters.guidellm import find_guidellm

    return find_guidellm(explicit or setup.config.workload.guidellm)


def load_adapters() -> None:
    """Import the real adapters that `run_study` uses (aiohttp, psutil, NVML's bindings: about
    a quarter of a second). The TUI calls this from a thread first, so that `run_study` does not
    import them on the event loop the screen is drawn from."""
    import tui_tuner.adapters.gpu
    import tui_tuner.adapters.guidellm
    import tui_tuner.adapters.metrics
    import tui_tuner.adapters.processes
    import tui_tuner.adapters.reaper
    import tui_tuner.adapters.vllm_server  # noqa: F401


async def run_study(
    setup: StudySetup,
    emit: Callable[[Event], None],
    *,
    guidellm: Path,
    on_orchestrator: Callable[[Steering], None] = lambda _: None,
    on_signal: Callable[[signal.Signals], None] | None = None,
    telemetry: bool = False,
    late: LateSignals | None = None,
) -> StudyOutcome:
    """Run the study with the real adapters until it finishes or a signal stops it.

    SIGINT, SIGTERM and SIGHUP (a dropped SSH session) stop it cleanly: the running trial is
    stopped and queued again, its server is stopped, and the study stays resumable. A second
    signal cancels at once; the servers are still stopped on the way out. The TUI passes its own
    ``on_signal`` so that it closes too. With ``telemetry``, the GPUs (through the same NVML
    handle as the teardown's memory check) and the running server's ``/metrics`` are read about
    once a second and emitted as events. With ``late``, the signals are held (`LateSignals`)
    from the instant this function stops obeying them.
    """
    from tui_tuner.adapters.gpu import NvmlGpus, visible_gpus, wait_memory_released
    from tui_tuner.adapters.guidellm import pick_benchmarker, remove_leftover_keys
    from tui_tuner.adapters.metrics import MetricsScraper
    from tui_tuner.adapters.processes import pid_alive
    from tui_tuner.adapters.reaper import Reaper
    from tui_tuner.adapters.vllm_server import VllmLauncher

    # A tuner killed while GuideLLM ran left the file that gave GuideLLM its key. That key
    # died with its server, but the file goes: no key stays written down.
    remove_leftover_keys(setup.study_dir)
    async with contextlib.AsyncExitStack() as stack:
        loop = asyncio.get_running_loop()
        orch: Orchestrator | Lanes | None = None
        task: asyncio.Future[StudyOutcome] | None = None
        early: list[signal.Signals] = []  # before the loop exists: it stops at once

        def stop_on(sig: signal.Signals) -> None:
            if orch is None:
                early.append(sig)
            elif orch.stopping and task is not None:
                task.cancel()
            else:
                orch.stop(StopKind.SIGNAL, f"stopped by {sig.name}")

        # From the start: a signal while the storage opens (seconds on a big study) stops the
        # study as cleanly as one between trials. The TUI's own handler waits for its engine.
        if on_signal is None:
            _hook(stack, loop, stop_on, late)
        gpus = NvmlGpus()
        stack.callback(gpus.close)
        if telemetry:  # first, so the GPU panel fills while the storage opens (a second or more)
            watcher = Telemetry(gpus, MetricsScraper(), emit)
            stack.push_async_callback(_cancelled, asyncio.ensure_future(watcher.run()))
            emit_first = emit

            def emit(event: Event) -> None:
                watcher.observe(event)
                emit_first(event)

        await asyncio.to_thread(lambda: setup.store)  # open the storage off the event loop
        setup.store.pid_alive = pid_alive
        for notice in setup.notices:  # what the study's set-up changed or assumed
            emit(notice)
        if not gpus.available:
            emit(Notice("info", f"GPU memory checks off: {gpus.reason}"))

        class _Gpu:
            async def wait_released(
                self, pids: Collection[int], timeout_s: float
            ) -> tuple[bool, float]:
                return await wait_memory_released(gpus, pids, timeout_s)

        emit = SharedLogs.around(emit, setup.store)  # the log tail for a TUI attached elsewhere
        incumbents = Incumbents()  # the best so far as the events tell it, for the early stop
        emit = _both(incumbents.observe, emit)
        reaper = await Reaper.start()
        stack.push_async_callback(reaper.close)
        pool = gpu_pool(setup.config, visible_gpus(gpus.count), gpus.reason)
        runners: list[TrialRunner] = []
        for _ in range(lane_count(setup.config.study.workers, 0 if pool is None else pool.total)):
            load = setup.config.workload.load_generator
            bench, why_cli = pick_benchmarker(load, guidellm, reaper)  # one a lane: each runs one
            stack.push_async_callback(bench.close)  # before the reaper's: the worker goes too
            if why_cli is not None and not runners:
                emit(Notice("info", why_cli))
            launcher = VllmLauncher(reaper)
            runners.append(
                TrialRunner(setup.config, setup.study_dir, launcher, bench, _Gpu(), emit)
            )
        for runner in runners:
            runner.incumbent = incumbents
        if pool is None and len(runners) == 1:
            orch = Orchestrator(setup.config, setup.store, runners[0], emit,
                                study_dir=setup.study_dir)  # fmt: skip
        else:
            orch = Lanes(setup.config, setup.store, runners, emit, study_dir=setup.study_dir,
                         pool=pool)  # fmt: skip
        on_orchestrator(orch)
        if early:
            orch.stop(StopKind.SIGNAL, f"stopped by {early[0].name}")
        task = asyncio.ensure_future(orch.run())
        if on_signal is not None:
            _hook(stack, loop, on_signal, late)
        return await task


def gpu_pool(config: StudyConfig, found: tuple[int, ...], why_none: str) -> GpuPool | None:
    """The GPUs the tuner hands out to its trials: ``server.gpus`` (``--sim-gpus N`` on the
    simulated server), else with ``study.workers`` other than 1 the GPUs NVML counts (those of
    the tuner's own ``CUDA_VISIBLE_DEVICES`` when it has one: ``found``), or one simulated GPU a
    lane. None
    with one trial at a time and no GPUs named: the server sees what the tuner was given."""
    server, workers = config.server, config.study.workers
    if server.gpus is not None:
        gpus: tuple[int, ...] = server.gpus
    elif workers == 1:
        return None
    elif server.simulated:
        gpus = tuple(range(workers or 1))
    else:
        gpus = found
        if not gpus:
            raise UserError(
                f"study.workers: {workers or 'auto'} runs trials side by side, each on GPUs of "
                f"its own, and no GPU was found ({why_none}); set server.gpus to the GPU "
                "indices to hand out, or study.workers: 1"
            )
    if "CUDA_VISIBLE_DEVICES" in server.env:
        raise UserError(
            "server.env sets CUDA_VISIBLE_DEVICES, and the tuner hands out GPUs itself "
            "(study.workers or server.gpus); use server.gpus: [..] instead"
        )
    return GpuPool(gpus)


def _both(first: Callable[[Event], None], then: Callable[[Event], None]) -> Callable[[Event], None]:
    def both(event: Event) -> None:
        first(event)
        then(event)

    return both


def _hook(
    stack: contextlib.AsyncExitStack,
    loop: asyncio.AbstractEventLoop,
    handler: Callable[[signal.Signals], None],
    late: LateSignals | None,
) -> None:
    for sig in SIGNALS:
        loop.add_signal_handler(sig, handler, sig)
        stack.callback(_unhook, loop, sig, late)


def _unhook(loop: asyncio.AbstractEventLoop, sig: signal.Signals, late: LateSignals | None) -> None:
    loop.remove_signal_handler(sig)  # which leaves the default action: a kill
    if late is not None:
        late.hold(sig)


async def _cancelled(task: asyncio.Future[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
