"""A goodput search's load curve: each load level probed on one running server, and the answer.

GuideLLM 0.8.1's goodput profile (``benchmark/profiles/goodput.py``) doubles the concurrency
until a level misses its latency objectives, then bisects between the highest passing and the
lowest failing level. A level passes by SLO attainment: the share of requests meeting every
objective at once is at least ``target_attainment``. Its report keeps one benchmark per probed
level and, in ``conclusions``, the trace (``probes``), the bounds and why it stopped; this is
that trace joined with each level's own figures, kept with the trial so that its detail can
plot latency against load and an export can say at which load the SLA holds.

The tuner's SLA terms are percentile limits (``p95_ttft_ms: 500``); GuideLLM's objectives are
per-request limits with one attainment target (``ttft_ms``, ``tpot_ms``, ``e2el_ms``).
:func:`goodput_slo` maps the first onto the second: terms at one percentile p become
objectives with target p/100. A request meets them only when it meets all of them, so a
passing level has each limited metric's p-th percentile within its limit: never looser than
the terms themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["GoodputSearch", "LoadCurve", "LoadLevel", "goodput_slo"]

#: The tuner's SLA metric (a Measurement field, without its percentile) -> GuideLLM's
#: objective (``schemas/benchmark/goodput.py``). GuideLLM compares ``tpot_ms`` against
#: inter-token latency (first token excluded), so the tuner's ITL maps there.
_OBJECTIVES = {"ttft": "ttft_ms", "request_latency": "e2el_ms", "itl": "tpot_ms"}


def goodput_slo(metrics: Sequence[tuple[str, float]]) -> tuple[dict[str, float], float]:
    """GuideLLM's objectives and attainment target for SLA terms given as (Measurement field,
    limit in ms), such as ``("ttft_p95_ms", 500.0)``. Raises ``ValueError`` with what to write
    instead when they cannot be expressed (none, mixed percentiles, a TPOT limit)."""
    if not metrics:
        raise ValueError("goodput needs at least one SLA term, such as p95_ttft_ms: 500")
    slo: dict[str, float] = {}
    percentiles: set[int] = set()
    for field, limit in metrics:
        name, _, tail = field.rpartition("_p")
        number = tail.removesuffix("_ms")
        if name == "tpot":
            raise ValueError(
                f"{field}: GuideLLM's goodput compares its time-per-token objective with the "
                "inter-token latency (first token excluded); limit p50_itl_ms instead"
            )
        if name not in _OBJECTIVES or not number.isdigit():
            raise ValueError(f"{field}: not a latency GuideLLM's goodput search can limit")
        slo[_OBJECTIVES[name]] = float(limit)
        percentiles.add(int(number))
    if len(percentiles) > 1:
        shown = ", ".join(f"p{p}" for p in sorted(percentiles))
        raise ValueError(
            f"goodput needs every SLA term at one percentile (GuideLLM's one attainment "
            f"target), got {shown}; write them all at the same one"
        )
    return slo, percentiles.pop() / 100.0


@dataclass(frozen=True)
class GoodputSearch:
    """What a goodput search asks GuideLLM for (its ``--profile kind=goodput`` fields and the
    ``slo`` of ``--metrics``). ``initial_streams``: the first level probed."""

    slo: Mapping[str, float]
    target_attainment: float
    initial_streams: int
    max_streams: int = 1024
    max_probes: int = 15


@dataclass(frozen=True)
class LoadLevel:
    """One probed level: its load, GuideLLM's verdict and the figures measured at it."""

    streams: int
    attainment: float
    passed: bool
    #: The attainment's confidence interval lies wholly on one side of the target.
    resolved: bool
    #: A constraint stopped the run during this probe: recorded, never a bound.
    aborted: bool
    #: Requests/s that met every objective (GuideLLM's ``request_goodput``).
    goodput_rps: float
    requests_per_s: float
    output_tok_s: float
    request_latency_p95_ms: float
    ttft_p95_ms: float
    itl_p95_ms: float


@dataclass(frozen=True)
class LoadCurve:
    """The levels in the order they were probed, and what the search concluded."""

    levels: tuple[LoadLevel, ...]
    #: The highest concurrency that met the objectives (None: not even the lowest probed).
    best_streams: int | None
    lowest_failing_streams: int | None
    #: GuideLLM's ``stop_reason``: converged, max_probes_exhausted, max_streams_reached,
    #: objectives_unmet_at_minimum, indeterminate_at_minimum, constraint_stopped_escalation.
    stop_reason: str
    target_attainment: float
    slo: Mapping[str, float]

    @property
    def best(self) -> LoadLevel | None:
        return next((lv for lv in self.levels if lv.streams == self.best_streams), None)

    def by_load(self) -> list[LoadLevel]:
        """The levels from the lowest load to the highest (a level probed twice: its last)."""
        return sorted({lv.streams: lv for lv in self.levels}.values(), key=lambda lv: lv.streams)

    def words(self) -> str:
        """Where the SLA holds, in one line: ``SLA holds up to 16 streams (fails at 32;
        max_probes_exhausted)``."""
        if self.best_streams is None:
            return f"SLA met at no load probed ({self.stop_reason})"
        fails = "" if self.lowest_failing_streams is None else (
            f"fails at {self.lowest_failing_streams}; "
        )  # fmt: skip
        return f"SLA holds up to {self.best_streams} streams ({fails}{self.stop_reason})"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["levels"] = [asdict(lv) for lv in self.levels]
        out["slo"] = dict(self.slo)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadCurve:
        """Rebuild from :meth:`to_dict`; a malformed record raises ``ValueError``."""
        try:
            levels = tuple(LoadLevel(**dict(lv)) for lv in data["levels"])
            best, worst = data.get("best_streams"), data.get("lowest_failing_streams")
            return cls(
                levels=levels,
                best_streams=None if best is None else int(best),
                lowest_failing_streams=None if worst is None else int(worst),
                stop_reason=str(data.get("stop_reason") or ""),
                target_attainment=float(data["target_attainment"]),
                slo={str(k): float(v) for k, v in dict(data.get("slo") or {}).items()},
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"load curve record is malformed: {err}") from err
