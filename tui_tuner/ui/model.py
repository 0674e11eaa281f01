"""What the screen shows, kept apart from how: the study as the UI knows it from engine events.

The app feeds every engine event to ``StudyModel.apply`` and redraws from the model, so widgets
never see events and tests can check the model without a terminal. Plain Python; no Textual.
Log lines go into bounded per-trial buffers (``LOG_LINES_KEPT`` each, the newest kept), so a
server that floods its log costs bounded memory; the full logs are in the trial's files.

Several trials may run at once (``study.workers``, or an attached display of a study other
machines run): ``runs`` holds each by number, each with its own phase, readings and server
figures. The live panels follow one of them, ``focus``: the trial the table's cursor is on
(``selected``, set by the app) when it runs, else the one started last.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tui_tuner.core.confidence import noise
from tui_tuner.core.config import StudyConfig
from tui_tuner.core.events import (
    BenchProgress,
    Event,
    LogLine,
    Notice,
    ServerFiguresRead,
    StudyFinished,
    StudyStarted,
    StudyStateChanged,
    TrialFinished,
    TrialPhaseChanged,
    TrialStarted,
)
from tui_tuner.core.objectives import Gain, best_trials, gain_over
from tui_tuner.core.telemetry import ServerFigures
from tui_tuner.core.trial import TrialRecord, baseline_of, counts_against_budget

__all__ = ["LOG_LINES_KEPT", "Counts", "LogBuffer", "RunningTrial", "StudyModel", "spread_pct"]

LOG_LINES_KEPT = 2000
#: Readings of the running trial's throughput kept for its live plot (about one a second).
RATES_KEPT = 240
#: Time constant of the time-left estimate's smoothing: a new trial's duration moves the
#: typical duration by 1 - e^(-dt/ETA_SMOOTH_S) of the gap in dt seconds, not at once.
ETA_SMOOTH_S = 90.0
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
    #: The GPUs its server was given (empty: the tuner hands out none) and the worker's host
    #: (set on an attached display).
    gpus: tuple[int, ...] = ()
    host: str = ""
    phase: str = "launching"
    phase_since: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)
    status: str = ""
    output_tok_s: float | None = None
    successful: int = 0
    errored: int = 0
    #: Seconds into the load generator's run, by its last progress report.
    bench_elapsed_s: float = 0.0
    bench_at: float = 0.0
    #: Output tok/s readings for the live plot: the server's own generation rate (about once
    #: a second), or the load generator's progress where the server reports none.
    rates: deque[float] = field(default_factory=lambda: deque(maxlen=RATES_KEPT))
    rates_version: int = 0
    server_rates: bool = False
    #: What its server last said about itself (None: nothing yet, or it reports none), and a
    #: counter that moves with each reading.
    figures: ServerFigures | None = None
    figures_version: int = 0

    def where(self) -> str:
        """Where it runs, compactly: ``"0,1"`` (its GPUs), ``"b7:0,1"``, ``"b7"``, or ``""``."""
        gpus = ",".join(str(g) for g in self.gpus)
        host = self.host if self.host.replace(".", "").isdigit() else self.host.split(".")[0]
        host = host if len(host) <= 12 else host[:11] + "…"  # a name without its domain
        return f"{host}:{gpus}" if host and gpus else host or gpus

    def add_rate(self, value: float, *, from_server: bool) -> None:
        if from_server and not self.server_rates:
            self.rates.clear()  # the server's figures are finer than the client's; keep those
            self.server_rates = True
        if from_server or not self.server_rates:
            self.rates.append(value)
            self.rates_version += 1


@dataclass(frozen=True)
class Counts:
    """Every finished trial the table shows, by what it counts as. ``measured + failed +
    pruned`` is what the budget counts (``counts_against_budget``); the others do not: a trial
    that runs again (interrupted, or failed for reasons outside its flags) counts when it runs
    again, a repeat measures a configuration counted already, a rejected one was never
    launched, and a duplicate reuses another trial's result."""

    measured: int = 0
    failed: int = 0
    pruned: int = 0
    again: int = 0
    repeats: int = 0
    rejected: int = 0
    duplicates: int = 0

    @property
    def counted(self) -> int:
        return self.measured + self.failed + self.pruned

    @property
    def uncounted(self) -> int:
        return self.again + self.repeats + self.rejected + self.duplicates

    def not_counted(self) -> list[str]:
        """The kinds that do not spend the budget, in words (``["1 rejected"]``)."""
        kinds = (
            (self.again, "to run again", "to run again"),
            (self.repeats, "repeat", "repeats"),
            (self.rejected, "rejected", "rejected"),
            (self.duplicates, "duplicate", "duplicates"),
        )
        return [f"{n} {one if n == 1 else many}" for n, one, many in kinds if n]


