"""Read GuideLLM 0.8.1's JSON report into a :class:`Measurement`.

The report, not the console, is the result: the log only shows progress
(:mod:`.progress`). A report that is missing, corrupt or has no successful request raises
:class:`GuidellmReportError`, so that a failed run is never read as a measurement.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tui_tuner.core.measurement import Measurement

__all__ = ["GuidellmReportError", "parse_guidellm_report"]


class GuidellmReportError(ValueError):
    """The report is missing, unreadable or holds no usable measurement."""


def _get(obj: Any, path: str, source: Path, prefix: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, Mapping) or part not in obj or obj[part] is None:
            raise GuidellmReportError(f"GuideLLM report {source}: missing {prefix}.{path}")
        obj = obj[part]
    return obj


def _num(obj: Any, path: str, source: Path, prefix: str) -> float:
    value = _get(obj, path, source, prefix)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GuidellmReportError(
            f"GuideLLM report {source}: {prefix}.{path} is not a finite number ({value!r})"
        )
    return float(value)


def _warnings(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list):
        return ()
    out = []
    for item in raw:
        if isinstance(item, Mapping):
            code, message = item.get("code", "warning"), item.get("message", "")
            out.append(f"{code}: {message}".strip())
        else:
            out.append(str(item))
    return tuple(out)


def parse_guidellm_report(path: Path, index: int = -1) -> Measurement:
    """Read benchmark ``index`` (default: the last) of a GuideLLM 0.8.1 JSON report.

    Request latency is reported in seconds and converted to ms; TTFT/ITL/TPOT are already ms.
    A report with no successful request is an error, not a zero measurement: it means the
    server failed, and the optimiser must not read it as "infinitely slow but valid".
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GuidellmReportError(f"GuideLLM report {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GuidellmReportError(f"GuideLLM report {path} cannot be read: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GuidellmReportError(
            f"GuideLLM report {path} is not valid JSON (truncated or corrupt?): {exc}"
        ) from exc
    benchmarks = data.get("benchmarks") if isinstance(data, Mapping) else None
    if not isinstance(benchmarks, list) or not benchmarks:
        raise GuidellmReportError(f"GuideLLM report {path} has no benchmarks")
    if not -len(benchmarks) <= index < len(benchmarks):
        raise GuidellmReportError(
            f"GuideLLM report {path} has {len(benchmarks)} benchmark(s); no index {index}"
        )
    i = index % len(benchmarks)
    bench, pre = benchmarks[i], f"benchmarks[{i}]"
    totals = _get(bench, "metrics.request_totals", path, pre)
    counts = {
        k: int(_num(totals, k, path, f"{pre}.metrics.request_totals"))
        for k in ("successful", "errored", "incomplete")
    }
    if counts["successful"] == 0:
        raise GuidellmReportError(
            f"GuideLLM report {path}: {pre} recorded zero successful requests "
            f"(errored={counts['errored']}, incomplete={counts['incomplete']})"
        )
    m = _get(bench, "metrics", path, pre)
    mp = f"{pre}.metrics"

    def ok(metric: str, stat: str) -> float:
        return _num(m, f"{metric}.successful.{stat}", path, mp)

    return Measurement(
        output_tok_s=ok("output_tokens_per_second", "mean"),
        total_tok_s=ok("tokens_per_second", "mean"),
        requests_per_s=ok("requests_per_second", "mean"),
        request_latency_p50_ms=ok("request_latency", "percentiles.p50") * 1000.0,
        request_latency_p95_ms=ok("request_latency", "percentiles.p95") * 1000.0,
        request_latency_p99_ms=ok("request_latency", "percentiles.p99") * 1000.0,
        ttft_p50_ms=ok("time_to_first_token_ms", "percentiles.p50"),
        ttft_p95_ms=ok("time_to_first_token_ms", "percentiles.p95"),
        ttft_p99_ms=ok("time_to_first_token_ms", "percentiles.p99"),
        itl_p50_ms=ok("inter_token_latency_ms", "percentiles.p50"),
        itl_p95_ms=ok("inter_token_latency_ms", "percentiles.p95"),
        tpot_p50_ms=ok("time_per_output_token_ms", "percentiles.p50"),
        successful_requests=counts["successful"],
        errored_requests=counts["errored"],
        incomplete_requests=counts["incomplete"],
        achieved_concurrency=_num(m, "request_concurrency.total.mean", path, mp),
        duration_s=_num(bench, "duration", path, pre),
        warnings=_warnings(bench.get("warnings")),
        stall_s=longest_stall(bench),
    )


def _request_times(bench: Mapping[str, Any]) -> list[tuple[float, float, list[float]]]:
    """(start, end, token event times) of every request the report kept timings for."""
    out = []
    groups = bench.get("requests")
    for group in ("successful", "errored", "incomplete"):
        items = groups.get(group) if isinstance(groups, Mapping) else None
        for item in items if isinstance(items, list) else ():
            info = item.get("info") if isinstance(item, Mapping) else None
            timings = info.get("timings") if isinstance(info, Mapping) else None
            if not isinstance(timings, Mapping):
                continue
            start, end = timings.get("request_start"), timings.get("request_end")
            if not isinstance(start, (int, float)):
                continue
            events = [
                float(t)
                for t in (
                    timings.get("first_token_iteration"),
                    timings.get("last_token_iteration"),
                    end,
                )
                if isinstance(t, (int, float))
            ]
            stop = float(end) if isinstance(end, (int, float)) else max(events, default=start)
            out.append((float(start), stop, events))
    return out


def longest_stall(bench: Mapping[str, Any], shortest_s: float = 1.0) -> float:
    """The longest time inside the benchmark's window during which a request was in flight and
    no request got a first token, a last token or its end: a server (or client) that froze.
    GuideLLM keeps these timings for every request, even with ``sample_size: 0``. 0.0 when the
    report has none. Gaps under ``shortest_s`` are not looked at."""
    requests = _request_times(bench)
    begin, finish = bench.get("start_time"), bench.get("end_time")
    events = sorted(t for _, _, times in requests for t in times)
    if isinstance(begin, (int, float)) and isinstance(finish, (int, float)):
        events = [float(begin), *(t for t in events if begin <= t <= finish), float(finish)]
    longest = 0.0
    for a, b in itertools.pairwise(events):
        if b - a <= max(longest, shortest_s):
            continue
        # The part of the gap one request was in flight through (a request starting in it, or
        # one cut off at its end, counts for its share).
        longest = max(longest, *(min(end, b) - max(start, a) for start, end, _ in requests))
    return longest
