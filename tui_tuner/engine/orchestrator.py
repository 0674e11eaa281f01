"""The study loop: ask, run one trial, tell, until the budget, a stop, or too many failures.

Commands (``pause``, ``resume``, ``stop``, ``prune``, ``set_space``) are plain method calls that
only set flags, so a UI can call them from its event loop without blocking. The same requests
also arrive through the study's storage (``control.py``), so a TUI attached elsewhere can steer
this worker. Every storage call runs in one worker thread (``StorageThread``), and disk work in
threads too: the loop never blocks. When to stop is decided by ``stop_rules.py``, what a trial
tells the optimiser by ``verdict.py``; both are pure, and this module only does what they say.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tui_tuner.core.config import StudyConfig
from tui_tuner.core.errors import UserError
from tui_tuner.core.events import (
    Event,
    Notice,
    StudyFinished,
    StudyStarted,
    StudyStateChanged,
    TrialFinished,
    TrialStarted,
)
from tui_tuner.core.space import SearchSpace
from tui_tuner.core.stop import StopKind, StopReason
from tui_tuner.core.trial import TrialPlan, TrialRecord, baseline_of
from tui_tuner.engine.between_trials import BetweenTrials, free_bytes
from tui_tuner.engine.control import POLL_S, Control, ControlChannel
from tui_tuner.engine.load_sweep import LoadSweep
from tui_tuner.engine.records import record_attrs
from tui_tuner.engine.stop_rules import (
    REDIRECT_AFTER_DUPLICATES,
    Streaks,
    baseline_failed,
    disk_full,
    gpu_not_released,
    low_disk,
)
from tui_tuner.engine.storage import StorageThread, shown_url
from tui_tuner.engine.study import StudyStore
from tui_tuner.engine.trial_runner import TrialProgress, TrialRunner
from tui_tuner.engine.verdict import Verdict, duplicate, judge, rejected, running_elsewhere

__all__ = ["Orchestrator", "StudyOutcome"]


@dataclass(frozen=True)
class StudyOutcome:
    """How a run of the study ended, and its trials then."""

    stop: StopReason
    records: list[TrialRecord]

    @property
    def reason(self) -> str:
        return self.stop.text

    @property
    def resumable(self) -> bool:
        return self.stop.resumable


class Orchestrator:
    def __init__(
        self,
        config: StudyConfig,
        store: StudyStore,
        runner: TrialRunner,
        emit: Callable[[Event], None],
        *,
        study_dir: Path,
        io: StorageThread | None = None,
        turn: asyncio.Lock | None = None,
    ) -> None:
        self.config, self.store, self.runner, self.emit = config, store, runner, emit
        self.study_dir = study_dir
        self.space: SearchSpace = config.space
        self.n_trials = config.study.n_trials
        # Lanes of one tuner share one storage thread (`engine/lanes.py`); it is theirs to close.
        self._own_io = io is None
        # Held from the budget's check to the ask, so that lanes sharing it never overshoot.
        self._turn = turn or asyncio.Lock()
        self._io = io or StorageThread(store.storage_url, config.study.storage_timeout_s)
        self._control = ControlChannel(store, self._io, emit)
        self._go = asyncio.Event()
        self._go.set()
        self._stop: StopReason | None = None
        self._interrupt_note: str | None = None
        self._prune_requested = False
        self._running: TrialPlan | None = None
        self._progress: TrialProgress | None = None
        self._wake = asyncio.Event()
        self._started = time.time()
        self._between = BetweenTrials(config, store, self._io, emit, study_dir=study_dir,
                                      started=self._started)  # fmt: skip
        self._sweep = LoadSweep(store, runner, self._io, lambda: self.space, emit)
        runner.keep_after = self._sweep.keep_after

    # -- commands --------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop is not None

    @property
    def paused(self) -> bool:
        return not self._go.is_set()

    def pause(self, *, now: bool = False) -> None:
        """Wait after the running trial; with ``now``, stop it and run it again on resume."""
        if self._go.is_set():
            self._go.clear()
            self._control.publish(paused=True)
            self.emit(StudyStateChanged("paused", "paused by the user"))
        if now:
            self._interrupt("interrupted: paused by the user; it runs again on resume")

    def resume(self) -> None:
        if not self._go.is_set():
            self._go.set()
            self._control.publish(paused=False)
            self.emit(StudyStateChanged("running", "resumed"))

    def stop(self, kind: StopKind, text: str, *, now: bool = True) -> None:
        """Stop the study: at once (the running trial is stopped and queued again) or after it.
        ``kind`` decides whether it stays resumable and the exit code; ``text`` is what the user
        reads (``stop(StopKind.SIGNAL, "stopped by SIGINT")``). The first stop asked for wins."""
        self._stop_with(StopReason(kind, text), now=now)

    def _stop_with(self, reason: StopReason, *, now: bool) -> None:
        if self._stop is None:
            self._stop = reason
            self.emit(StudyStateChanged("stopping", reason.text))
        if now:
            self._interrupt(f"interrupted: {reason.text}; it runs again on resume")
        self._go.set()

    def prune(self, number: int) -> bool:
        """Stop the running trial ``number`` and record it as pruned. False if it is not running."""
        if self._running is None or self._running.number != number:
            return False
        self._prune_requested = True
        self._wake.set()
        return True

    def set_space(self, space: SearchSpace) -> None:
        """Use ``space`` from the next trial on (each trial records the space it was asked in)."""
        self.space = space

    def _obey(self, control: Control) -> None:
        """Requests other processes left in the storage (see ``control.py``)."""
        if control.stop_at is not None and control.stop_at > self._started:
            self.stop(StopKind.REQUEST, "stopped by a request in the study storage")
        if control.paused and self._go.is_set():
            self._go.clear()
            self.emit(StudyStateChanged("paused", "paused by a request in the study storage"))
        elif not control.paused and not self._go.is_set():
            self._go.set()
            self.emit(StudyStateChanged("running", "resumed by a request in the storage"))
        running = self._running
        if running is not None and running.number in control.prune:
            self.prune(running.number)

    def _interrupt(self, note: str) -> None:
        """Cut the running trial short, to run it again later. A trial in teardown has its
        result (a measurement or a failure) already: it is let finish and kept."""
        if self._progress is not None and self._progress.phase == "teardown":
            return
        if self._running is not None and self._interrupt_note is None:
            self._interrupt_note = note
            self._wake.set()

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> StudyOutcome:
        try:
            return await self._run()
        finally:
            if self._own_io:
                self._io.close()

    async def _run(self) -> StudyOutcome:
        await self._open()
        follower = asyncio.ensure_future(self._control.follow(self._obey, lambda: self._running))
        streaks = Streaks()
        stop: StopReason | None = None
        try:
            while stop is None:
                # Another worker of a shared study may have died since: its trial runs again.
                self._say_repaired(await self._io(self.store.repair))
                stop = self._stop or await self._between.boundary(streaks, self.space)
                if (
                    stop is not None
                    and self._stop is None
                    and await self._between.measure_again(stop)
                ):
                    stop = None
                if stop is None and streaks.duplicates >= REDIRECT_AFTER_DUPLICATES:
                    stop = await self._between.redirect(self.space)
                    streaks = Streaks(streaks.failures, 0)
                if stop is not None:
                    break
                if self.paused:  # a server kept for a load sweep does not wait through a pause
                    await self._sweep.release(None)
                    await self._go.wait()
                    continue  # what holds after the pause is decided again
                async with self._turn:  # lanes of one tuner: one at a time checks and asks
                    plan = None
                    if not await self._between.rest_runs_elsewhere():
                        plan = await self._io(self.store.ask, self.space)
                if plan is None:
                    await asyncio.sleep(POLL_S)
                    continue
                record = await self._one_trial(plan)
                if record is None:  # interrupted: it runs again later
                    continue
                streaks = streaks.after(record)
                stop = baseline_failed(record) or self._stop
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            await self._sweep.release(None)
        stop = stop or self._stop
        assert stop is not None
        records = await self._io(self.store.records)
        self.emit(StudyStateChanged("finished", stop.text))
        self.emit(StudyFinished.of(stop))
        return StudyOutcome(stop, records)

    async def _open(self) -> None:
        """Repair what dead workers left, queue the baseline, and say what the study holds."""
        cfg = self.config
        repaired = await self._io(self.store.repair)
        await self._io(self.store.ensure_baseline)
        if not await self._io(self.store.running_count):
            # Requests an earlier run left (a pause, prunes) are not this run's; with other
            # workers running, they are theirs and stay (a worker joining resumes nobody).
            await self._io(lambda: self.store.update_control(reset=True))
        else:
            self._obey(await self._io(self.store.control))  # paused with them, from the start
        records = await self._io(self.store.records)
        if cfg.objective.latency_vs_baseline and not any(r.baseline for r in records):
            raise UserError(
                "objective.latency_vs_baseline needs the baseline trial: set study.baseline "
                "to true (it is measured as trial 0)"
            )
        self.emit(
            StudyStarted(
                study_name=cfg.study.name,
                objective=cfg.objective.kind,
                storage=shown_url(self.store.storage_url),
                study_dir=str(self.study_dir),
                n_trials=self.n_trials,
                time_budget_s=cfg.study.time_budget_s,
                simulated=cfg.server.simulated,
                finished_before=await self._io(self.store.counted),
                repaired=tuple(repaired),
                trials=tuple(r for r in records if r.state not in ("waiting", "running")),
            )
        )
        self._say_repaired(repaired)

    def _say_repaired(self, numbers: list[int]) -> None:
        for number in numbers:
            self.emit(Notice("warning", f"trial {number} was left running by a dead tuner; "
                             "it was marked failed and queued again", number))  # fmt: skip

    async def _one_trial(self, plan: TrialPlan) -> TrialRecord | None:
        same = None if plan.repeat else await self._io(self.store.find_same, plan)
        if same is not None:  # the very same values, or values that cannot differ here
            why = self.store.why_same(plan, same)  # pure: no storage call
            return await self._tell(plan, duplicate(plan, same, time.time(), why=why))
        elsewhere = None if plan.repeat else await self._io(self.store.find_running_same, plan)
        if elsewhere is not None:
            record = await self._tell(plan, running_elsewhere(plan, elsewhere, time.time()))
            await asyncio.sleep(POLL_S)  # give that worker a moment
            return record
        pool = self.runner.pool
        refused = rejected(plan, self.config.server.flags, self.config.objective, time.time(),
                           gpus_on_node=None if pool is None else pool.total)  # fmt: skip
        if refused is not None:
            return await self._tell(plan, refused)
        if not await self._sweep.release(plan):  # the last server's GPU memory is still held
            self._stop_with(gpu_not_released(), now=False)
            await self._io(self.store.interrupt, plan, "interrupted: the GPU was not released")
            return None
        gpus = await self._claim_gpus(plan)
        progress, key, port = await self.runner.prepare(plan)
        if gpus is None or self._stop is not None or self.paused:
            # Stopped or paused while the trial was being asked for (storage calls: seconds on
            # a loaded machine) or waited for its GPUs: nothing is launched; the trial runs
            # again on resume.
            self.runner.give_back()
            why = self._stop.text if self._stop is not None else "paused by the user"
            note = f"interrupted: {why}; it runs again on resume"
            await self._io(self.store.interrupt, plan, note)
            return None
        if gpus:  # for a display attached elsewhere (`engine/observer.py`)
            await self._io(self.store.set_trial_attr, plan, "gpus", list(gpus))
        command = tuple(progress.argv)
        trial_dir = self.runner.trial_dir(plan.number)
        self.emit(TrialStarted(plan.number, plan.params, plan.baseline, command, str(trial_dir),
                               _base_url(self.config.server.host, port), gpus))  # fmt: skip
        self._running, self._prune_requested, self._interrupt_note = plan, False, None
        self._progress = progress
        self._wake.clear()
        work = asyncio.ensure_future(self.runner.run(plan, progress, key, port))
        waker = asyncio.ensure_future(self._wake.wait())
        write_error: StopReason | None = None
        try:
            await asyncio.wait({work, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            progress.stopped_in = None if work.done() else progress.phase
            waker.cancel()
            if not work.done():
                work.cancel()
            try:
                await work
            except asyncio.CancelledError:
                pass
            except OSError as err:  # a log or report could not be written
                write_error = disk_full(err)
                if write_error is None:
                    raise
            finally:
                self.runner.give_back()  # a run cancelled before it began holds them still
            self._running, self._progress = None, None
        full = low_disk(await asyncio.to_thread(free_bytes, self.study_dir), self.study_dir)
        full = full or write_error
        if full is not None:
            # A failure on a full disk (a log or a report that could not be written) says
            # nothing about the flags: the trial runs again once there is room. A whole
            # measurement is kept.
            measured = progress.measurement is not None and progress.failure is None
            if self._interrupt_note is None and (write_error or not measured):
                self._interrupt_note = f"interrupted: {full.text}"
            self._stop_with(full, now=False)
        return await self._finish(plan, progress, command)

    async def _claim_gpus(self, plan: TrialPlan) -> tuple[int, ...] | None:
        """The trial's GPUs (`TrialRunner.claim_gpus`), waited for while other lanes hold them;
        None when the study is stopped or paused meanwhile."""
        pool = self.runner.pool
        need = self.runner.gpus_needed(plan)
        if pool is not None and not pool.free_now(need) and self.runner.kept is None:
            self.emit(Notice("info", f"trial {plan.number} waits for {need} free GPU(s); "
                             f"busy: {', '.join(map(str, pool.busy)) or 'none'}",
                             plan.number))  # fmt: skip
        claim = asyncio.ensure_future(self.runner.claim_gpus(plan))
        while not claim.done():
            await asyncio.wait({claim}, timeout=POLL_S / 4)
            if not claim.done() and (self._stop is not None or self.paused):
                claim.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await claim
                return None
        return claim.result()

    async def _finish(
        self, plan: TrialPlan, progress: TrialProgress, command: tuple[str, ...]
    ) -> TrialRecord | None:
        if not progress.gpu_released:
            self._stop_with(gpu_not_released(), now=False)
        objective = self.config.objective
        measured = progress.measurement is not None and progress.failure is None
        base_p95 = None
        if measured and objective.latency_vs_baseline and not plan.baseline:
            base_p95 = await self._baseline_p95()
        verdict = judge(
            plan,
            progress,
            objective=objective,
            command=command,
            files=await self.runner.files(plan.number),
            finished_at=time.time(),
            interrupted=self._interrupt_note,
            pruned=self._prune_requested,
            baseline_p95_ms=base_p95,
        )
        record = verdict.record
        if verdict.interrupted:
            await self._io(self.store.set_trial_attr, plan, "tuner", record_attrs(record))
            await self._io(self.store.interrupt, plan, record.note)
            self.emit(TrialFinished(record))
            return None
        await self._tell(plan, verdict)
        if record.rerun:
            await self._io(self.store.requeue, plan)
            self.emit(Notice("warning", f"{record.note} (as the next trial)", plan.number))
        if record.state == "pruned":
            await self._io(lambda: self.store.update_control(pruned=plan.number))
        elif record.state == "complete" and record.client_limited:
            self.emit(Notice("warning", "GuideLLM could not keep the load it was asked for; "
                             "this figure may be the client's limit", plan.number))  # fmt: skip
        return record

    async def _tell(self, plan: TrialPlan, verdict: Verdict) -> TrialRecord:
        """Tell Optuna the verdict, store the record, and say so."""
        record, values, state = verdict.record, verdict.values, verdict.state
        assert state is not None
        await self._io(lambda: self.store.tell(plan, record, values=values, state=state))
        self.emit(TrialFinished(record))
        return record

    async def _baseline_p95(self) -> float | None:
        base = baseline_of(await self._io(self.store.records))
        m = None if base is None else base.measurement
        return None if m is None else m.request_latency_p95_ms


def _base_url(host: str, port: int) -> str:
    """Where the trial's server answers, as its launcher builds it."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
