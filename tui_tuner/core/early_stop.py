"""Stopping a hopeless trial early: GuideLLM's live readings against the best so far, pure.

While GuideLLM loads a trial's server it prints a progress record about every 10 s: the seconds
since its benchmark started, the successful and errored requests so far (the warm-up's
included), and the requests and output tokens a second so far (GuideLLM's ``rate_per_second``:
every completed request's count or output tokens since the first request was sent, divided by
the seconds since then: cumulative, and diluted by the ramp at the start, when no request has
finished yet). Its first request may be sent long after its benchmark started: its scheduler's
processes start first (measured: 24 s on a loaded 2-core machine, the records "pending" until
then), so the rule keeps to GuideLLM's own clock, the seconds since its first request
(`Reading.load_s`: successful requests over requests a second).

**The rule** (`decide`). A base reading is taken once the load has run past its warm-up
(``workload.warmup_s``, the bound of ``warmup_s: auto``) and at least `RAMP_S`. The trial's
rate is the one over the readings since the base: the output tokens (cumulative rate times
the load's seconds) and the requests finished between the base and the latest reading, over
the load's seconds between them. So the ramp never enters the figure, as GuideLLM's own
measured window leaves out the warm-up. The figure is judged only when `MIN_OBSERVED_S` (one
progress interval) and `MIN_REQUESTS` lie between the two readings, and not in the window's
last `1 - LATE_SHARE`, which costs little more and leaves the sampler a whole measurement.

Its relative uncertainty ``s`` has two parts, added as variances:

- the study's noise ``cv`` (the spread of whole runs, `core/confidence.noise`), scaled to the
  shorter span observed: ``cv**2 * window / observed``, as a mean over a quarter of the window
  is twice as noisy (a conservative scaling: part of the run-to-run spread is the server's
  start, which does not shrink with a longer window);
- the counting of whole requests: tokens count when their request finishes, so requests in
  flight at either reading move the figure; ``1 / n`` for ``n`` requests finished between them.

The trial is **hopeless** when even ``rate * (1 + Z * s)`` is below the incumbent (the best
configuration's mean output tok/s) lowered by the noise, ``best * (1 - cv)``: a trial that
could tie the best within the noise runs to its end (a tie is worth a whole figure). With
``Z = 3`` a trial truly as good as that threshold is stopped at a given reading about once in
740 (one-sided normal), so over a run's handful of readings about once in a hundred at most;
a trial at 70% of the best is stopped after 10-20 s past its warm-up, one at 80% after 30 s
(60 s window, 3% noise, 150 requests in 10 s).

Without a measured noise (no configuration ran twice: ``study.noise_repeats: 1``) the noise is
taken as `ASSUMED_CV`, above what a quiet machine measures (1-5%); a measured noise below
`MIN_CV` counts as `MIN_CV`, so a lucky pair of runs does not make the rule hair-triggered.

**Errors**: the load stops when the errored share of the requests finished since the base is
above ``workload.max_error_rate`` even at its lower bound (Wilson, ``Z``), over at least
`MIN_REQUESTS`: the trial then fails as ``too_many_errors``, as its whole run would have.

Where it applies (`applies`): ``study.early_stop`` (None: on unless the sampler is ``grid``,
which must run every point, or ``gp`` or ``cmaes``, which leave pruned trials out of their
models, so a stopped trial would teach them nothing), a ``throughput`` objective (the live
figure is output tok/s; latency, Pareto and goodput need the whole run), and never the baseline
or a repeat (the baseline's noise runs, the re-measurement of the best), whose whole figures are
the reference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from tui_tuner.core.confidence import groups, noise, ranked
from tui_tuner.core.config import StudyConfig
from tui_tuner.core.config_problems import Invalid, show
from tui_tuner.core.events import Event, StudyStarted, TrialFinished
from tui_tuner.core.failures import Failure, too_many_errors
from tui_tuner.core.trial import TrialPlan, TrialRecord

__all__ = [
    "ASSUMED_CV",
    "AUTO_OFF",
    "LATE_SHARE",
    "MIN_CV",
    "MIN_OBSERVED_S",
    "MIN_REQUESTS",
    "RAMP_S",
    "Decision",
    "Incumbent",
    "Incumbents",
    "Reading",
    "Watch",
    "Z",
    "applies",
    "decide",
    "incumbent_of",
    "setting",
]

#: Seconds after GuideLLM's start before a reading may be the base, even with no warm-up: the
#: first requests of a load finish a whole request latency after it starts.
RAMP_S = 10.0
#: Seconds of load between the base reading and the one judged: one GuideLLM progress interval
#: (10 s of its benchmark's time), less the jitter of when its records fall on the load's clock.
MIN_OBSERVED_S = 8.0
#: Requests finished between the two readings before either rule judges.
MIN_REQUESTS = 10
#: Never stopped after this share of the load window: the rest costs little.
LATE_SHARE = 0.8
#: Standard deviations of the margin (one-sided): a wrong stop about once in 740 readings.
Z = 3.0
#: Samplers ``early_stop: auto`` leaves it off for (see the module).
AUTO_OFF = ("grid", "gp", "cmaes")
#: The noise when none was measured, and the least a measured one counts as.
ASSUMED_CV = 0.10
MIN_CV = 0.02


class Decision(Enum):
    CONTINUE = "continue"
    HOPELESS = "hopeless"
    ERRORS = "errors"


@dataclass(frozen=True)
class Incumbent:
    """The best configuration so far: its mean output tok/s, its trial, the study's noise."""

    output_tok_s: float
    number: int
    #: The measured noise (coefficient of variation), None when no configuration ran twice.
    cv: float | None = None
    #: The best is vLLM's defaults (the baseline's runs).
    baseline: bool = False

    @property
    def noise(self) -> float:
        return ASSUMED_CV if self.cv is None else max(self.cv, MIN_CV)

    @property
    def who(self) -> str:
        return "the baseline's" if self.baseline else f"trial {self.number}'s"


