"""What a study's records say, as plain numbers: its best and its gain, its noise, its failures,
where its time went. `show`, the exports and `--json` all read these, so the terminal, a pull
request and a script see the same figures.

Pure: TrialRecords and a StudyConfig in, dataclasses and JSON-ready dicts out. No I/O.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from tui_tuner.core.confidence import answer, groups
from tui_tuner.core.config import StudyConfig
from tui_tuner.core.objectives import best_trials, gain_over
from tui_tuner.core.space import SearchSpace
from tui_tuner.core.trial import PHASES, TrialRecord, baseline_of, counts_against_budget

__all__ = [
    "Noise",
    "TimeSpent",
    "failure_counts",
    "noise_of",
    "record_dict",
    "state_counts",
    "study_facts",
    "tidy_params",
    "tidy_value",
    "time_spent",
]

SIMULATED_NOTE = (
    "measured on tui-tuner's SIMULATED vLLM server (no GPU): these figures say nothing about "
    "real hardware"
)


# -- values as the user wrote them -----------------------------------------------------------


def _decimals(step: float) -> int:
    """Decimal places of a step as written: 0.05 -> 2, 1e-3 -> 3, 0.5 -> 1, 2.0 -> 0."""
    exponent = Decimal(repr(float(step))).normalize().as_tuple().exponent
    return max(0, -int(exponent))


def tidy_value(value: object, step: float | None = None) -> object:
    """A float as the user would write it: rounded to its parameter's step
    (0.8500000000000001 with step 0.05 is 0.85), else to 12 significant digits, which drops
    the last-bit error of float arithmetic and keeps every digit a person chose. A whole float
    stays a float (``1.0``); other values are returned as they are."""
    if isinstance(value, bool) or not isinstance(value, float) or not math.isfinite(value):
        return value
    if step:
        return round(value, _decimals(step))
    return float(f"{value:.12g}")


def tidy_params(space: SearchSpace, params: Mapping[str, object]) -> dict[str, object]:
    """A trial's parameters with every float tidied by its parameter's step (`tidy_value`)."""
    out: dict[str, object] = {}
    for key, value in params.items():
        p = space.get(key)
        out[key] = tidy_value(value, p.step if p is not None and p.kind == "float" else None)
    return out


# -- noise ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Noise:
    """How much repeated measurements of one configuration differ: the pooled coefficient of
    variation of output tok/s, in percent (None: nothing was measured twice).

    Two sources, pooled with `core.confidence.noise`'s formula: configurations measured as
    several trials (the baseline's noise runs, the re-measurement of the best, a configuration
    run again; grouped as `core.confidence.groups` does), and the runs within one trial
    (``workload.repeats``, whose median the trial keeps). With the first source alone the figure
    is `core.confidence.noise`'s."""

    configurations: int
    measurements: int
    cv_pct: float | None

    @property
    def known(self) -> bool:
        return self.cv_pct is not None

    def describe(self) -> str:
        if self.cv_pct is None:
            return (
                "unknown: no configuration was measured more than once, so a small gain may be "
                "noise (study.noise_repeats or workload.repeats measure it)"
            )
        which = "configuration" if self.configurations == 1 else "configurations"
        return (
            f"±{self.cv_pct:.1f}% output tok/s (coefficient of variation of "
            f"{self.measurements} measurements of {self.configurations} {which})"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "known": self.known,
            "cv_pct": self.cv_pct,
            "configurations": self.configurations,
            "measurements": self.measurements,
            "text": self.describe(),
        }


def noise_of(records: Sequence[TrialRecord]) -> Noise:
    """The study's noise in output tok/s (see `Noise`)."""
    samples = [[_tok_s(r) for r in g.records] for g in groups(records) if g.n > 1]
    samples += [
        [float(v) for v in r.repeats_output_tok_s]
        for r in records
        if r.state == "complete" and r.duplicate_of is None and len(r.repeats_output_tok_s) > 1
    ]
    samples = [v for v in samples if statistics.fmean(v) > 0]
    runs = sum(len(v) for v in samples)
    if not samples:
        return Noise(0, 0, None)
    squares = sum((x / statistics.fmean(v) - 1.0) ** 2 for v in samples for x in v)
    return Noise(len(samples), runs, math.sqrt(squares / (runs - len(samples))) * 100.0)


def _tok_s(r: TrialRecord) -> float:
    assert r.measurement is not None
    return r.measurement.output_tok_s


# -- counts and time ------------------------------------------------------------------------


def state_counts(records: Sequence[TrialRecord]) -> dict[str, int]:
    """Finished trials by how they ended (``complete``, ``infeasible``, ``failed(oom_startup)``,
    ``interrupted``...), most common first."""
    counts = Counter(
        "interrupted" if r.interrupted else r.label
        for r in records
        if r.state not in ("waiting", "running")
    )
    return dict(counts.most_common())


