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

from tui_tuner.core.load_curve import LoadCurve, LoadLevel
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


def parse_guidellm_report(path: Path, index: int | None = None) -> Measurement:
    """Read benchmark ``index`` of a GuideLLM 0.8.1 JSON report. By default the last one, or,
    for a goodput search (its trace in ``conclusions``), the level it found (the lowest probed
    when none met the objectives), with the whole load curve (:func:`load_curve`).

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
    curve = load_curve(data, path) if index is None else None
    if index is None:
        index = -1 if curve is None else _level_index(benchmarks, curve, path)
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
        load_curve=curve,
    )


def _streams(bench: Any) -> int | None:
    strategy = bench.get("config", {}).get("strategy") if isinstance(bench, Mapping) else None
    value = strategy.get("streams") if isinstance(strategy, Mapping) else None
    return value if isinstance(value, int) else None


def _level_index(benchmarks: list[Any], curve: LoadCurve, path: Path) -> int:
    """The benchmark of the level a goodput search found (its last probe at that
    concurrency), or of the lowest level probed when none met the objectives."""
    want = curve.best_streams
    if want is None:
        want = min(lv.streams for lv in curve.levels)
    found = [i for i, b in enumerate(benchmarks) if _streams(b) == want]
    if not found:
        raise GuidellmReportError(f"GuideLLM report {path}: no benchmark at {want} streams")
    return found[-1]


def load_curve(data: Mapping[str, Any], path: Path) -> LoadCurve | None:
    """The goodput search of a report (GuideLLM's ``GoodputSearchState`` in ``conclusions``,
    ``benchmark/profiles/goodput.py``), each probe joined with its benchmark's figures; None
    when the report holds no such search. The objectives and target are read back from the
    benchmarks' own config, so the curve says what it was judged against."""
    found = [c for c in data.get("conclusions") or () if isinstance(c, Mapping) and "probes" in c]
    if not found:
        return None
    trace = found[-1]
    benchmarks = data["benchmarks"]
    by_streams = {_streams(b): b for b in benchmarks if isinstance(b, Mapping)}
    levels = []
    for n, probe in enumerate(trace.get("probes") or ()):
        bench = by_streams.get(probe.get("streams"))
        if bench is None:
            raise GuidellmReportError(f"GuideLLM report {path}: probe {n} has no benchmark")
        m, pre = bench.get("metrics"), f"benchmarks[streams={probe.get('streams')}].metrics"

        def ok(metric: str, stat: str, m: Any = m, pre: str = pre) -> float:
            return _num(m, f"{metric}.successful.{stat}", path, pre)

        goodput = probe.get("goodput")
        levels.append(LoadLevel(
            streams=int(probe["streams"]),
            attainment=float(probe["attainment"]),
            passed=bool(probe["passed"]),
            resolved=bool(probe.get("resolved", True)),
            aborted=bool(probe.get("aborted", False)),
            goodput_rps=float(goodput) if isinstance(goodput, (int, float)) else 0.0,
            requests_per_s=ok("requests_per_second", "mean"),
            output_tok_s=ok("output_tokens_per_second", "mean"),
            request_latency_p95_ms=ok("request_latency", "percentiles.p95") * 1000.0,
            ttft_p95_ms=ok("time_to_first_token_ms", "percentiles.p95"),
            itl_p95_ms=ok("inter_token_latency_ms", "percentiles.p95"),
        ))  # fmt: skip
    profile = _profile_args(data)
    slo = _slo(data)
    return LoadCurve(
        levels=tuple(levels),
        best_streams=trace.get("best_passing_streams"),
        lowest_failing_streams=trace.get("lowest_failing_streams"),
        stop_reason=str(trace.get("stop_reason") or "unknown"),
        target_attainment=float(profile.get("target_attainment", 0.95)),
        slo=slo,
    )


def _profile_args(data: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = data.get("config", {}).get("spec") if isinstance(data.get("config"), Mapping) else None
    profile = spec.get("profile") if isinstance(spec, Mapping) else None
    return profile if isinstance(profile, Mapping) else {}


def _slo(data: Mapping[str, Any]) -> dict[str, float]:
    spec = data.get("config", {}).get("spec") if isinstance(data.get("config"), Mapping) else None
    metrics = spec.get("metrics") if isinstance(spec, Mapping) else None
    slo = metrics.get("slo") if isinstance(metrics, Mapping) else None
    if not isinstance(slo, Mapping):
        return {}
    return {str(k): float(v) for k, v in slo.items() if isinstance(v, (int, float))}


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