def spread_pct(values: Sequence[float]) -> float | None:
    """Half the range of repeated figures, in percent of their median (None: fewer than two)."""
    if len(values) < 2:
        return None
    mid = statistics.median(values)
    if mid <= 0:
        return None
    return (max(values) - min(values)) / 2 / mid * 100.0


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
    #: The running trials by number, in the order they started.
    runs: dict[int, RunningTrial] = field(default_factory=dict)
    #: The trial the table's cursor is on (the app sets it before each draw).
    selected: int | None = None
    #: The GPUs the tuner hands out (empty: it hands out none) and the trials it runs at once.
    gpus: tuple[int, ...] = ()
    workers: int = 1
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
    _median_cache: tuple[int, float | None] | None = None
    _noise_cache: tuple[int, float | None] | None = None
    #: The typical trial duration ``eta_s`` last used, and when (it is smoothed in time).
    _eta: tuple[float, float] | None = None

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
        if isinstance(event, ServerFiguresRead):
            run = None if event.number is None else self.runs.get(event.number)
            if run is None:
                return
            figures = event.figures
            run.figures, run.figures_version = figures, run.figures_version + 1
            rate = None if figures is None else figures.generation_tok_s
            if rate is not None and not math.isnan(rate) and run.phase in ("warmup", "measuring"):
                run.add_rate(rate, from_server=True)
            return
        self.version += 1
        if isinstance(event, StudyStarted):
            self.state, self.storage, self.study_dir = "running", event.storage, event.study_dir
            self.simulated, self.n_trials = event.simulated, event.n_trials
            self.gpus, self.workers = tuple(event.gpus), max(1, event.workers)
            self.load(event.trials)
        elif isinstance(event, TrialStarted):
            self.runs.pop(event.number, None)  # started again: it goes last
            self.runs[event.number] = RunningTrial(
                event.number, dict(event.params), event.baseline, event.command,
                event.trial_dir, tuple(event.gpus), event.host,
            )  # fmt: skip
            self._changed(event.number)
            self._forget_old_logs()
        elif isinstance(event, TrialPhaseChanged):
            if (run := self.runs.get(event.number)) is not None:
                run.phase, run.phase_since = event.phase, time.monotonic()
                self._changed(event.number)
        elif isinstance(event, BenchProgress):
            if (run := self.runs.get(event.number)) is not None:
                run.status, run.output_tok_s = event.status, event.output_tok_s
                run.successful, run.errored = event.successful, event.errored
                run.bench_elapsed_s, run.bench_at = event.elapsed_s, time.monotonic()
                if event.output_tok_s > 0:
                    run.add_rate(event.output_tok_s, from_server=False)
        elif isinstance(event, TrialFinished):
            self.records[event.record.number] = event.record
            self._changed(event.record.number)
            self.runs.pop(event.record.number, None)
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
        numbers = sorted({n for n, _ in self.logs} - set(self.runs))  # a running one's stay
        for n in numbers[: max(0, len(numbers) - TRIAL_LOGS_KEPT)]:
            for source in ("server", "guidellm"):
                self.logs.pop((n, source), None)

    def _changed(self, number: int) -> None:
        self._row_changed[number] = self.version

    def changed_since(self, version: int) -> set[int]:
        """Trials whose row changed after ``version`` (a reader keeps the version it drew)."""
        return {n for n, v in self._row_changed.items() if v > version}

    # -- derived ---------------------------------------------------------------------------

    @property
    def running(self) -> RunningTrial | None:
        """The running trial started last (None: none runs)."""
        return next(reversed(self.runs.values()), None)

    @property
    def focus(self) -> RunningTrial | None:
        """The running trial the live panels follow: the selected one if it runs, else the
        one started last."""
        if self.selected is not None and (run := self.runs.get(self.selected)) is not None:
            return run
        return self.running

    @property
    def lanes(self) -> bool:
        """Whether trials run side by side or elsewhere: rows then say where each runs."""
        return self.workers > 1 or bool(self.gpus) or any(r.host for r in self.runs.values())

    def gpus_busy(self) -> int:
        """How many of the GPUs the tuner hands out a running trial holds."""
        held = {g for run in self.runs.values() for g in run.gpus}
        return len(held & set(self.gpus))

    @property
    def finished(self) -> list[TrialRecord]:
        return [self.records[n] for n in sorted(self.records)]

    @property
    def counted(self) -> int:
        """Trials that count against the budget, as the engine counts them."""
        return sum(counts_against_budget(r) for r in self.records.values())

    def counts(self) -> Counts:
        """The finished trials by kind; they add up to the finished rows of the table."""
        n = dict.fromkeys(("measured", "failed", "pruned", "again", "repeats", "rejected",
                           "duplicates"), 0)  # fmt: skip
        for r in self.records.values():
            if r.duplicate_of is not None:
                n["duplicates"] += 1
            elif r.rejected:
                n["rejected"] += 1
            elif r.repeat:
                n["repeats"] += 1
            elif not counts_against_budget(r):
                n["again"] += 1
            elif r.state == "complete":
                n["measured"] += 1
            elif r.state == "failed":
                n["failed"] += 1
            else:
                n["pruned"] += 1
        return Counts(**n)

    def trials_left(self) -> int | None:
        """Trials the budget still allows after the finished ones and the running ones."""
        if self.n_trials is None:
            return None
        return max(0, self.n_trials - self.counted - len(self.runs))

    def noise_pct(self) -> float | None:
        """The study's noise, if it has an estimate: the pooled spread of the configurations
        measured more than once (`core.confidence.noise`: the baseline's noise runs, the
        re-measurement of the best), else the spread of the baseline's load repeats."""
        if self._noise_cache is None or self._noise_cache[0] != self.version:
            # Once per change: the header asks ten times a second, and grouping the records
            # by configuration walks all of them.
            measured = noise(self.finished, self.config.objective.kind)
            if measured is not None:
                pct: float | None = measured.cv * 100.0
            else:
                base = self.baseline()
                pct = None if base is None else spread_pct(base.repeats_output_tok_s)
            self._noise_cache = (self.version, pct)
        return self._noise_cache[1]

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

    def eta_s(self, now: float | None = None) -> float | None:
        """Time left: the trials left times a typical trial's duration, less what the running
        ones have done, shared among the lanes that run them at once. The typical duration (the
        median) is smoothed in time, so one short failed trial or one slow start moves the
        estimate gradually instead of at once (it jumped from 4:12 to 1:38 within 40 s); the
        clock still counts down. None if unknown."""
        now = time.monotonic() if now is None else now
        return self._eta_with(self._typical_s(now, smooth=True), now)

    def raw_eta_s(self, now: float | None = None) -> float | None:
        """The estimate without smoothing (what ``eta_s`` moves towards)."""
        now = time.monotonic() if now is None else now
        return self._eta_with(self._typical_s(now, smooth=False), now)

    def _eta_with(self, typical: float | None, now: float) -> float | None:
        if self.n_trials is None or typical is None:
            return None
        left = max(0, self.n_trials - self.counted)
        done = 0.0
        if left:
            ran = sorted((max(0.0, now - r.started) for r in self.runs.values()), reverse=True)
            done = sum(min(typical, s) for s in ran[:left])
        # The work left, shared by the lanes; never more lanes than trials left to run.
        lanes = max(1, min(self.workers, left))
        return max(0.0, left * typical - done) / lanes

    def _typical_s(self, now: float, *, smooth: bool) -> float | None:
        if self._median_cache is None or self._median_cache[0] != self.version:
            durations = [r.timings["total"] for r in self.records.values() if "total" in r.timings]
            median = statistics.median(durations) if durations else None
            self._median_cache = (self.version, median)  # the header asks ten times a second
        raw = self._median_cache[1]
        if raw is None:
            if smooth:
                self._eta = None
            return None
        if not smooth:
            return raw
        if self._eta is None:
            self._eta = (raw, now)
            return raw
        shown, at = self._eta
        value = shown + (raw - shown) * (1.0 - math.exp(-max(0.0, now - at) / ETA_SMOOTH_S))
        self._eta = (value, now)
        return value
