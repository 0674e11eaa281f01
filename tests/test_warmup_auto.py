"""``workload.warmup_s: auto``: the measured window starts where the output throughput settled,
found in GuideLLM's per-request data, no later than the bound; a number stays allowed."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tui_tuner.adapters.guidellm.benchmarker import workload_for
from tui_tuner.adapters.guidellm.report import GuidellmReportError, parse_guidellm_report
from tui_tuner.adapters.guidellm.settle import (
    SETTLE_WARNING,
    mser_cut,
    read_measurement,
    settled_measurement,
)
from tui_tuner.core.config import WorkloadSettings
from tui_tuner.core.config_load import ConfigError, parse_config
from tui_tuner.engine.ports import BenchRequest

FIXTURE = Path(__file__).parent / "fixtures" / "guidellm" / "report_concurrent.json"
HEAD = "study: {name: w, n_trials: 2}\nserver: {model: m}\n"


def _workload(text: str) -> WorkloadSettings:
    return parse_config(HEAD + textwrap.dedent(text), Path("w.yaml")).workload


# -- configuration -------------------------------------------------------------------------------


def test_a_number_stays_a_fixed_warmup() -> None:
    w = _workload("workload: {warmup_s: 5}\n")
    assert (w.warmup_s, w.warmup_max_s, w.warmup_auto) == (5.0, None, False)
    assert not _workload("workload: {}\n").warmup_auto


def test_auto_is_bounded_by_warmup_max_s() -> None:
    w = _workload("workload: {warmup_s: auto}\n")
    assert w.warmup_auto and w.warmup_s == w.warmup_max_s == 30.0
    w = _workload("workload: {warmup_s: AUTO, warmup_max_s: 12}\n")
    assert w.warmup_s == w.warmup_max_s == 12.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("workload: {warmup_s: soon}\n", "give seconds (such as 10) or auto"),
        ("workload: {warmup_s: 5, warmup_max_s: 9}\n", "bounds warmup_s: auto only"),
        ("workload: {warmup_s: auto, warmup_max_s: 0}\n", "warmup_max_s"),
    ],
)
def test_bad_warmups_are_named(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=r"w\.yaml:3") as caught:
        parse_config(HEAD + text, Path("w.yaml"))
    assert expected in str(caught.value)


def test_guidellm_gets_no_warmup_and_the_bound_as_extra_load(tmp_path: Path) -> None:
    workload = WorkloadSettings(duration_s=20, warmup_s=15, warmup_max_s=15)
    request = BenchRequest(
        target="http://h", model="m", api_key=None, workload=workload, streams=8, rate=None,
        tokenizer=None, report_path=tmp_path / "r.json", log_path=tmp_path / "g.log",
        timeout_s=100,
    )  # fmt: skip
    level = workload_for(request)
    assert level.warmup == 0.0 and level.max_duration_s == 35.0
    fixed = workload_for(_with(request, WorkloadSettings(duration_s=20, warmup_s=15)))
    assert fixed.warmup == 15.0 and fixed.max_duration_s == 35.0


def _with(request: BenchRequest, workload: WorkloadSettings) -> BenchRequest:
    from dataclasses import replace

    return replace(request, workload=workload)


# -- the settle point ------------------------------------------------------------------------------


def test_mser_cuts_a_ramp_and_leaves_a_steady_series() -> None:
    ramp = [1.0, 3.0, 6.0, 8.0] + [10.0, 10.2, 9.8, 10.1, 9.9] * 4
    assert mser_cut(ramp, latest=10) in (3, 4)
    steady = [10.0, 10.2, 9.8, 10.1, 9.9] * 5
    assert mser_cut(steady, latest=10) == 0
    assert mser_cut(ramp, latest=1) <= 1  # never past the bound


def _request(start: float, ttft: float, decode: float, tokens: int = 32) -> dict[str, Any]:
    first, end = start + ttft, start + ttft + decode
    return {
        "request_start_time": start,
        "request_end_time": end,
        "request_latency": end - start,
        "prompt_tokens": 64,
        "output_tokens": tokens,
        "time_to_first_token_ms": ttft * 1000,
        "inter_token_latency_ms": decode / (tokens - 1) * 1000,
        "time_per_output_token_ms": (end - start) / tokens * 1000,
        "info": {"timings": {"request_start": start, "first_token_iteration": first,
                             "request_end": end}},
    }  # fmt: skip


def _report(tmp_path: Path, slow_until: float, total: float = 40.0, streams: int = 8) -> Path:
    """A concurrent run whose requests are 5x slower (a cold server) until ``slow_until``."""
    t0 = 1_000_000.0
    requests = []
    for stream in range(streams):
        t = t0 + stream * 0.01
        while True:
            slow = t - t0 < slow_until
            ttft, decode = (0.5, 2.0) if slow else (0.1, 0.4)
            if t + ttft + decode > t0 + total:
                break
            requests.append(_request(t, ttft, decode))
            t += ttft + decode
    report = json.loads(FIXTURE.read_text())
    bench = report["benchmarks"][-1]
    bench["start_time"], bench["end_time"], bench["duration"] = t0, t0 + total, total
    bench["requests"] = {"successful": requests, "errored": [], "incomplete": []}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    return path


def test_a_cold_start_is_cut_and_the_figures_are_the_steady_ones(tmp_path: Path) -> None:
    path = _report(tmp_path, slow_until=8.0)
    whole = parse_guidellm_report(path)
    settled = settled_measurement(path, 20.0, whole)
    cut = float(settled.warnings[-1].split("settled ")[1].split(" s")[0])
    assert 7.0 <= cut <= 12.0
    # Steady: 8 streams, 32 tokens every 0.5 s each = 512 tok/s; p50 latency 500 ms.
    assert settled.output_tok_s == pytest.approx(512, rel=0.05)
    assert settled.request_latency_p50_ms == pytest.approx(500, rel=0.01)
    assert settled.ttft_p95_ms == pytest.approx(100, rel=0.01)
    assert settled.achieved_concurrency == pytest.approx(8, rel=0.05)
    assert settled.duration_s == pytest.approx(40.0 - cut)
    assert settled.warnings[-1].startswith(f"{SETTLE_WARNING}: ")
    assert "computed by tui-tuner from GuideLLM's per-request data" in settled.warnings[-1]


def test_the_cut_never_passes_the_bound(tmp_path: Path) -> None:
    path = _report(tmp_path, slow_until=15.0)
    settled = settled_measurement(path, 4.0, parse_guidellm_report(path))
    cut = float(settled.warnings[-1].split("settled ")[1].split(" s")[0])
    assert cut <= 4.0


def test_a_steady_run_keeps_its_whole_window(tmp_path: Path) -> None:
    path = _report(tmp_path, slow_until=0.0)
    settled = settled_measurement(path, 20.0, parse_guidellm_report(path))
    assert "settled 0.0 s into the run" in settled.warnings[-1]
    assert settled.output_tok_s == pytest.approx(512, rel=0.05)


def test_too_few_requests_keep_guidellms_figures_and_say_so() -> None:
    whole = parse_guidellm_report(FIXTURE)  # the fixture keeps 2 successful requests' timings
    settled = settled_measurement(FIXTURE, 10.0, whole)
    assert settled.output_tok_s == whole.output_tok_s
    assert "too few requests" in settled.warnings[-1]


def test_read_measurement_is_guidellms_unless_auto(tmp_path: Path) -> None:
    path = _report(tmp_path, slow_until=8.0)
    assert read_measurement(path, WorkloadSettings()) == parse_guidellm_report(path)
    auto = read_measurement(path, WorkloadSettings(warmup_s=20, warmup_max_s=20))
    assert auto.warnings[-1].startswith(SETTLE_WARNING)


def test_a_report_without_successes_is_still_a_failure(tmp_path: Path) -> None:
    report = json.loads(FIXTURE.read_text())
    report["benchmarks"][-1]["metrics"]["request_totals"]["successful"] = 0
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    with pytest.raises(GuidellmReportError, match="zero successful"):
        read_measurement(path, WorkloadSettings(warmup_s=20, warmup_max_s=20))


def test_a_report_of_several_levels_keeps_guidellms_figures(tmp_path: Path) -> None:
    report = json.loads(FIXTURE.read_text())
    report["benchmarks"].append(report["benchmarks"][-1])
    path = tmp_path / "levels.json"
    path.write_text(json.dumps(report))
    whole = parse_guidellm_report(path)
    settled = settled_measurement(path, 10.0, whole)
    assert settled.output_tok_s == whole.output_tok_s
    assert "not applied to a report of 2 load levels" in settled.warnings[-1]


def test_a_freeze_in_the_warmup_is_not_a_stall_of_the_window(tmp_path: Path) -> None:
    """Every stream waits 3 s for its first token at the start (a cold server): GuideLLM's
    figures over the whole run see a stall; the settled window does not."""
    t0 = 1_000_000.0
    requests = []
    for stream in range(4):
        t = t0 + stream * 0.01
        first = True
        while t < t0 + 30:
            ttft = 3.0 if first else 0.1
            requests.append(_request(t, ttft, 0.4))
            t += ttft + 0.4
            first = False
    report = json.loads(FIXTURE.read_text())
    bench = report["benchmarks"][-1]
    bench["start_time"], bench["end_time"] = t0, t0 + 30
    bench["requests"] = {"successful": requests, "errored": [], "incomplete": []}
    path = tmp_path / "cold.json"
    path.write_text(json.dumps(report))
    whole = parse_guidellm_report(path)
    assert whole.stall_s > 2.5
    settled = settled_measurement(path, 10.0, whole)
    assert settled.stall_s < 1.0


def test_auto_is_refused_for_a_goodput_search() -> None:
    text = (
        HEAD + "workload: {warmup_s: auto}\nobjective: {kind: goodput, sla: {p95_ttft_ms: 500}}\n"
    )
    with pytest.raises(ConfigError, match=r"w\.yaml:3") as caught:
        parse_config(text, Path("w.yaml"))
    assert "a goodput search probes many" in str(caught.value)
