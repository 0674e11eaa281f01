"""A study that workers elsewhere run, watched and steered through its storage (``tui-tuner
attach``).

`Observer` reads the study about once a second, every call in one storage thread (never on the
event loop), and turns what changed into the events a tuner emits: `StudyStarted` once with the
trials so far, `TrialStarted` for each trial that became RUNNING (with its worker's host),
`LogLine` for the lines its worker shares (`control.SharedLogs`), `TrialFinished` for each that
ended, `StudyStateChanged` for a pause, a resume or a stop left in the control requests, and
`StudyFinished` once the budget is reached and nothing runs, or a stop was asked and nothing
runs. A poll reads the study's attributes, its unfinished trials, then only the trials new or
ended since: a few queries whatever the study's size (under 10 ms; docs/scale-out.md).

It is also the display's `Steering`: pause, resume, stop and prune become requests written into
the storage (`StudyStore.update_control`), which every worker reads about once a second
(`control.py`). Leaving (`leave`) stops the watching only: the workers go on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from optuna.trial import FrozenTrial, TrialState

from tui_tuner.core.events import (
    BenchProgress,
    Event,
    GpuSampled,
    LogLine,
    Notice,
    StudyFinished,
    StudyStarted,
    StudyStateChanged,
    TrialFinished,
    TrialPhaseChanged,
    TrialStarted,
)
from tui_tuner.core.space import SearchSpace
from tui_tuner.core.stop import StopKind, StopReason
from tui_tuner.core.telemetry import GpuState
from tui_tuner.core.trial import TrialRecord, counts_against_budget
from tui_tuner.engine.control import LIVE_ATTR, POLL_S, Control
from tui_tuner.engine.records import to_record
from tui_tuner.engine.storage import StorageThread, StorageUnavailable, shown_url
from tui_tuner.engine.study import STALE_AFTER_S, StudyStore

__all__ = ["DETAILS_WAIT_S", "FINISH_GRACE_S", "IDLE_S", "Observer"]

#: A trial seen RUNNING is announced when its worker's shared details come, or after this long.
DETAILS_WAIT_S = 3.0
#: The study is finished once nothing has run for this long (workers between trials, or queuing
#: the best configurations' repeats at the budget, take under a second).
FINISH_GRACE_S = 5.0
#: Nothing running for this long, not paused, the budget not reached: the workers may be gone.
IDLE_S = 60.0
_OPEN = (TrialState.WAITING, TrialState.RUNNING)
_SOURCES: tuple[Literal["server", "guidellm"], ...] = ("server", "guidellm")
_PHASES = ("launching", "ready", "warmup", "measuring", "teardown")


@dataclass
class _Open:
    """A trial not finished when last read: queued, or running."""

    trial_id: int
    repeat: bool = False  # a repeat queued (the study ends only once they have run)
    running_since: float | None = None  # monotonic, when first seen running
    announced: bool = False
    host: str = ""
    trial_dir: str = ""
    phase: str = "launching"
    progress: list[Any] | None = None
    silent_said: bool = False
    logs: dict[str, int] = field(default_factory=lambda: {"server": 0, "guidellm": 0})


@dataclass(frozen=True)
class _Read:
    """One poll: the study's attributes, its unfinished trials, the trials that ended since,
    and how many trials it has."""

    attrs: Mapping[str, Any]
    open: list[FrozenTrial]
    ended: list[FrozenTrial]
    count: int


class Observer:
    """The attached end of a study: events up from the storage, requests down into it."""

    def __init__(
        self,
        store: StudyStore,
        emit: Callable[[Event], None],
        *,
        study_dir: str = "",
        n_trials: int | None = None,
        poll_s: float = POLL_S,
        details_wait_s: float = DETAILS_WAIT_S,
        finish_grace_s: float = FINISH_GRACE_S,
    ) -> None:
        """``n_trials``: the study's budget, when its configuration is known (a study
        directory); else it is read from what the workers share."""
        self.store, self.emit = store, emit
        self.space: SearchSpace = store.config.space
        self._study_dir, self._budget, self._poll_s = study_dir, n_trials, poll_s
        self._details_wait_s, self._finish_grace_s = details_wait_s, finish_grace_s
        self._io = StorageThread(store.storage_url, store.config.study.storage_timeout_s)
        self._open: dict[int, _Open] = {}
        self._records: dict[int, TrialRecord] = {}
        self._count = 0
        self._paused = False
        self._stop_at: float | None = None  # the stop request seen when attaching is old
        self._stopping = False
        self._quiet_since = time.monotonic()  # nothing has run since then
        self._idle_said = False
        self._unavailable: str | None = None
        self._leave = asyncio.Event()
        self._pending: set[asyncio.Future[Any]] = set()
        self._local_changes = 0  # requests made here: a read begun before one predates it

    # -- steering: requests written into the storage --------------------------------------

    @property
    def records(self) -> list[TrialRecord]:
        """The finished trials as last read."""
        return [self._records[n] for n in sorted(self._records)]

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopping(self) -> bool:
        return self._stopping

    def pause(self, *, now: bool = False) -> None:
        """Ask every worker to pause after its running trial. ``now`` cannot be asked through
        the storage (a worker stops its running trial at once only for its own TUI or a
        signal): the running trials finish, and the notice says so."""
        if not self._paused:
            self._paused = True
            self._request(paused=True)
            self.emit(StudyStateChanged("paused", "paused from this attached TUI: each worker "
                                        "pauses after its running trial"))  # fmt: skip
        if now:
            self.emit(Notice("warning", "an attached TUI cannot stop running trials at once: "
                             "they finish first (x prunes one now)"))  # fmt: skip

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._request(paused=False)
            self.emit(StudyStateChanged("running", "resumed from this attached TUI"))

    def stop(self, kind: StopKind, text: str, *, now: bool = True) -> None:
        """Ask every worker to stop (their running trials are stopped and run again on resume);
        the study stays resumable. ``kind`` and ``now`` are the workers' to decide: a stop
        request is one kind (`StopKind.REQUEST`) and always at once."""
        if not self._stopping:
            self._stopping = True
            self._stop_at = time.time()
            self._request(stop_at=self._stop_at)
            self.emit(StudyStateChanged("stopping", f"{text}: a stop request for every worker"))

    def prune(self, number: int) -> bool:
        """Ask the worker running trial ``number`` to prune it; False if it is not running."""
        run = self._open.get(number)
        if run is None or run.running_since is None:
            return False
        self._request(prune=number)
        return True

    def set_space(self, space: SearchSpace) -> None:
        """Refused: the search space is each worker's configuration, read when it starts."""
        text = ("the search space was not changed: it belongs to the workers' configuration "
                "(edit search_space there and restart them)")  # fmt: skip
        self.emit(Notice("warning", text))

    def leave(self) -> None:
        """Stop watching (the attached TUI quits); the workers go on."""
        self._leave.set()

    async def settle(self, timeout_s: float = 2.0) -> None:
        """Wait, a little, for the requests still being written (a `p` just before `q`)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_s)

    def _request(self, **change: Any) -> None:
        """Write a request without waiting for it; one that is not written is said."""

        def write() -> Control:
            return self.store.update_control(**change)

        self._local_changes += 1
        task = asyncio.ensure_future(self._io(write))
        self._pending.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Future[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and (err := task.exception()) is not None:
            self.emit(Notice("error", f"the request was not written to the storage: {err}"))

    # -- watching --------------------------------------------------------------------------

    async def run(self) -> StopReason:
        """Watch until the study finishes (its reason), or until `leave` (`StopKind.USER`)."""
        try:
            await self._first_look()
            while True:
                try:
                    await asyncio.wait_for(self._leave.wait(), self._poll_s)
                    return StopReason(StopKind.USER, "left the attached TUI; the workers go on")
                except asyncio.TimeoutError:
                    pass
                seen = self._local_changes
                try:
                    read = await self._io(self._read, self._ids(), self._count)
                except StorageUnavailable as err:
                    if self._unavailable is None:
                        self._unavailable = str(err)
                        self.emit(Notice("warning", f"{err} (still trying)"))
                    continue
                if self._unavailable is not None:
                    self._unavailable = None
                    self.emit(Notice("info", "the study storage answers again"))
                self._apply(read, control=seen == self._local_changes)
                stop = self._done()
                if stop is not None:
                    self.emit(StudyStateChanged("finished", stop.text))
                    self.emit(StudyFinished.of(stop))
                    return stop
        finally:
            self._io.close()

    async def _first_look(self) -> None:
        read = await self._io(self._read_all)
        control = Control.from_attr(read.attrs.get("control"))
        self._paused, self._stop_at = control.paused, control.stop_at
        self._records = {t.number: to_record(t) for t in read.ended}
        self._count = read.count
        cfg = self.store.config
        self._learn_budget(read.open)
        self.emit(StudyStarted(
            study_name=cfg.study.name, objective=cfg.objective.kind,
            storage=shown_url(self.store.storage_url), study_dir=self._study_dir,
            n_trials=self._budget, time_budget_s=None, simulated=cfg.server.simulated,
            finished_before=sum(counts_against_budget(r) for r in self._records.values()),
            trials=tuple(self._records[n] for n in sorted(self._records)),
        ))  # fmt: skip
        self.emit(GpuSampled(GpuState(False, "no GPU here: attached", ())))
        if self._paused:
            self.emit(StudyStateChanged("paused", "paused by a request in the study storage"))
        self._apply(_Read(read.attrs, read.open, [], read.count))

    def _ids(self) -> dict[int, int]:
        return {number: run.trial_id for number, run in self._open.items()}

    # In the storage thread:

    def _read_all(self) -> _Read:
        storage, sid = self.store.storage, self._study_id()
        trials = storage.get_all_trials(sid, deepcopy=False)
        attrs = storage.get_study_user_attrs(sid)
        open_ = [t for t in trials if t.state in _OPEN]
        ended = [t for t in trials if t.state not in _OPEN]
        return _Read(attrs, open_, ended, len(trials))

    def _read(self, known: Mapping[int, int], count: int) -> _Read:
        storage, sid = self.store.storage, self._study_id()
        attrs = storage.get_study_user_attrs(sid)
        open_ = storage.get_all_trials(sid, deepcopy=False, states=_OPEN)
        still = {t.number for t in open_}
        ids = [tid for number, tid in known.items() if number not in still]
        # Trials new since, found by their numbers (one query each; Optuna's get_n_trials
        # loads every trial): those ended already (a duplicate's verdict) are read whole.
        while True:
            try:
                tid = storage.get_trial_id_from_study_id_trial_number(sid, count)
            except KeyError:
                break
            if count not in still:
                ids.append(tid)
            count += 1
        return _Read(attrs, open_, [storage.get_trial(tid) for tid in ids], count)

    def _study_id(self) -> int:
        return self.store.storage.get_study_id_from_name(self.store.config.study.name)

    # On the event loop:

    def _apply(self, read: _Read, *, control: bool = True) -> None:
        """What changed since the last read, as events; the control requests unless a request
        made here since the read began makes them stale (they are read again next time)."""
        if control:
            self._follow_control(Control.from_attr(read.attrs.get("control")))
        self._learn_budget(read.open)
        # Ended first: a worker that ended a trial and started its next between two reads ran
        # them one after the other.
        for t in sorted(read.ended, key=lambda t: t.number):
            ended = self._open.pop(t.number, None)
            if ended is not None and ended.announced:
                self._share_logs(t, ended)  # what came since the last read
            record = to_record(t)
            self._records[t.number] = record
            self.emit(TrialFinished(record))
        for t in read.open:
            run = self._open.get(t.number)
            if run is None:
                run = self._open[t.number] = _Open(t._trial_id, bool(t.user_attrs.get("repeat")))
            if t.state == TrialState.RUNNING:
                self._running(t, run)
        self._count = max(self._count, read.count)
        if any(run.running_since is not None for run in self._open.values()):
            self._quiet_since, self._idle_said = time.monotonic(), False

    def _follow_control(self, control: Control) -> None:
        if control.paused != self._paused:
            self._paused = control.paused
            if control.paused:
                self.emit(StudyStateChanged("paused", "paused by a request in the study storage"))
            else:
                self.emit(StudyStateChanged("running", "resumed by a request in the storage"))
        if control.stop_at is not None and control.stop_at != self._stop_at:
            self._stop_at = control.stop_at
            if not self._stopping:
                self._stopping = True
                self.emit(StudyStateChanged("stopping", "stopped by a request in the study "
                                            "storage"))  # fmt: skip

    def _learn_budget(self, trials: list[FrozenTrial]) -> None:
        """The budget, from what a worker shares with its running trial, if not known."""
        for t in trials:
            study = (t.user_attrs.get(LIVE_ATTR) or {}).get("study") or {}
            if self._budget is None and study.get("n_trials") is not None:
                self._budget = int(study["n_trials"])

    def _running(self, t: FrozenTrial, run: _Open) -> None:
        now = time.monotonic()
        if run.running_since is None:
            run.running_since = now
        live = t.user_attrs.get(LIVE_ATTR)
        if not run.announced and (live or now - run.running_since >= self._details_wait_s):
            self._announce(t, run, live or {})
        if run.announced and live:
            self._share_live(t, run, live)
            self._share_logs(t, run)
        beat = t.user_attrs.get("heartbeat")
        silent = None if beat is None else time.time() - float(beat)
        if silent is not None and silent > STALE_AFTER_S and not run.silent_said:
            run.silent_said = True
            self.emit(Notice("warning", f"trial {t.number}'s worker on {run.host or '?'} has "
                             f"written no heartbeat for {silent:.0f} s: it may be dead (another "
                             "worker fails the trial and runs it again)", t.number))  # fmt: skip

    def _announce(self, t: FrozenTrial, run: _Open, live: Mapping[str, Any]) -> None:
        run.announced = True
        worker = t.user_attrs.get("worker") or {}
        run.host = str(live.get("host") or worker.get("host") or "")
        run.trial_dir = str(live.get("dir") or "")
        command = tuple(str(a) for a in live.get("command") or ())
        gpus = tuple(int(g) for g in t.user_attrs.get("gpus") or ())  # handed out by its worker
        self.emit(TrialStarted(t.number, dict(t.params), bool(t.user_attrs.get("baseline")),
                               command, run.trial_dir, gpus=gpus, host=run.host))  # fmt: skip
        if not live:
            where = f"pid {worker.get('pid', '?')} on {run.host or 'an unknown host'}"
            self.emit(Notice("info", f"trial {t.number} runs in {where}, which does not share "
                             "its logs: they are in that worker's study directory, under "
                             f"trials/{t.number}/", t.number))  # fmt: skip

    def _share_live(self, t: FrozenTrial, run: _Open, live: Mapping[str, Any]) -> None:
        """The phase and the load generator's progress its worker last shared, as events."""
        phase = live.get("phase")
        if phase in _PHASES and phase != run.phase:
            run.phase = phase
            since = time.monotonic() - (run.running_since or time.monotonic())
            self.emit(TrialPhaseChanged(t.number, phase, since))
        progress = live.get("progress")
        if isinstance(progress, list) and len(progress) == 6 and progress != run.progress:
            run.progress = progress
            repeat, status, elapsed, ok, errored, tok_s = progress
            self.emit(BenchProgress(t.number, int(repeat), str(status), float(elapsed), int(ok),
                                    int(errored), float(tok_s)))  # fmt: skip

    def _share_logs(self, t: FrozenTrial, run: _Open) -> None:
        """The lines shared since the last read, as the worker's events would have carried
        them; lines the tail no longer holds are one line saying where they are."""
        live = t.user_attrs.get(LIVE_ATTR) or {}
        for source in _SOURCES:
            part = live.get(source) or {}
            total, lines = int(part.get("n", 0)), list(part.get("lines", ()))
            new = total - run.logs[source]
            if new <= 0:
                continue
            run.logs[source] = total
            shown = lines[-new:]
            if new > len(shown):
                where = f"{run.host}:{run.trial_dir}/{source}.log" if run.trial_dir else "its file"
                self.emit(LogLine(t.number, source, f"[{new - len(shown)} earlier lines are in "
                                  f"{where}]"))  # fmt: skip
            for text in shown:
                self.emit(LogLine(t.number, source, str(text)))

    def _done(self) -> StopReason | None:
        """Why the study is over, once nothing has run for ``FINISH_GRACE_S``: a stop request,
        or the budget reached with no repeat left to run. Long quiet otherwise is said once."""
        quiet = time.monotonic() - self._quiet_since
        if any(run.running_since is not None for run in self._open.values()):
            return None
        if quiet < self._finish_grace_s:
            return None
        if self._stopping:
            return StopReason(StopKind.REQUEST, "stopped by a request in the study storage")
        counted = sum(counts_against_budget(r) for r in self._records.values())
        repeats = any(run.repeat for run in self._open.values())
        if self._budget is not None and counted >= self._budget and not repeats:
            return StopReason(StopKind.BUDGET, f"budget reached: {counted} of {self._budget} "
                              "trials")  # fmt: skip
        if quiet >= IDLE_S and not self._paused and not self._idle_said:
            self._idle_said = True
            self.emit(Notice("warning", f"no trial has run for {quiet:.0f} s: its workers may "
                             "have stopped (this TUI keeps watching; q leaves)"))  # fmt: skip
        return None
