"""``workload.warmup_s: auto``: the measured window starts where the throughput has settled.

GuideLLM 0.8.1 cannot end a warm-up on a condition: its warm-up (``TransientPhaseConfig``,
``schemas/benchmark/transient.py``) is a duration or a request count, fixed before the run. But
its report keeps every request's timings and token counts (``sample_size=0`` strips only the
text) and computes its figures from the requests inside ``[measure_start, measure_end]``
(``benchmark/schemas/metrics.py``). So for ``auto`` the tuner runs GuideLLM without a warm-up
for ``warmup_s (the bound) + duration_s``, finds where the output throughput settled, and
computes the figures itself, from GuideLLM's per-request data, over the rest of the run.

The settle point is the truncation that MSER-5 picks (White, 1997; the marginal standard error
rule used to cut the transient of a simulation's output): the series of output tokens per time
bin, in batches of five bins, is cut where the mean of what is left has the smallest standard
error, searched no later than the bound and never past the middle of the run. A ramp-up (the
first requests of every stream prefill together, then decode together) lowers early bins and is
cut; a steady run is cut at 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tui_tuner.adapters.guidellm.report import longest_stall, parse_guidellm_report
from tui_tuner.core.config import WorkloadSettings
from tui_tuner.core.measurement import Measurement

__all__ = [
    "SETTLE_WARNING",
    "RequestTimes",
    "mser_cut",
    "read_measurement",
    "settle_point",
    "settled_measurement",
]

#: The code of the warning a settled measurement carries (``code: message``).
SETTLE_WARNING = "settled_warmup"
_BATCH = 5
_BINS = 100
_MIN_REQUESTS = 8


@dataclass(frozen=True)
class RequestTimes:
    """One request as GuideLLM recorded it (seconds since the epoch; latencies as reported)."""

    status: str
    start: float
    end: float | None
    first_token: float | None
    prompt_tokens: float
    output_tokens: float
    latency_s: float | None
    ttft_ms: float | None
    itl_ms: float | None
    tpot_ms: float | None


def read_measurement(path: Path, workload: WorkloadSettings) -> Measurement:
    """The trial's measurement from GuideLLM's report: GuideLLM's figures, or with
    ``warmup_s: auto`` those after the settle point. Raises what the report parser raises."""
    measured = parse_guidellm_report(path)
    if workload.warmup_max_s is None:
        return measured
    return settled_measurement(path, workload.warmup_max_s, measured)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def read_requests(bench: Mapping[str, Any]) -> list[RequestTimes]:
    out = []
    groups = bench.get("requests")
    for status in ("successful", "errored", "incomplete"):
        items = groups.get(status) if isinstance(groups, Mapping) else None
        for item in items if isinstance(items, list) else ():
            if not isinstance(item, Mapping):
                continue
            info = item.get("info")
            timings = info.get("timings") if isinstance(info, Mapping) else None
            timings = timings if isinstance(timings, Mapping) else {}
            start = _number(item.get("request_start_time")) or _number(timings.get("request_start"))
            end = _number(item.get("request_end_time")) or _number(timings.get("request_end"))
            if start is None:
                continue
            out.append(
                RequestTimes(
                    status=status,
                    start=start,
                    end=end,
                    first_token=_number(timings.get("first_token_iteration")),
                    prompt_tokens=_number(item.get("prompt_tokens")) or 0.0,
                    output_tokens=_number(item.get("output_tokens")) or 0.0,
                    latency_s=_number(item.get("request_latency")),
                    ttft_ms=_number(item.get("time_to_first_token_ms")),
                    itl_ms=_number(item.get("inter_token_latency_ms")),
                    tpot_ms=_number(item.get("time_per_output_token_ms")),
                )
            )
    return out


def _overlap(a: float, b: float, lo: float, hi: float) -> float:
    return max(0.0, min(b, hi) - max(a, lo))


def _tokens_in(r: RequestTimes, lo: float, hi: float, finish: float) -> float:
    """The request's output tokens generated within [lo, hi), spread evenly from its first token
    to its end (a request still running at ``finish`` counts what it had by then)."""
    if r.first_token is None or r.output_tokens <= 0:
        return 0.0
    end = r.end if r.end is not None else finish
    if end <= r.first_token:
        return r.output_tokens if lo <= r.first_token < hi else 0.0
    return r.output_tokens * _overlap(r.first_token, end, lo, hi) / (end - r.first_token)


def mser_cut(series: Sequence[float], latest: int) -> int:
    """MSER on ``series``: the cut d in [0, latest] minimising Var(series[d:]) / (n - d)."""
    n = len(series)
    best, best_d = math.inf, 0
    for d in range(min(latest, n // 2) + 1):
        rest = series[d:]
        mean = sum(rest) / len(rest)
        score = sum((x - mean) ** 2 for x in rest) / len(rest) ** 2
        if score < best - 1e-12:
            best, best_d = score, d
    return best_d


def settle_point(
    requests: Sequence[RequestTimes], begin: float, finish: float, max_warmup_s: float
) -> float:
    """Seconds after ``begin`` at which the output throughput settled (at most the bound)."""
    span = finish - begin
    if span <= 0:
        return 0.0
    width = span / _BINS
    bins = [0.0] * _BINS
    for r in requests:
        if r.status == "errored":
            continue
        if r.first_token is None:
            continue
        end = r.end if r.end is not None else finish
        first = max(0, int((r.first_token - begin) // width))
        last = min(_BINS - 1, int((end - begin) // width))
        for i in range(first, last + 1):
            lo = begin + i * width
            bins[i] += _tokens_in(r, lo, lo + width, finish)
    batches = [sum(bins[i : i + _BATCH]) for i in range(0, _BINS, _BATCH)]
    latest = int(max_warmup_s // (width * _BATCH))
    return mser_cut(batches, latest) * width * _BATCH


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * q / 100.0
    low = math.floor(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def settled_measurement(path: Path, max_warmup_s: float, measured: Measurement) -> Measurement:
    """The figures of the report at ``path`` over the window after the settle point, computed by
    the tuner from GuideLLM's per-request data; ``measured`` (GuideLLM's own figures over the
    whole run) gives what per-request data cannot (its warnings, the stall found) and is
    returned, with a warning saying why, when the report has too few requests to tell."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if len(data["benchmarks"]) > 1:  # a search over levels (goodput): each has its own start
        note = (
            f"{SETTLE_WARNING}: not applied to a report of {len(data['benchmarks'])} load "
            "levels; GuideLLM's figures of the level read"
        )
        return replace(measured, warnings=(*measured.warnings, note))
    bench = data["benchmarks"][-1]
    requests = read_requests(bench)
    begin = _number(bench.get("start_time"))
    finish = _number(bench.get("end_time"))
    done = [r for r in requests if r.status == "successful" and r.end is not None]
    if begin is None or finish is None or len(done) < _MIN_REQUESTS:
        note = (
            f"{SETTLE_WARNING}: too few requests ({len(done)}) to find where the throughput "
            "settled; GuideLLM's figures over the whole run, warm-up included"
        )
        return replace(measured, warnings=(*measured.warnings, note))
    cut = settle_point(requests, begin, finish, max_warmup_s)
    lo = begin + cut
    window = finish - lo
    ok = [r for r in done if r.start >= lo]
    if len(ok) < _MIN_REQUESTS:  # requests longer than the window after the cut
        cut, lo, window, ok = 0.0, begin, finish - begin, done
    ended = [r for r in requests if r.end is not None and lo <= r.end <= finish]
    output = sum(_tokens_in(r, lo, finish, finish) for r in done)
    prompt = sum(r.prompt_tokens for r in done if r.first_token is not None and r.first_token >= lo)
    busy = sum(_overlap(r.start, r.end if r.end is not None else finish, lo, finish)
               for r in requests)  # fmt: skip

    def pct(field: str, q: float, scale: float = 1.0) -> float:
        values = [getattr(r, field) for r in ok if getattr(r, field) is not None]
        return _percentile(values, q) * scale

    note = (
        f"{SETTLE_WARNING}: the output throughput settled {cut:.1f} s into the run (bound "
        f"{max_warmup_s:g} s); figures computed by tui-tuner from GuideLLM's per-request data "
        f"over the {window:.1f} s after it"
    )
    return replace(
        measured,
        output_tok_s=output / window,
        total_tok_s=(output + prompt) / window,
        requests_per_s=sum(1 for r in ended if r.status == "successful") / window,
        request_latency_p50_ms=pct("latency_s", 50, 1000.0),
        request_latency_p95_ms=pct("latency_s", 95, 1000.0),
        request_latency_p99_ms=pct("latency_s", 99, 1000.0),
        ttft_p50_ms=pct("ttft_ms", 50),
        ttft_p95_ms=pct("ttft_ms", 95),
        ttft_p99_ms=pct("ttft_ms", 99),
        itl_p50_ms=pct("itl_ms", 50),
        itl_p95_ms=pct("itl_ms", 95),
        tpot_p50_ms=pct("tpot_ms", 50),
        successful_requests=len(ok),
        errored_requests=sum(1 for r in ended if r.status == "errored"),
        incomplete_requests=sum(1 for r in requests if r.status == "incomplete"),
        achieved_concurrency=busy / window,
        duration_s=window,
        warnings=(*measured.warnings, note),
        # A freeze in the warm-up (a cold server compiling new shapes) is not the window's.
        stall_s=longest_stall({**bench, "start_time": lo}),
    )
