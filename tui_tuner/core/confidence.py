"""How sure the answer is: the study's measured noise, and the best configuration's gain over
the baseline with an interval, judged against the runner-up.

A configuration measured more than once (the baseline's noise runs, the re-measurement of the
best at the end, a run again) is one group of figures; its mean is what ranks it. The noise is
the pooled relative spread of every group with more than one run: it is measured on this
machine and this workload, never assumed. Pure: reads `TrialRecord`s only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tui_tuner.core.config import ObjectiveKind
from tui_tuner.core.measurement import Measurement, stalled
from tui_tuner.core.space import params_key
from tui_tuner.core.trial import TrialRecord

__all__ = [
    "REMEASURE_ROUNDS",
    "Answer",
    "Group",
    "Noise",
    "answer",
    "best_configurations",
    "groups",
    "noise",
]

#: Rounds of the re-measurement at the end: A B C A B C.
REMEASURE_ROUNDS = 2

#: Student's t at 97.5% (a two-sided 95% interval) by degrees of freedom; 1.96 beyond.
_T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
         10: 2.23, 12: 2.18, 15: 2.13, 20: 2.09, 30: 2.04, 60: 2.00}  # fmt: skip


def _t975(df: int) -> float:
    for limit in sorted(_T975):
        if df <= limit:
            return _T975[limit]
    return 1.96


@dataclass(frozen=True)
class Group:
    """Every usable measurement of one configuration (the baseline is one)."""

    key: str
    records: tuple[TrialRecord, ...]

    @property
    def baseline(self) -> bool:
        return self.records[0].baseline

    @property
    def n(self) -> int:
        return len(self.records)

    def mean(self, kind: ObjectiveKind) -> float:
        return sum(_figure(r, kind) for r in self.records) / self.n

    @property
    def representative(self) -> TrialRecord:
        """The run closest to the group's mean throughput (the first such): the one shown."""
        mean = sum(_m(r).output_tok_s for r in self.records) / self.n
        return min(self.records, key=lambda r: (abs(_m(r).output_tok_s - mean), r.number))


def _m(r: TrialRecord) -> Measurement:
    assert r.measurement is not None
    return r.measurement


def _figure(r: TrialRecord, kind: ObjectiveKind) -> float:
    return _m(r).request_latency_p95_ms if kind == "latency" else _m(r).output_tok_s


def usable(r: TrialRecord) -> bool:
    """A measurement that may rank its configuration: whole, feasible, the trial's own (not a
    duplicate's copy), and not taken through a stall."""
    return (
        r.state == "complete"
        and r.measurement is not None
        and bool(r.feasible)
        and r.duplicate_of is None
        and not stalled(r.measurement)
    )


def groups(records: Sequence[TrialRecord], kind: ObjectiveKind = "throughput") -> list[Group]:
    """The usable measurements by configuration, in the order each was first measured.

    A measurement the load generator could not drive (``client_limited``) had fewer requests
    in flight than asked: its throughput is a lower bound of the server's (it may still rank:
    `Answer.lines` says so), but its latency is flattered. For a latency objective it is left
    out while any other is usable: it is never the best on its own."""
    clean = kind == "latency" and any(usable(r) and not r.client_limited for r in records)
    by_key: dict[str, list[TrialRecord]] = {}
    for r in records:
        if usable(r) and not (clean and r.client_limited):
            key = "baseline" if r.baseline else params_key(r.params)
            by_key.setdefault(key, []).append(r)
    return [Group(k, tuple(rs)) for k, rs in by_key.items()]


def _better(kind: ObjectiveKind, a: float, b: float) -> bool:
    return a < b if kind == "latency" else a > b


def ranked(kind: ObjectiveKind, found: Sequence[Group]) -> list[Group]:
    """Best first by the mean of the objective's figure (throughput for `pareto`); ties go to
    the configuration measured first."""
    first = {g.key: g.records[0].number for g in found}
    sign = 1.0 if kind == "latency" else -1.0
    return sorted(found, key=lambda g: (sign * g.mean(kind), first[g.key]))


