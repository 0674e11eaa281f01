"""Turning measurements into what the optimiser sees, and trials into "best" and "gain".

Objective values: output tok/s (maximise), p95 request latency in ms (minimise), or both; for
goodput, the output tok/s at the highest load that meets the SLA (0 when none does).
Constraints follow Optuna 5's convention (a value <= 0 is satisfied): one per SLA term
(``measured - limit``), ``latency_vs_baseline`` (``p95 - baseline p95``) and ``server_failed``
(1 for a configuration that made the server fail, else 0). A failed configuration is told to the
optimiser as a complete, infeasible trial with the worst values (0 tok/s, infinite latency), so
that the sampler learns to avoid its region instead of proposing its neighbours again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tui_tuner.core.confidence import groups, ranked
from tui_tuner.core.config import ObjectiveKind, ObjectiveSettings
from tui_tuner.core.measurement import Measurement
from tui_tuner.core.trial import TrialRecord

__all__ = [
    "FAILED_CONSTRAINT",
    "Gain",
    "best_trials",
    "constraint_values",
    "directions",
    "failed_constraints",
    "failed_values",
    "gain_over",
    "latency_words",
    "metric_names",
    "objective_values",
    "pareto_front",
]

FAILED_CONSTRAINT = "server_failed"
BASELINE_CONSTRAINT = "latency_vs_baseline"
#: Goodput: 0 when some load met the SLA (GuideLLM's attainment), else 1.
GOODPUT_CONSTRAINT = "sla_met_at_some_load"


Direction = Literal["maximize", "minimize"]


def directions(kind: ObjectiveKind) -> list[Direction]:
    table: dict[str, list[Direction]] = {
        "throughput": ["maximize"],
        "latency": ["minimize"],
        "pareto": ["maximize", "minimize"],
        "goodput": ["maximize"],
    }
    return table[kind]


def metric_names(kind: ObjectiveKind) -> list[str]:
    return {
        "throughput": ["output_tok_s"],
        "latency": ["request_latency_p95_ms"],
        "pareto": ["output_tok_s", "request_latency_p95_ms"],
        # Output tok/s at the highest load that meets the SLA (GuideLLM's goodput search).
        "goodput": ["output_tok_s"],
    }[kind]


def objective_values(kind: ObjectiveKind, m: Measurement) -> list[float]:
    if kind == "goodput" and (m.load_curve is None or m.load_curve.best_streams is None):
        return [0.0]  # no load met the SLA: no goodput (its constraint says infeasible)
    return [float(getattr(m, name)) for name in metric_names(kind)]


def failed_values(kind: ObjectiveKind) -> list[float]:
    """The worst value of each objective: nothing served, no answer ever."""
    return [0.0 if name == "output_tok_s" else math.inf for name in metric_names(kind)]


def constraint_values(
    objective: ObjectiveSettings, m: Measurement, baseline_p95_ms: float | None
) -> dict[str, float]:
    """Constraint values for a measured trial (<= 0 satisfied).

    ``baseline_p95_ms`` is None for the baseline itself, whose latency term is 0 by definition.
    """
    out = {term.key: float(getattr(m, term.metric)) - term.limit for term in objective.sla}
    if objective.kind == "goodput":
        # GuideLLM judged each level by SLO attainment; a search that found no level met none.
        met = m.load_curve is not None and m.load_curve.best_streams is not None
        out[GOODPUT_CONSTRAINT] = 0.0 if met else 1.0
    if objective.latency_vs_baseline:
        base = m.request_latency_p95_ms if baseline_p95_ms is None else baseline_p95_ms
        out[BASELINE_CONSTRAINT] = m.request_latency_p95_ms - base
    out[FAILED_CONSTRAINT] = 0.0
    return out


def failed_constraints(objective: ObjectiveSettings) -> dict[str, float]:
    """Every constraint violated: a failed configuration met none of them."""
    keys = [term.key for term in objective.sla]
    if objective.kind == "goodput":
        keys.append(GOODPUT_CONSTRAINT)
    if objective.latency_vs_baseline:
        keys.append(BASELINE_CONSTRAINT)
    return {**dict.fromkeys(keys, 1.0), FAILED_CONSTRAINT: 1.0}


def _dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool]) -> bool:
    better = False
    for x, y, up in zip(a, b, maximize, strict=True):
        if (x < y) if up else (x > y):
            return False
        if x != y:
            better = True
    return better


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (throughput up, latency down) points no other point dominates."""
    up = (True, False)
    return [
        i
        for i, p in enumerate(points)
        if not any(_dominates(q, p, up) for j, q in enumerate(points) if j != i)
    ]


def best_trials(kind: ObjectiveKind, trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The best feasible measured configuration (single objective) or the Pareto front (both),
    one record each.

    A configuration measured several times (the baseline's noise runs, the re-measurement at
    the end) ranks by the mean of its runs, and is shown by its run closest to that mean
    (`core.confidence`). Duplicates repeat another trial's figures, so they are left out; so
    are measurements taken while the server stalled (``stalled``): the figure is the freeze's.
    """
    found = groups(trials, kind)
    if not found:
        return []
    if kind != "pareto":
        return [ranked(kind, found)[0].representative]
    points = [(g.mean("throughput"), g.mean("latency")) for g in found]
    front = [found[i].representative for i in pareto_front(points)]
    return sorted(front, key=lambda t: -t.measurement.output_tok_s)  # type: ignore[union-attr]


@dataclass(frozen=True)
class Gain:
    """Percent change against the baseline: more throughput is better, more latency is worse."""

    output_tok_s_pct: float
    request_latency_p95_pct: float

    def describe(self) -> str:
        return f"{self.output_tok_s_pct:+.1f}% output tok/s, p95 latency {self.p95_words()}"

    def p95_words(self) -> str:
        """The p95 latency's change with better always reading as better: ``12.0% better``,
        ``2.3% worse`` (a plain ``+2.3%`` read as a gain while latency grew)."""
        return latency_words(self.request_latency_p95_pct)


def latency_words(pct: float) -> str:
    """A latency's percent change in words: lower is better."""
    if round(pct, 1) == 0:
        return "±0.0%"
    return f"{abs(pct):.1f}% {'better' if pct < 0 else 'worse'}"


def gain_over(baseline: Measurement, m: Measurement) -> Gain | None:
    """Percent change of throughput and p95 latency against the baseline (None if undefined)."""
    if baseline.output_tok_s <= 0 or baseline.request_latency_p95_ms <= 0:
        return None
    return Gain(
        output_tok_s_pct=(m.output_tok_s / baseline.output_tok_s - 1.0) * 100.0,
        request_latency_p95_pct=(m.request_latency_p95_ms / baseline.request_latency_p95_ms - 1.0)
        * 100.0,
    )
