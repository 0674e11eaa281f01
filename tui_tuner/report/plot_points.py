"""Which trials the Pareto plot draws, and how: one `PlotPoint` per measured trial, its kind
(best, baseline, on the front, feasible, infeasible) and the marker each kind gets.

Markers differ by shape, not only by colour, so the plot reads the same in a 16-colour tmux,
in monochrome and in a log file; when several trials fall into one cell the kind with the
highest priority wins (best > baseline > front > feasible > infeasible).

Pure: no Textual, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from tui_tuner.core.config import ObjectiveKind
from tui_tuner.core.objectives import best_trials, pareto_front
from tui_tuner.core.trial import TrialRecord

__all__ = ["MARKERS", "Marker", "PlotPoint", "PointKind", "points_from"]

PointKind = Literal["feasible", "infeasible", "baseline", "best", "front"]


class Marker(NamedTuple):
    """How one kind of point is drawn."""

    glyph: str
    style: str
    #: The kind's name in the legend.
    label: str
    #: A higher priority wins a shared cell.
    priority: int


#: Every kind, most important first (the legend's order).
MARKERS: dict[PointKind, Marker] = {
    "best": Marker("★", "bold yellow", "best", 5),
    "baseline": Marker("B", "bold magenta", "baseline", 4),
    "front": Marker("◆", "bold green", "front", 3),
    "feasible": Marker("●", "cyan", "feasible", 2),
    "infeasible": Marker("×", "red", "infeasible", 1),
}


@dataclass(frozen=True)
class PlotPoint:
    """One measured trial as the plot sees it.

    ``kind`` picks the marker; ``on_front`` says the Pareto-front staircase passes through the
    point, which a ``baseline`` or ``best`` point can be too (``front`` points always are).
    """

    number: int
    latency_ms: float
    tok_s: float
    kind: PointKind
    on_front: bool = False


_OBJECTIVES: dict[str, ObjectiveKind] = {
    k: k for k in ("throughput", "latency", "pareto", "goodput")
}


def points_from(records: Sequence[TrialRecord], objective_kind: str) -> list[PlotPoint]:
    """The plot's points: complete, measured, non-duplicate trials, each with its kind.

    Failed configurations have no measurement and duplicates repeat another trial's figures,
    so neither is drawn. The front is that of the feasible trials, for every objective: even a
    single-objective study shows what throughput each latency bought.
    """
    measured = [
        r
        for r in records
        if r.state == "complete" and r.measurement is not None and r.duplicate_of is None
    ]
    kind = _OBJECTIVES.get(objective_kind)
    if kind is None:
        raise ValueError(f"unknown objective kind {objective_kind!r}")
    best = {r.number for r in best_trials(kind, measured)}
    front = _front_numbers([r for r in measured if r.feasible])
    best_kind: PointKind = "front" if kind == "pareto" else "best"
    out = []
    for r in measured:
        tok_s, latency = _xy(r)
        k: PointKind
        if r.number in best:
            k = best_kind
        elif r.baseline:
            k = "baseline"
        elif r.number in front:
            k = "front"
        else:
            k = "feasible" if r.feasible else "infeasible"
        out.append(PlotPoint(r.number, latency, tok_s, k, on_front=r.number in front))
    return out


def _front_numbers(records: Sequence[TrialRecord]) -> set[int]:
    """Numbers of the trials on the Pareto front, as ``pareto_front`` defines it.

    ``pareto_front`` compares every pair (a second for 1,000 trials on one front), so a sweep
    first drops the trials it proves dominated: in order of latency (then more throughput
    first), one whose throughput is below the best seen so far is beaten by that trial. The
    survivors are a superset of the front, usually a small one, and decide the answer.
    """
    ordered = sorted(records, key=lambda r: (_xy(r)[1], -_xy(r)[0]))
    candidates: list[TrialRecord] = []
    most = -math.inf
    for r in ordered:
        tok_s = _xy(r)[0]
        if tok_s >= most:
            candidates.append(r)
            most = tok_s
    return {candidates[i].number for i in pareto_front([_xy(r) for r in candidates])}


def _xy(r: TrialRecord) -> tuple[float, float]:
    """(tok/s, p95 ms): the order ``pareto_front`` expects."""
    assert r.measurement is not None
    return (r.measurement.output_tok_s, r.measurement.request_latency_p95_ms)