@dataclass(frozen=True)
class Reading:
    """One GuideLLM progress record: seconds since its benchmark started, requests so far
    (warm-up included) and its cumulative output tokens a second."""

    elapsed_s: float
    successful: int
    errored: int
    output_tok_s: float
    #: GuideLLM's requests a second, cumulative as its tokens (None: not given).
    requests_s: float | None = None

    @property
    def load_s(self) -> float | None:
        """Seconds since the load's first request, on GuideLLM's own clock (which its
        cumulative rates divide by): successful requests over requests a second; the elapsed
        seconds when requests a second are not given; None before a request has finished."""
        if self.requests_s is None:
            return self.elapsed_s
        if self.successful <= 0 or self.requests_s <= 0:
            return None
        return self.successful / self.requests_s


@dataclass(frozen=True)
class Span:
    """What happened between the base reading and the latest one (the load's seconds)."""

    seconds: float
    successful: int
    errored: int
    output_tok_s: float
    #: The load's seconds at the latest reading.
    end_s: float


def span(readings: Sequence[Reading], warmup_s: float) -> Span | None:
    """The load between the first reading past the warm-up (and `RAMP_S`) and the last one;
    None before there are two such readings."""
    timed = [(r, t) for r in readings if (t := r.load_s) is not None]
    start = max(warmup_s, RAMP_S)
    base = next(((r, t) for r, t in timed if t >= start), None)
    if base is None or timed[-1][1] <= base[1]:
        return None
    (first, t0), (last, t1) = base, timed[-1]
    tokens = last.output_tok_s * t1 - first.output_tok_s * t0
    return Span(t1 - t0, last.successful - first.successful, last.errored - first.errored,
                max(tokens, 0.0) / (t1 - t0), t1)  # fmt: skip


def upper_bound(s: Span, incumbent: Incumbent, window_s: float) -> float:
    """The span's rate raised by `Z` times its relative uncertainty (see the module)."""
    cv = incumbent.noise
    share = max(1.0, window_s / s.seconds)
    sigma = math.sqrt(cv * cv * share + 1.0 / max(s.successful, 1))
    return s.output_tok_s * (1.0 + Z * sigma)


def _errors_low(errored: int, finished: int) -> float:
    """Wilson's lower bound (`Z`) of the errored share."""
    p, z2 = errored / finished, Z * Z
    centre = p + z2 / (2 * finished)
    half = Z * math.sqrt(p * (1 - p) / finished + z2 / (4 * finished * finished))
    return (centre - half) / (1 + z2 / finished)


def decide(
    readings: Sequence[Reading],
    incumbent: Incumbent | None,
    *,
    warmup_s: float,
    duration_s: float,
    max_error_rate: float,
) -> Decision:
    """Continue, or stop the load: hopeless against ``incumbent`` (None: never), or too many
    errors. Pure; see the module for the rule and its constants."""
    s = span(readings, warmup_s)
    if s is None or s.seconds < MIN_OBSERVED_S:
        return Decision.CONTINUE
    if s.end_s > warmup_s + LATE_SHARE * duration_s:
        return Decision.CONTINUE
    finished = s.successful + s.errored
    if finished >= MIN_REQUESTS and _errors_low(s.errored, finished) > max_error_rate:
        return Decision.ERRORS
    if incumbent is None or s.successful < MIN_REQUESTS:
        return Decision.CONTINUE
    threshold = incumbent.output_tok_s * (1.0 - incumbent.noise)
    if upper_bound(s, incumbent, duration_s) < threshold:
        return Decision.HOPELESS
    return Decision.CONTINUE


def setting(value: object, _name: str) -> bool | None:
    """``study.early_stop`` as written: true, false, or auto (None: decided by `applies`)."""
    if value == "auto" or isinstance(value, bool):
        return None if value == "auto" else bool(value)
    raise Invalid(f"expected true, false or auto, got {show(value)}")


