"""An earlier study's best configurations, mapped onto this study's search space.

``study.warm_start`` names earlier studies (the same model on another GPU, another model on the
same GPU): their best configurations are tried first, right after the baseline, because on a
related set-up they are the likeliest places to start. An earlier configuration rarely fits the
new space exactly, so each value is mapped, and every change is said:

- a value the space allows is kept;
- a number outside a range, or between the options of a list of numbers, becomes the nearest
  value the space allows (on a log scale for a log range), "clamped";
- a value the space cannot take (an option it does not list, a flag it does not search) is
  left out, and the sampler chooses that setting as it would for any trial;
- a configuration with nothing left, or the same as one queued already, is not queued.

Pure: the studies are read, and the trials queued, by ``tui_tuner.warm_start``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tui_tuner.core.space import Param, SearchSpace, format_value, params_key

__all__ = ["TOP_PER_STUDY", "Mapped", "map_configurations", "map_onto"]

#: How many of an earlier study's best configurations are tried (best first).
TOP_PER_STUDY = 3


@dataclass(frozen=True)
class Mapped:
    """One earlier configuration as this study will try it."""

    params: dict[str, object]
    source: str
    notes: tuple[str, ...] = ()


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _distance(param: Param, a: float, b: float) -> float:
    if param.log and a > 0 and b > 0:
        return abs(math.log(a) - math.log(b))
    return abs(a - b)


def _nearest(param: Param, value: object) -> object | None:
    """The allowed value of ``param`` nearest to ``value``, or None if there is no such thing
    (a category it does not list, a number for a non-numeric parameter)."""
    x = _number(value)
    if x is None or param.kind == "bool":
        return None
    choices = param.choices()
    if choices is not None:
        numeric = [c for c in choices if _number(c) is not None]
        if not numeric:
            return None
        return min(numeric, key=lambda c: (_distance(param, float(c), x), float(c)))
    assert param.low is not None and param.high is not None
    clamped = min(max(x, param.low), param.high)
    return round(clamped) if param.kind == "int" else round(clamped, 12)


def map_onto(
    space: SearchSpace, params: Mapping[str, object]
) -> tuple[dict[str, object], list[str]]:
    """``params`` of an earlier configuration as ``space`` can run it, and what changed."""
    mapped: dict[str, object] = {}
    notes: list[str] = []
    for key, value in params.items():
        shown = f"{key}={format_value(value)}"
        param = space.get(key)
        if param is None or not param.enabled:
            notes.append(f"{shown} left out: not searched here")
        elif param.contains(value):
            mapped[key] = value
        elif (near := _nearest(param, value)) is not None:
            mapped[key] = near
            notes.append(f"{shown} clamped to {format_value(near)} ({param.describe()})")
        else:
            notes.append(f"{shown} left out: not among {param.describe()}")
    return mapped, notes


def map_configurations(
    space: SearchSpace, found: Sequence[tuple[str, Sequence[Mapping[str, object]]]]
) -> tuple[list[Mapped], list[str]]:
    """Each source's configurations (best first) mapped onto ``space``, at most
    :data:`TOP_PER_STUDY` of each, duplicates dropped; and what was not queued, and why."""
    queued: list[Mapped] = []
    notes: list[str] = []
    seen: set[str] = set()
    for source, configurations in found:
        taken = 0
        for params in configurations:
            if taken == TOP_PER_STUDY:
                break
            mapped, changes = map_onto(space, params)
            key = params_key(mapped)
            if not mapped:
                notes.append(f"{source}: a best configuration shares no setting with this space")
                continue
            taken += 1
            if key in seen:
                continue
            seen.add(key)
            queued.append(Mapped(mapped, source, tuple(changes)))
        if not configurations:
            notes.append(f"{source}: no measured configuration to start from")
    return queued, notes
