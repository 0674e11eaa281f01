"""The study loop: ask, run one trial, tell, until the budget, a stop, or too many failures.

Commands (``pause``, ``resume``, ``stop``, ``prune``, ``set_space``) are plain method calls that
only set flags, so a UI can call them from its event loop without blocking. The same requests
also arrive through the study's storage (``Control``), so a TUI attached elsewhere can steer
this worker. Every storage call runs in one worker thread; the loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from optuna.trial import TrialState

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
from tui_tuner.core.failures import CONFIG_CAUSED
from tui_tuner.core.objectives import (
    constraint_values,
    failed_constraints,
    failed_values,
    objective_values,
)
from tui_tuner.core.space import SearchSpace
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.storage import (
    StorageUnavailable,
    is_storage_error,
    shown_url,
    storage_cause,
)
from tui_tuner.engine.study import StudyStore, TrialPlan, record_attrs
from tui_tuner.engine.trial_runner import TrialProgress, TrialRunner

__all__ = ["Orchestrator", "StudyOutcome"]

T = TypeVar("T")
POLL_S = 1.0
HEARTBEAT_S = 10.0
#: Proposals of already-tried configurations in a row before the space counts as exhausted.
MAX_DUPLICATES_IN_A_ROW = 30
#: Below this much free space where the study writes, no trial starts and a running one ends.
LOW_DISK_BYTES = 16 * 2**20
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class StudyOutcome:
    reason: str
    resumable: bool
    records: list[TrialRecord]


class Orchestrator:
    def __init__(
        self,
        config: StudyConfig,
        store: StudyStore,
        runner: TrialRunner,
        emit: Callable[[Event], None],
        *,
        study_dir: Path,
    ) -> None:
        self.config, self.store, self.runner, self.emit = config, store, runner, emit
        self.study_dir = study_dir
        self.space: SearchSpace = config.space
        self.n_trials = config.study.n_trials
        self._io_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="study-io")
        self._go = asyncio.Event()
        self._go.set()
        self._stop_reason: str | None = None
        self._interrupt_note: str | None = None
        self._prune_requested = False
        self._running: TrialPlan | None = None
        self._progress: TrialProgress | None = None
        self._wake = asyncio.Event()
        self._started = time.time()
        self._local_changes = 0
        self._waiting_for_others = False  # said once per wait (see _rest_runs_elsewhere)
        self._pending: set[asyncio.Future[Any]] = set()

    # -- commands --------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop_reason is not None

    @property
    def paused(self) -> bool:
        return not self._go.is_set()

    def pause(self, *, now: bool = False) -> None:
        """Wait after the running trial; with ``now``, stop it and run it again on resume."""
        if self._go.is_set():
            self._go.clear()
            self._publish(paused=True)
            self.emit(StudyStateChanged("paused", "paused by the user"))
        if now:
            self._interrupt("interrupted: paused by the user; it runs again on resume")

    def resume(self) -> None:
        if not self._go.is_set():
            self._go.set()
            self._publish(paused=False)
            self.emit(StudyStateChanged("running", "resumed"))

    def stop(self, reason: str = "stopped by the user", *, now: bool = True) -> None:
        """Stop the study: at once (the running trial is stopped and queued again) or after it."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self.emit(StudyStateChanged("stopping", reason))
        if now:
            self._interrupt(f"interrupted: {reason}; it runs again on resume")
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

    def _publish(self, **change: Any) -> None:
        """Write a local command to the storage too, so other processes see the same state."""
        self._local_changes += 1
        task = asyncio.ensure_future(self._io(lambda: self.store.update_control(**change)))
        self._pending.add(task)
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Future[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and isinstance(task.exception(), StorageUnavailable):
            # This process obeys the command anyway; only other processes miss it.
            self.emit(Notice("warning", f"the command was not written to the storage: "
                                        f"{task.exception()}"))  # fmt: skip

    def _interrupt(self, note: str) -> None:
        """Cut the running trial short, to run it again later. A trial in teardown has its
        result (a measurement or a failure) already: it is let finish and kept."""
        if self._progress is not None and self._progress.phase == "teardown":
            return
        if self._running is not None and self._interrupt_note is None:
            self._interrupt_note = note
            self._wake.set()

    # -- the loop --------------------------------------------------------------------------

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a storage call off the loop. A storage that stays locked or unreachable past
        ``study.storage_timeout_s`` (the driver waits that long) ends the study cleanly."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._io_pool, fn, *args)
        except Exception as err:
            if not is_storage_error(err):
                raise
            cause = storage_cause(err)
            if "full" in cause:
                raise StorageUnavailable(
                    f"the study storage {shown_url(self.store.storage_url)} cannot be written: "
                    f"{cause}. Finished trials are kept in it; free some space, then resume"
                ) from None
            raise StorageUnavailable(
                f"the study storage {shown_url(self.store.storage_url)} did not answer within "
                f"study.storage_timeout_s ({self.config.study.storage_timeout_s:g} s): {cause}. "
                "Finished trials are kept in it; resume once it is available again"
            ) from None

    async def run(self) -> StudyOutcome:
        try:
            return await self._run()
        finally:
            self._io_pool.shutdown(wait=False)

    async def _run(self) -> StudyOutcome:
        cfg = self.config
        repaired = await self._io(self.store.repair)
        await self._io(self.store.ensure_baseline)
        await self._io(lambda: self.store.update_control(reset=True))
        records = await self._io(self.store.records)
        self._check_baseline_needed(records)
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
        poller = asyncio.ensure_future(self._poll_control())
        failures_in_a_row, duplicates_in_a_row = 0, 0
        reason = ""
        try:
            while True:
                # Another worker of a shared study may have died since: its trial runs again.
                self._say_repaired(await self._io(self.store.repair))
                reason = await self._budget_reason(failures_in_a_row, duplicates_in_a_row)
                if reason:
                    break
                if await self._rest_runs_elsewhere():
                    await asyncio.sleep(POLL_S)
                    continue
                await self._go.wait()
                if self._stop_reason is not None:
                    reason = self._stop_reason
                    break
                record = await self._one_trial()
                if record is None:  # interrupted: it runs again later
                    continue
                if record.duplicate_of is not None:
                    duplicates_in_a_row += 1
                    continue
                duplicates_in_a_row = 0
                if record.state == "failed":
                    failures_in_a_row += 1
                    if record.baseline:
                        reason = (
                            f"the baseline (vLLM defaults) failed ({record.failure_class}): "
                            f"{(record.failure or {}).get('message', '')}. Fix the server "
                            "section (model, fixed flags, environment), then resume"
                        )
                        break
                elif record.state == "complete":
                    failures_in_a_row = 0
                if self._stop_reason is not None:
                    reason = self._stop_reason
                    break
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        records = await self._io(self.store.records)
        resumable = not reason.startswith(("budget reached", "every configuration"))
        self.emit(StudyStateChanged("finished", reason))
        self.emit(StudyFinished(reason, resumable))
        return StudyOutcome(reason, resumable, records)

    def _say_repaired(self, numbers: list[int]) -> None:
        for number in numbers:
            self.emit(Notice("warning", f"trial {number} was left running by a dead tuner; "
                             "it was marked failed and queued again", number))  # fmt: skip

    def _check_baseline_needed(self, records: list[TrialRecord]) -> None:
        if self.config.objective.latency_vs_baseline and not any(r.baseline for r in records):
            raise UserError(
                "objective.latency_vs_baseline needs the baseline trial: set study.baseline "
                "to true (it is measured as trial 0)"
            )

    async def _budget_reason(self, failures_in_a_row: int, duplicates_in_a_row: int) -> str:
        cfg = self.config.study
        if self._stop_reason is not None:
            return self._stop_reason
        if failures_in_a_row >= cfg.max_consecutive_failures:
            return (
                f"{failures_in_a_row} trials failed in a row (study.max_consecutive_failures); "
                "see their logs, fix the configuration, then resume"
            )
        low_disk = self._low_disk()
        if low_disk:
            return low_disk
        if duplicates_in_a_row >= MAX_DUPLICATES_IN_A_ROW:
            return "every configuration the sampler proposes has been tried already"
        size = self.space.size()
        if size is not None:
            tried = await self._io(self.store.distinct_configs)
            if tried >= size + (1 if cfg.baseline else 0):
                return f"every configuration of the search space ({size}) has been tried"
        done = await self._io(self.store.counted)
        if self.n_trials is not None and done >= self.n_trials:
            return f"budget reached: {done} of {self.n_trials} trials"
        if cfg.time_budget_s is not None and time.time() - self._started >= cfg.time_budget_s:
            return f"budget reached: time budget of {cfg.time_budget_s:g} s used"
        return ""

    async def _rest_runs_elsewhere(self) -> bool:
        """The budget's last trials are running on other workers of a shared study. Starting
        one more would overshoot ``study.n_trials``; stopping would come short if one of them
        ends up not counted (interrupted, a duplicate). So wait: they finish, or their worker
        dies and they are repaired and run here."""
        if self.n_trials is None:
            return False
        running = await self._io(self.store.running_count)  # none of them this worker's
        # `counted` was just read by _budget_reason; read it again only when others run.
        if not running or await self._io(self.store.counted) + running < self.n_trials:
            self._waiting_for_others = False
            return False
        if not self._waiting_for_others:
            self._waiting_for_others = True
            self.emit(Notice("info", f"the budget's last {running} trial(s) run on other "
                             "workers; waiting for them to finish"))  # fmt: skip
        return True

    async def _poll_control(self) -> None:
        """Obey requests other processes left in the storage; keep the running trial's heartbeat."""
        last_beat = time.monotonic()
        while True:
            await asyncio.sleep(POLL_S)
            seen = self._local_changes
            try:
                control = await self._io(self.store.control)
            except StorageUnavailable:
                continue  # best effort: the study loop meets the same storage and says so
            if seen != self._local_changes:
                continue  # a local command changed it meanwhile; read again next time
            if control.stop_at is not None and control.stop_at > self._started:
                self.stop("stopped by a request in the study storage")
            if control.paused and self._go.is_set():
                self._go.clear()
                self.emit(StudyStateChanged("paused", "paused by a request in the study storage"))
            elif not control.paused and not self._go.is_set():
                self._go.set()
                self.emit(StudyStateChanged("running", "resumed by a request in the storage"))
            running = self._running
            if running is not None and running.number in control.prune:
                self.prune(running.number)
            if running is not None and time.monotonic() - last_beat >= HEARTBEAT_S:
                last_beat = time.monotonic()
                with contextlib.suppress(StorageUnavailable):
                    await self._io(self.store.heartbeat, running)

    async def _one_trial(self) -> TrialRecord | None:
        plan = await self._io(self.store.ask, self.space)
        same = await self._io(self.store.find_same, plan)
        if same is not None:
            return await self._tell_duplicate(plan, same)
        elsewhere = await self._io(self.store.find_running_same, plan)
        if elsewhere is not None:
            return await self._tell_running_elsewhere(plan, elsewhere)
        progress, key, port = self.runner.prepare(plan)
        command = tuple(progress.argv)
        trial_dir = self.runner.trial_dir(plan.number)
        self.emit(TrialStarted(plan.number, plan.params, plan.baseline, command, str(trial_dir)))
        self._running, self._prune_requested, self._interrupt_note = plan, False, None
        self._progress = progress
        self._wake.clear()
        work = asyncio.ensure_future(self.runner.run(plan, progress, key, port))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({work, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            progress.stopped_in = None if work.done() else progress.phase
            waker.cancel()
            if not work.done():
                work.cancel()
            write_error = ""
            try:
                await work
            except asyncio.CancelledError:
                pass
            except OSError as err:  # a log or report could not be written
                if err.errno not in DISK_FULL_ERRNOS:
                    raise
                write_error = f"{DISK_FULL_REASON} is full: {err}; free some space, then resume"
            self._running, self._progress = None, None
        low_disk = self._low_disk() or write_error
        if low_disk:
            # A failure on a full disk (a log or a report that could not be written) says
            # nothing about the flags: the trial runs again once there is room. A whole
            # measurement is kept.
            measured = progress.measurement is not None and progress.failure is None
            if self._interrupt_note is None and (write_error or not measured):
                self._interrupt_note = f"interrupted: {low_disk}"
            self.stop(low_disk, now=False)
        return await self._finish(plan, progress, command)

    def _low_disk(self) -> str:
        """Why no trial can run for lack of disk space where the study writes, or ""."""
        try:
            free = shutil.disk_usage(self.study_dir).free
        except OSError:
            return ""
        if free >= LOW_DISK_BYTES:
            return ""
        return (
            f"{DISK_FULL_REASON} holding {self.study_dir} is full ({free / 2**20:.1f} MiB "
            "free); free some space, then resume"
        )

    async def _finish(
        self, plan: TrialPlan, progress: TrialProgress, command: tuple[str, ...]
    ) -> TrialRecord | None:
        objective = self.config.objective
        record = TrialRecord(
            number=plan.number,
            state="complete",
            params=plan.params,
            baseline=plan.baseline,
            measurement=progress.measurement,
            timings=dict(progress.timings),
            command=command,
            files=self.runner.files(plan.number),
            partial=dict(progress.partial),
            client_limited=progress.client_limited,
            repeats_output_tok_s=tuple(progress.repeats_output_tok_s),
            note="" if plan.rerun_of is None else f"runs interrupted trial {plan.rerun_of} again",
            started_at=progress.started_at,
            finished_at=time.time(),
        )
        if not progress.gpu_released:
            self.stop("GPU memory of the last server was not released; check nvidia-smi")
        if self._interrupt_note is not None:
            record = replace(record, state="failed", note=self._interrupt_note)
            await self._io(self.store.set_trial_attr, plan, "tuner", record_attrs(record))
            await self._io(self.store.interrupt, plan, self._interrupt_note)
            self.emit(TrialFinished(record))
            return None
        if self._prune_requested:
            done = progress.partial
            note = f"pruned by the user during {progress.stopped_in or progress.phase}"
            if done:
                note += (
                    f"; so far {int(done['successful'])} ok, {int(done['errored'])} errors, "
                    f"{done['output_tok_s']:.0f} output tok/s"
                )
            record = replace(record, state="pruned", note=note, measurement=None)
            await self._io(lambda: self.store.tell(plan, record, values=None, state=_PRUNED))
            await self._io(lambda: self.store.update_control(pruned=plan.number))
        elif progress.failure is not None:
            failure = progress.failure
            record = replace(record, state="failed", failure=failure.to_dict())
            if failure.cls in CONFIG_CAUSED:
                record = replace(
                    record,
                    values=tuple(failed_values(objective.kind)),
                    constraints=failed_constraints(objective),
                )
                values: list[float] | None = list(record.values or ())
                state = TrialState.COMPLETE
            else:
                values, state = None, TrialState.FAIL
            await self._io(lambda: self.store.tell(plan, record, values=values, state=state))
        else:
            assert progress.measurement is not None
            m = progress.measurement
            baseline_p95 = None if plan.baseline else await self._baseline_p95()
            record = replace(
                record,
                values=tuple(objective_values(objective.kind, m)),
                constraints=constraint_values(objective, m, baseline_p95),
            )
            vals = list(record.values or ())
            await self._io(lambda: self.store.tell(plan, record, values=vals, state=_COMPLETE))
            if record.client_limited:
                self.emit(Notice("warning", "GuideLLM could not keep the load it was asked for; "
                                 "this figure may be the client's limit", plan.number))  # fmt: skip
        self.emit(TrialFinished(record))
        return record

    async def _baseline_p95(self) -> float | None:
        records = await self._io(self.store.records)
        for r in records:
            if r.baseline and r.measurement is not None and r.state == "complete":
                return r.measurement.request_latency_p95_ms
        return None

    async def _tell_duplicate(self, plan: TrialPlan, same: TrialRecord) -> TrialRecord:
        record = replace(
            same,
            number=plan.number,
            params=plan.params,
            duplicate_of=same.number,
            note=f"same configuration as trial {same.number}; its result is repeated, "
            "nothing was run",
            timings={},
            files={},
            started_at=time.time(),
            finished_at=time.time(),
        )
        if same.values is not None:
            values: list[float] | None = list(same.values)
            state = TrialState.COMPLETE
        else:
            values = None
            state = TrialState.PRUNED if same.state == "pruned" else TrialState.FAIL
        await self._io(lambda: self.store.tell(plan, record, values=values, state=state))
        self.emit(TrialFinished(record))
        return record

    async def _tell_running_elsewhere(self, plan: TrialPlan, number: int) -> TrialRecord:
        """Another worker runs this configuration now: skip it (a failed Optuna trial, which
        samplers ignore, not counted against the budget), and give that worker a moment."""
        now = time.time()
        record = TrialRecord(
            number=plan.number,
            state="failed",
            params=plan.params,
            baseline=plan.baseline,
            duplicate_of=number,
            note=f"skipped: trial {number} runs the same configuration on another worker",
            started_at=now,
            finished_at=now,
        )
        await self._io(lambda: self.store.tell(plan, record, values=None, state=TrialState.FAIL))
        self.emit(TrialFinished(record))
        await asyncio.sleep(POLL_S)
        return record


_PRUNED, _COMPLETE = TrialState.PRUNED, TrialState.COMPLETE
#: How a study stopped for lack of disk space begins its reason.
DISK_FULL_REASON = "the disk"