def applies(config: StudyConfig, plan: TrialPlan) -> bool:
    """Whether this trial's load may be stopped early (see the module)."""
    on = config.study.early_stop
    if on is None:
        on = config.study.sampler not in AUTO_OFF
    return on and config.objective.kind == "throughput" and not (plan.baseline or plan.repeat)


def incumbent_of(records: Iterable[TrialRecord]) -> Incumbent | None:
    """The best configuration measured so far (the baseline too), by its mean output tok/s,
    with the study's measured noise; None before any whole measurement."""
    found = list(records)
    order = ranked("throughput", groups(found, "throughput"))
    if not order:
        return None
    best = order[0]
    measured = noise(found, "throughput")
    return Incumbent(best.mean("throughput"), best.representative.number,
                     None if measured is None else measured.cv, best.baseline)  # fmt: skip


@dataclass
class Incumbents:
    """The study's records as its events tell them (the trials a resumed study had, each trial
    as it finishes), for the incumbent at any moment without a storage call. Fed from the event
    sink (`observe`); called for the incumbent."""

    records: dict[int, TrialRecord] = field(default_factory=dict)

    def observe(self, event: Event) -> None:
        if isinstance(event, StudyStarted):
            self.records.update((r.number, r) for r in event.trials)
        elif isinstance(event, TrialFinished):
            self.records[event.record.number] = event.record

    def __call__(self) -> Incumbent | None:
        return incumbent_of(self.records[n] for n in sorted(self.records))


class Watch:
    """One GuideLLM run watched: `add` each progress record; True once the load should stop."""

    def __init__(self, incumbent: Incumbent | None, config: StudyConfig) -> None:
        self.incumbent, self.workload = incumbent, config.workload
        self.readings: list[Reading] = []
        self.decision = Decision.CONTINUE

    @property
    def stopped(self) -> bool:
        return self.decision is not Decision.CONTINUE

    def add(
        self,
        status: str,
        elapsed: float,
        ok: int,
        err: int,
        tok_s: float,
        requests_s: float | None = None,
    ) -> bool:
        """The reading of one progress record; True the first time the rule says stop.
        GuideLLM's last records (``compile``, ``completed``) count the measured window alone
        and come when the load is over: not readings."""
        if self.stopped or status not in ("warmup", "active", "cooldown"):
            return False
        self.readings.append(Reading(elapsed, ok, err, tok_s, requests_s))
        w = self.workload
        self.decision = decide(
            self.readings,
            self.incumbent,
            warmup_s=w.warmup_s,
            duration_s=w.duration_s,
            max_error_rate=w.max_error_rate,
        )
        return self.stopped

    def partial(self) -> dict[str, float]:
        """What the stopped load showed: the span's figures (output tok/s past the warm-up,
        as a whole measurement counts them), GuideLLM's own counts so far, and the bound."""
        s = span(self.readings, self.workload.warmup_s)
        last = self.readings[-1]
        out = {"elapsed_s": last.elapsed_s, "successful": float(last.successful),
               "errored": float(last.errored), "output_tok_s": last.output_tok_s}  # fmt: skip
        if s is not None:
            out.update(output_tok_s=s.output_tok_s, observed_s=s.seconds)
            if self.incumbent is not None:
                bound = upper_bound(s, self.incumbent, self.workload.duration_s)
                out.update(upper_tok_s=bound, incumbent_tok_s=self.incumbent.output_tok_s)
        return out

    def note(self) -> str:
        """Why the load was stopped, in words (a hopeless trial's record note)."""
        p, best = self.partial(), self.incumbent
        head = f"early stopped after {p.get('observed_s', 0.0):.0f} s of load past the warm-up"
        if self.decision is not Decision.HOPELESS or best is None:
            return head
        return (
            f"{head}: {p['output_tok_s']:.0f} output tok/s, at most {p['upper_tok_s']:.0f} "
            f"within the noise, below {best.who} {best.output_tok_s:.0f} less "
            f"the {best.noise:.0%} noise; so far {int(p['successful'])} ok, "
            f"{int(p['errored'])} errors"
        )

    def outcome(self, lines: Sequence[str]) -> tuple[dict[str, float], Failure | None, str | None]:
        """The stopped run's partial figures, its failure (stopped for its errors: the
        server's last ``lines`` with it) and its note (stopped as hopeless)."""
        failure = self.failure(lines)
        return self.partial(), failure, None if failure is not None else self.note()

    def failure(self, lines: Sequence[str]) -> Failure | None:
        """The failure of a load stopped for its errors (None for a hopeless one)."""
        if self.decision is not Decision.ERRORS:
            return None
        s = span(self.readings, self.workload.warmup_s)
        assert s is not None
        found = too_many_errors(s.errored, s.successful + s.errored,
                                self.workload.max_error_rate, lines)  # fmt: skip
        return replace(found, message=f"{found.message}; the load was stopped early")
