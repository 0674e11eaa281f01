"""The control channel: pause, stop and prune requests that travel through the study's storage.

A command given to this worker (from its own TUI, a signal) is obeyed at once and also written
to the storage (`ControlChannel.publish`), so other processes see the same state. Requests that
other processes leave there (a TUI attached to a shared study) are read about once a second
(`ControlChannel.follow`) and handed to the orchestrator to obey. The same loop keeps the
running trial's heartbeat, by which other workers tell a live worker from a dead one, and
shares the tail of its logs (`SharedLogs`: the last lines the study's events carried, a few KB,
written at most every ``LOGS_S`` while new lines come) for a TUI attached from elsewhere
(``tui-tuner attach``, `engine/observer.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from optuna.exceptions import UpdateFinishedTrialError

from tui_tuner.core.events import (
    BenchProgress,
    Event,
    LogLine,
    Notice,
    StudyStarted,
    TrialFinished,
    TrialPhaseChanged,
    TrialStarted,
)
from tui_tuner.core.trial import TrialPlan
from tui_tuner.engine.storage import StorageThread, StorageUnavailable

__all__ = [
    "HEARTBEAT_S",
    "LIVE_ATTR",
    "LOGS_S",
    "POLL_S",
    "Control",
    "ControlChannel",
    "ControlStore",
    "SharedLogs",
]

#: How often the storage is read for requests.
POLL_S = 1.0
#: How often the running trial's heartbeat is written.
HEARTBEAT_S = 10.0
#: How often, at most, a running trial's log tail is written (only when it has new lines).
LOGS_S = 2.0
#: The trial user attribute the tail goes in (with where the trial runs and the study's budget).
LIVE_ATTR = "live"
#: Lines kept of each log, their characters in all, and one line's: the attribute stays a few KB.
LOG_LINES, LOG_CHARS, LINE_CHARS = 50, 3000, 300
#: Running trials followed at once (a tuner's lanes); an older one is let go.
TRIALS_KEPT = 16


@dataclass
class Control:
    """Requests any process may leave in the study: pause, stop (with its time), prune."""

    paused: bool = False
    stop_at: float | None = None
    prune: set[int] = field(default_factory=set)

    @classmethod
    def from_attr(cls, raw: Mapping[str, Any] | None) -> Control:
        """From the study's ``control`` user attribute (missing: no request)."""
        raw = raw or {}
        stop_at = raw.get("stop_at")
        return cls(
            paused=bool(raw.get("paused")),
            stop_at=None if stop_at is None else float(stop_at),
            prune={int(n) for n in raw.get("prune", [])},
        )

    def to_attr(self) -> dict[str, Any]:
        """As the study's ``control`` user attribute (JSON-safe)."""
        return {"paused": self.paused, "stop_at": self.stop_at, "prune": sorted(self.prune)}


class ControlStore(Protocol):
    """What the channel needs of the study's store (``StudyStore``); blocking calls, made in
    the storage thread."""

    def control(self) -> Control: ...

    def update_control(self, *, paused: bool | None = None) -> Control: ...

    def heartbeat(self, plan: TrialPlan) -> None: ...

    def set_trial_attr(self, plan: TrialPlan, key: str, value: object) -> None: ...


class _Tail:
    """One running trial's shared form: where it runs, and its logs' last lines with how many
    lines each log had in all (an attached display tells new lines, and lines it missed, by
    that count)."""

    def __init__(self, trial_dir: str, command: tuple[str, ...], study: dict[str, Any]) -> None:
        self.head: dict[str, Any] = {"host": socket.gethostname(), "dir": trial_dir,
                                     "command": list(command), "study": study,
                                     "phase": "launching", "progress": None}  # fmt: skip
        self.lines = {"server": deque[str](maxlen=LOG_LINES),
                      "guidellm": deque[str](maxlen=LOG_LINES)}  # fmt: skip
        self.counts = {"server": 0, "guidellm": 0}
        self.changed = True

    def note(self, key: str, value: object) -> None:
        """Its phase, or its load generator's last progress (``BenchProgress``'s figures)."""
        self.head[key] = value
        self.changed = True

    def add(self, source: str, text: str) -> None:
        self.lines[source].append(text[:LINE_CHARS])
        self.counts[source] += 1
        self.changed = True

    def attr(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.head)
        for source, lines in self.lines.items():
            kept: list[str] = []
            size = 0
            for line in reversed(lines):  # the newest first, until the budget is spent
                size += len(line) + 1
                if size > LOG_CHARS:
                    break
                kept.append(line)
            out[source] = {"n": self.counts[source], "lines": kept[::-1]}
        return out


#: The log tail kept for each open store (`SharedLogs.around`), found by its channels.
_SHARED: weakref.WeakKeyDictionary[object, SharedLogs] = weakref.WeakKeyDictionary()