def failure_counts(records: Sequence[TrialRecord]) -> dict[str, int]:
    """Failed trials by failure class, interrupted ones apart (the tuner stopped them)."""
    counts = Counter(
        r.failure_class or "unknown"
        for r in records
        if r.state == "failed" and not r.interrupted and r.failure is not None
    )
    return dict(counts.most_common())


@dataclass(frozen=True)
class TimeSpent:
    """Seconds the trials spent in each phase (summed over trials), their total, and the wall
    clock from the first trial's start to the last one's end (None: no timestamps)."""

    phases: Mapping[str, float]
    trials_s: float
    wall_s: float | None

    def to_dict(self) -> dict[str, object]:
        return {"phases_s": dict(self.phases), "trials_s": self.trials_s, "wall_s": self.wall_s}


def time_spent(records: Sequence[TrialRecord]) -> TimeSpent:
    phases: dict[str, float] = dict.fromkeys(PHASES, 0.0)
    total = 0.0
    for r in records:
        for p in PHASES:
            phases[p] += float(r.timings.get(p, 0.0))
        total += float(r.timings.get("total", sum(r.timings.get(p, 0.0) for p in PHASES)))
    starts = [r.started_at for r in records if r.started_at is not None]
    ends = [r.finished_at for r in records if r.finished_at is not None]
    wall = max(ends) - min(starts) if starts and ends and max(ends) >= min(starts) else None
    return TimeSpent(phases, total, wall)


# -- one trial, every figure ------------------------------------------------------------------


def record_dict(r: TrialRecord, space: SearchSpace | None = None) -> dict[str, object]:
    """One trial for JSON and CSV: number, state, parameters (floats tidied), measurement,
    failure class, timings."""
    params = tidy_params(space, r.params) if space is not None else dict(r.params)
    return {
        "number": r.number,
        "state": r.label if not r.interrupted else "interrupted",
        "baseline": r.baseline,
        "params": params,
        "measurement": None if r.measurement is None else r.measurement.to_dict(),
        "feasible": r.feasible,
        "failure_class": r.failure_class,
        "failure_message": None if r.failure is None else r.failure.get("message"),
        "duplicate_of": r.duplicate_of,
        "rerun": r.rerun,
        "repeats_output_tok_s": list(r.repeats_output_tok_s),
        # A load sweep: measured on the server this trial started (no launch of its own).
        "server_of": r.server_of,
        "timings_s": dict(r.timings),
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "note": r.note,
    }


# -- the study as a whole ------------------------------------------------------------------


def study_facts(config: StudyConfig, records: Sequence[TrialRecord]) -> dict[str, object]:
    """The study's answer as JSON-ready data: the best trial(s) with their gains, the baseline,
    the noise, counts by state and failure class, and time spent."""
    base = baseline_of(records)
    best = best_trials(config.objective.kind, records)
    done = sum(counts_against_budget(r) for r in records)

    def entry(r: TrialRecord) -> dict[str, object]:
        m = r.measurement
        assert m is not None
        gain = gain_over(base.measurement, m) if base is not None and base.measurement else None
        return {
            "number": r.number,
            "baseline": r.baseline,
            "params": tidy_params(config.space, r.params),
            "output_tok_s": m.output_tok_s,
            "request_latency_p95_ms": m.request_latency_p95_ms,
            "ttft_p95_ms": m.ttft_p95_ms,
            "gain_output_tok_s_pct": None if gain is None or r is base else gain.output_tok_s_pct,
            "gain_request_latency_p95_pct": (
                None if gain is None or r is base else gain.request_latency_p95_pct
            ),
        }

    return {
        "study": config.study.name,
        "objective": config.objective.kind,
        "simulated": config.server.simulated,
        "simulated_note": SIMULATED_NOTE if config.server.simulated else None,
        "model": config.server.model,
        "trials_done": done,
        "trials_budget": config.study.n_trials,
        "trials_stored": len(records),
        "baseline": None if base is None else entry(base),
        "best": [entry(r) for r in best],
        "noise": noise_of(records).to_dict(),
        **_confidence(config, records),
        "states": state_counts(records),
        "failures": failure_counts(records),
        "client_limited": sum(r.client_limited and r.measurement is not None for r in records),
        "time": time_spent(records).to_dict(),
    }


def _confidence(config: StudyConfig, records: Sequence[TrialRecord]) -> dict[str, object]:
    """The single-objective answer of `core.confidence`: the gain's 95% interval (when the
    study measured its noise across trials) and its statement in words."""
    kind = config.objective.kind
    sure = answer(kind, records) if kind != "pareto" else None
    interval = None
    if sure is not None and sure.low_pct is not None and sure.high_pct is not None:
        interval = [sure.low_pct, sure.high_pct]
    return {
        "gain_interval_pct": interval,
        "beats_runner_up": None if sure is None else sure.beats_runner_up,
        "confidence": None if sure is None else sure.lines(),
    }
