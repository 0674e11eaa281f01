"""What the screen shows, kept apart from how: the study as the UI knows it from engine events.

The app feeds every engine event to ``StudyModel.apply`` and redraws from the model, so widgets
never see events and tests can check the model without a terminal. Plain Python; no Textual.
Log lines go into bounded per-trial buffers (``LOG_LINES_KEPT`` each, the newest kept), so a
server that floods its log costs bounded memory; the full logs are in the trial's files.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tui_tuner.core.config import StudyConfig
from tui_tuner.core.events import (
    BenchProgress,
    Event,
    LogLine,
    Notice,
    StudyFinished,
    StudyStarted,
    StudyStateChanged,
    TrialFinished,
    TrialPhaseChanged,
    TrialStarted,
)
from tui_tuner.core.objectives import Gain, best_trials, gain_over
from tui_tuner.core.trial import TrialRecord, baseline_of, counts_against_budget

__all__ = ["LOG_LINES_KEPT", "LogBuffer", "RunningTrial", "StudyModel"]

LOG_LINES_KEPT = 2000
#: Finished trials whose logs stay in memory (older ones are read from their files on demand).
TRIAL_LOGS_KEPT = 8


class LogBuffer:
    """The newest lines of one log, with a counter that changes whenever a line arrives."""

    def __init__(self, keep: int = LOG_LINES_KEPT) -> None:
        self.lines: deque[str] = deque(maxlen=keep)
        self.version = 0

    def append(self, line: str) -> None:
        self.lines.append(line)
        self.version += 1

    def extend(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.append(line)


@dataclass
class RunningTrial:
    number: int
    params: dict[str, object]
    baseline: bool
    command: tuple[str, ...]
    trial_dir: str
    phase: str = "launching"
    phase_since: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)
    status: str = ""
    output_tok_s: float | None = None
    successful: int = 0
    errored: int = 0


@dataclass
class StudyModel:
    config: StudyConfig
    state: str = "starting"
    reason: str = ""
    storage: str = ""
    study_dir: str = ""
    simulated: bool = False
    n_trials: int | None = None
    records: dict[int, TrialRecord] = field(default_factory=dict)
    running: RunningTrial | None = None
    notices: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=50))
    logs: dict[tuple[int, str], LogBuffer] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    #: Bumped on every change a table or plot would show (not on log lines).
    version: int = 0
    #: The ``version`` at which each trial's row last changed (a dropped row's number stays).
    _row_changed: dict[int, int] = field(default_factory=dict)
    _best_cache: tuple[int, list[TrialRecord]] | None = None
    _baseline_cache: tuple[int, TrialRecord | None] | None = None

    # -- input -----------------------------------------------------------------------------

    def __post_init__(self) -> None:
        if self.n_trials is None:
            self.n_trials = self.config.study.n_trials

    def load(self, records: Sequence[TrialRecord]) -> None:
        """The finished trials the study has: a first look read before the engine starts
        (``engine/preview.py``), then the engine's own list, which replaces it. Only trials
        that differ from what is shown are marked changed."""
        self.version += 1
        finished = {r.number: r for r in records if r.state not in ("waiting", "running")}
        for number in [n for n in self.records if n not in finished]:
            del self.records[number]
            self._changed(number)
        for number, r in finished.items():
            if self.records.get(number) != r:
                self.records[number] = r
                self._changed(number)

    def apply(self, event: Event) -> None:
        if isinstance(event, LogLine):
            self.log(event.number, event.source).append(event.text)
            return
        self.version += 1
        if isinstance(event, StudyStarted):
            self.state, self.storage, self.study_dir = "running", event.storage, event.study_dir
            self.simulated, self.n_trials = event.simulated, event.n_trials
            self.load(event.trials)
        elif isinstance(event, TrialStarted):
            self.running = RunningTrial(
                event.number, dict(event.params), event.baseline, event.command, event.trial_dir
            )
            self._changed(event.number)
            self._forget_old_logs()
        elif isinstance(event, TrialPhaseChanged):
            if self.running is not None and self.running.number == event.number:
                self.running.phase, self.running.phase_since = event.phase, time.monotonic()
                self._changed(event.number)
        elif isinstance(event, BenchProgress):
            run = self.running
            if run is not None and run.number == event.number:
                run.status, run.output_tok_s = event.status, event.output_tok_s
                run.successful, run.errored = event.successful, event.errored
        elif isinstance(event, TrialFinished):
            self.records[event.record.number] = event.record
            self._changed(event.record.number)
            if self.running is not None and self.running.number == event.record.number:
                self.running = None
        elif isinstance(event, StudyStateChanged):
            self.state, self.reason = event.state, event.reason
        elif isinstance(event, StudyFinished):
            self.state, self.reason = "finished", event.reason
            self.finished_at = time.monotonic()
        elif isinstance(event, Notice):
            self.notices.append((event.level, event.text))

    def log(self, number: int, source: str) -> LogBuffer:
        key = (number, source)
        if key not in self.logs:
            self.logs[key] = LogBuffer()
        return self.logs[key]

    def _forget_old_logs(self) -> None:
        numbers = sorted({n for n, _ in self.logs})
        for n in numbers[:-TRIAL_LOGS_KEPT]:
            for source in ("server", "guidellm"):
                self.logs.pop((n, source), None)

    def _changed(self, number: int) -> None:
        self._row_changed[number] = self.version

    def changed_since(self, version: int) -> set[int]:
        """Trials whose row changed after ``version`` (a reader keeps the version it drew)."""
        return {n for n, v in self._row_changed.items() if v > version}

    # -- derived ---------------------------------------------------------------------------

    @property
    def finished(self) -> list[TrialRecord]:
        return [self.records[n] for n in sorted(self.records)]

    @property
    def counted(self) -> int:
        """Trials that count against the budget, as the engine counts them."""
        return sum(counts_against_budget(r) for r in self.records.values())

    def baseline(self) -> TrialRecord | None:
        if self._baseline_cache is None or self._baseline_cache[0] != self.version:
            found = baseline_of(self.records[n] for n in sorted(self.records))
            self._baseline_cache = (self.version, found)
        return self._baseline_cache[1]

    def best(self) -> list[TrialRecord]:
        """Best feasible trial(s); computed once per change (a Pareto front is quadratic)."""
        if self._best_cache is None or self._best_cache[0] != self.version:
            best = best_trials(self.config.objective.kind, self.finished)
            self._best_cache = (self.version, best)
        return self._best_cache[1]

    def gain(self, record: TrialRecord) -> Gain | None:
        base = self.baseline()
        if base is None or base.measurement is None or record.measurement is None:
            return None
        return gain_over(base.measurement, record.measurement)

    def elapsed_s(self) -> float:
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        return end - self.started

    def eta_s(self) -> float | None:
        """Time left by the mean duration of this run's trials (None if unknown)."""
        if self.n_trials is None:
            return None
        durations = [r.timings["total"] for r in self.finished if "total" in r.timings]
        if not durations:
            return None
        left = max(0, self.n_trials - self.counted)
        mean = sum(durations) / len(durations)
        running = 0.0
        if self.running is not None and left:
            running = min(mean, time.monotonic() - self.running.started)
        return max(0.0, left * mean - running)