class SharedLogs:
    """The study's event sink, wrapped (``compose.run_study``): it keeps each running trial's
    last log lines and where it runs, for the channels of the same store to write into the
    storage (found by the store: a tuner's lanes wrap the sink again, each its own way). An
    append to a bounded deque per line: cheap at any log rate, bounded in memory."""

    def __init__(self, emit: Callable[[Event], None]) -> None:
        self._emit = emit
        self._trials: dict[int, _Tail] = {}
        self._study: dict[str, Any] = {}

    @classmethod
    def around(cls, emit: Callable[[Event], None], store: object) -> SharedLogs:
        """``emit`` wrapped, its tail shared by the channels of ``store``."""
        shared = _SHARED[store] = cls(emit)
        return shared

    def __call__(self, event: Event) -> None:
        if isinstance(event, LogLine):
            if (tail := self._trials.get(event.number)) is not None:
                tail.add(event.source, event.text)
        elif isinstance(event, TrialStarted):
            self._trials.pop(event.number, None)
            self._trials[event.number] = _Tail(event.trial_dir, event.command, self._study)
            while len(self._trials) > TRIALS_KEPT:
                del self._trials[next(iter(self._trials))]
        elif isinstance(event, TrialPhaseChanged):
            if (tail := self._trials.get(event.number)) is not None:
                tail.note("phase", event.phase)
        elif isinstance(event, BenchProgress):
            if (tail := self._trials.get(event.number)) is not None:
                figures = [event.repeat, event.status, event.elapsed_s, event.successful,
                           event.errored, event.output_tok_s]  # fmt: skip
                tail.note("progress", figures)
        elif isinstance(event, TrialFinished):
            self._trials.pop(event.record.number, None)
        elif isinstance(event, StudyStarted):
            self._study = {"n_trials": event.n_trials, "time_budget_s": event.time_budget_s,
                           "objective": event.objective, "simulated": event.simulated}  # fmt: skip
        self._emit(event)

    def take(self, number: int) -> dict[str, Any] | None:
        """Trial ``number``'s shared form if it changed since it was last taken, else None."""
        tail = self._trials.get(number)
        if tail is None or not tail.changed:
            return None
        tail.changed = False
        return tail.attr()


class ControlChannel:
    """One worker's end of the control requests in its study's storage."""

    def __init__(
        self,
        store: ControlStore,
        io: StorageThread,
        emit: Callable[[Event], None],
        *,
        poll_s: float = POLL_S,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self._store, self._io, self._emit = store, io, emit
        self._poll_s, self._heartbeat_s = poll_s, heartbeat_s
        self._local_changes = 0
        self._pending: set[asyncio.Future[Any]] = set()
        #: The running trial's log tail, when the study's sink keeps one (``SharedLogs``).
        try:
            self._logs = _SHARED.get(store)
        except TypeError:  # a store that cannot be referenced weakly shares no log
            self._logs = None

    def publish(self, *, paused: bool) -> None:
        """Write a local pause or resume to the storage too, without waiting for it. A request
        read meanwhile is not obeyed: it predates this command."""
        self._local_changes += 1
        task = asyncio.ensure_future(self._io(lambda: self._store.update_control(paused=paused)))
        self._pending.add(task)
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Future[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and isinstance(task.exception(), StorageUnavailable):
            # This process obeys the command anyway; only other processes miss it.
            self._emit(Notice("warning", f"the command was not written to the storage: "
                                         f"{task.exception()}"))  # fmt: skip

    async def follow(
        self, obey: Callable[[Control], None], running: Callable[[], TrialPlan | None]
    ) -> None:
        """Until cancelled: hand the requests in the storage to ``obey``, and write the heartbeat
        of the trial ``running`` returns. A storage that does not answer is skipped (the study
        loop meets the same storage and says so)."""
        last_beat = time.monotonic()
        last_logs = 0.0
        while True:
            await asyncio.sleep(self._poll_s)
            seen = self._local_changes
            try:
                control = await self._io(self._store.control)
            except StorageUnavailable:
                continue
            if seen != self._local_changes:
                continue  # a local command changed it meanwhile; read again next time
            obey(control)
            plan = running()
            if plan is not None and time.monotonic() - last_beat >= self._heartbeat_s:
                last_beat = time.monotonic()
                with contextlib.suppress(StorageUnavailable):
                    await self._io(self._store.heartbeat, plan)
            if plan is not None and time.monotonic() - last_logs >= LOGS_S:
                last_logs = time.monotonic()
                await self._share_logs(plan)

    async def _share_logs(self, plan: TrialPlan) -> None:
        """Write the running trial's log tail, if it has new lines. Missed writes are missed
        lines on an attached display only (the files keep everything): a storage that does not
        answer, or a trial told meanwhile (its record is written; the tail is let go)."""
        shared = None if self._logs is None else self._logs.take(plan.number)
        if shared is None:
            return
        with contextlib.suppress(StorageUnavailable, KeyError, UpdateFinishedTrialError):
            await self._io(self._store.set_trial_attr, plan, LIVE_ATTR, shared)