def best_configurations(kind: ObjectiveKind, records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The searched configurations (not the baseline) best first, one record each."""
    return [g.representative for g in ranked(kind, groups(records, kind)) if not g.baseline]


@dataclass(frozen=True)
class Noise:
    """The pooled relative spread (coefficient of variation) of repeated measurements."""

    cv: float
    runs: int
    configurations: int

    @property
    def df(self) -> int:
        return self.runs - self.configurations

    def describe(self) -> str:
        return (
            f"noise {self.cv * 100:.1f}% (spread of {self.runs} runs of "
            f"{self.configurations} configuration{'s' if self.configurations > 1 else ''})"
        )


def noise(records: Sequence[TrialRecord], kind: ObjectiveKind = "throughput") -> Noise | None:
    """The study's measured noise, or None when no configuration was measured twice."""
    found = [g for g in groups(records, kind) if g.n > 1]
    if not found:
        return None
    squares = 0.0
    for g in found:
        mean = g.mean(kind)
        squares += sum((_figure(r, kind) / mean - 1.0) ** 2 for r in g.records)
    runs = sum(g.n for g in found)
    return Noise(math.sqrt(squares / (runs - len(found))), runs, len(found))


@dataclass(frozen=True)
class Answer:
    """The best configuration against the baseline and the runner-up, with how sure it is."""

    kind: ObjectiveKind
    best: Group
    baseline: Group | None
    runner_up: Group | None
    noise: Noise | None
    #: Gain over the baseline in percent (better is a plus), and its 95% interval.
    gain_pct: float | None
    low_pct: float | None
    high_pct: float | None
    #: Configurations within the noise of the best (the best not included).
    tied: tuple[Group, ...]

    @property
    def beats_runner_up(self) -> bool | None:
        if self.runner_up is None or self.noise is None:
            return None
        return not any(g.key == self.runner_up.key for g in self.tied)

    def lines(self) -> list[str]:
        """The answer in words, a line each."""
        what = "p95 latency" if self.kind == "latency" else "output tok/s"
        best = self.best.representative
        runs = f"{self.best.n} run{'s' if self.best.n > 1 else ''}"
        out = []
        if any(r.client_limited for r in self.best.records):
            out.append(
                "the best's figure was limited by the load generator (GuideLLM could not keep "
                "its streams in flight): its throughput is a lower bound, the server may be "
                "faster still; use fewer streams, a lower rate or a bigger client machine to "
                "measure it whole"
            )
        if self.baseline is not None and self.best.key == self.baseline.key:
            out.append(f"the baseline (vLLM defaults) measured best ({runs})")
        elif self.gain_pct is None or self.baseline is None:
            out.append(f"best: trial {best.number} ({runs}); no baseline to compare with")
        elif self.low_pct is None or self.high_pct is None:
            out.append(f"gain over the baseline: {self.gain_pct:+.1f}% {what} ({runs})")
        else:
            out.append(
                f"gain over the baseline: {self.gain_pct:+.1f}% {what}, 95% interval "
                f"{self.low_pct:+.1f}% to {self.high_pct:+.1f}% ({runs} against "
                f"{self.baseline.n})"
            )
            if self.low_pct <= 0 <= self.high_pct:
                out.append("the baseline is within the noise: this gain may not be real")
        if self.noise is None:
            out.append(
                "noise: not measured (no configuration ran twice); set study.noise_repeats "
                "and study.remeasure_top to know how sure this is"
            )
            return out
        out.append(self.noise.describe())
        if self.runner_up is not None:
            other = self.runner_up.representative.number
            if self.beats_runner_up:
                out.append(f"it beats the runner-up (trial {other}) by more than the noise")
            else:
                numbers = ", ".join(str(g.representative.number) for g in self.tied)
                out.append(f"tied within the noise with trial(s) {numbers}: the measurement "
                           "cannot tell them apart")  # fmt: skip
        return out


def answer(kind: ObjectiveKind, records: Sequence[TrialRecord]) -> Answer | None:
    """The answer of a single-objective study (None for `pareto`, or before any measurement)."""
    if kind == "pareto":
        return None
    order = ranked(kind, groups(records, kind))
    searched = [g for g in order if not g.baseline]
    base = next((g for g in order if g.baseline), None)
    best = order[0] if order else None
    if best is None:
        return None
    measured = noise(records, kind)
    rest = [g for g in order if g.key != best.key]
    runner_up = next((g for g in rest if not g.baseline), None) if searched else None
    gain = low = high = None
    if base is not None and best.key != base.key:
        ratio = _ratio(kind, best, base)
        gain = (ratio - 1.0) * 100.0
        if measured is not None:
            half = _t975(measured.df) * measured.cv * math.sqrt(1 / best.n + 1 / base.n)
            low, high = (ratio * (1 - half) - 1.0) * 100.0, (ratio * (1 + half) - 1.0) * 100.0
    tied: tuple[Group, ...] = ()
    if measured is not None:
        t = _t975(measured.df)
        tied = tuple(
            g for g in rest
            if _ratio(kind, best, g) - 1.0 <= t * measured.cv * math.sqrt(1 / best.n + 1 / g.n)
        )  # fmt: skip
    return Answer(kind, best, base, runner_up, measured, gain, low, high, tied)


def _ratio(kind: ObjectiveKind, a: Group, b: Group) -> float:
    """How much better ``a`` is than ``b`` as a ratio (above 1: better)."""
    if kind == "latency":
        return b.mean(kind) / a.mean(kind)
    return a.mean(kind) / b.mean(kind)
