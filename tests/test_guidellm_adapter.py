"""Tests for the GuideLLM adapter and the Measurement type.

The report and progress fixtures are real GuideLLM 0.8.1 output, captured against
``guidellm mock-server`` (see tests/fixtures/guidellm/report_concurrent.json ``_fixture_note``).
The runner is exercised with small fake executables so these tests stay fast and offline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tui_tuner.adapters.guidellm import (
    SCENARIO_NAME,
    GuidellmNotFound,
    GuidellmReportError,
    GuidellmTimeout,
    GuidellmWorkload,
    backend_scenario,
    build_guidellm_command,
    find_guidellm,
    parse_guidellm_report,
    parse_progress_line,
    remove_leftover_keys,
    run_guidellm,
)
from tui_tuner.adapters.processes import group_alive
from tui_tuner.core.measurement import Measurement, client_limited

FIXTURES = Path(__file__).parent / "fixtures" / "guidellm"
REPORT = FIXTURES / "report_concurrent.json"
PROGRESS_LOG = FIXTURES / "progress.log"


def _workload(**kw: Any) -> GuidellmWorkload:
    base: dict[str, Any] = {"prompt_tokens": 64, "output_tokens": 32, "streams": 4}
    base.update(kw)
    return GuidellmWorkload(**base)


def _cmd(workload: GuidellmWorkload, **kw: Any) -> list[str]:
    args: dict[str, Any] = {
        "executable": "/opt/gl/bin/guidellm",
        "target": "http://127.0.0.1:8000",
        "model": "/models/tiny",
        "tokenizer": Path("/models/tiny"),
        "workload": workload,
        "report_path": Path("/tmp/out/report.json"),
    }
    args.update(kw)
    return build_guidellm_command(**args)


def _opt(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, arg in enumerate(cmd) if arg == flag]


# --- command building ------------------------------------------------------------------------


def test_concurrent_command_is_exact_argument_list() -> None:
    w = _workload(max_duration_s=60.0, warmup=0.1, cooldown=0.1, max_errors=20, seed=7)
    assert _cmd(w) == [
        "/opt/gl/bin/guidellm",
        "run",
        "--backend",
        "kind=openai_http,target=http://127.0.0.1:8000,model=/models/tiny,"
        "request_format=/v1/completions",
        "--profile",
        "kind=concurrent,streams=4,warmup=0.1,cooldown=0.1",
        "--constraint",
        "kind=max_duration,seconds=60",
        "--constraint",
        "kind=max_errors,count=20",
        "--data",
        "kind=synthetic_text,prompt_tokens=64,output_tokens=32",
        "--tokenizer",
        "kind=huggingface_auto,model=/models/tiny",
        "--seed",
        "kind=static,value=7",
        "--metrics",
        "kind=generative,sample_size=0",
        "--output",
        "kind=json,path=/tmp/out/report.json",
        "--disable-console-interactive",
    ]


@pytest.mark.parametrize(
    ("kw", "profile"),
    [
        ({"profile": "constant", "streams": None, "rate": 2.5}, "kind=constant,rate=2.5"),
        (
            {"profile": "poisson", "streams": None, "rate": 8.0, "max_concurrency": 16},
            "kind=poisson,rate=8,max_concurrency=16",
        ),
        ({"profile": "throughput", "streams": None}, "kind=throughput"),
        (
            {"profile": "throughput", "streams": None, "max_concurrency": 64},
            "kind=throughput,max_concurrency=64",
        ),
        ({"profile": "synchronous", "streams": None}, "kind=synchronous"),
        ({"streams": 32}, "kind=concurrent,streams=32"),
    ],
)
def test_each_profile_kind(kw: dict[str, Any], profile: str) -> None:
    cmd = _cmd(_workload(warmup=0.0, cooldown=5, **kw))
    assert _opt(cmd, "--profile") == [f"{profile},warmup=0,cooldown=5"]


def test_optional_parts() -> None:
    w = _workload(
        max_errors=None,
        max_requests=500,
        prompt_tokens_stdev=8,
        output_tokens_stdev=4,
        prefix_tokens=128,
        prefix_count=2,
        request_format="/v1/chat/completions",
        rate=None,
    )
    cmd = _cmd(w, tokenizer=None)
    assert "--tokenizer" not in cmd and "--seed" not in cmd
    assert _opt(cmd, "--constraint") == [
        "kind=max_duration,seconds=60",
        "kind=max_requests,count=500",
    ]
    assert _opt(cmd, "--data") == [
        "kind=synthetic_text,prompt_tokens=64,prompt_tokens_stdev=8,output_tokens=32,"
        "output_tokens_stdev=4,prefix_tokens=128,prefix_count=2"
    ]
    assert "request_format=/v1/chat/completions" in _opt(cmd, "--backend")[0]


def test_small_floats_are_not_written_in_exponent_form() -> None:
    # PyYAML 1.1 (GuideLLM's parser) reads "1e-05" as a string.
    cmd = _cmd(_workload(profile="constant", streams=None, rate=1e-05))
    assert _opt(cmd, "--profile")[0].startswith("kind=constant,rate=0.00001,")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "1234"),
        ("model", "yes"),
        ("target", "http://host:8000/v1 #x"),
        ("report_path", Path("/tmp/my reports/a: b.json")),
    ],
)
def test_values_guidellm_would_misread_are_passed_as_json(field: str, value: Any) -> None:
    cmd = _cmd(_workload(), **{field: value})
    flag = "--output" if field == "report_path" else "--backend"
    parsed = json.loads(_opt(cmd, flag)[0])
    assert parsed[field.replace("report_", "")] == str(value)


def test_an_api_key_goes_in_the_scenario_file_never_in_the_arguments() -> None:
    w = _workload()
    for key in ("sk-plain-key", 'sk-with,comma:"quote"'):
        scenario = json.loads(backend_scenario("http://127.0.0.1:8000", "/models/tiny", w, key))
        assert scenario == {
            "spec": {
                "backend": {
                    "kind": "openai_http",
                    "target": "http://127.0.0.1:8000",
                    "model": "/models/tiny",
                    "request_format": "/v1/completions",
                    "api_key": key,
                }
            }
        }
    cmd = _cmd(w, scenario_path=Path("/tmp/out/guidellm-backend.json"))
    assert _opt(cmd, "--scenario") == ["/tmp/out/guidellm-backend.json"]
    assert "--backend" not in cmd
    without = _cmd(w)
    assert [a for a in cmd if a not in ("--scenario", "/tmp/out/guidellm-backend.json")] == [
        a for a in without if a != "--backend" and "target=" not in a
    ]


def test_leftover_key_files_are_removed_and_nothing_else(tmp_path: Path) -> None:
    kept = [tmp_path / "trials" / "0001" / "report.json", tmp_path / SCENARIO_NAME]
    left = [tmp_path / "trials" / n / SCENARIO_NAME for n in ("0001", "0002")]
    for path in (*kept, *left):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}", encoding="utf-8")
    remove_leftover_keys(tmp_path)
    assert [p.exists() for p in (*kept, *left)] == [True, True, False, False]
    remove_leftover_keys(tmp_path / "no-such-study")  # nothing there: nothing to do


@pytest.mark.parametrize(
    "kw",
    [
        {"streams": None},
        {"rate": 1.0},
        {"profile": "poisson", "streams": None},
        {"profile": "poisson", "rate": 1.0},
        {"max_concurrency": 4},
        {"prompt_tokens": 0},
        {"max_duration_s": 0},
        {"warmup": -0.1},
        {"max_errors": 0},
        {"profile": "bogus", "streams": None},
    ],
)
def test_workload_rejects_inconsistent_options(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _workload(**kw)


def test_target_concurrency() -> None:
    assert _workload(streams=16).target_concurrency == 16
    assert _workload(profile="synchronous", streams=None).target_concurrency == 1
    assert _workload(profile="poisson", streams=None, rate=3.0).target_concurrency is None


@pytest.mark.slow
def test_options_parse_with_guidellms_own_parser(guidellm_exe: Path) -> None:
    """Every option string round-trips through GuideLLM's real ``parse_arguments``."""
    cmd = _cmd(
        _workload(seed=3, prefix_tokens=16, prefix_count=2),
        report_path=Path("/tmp/a b/r.json"),
    )
    values = [cmd[i + 1] for i, arg in enumerate(cmd) if arg.startswith("--") and i + 1 < len(cmd)]
    values = [v for v in values if not v.startswith("--")]
    script = (
        "import json, sys\nfrom guidellm.utils.cli import parse_arguments\n"
        "print(json.dumps([parse_arguments(None, None, v) for v in json.load(sys.stdin)]))"
    )
    out = subprocess.run(
        [str(guidellm_exe.parent / "python"), "-c", script],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    parsed = dict(zip(values, json.loads(out.stdout), strict=True))
    backend = parsed[_opt(cmd, "--backend")[0]]
    assert backend["target"] == "http://127.0.0.1:8000" and backend["model"] == "/models/tiny"
    assert parsed[_opt(cmd, "--output")[0]] == {"kind": "json", "path": "/tmp/a b/r.json"}
    assert parsed[_opt(cmd, "--profile")[0]] == {
        "kind": "concurrent",
        "streams": 4,
        "warmup": 0.1,
        "cooldown": 0.1,
    }
    assert parsed[_opt(cmd, "--data")[0]]["prefix_count"] == 2


# --- report parsing ----------------------------------------------------------------------------


def _raw_bench() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REPORT.read_text())
    bench: dict[str, Any] = data["benchmarks"][-1]
    return bench


def test_parse_real_report_matches_fixture_values() -> None:
    m = parse_guidellm_report(REPORT)
    raw = _raw_bench()["metrics"]

    def ok(name: str) -> dict[str, Any]:
        value: dict[str, Any] = raw[name]["successful"]
        return value

    assert m.output_tok_s == ok("output_tokens_per_second")["mean"]
    assert m.total_tok_s == ok("tokens_per_second")["mean"]
    assert m.requests_per_s == ok("requests_per_second")["mean"]
    for p in ("p50", "p95", "p99"):
        seconds = ok("request_latency")["percentiles"][p]
        assert getattr(m, f"request_latency_{p}_ms") == pytest.approx(seconds * 1000.0)
        assert getattr(m, f"ttft_{p}_ms") == ok("time_to_first_token_ms")["percentiles"][p]
    assert m.itl_p50_ms == ok("inter_token_latency_ms")["percentiles"]["p50"]
    assert m.itl_p95_ms == ok("inter_token_latency_ms")["percentiles"]["p95"]
    assert m.tpot_p50_ms == ok("time_per_output_token_ms")["percentiles"]["p50"]
    assert m.achieved_concurrency == raw["request_concurrency"]["total"]["mean"]
    assert m.duration_s == _raw_bench()["duration"]
    # Literal values from the captured run (mock server: TTFT 20 ms, ITL 5 ms, 16 tokens).
    assert (m.successful_requests, m.errored_requests, m.incomplete_requests) == (332, 0, 0)
    assert m.request_latency_p50_ms == pytest.approx(109.358, abs=1e-3)
    assert 20 < m.ttft_p50_ms < 40 and 4 < m.itl_p50_ms < 8
    assert m.output_tok_s == pytest.approx(549.69, abs=0.01)
    assert m.duration_s == pytest.approx(9.6, abs=1e-6)
    assert len(m.warnings) == 1 and m.warnings[0].startswith("generation_delay_ttft: mean ")
    assert m.error_rate == 0.0


def test_client_limited() -> None:
    m = parse_guidellm_report(REPORT)
    # generation_delay_ttft alone is no client limit (calibrated: docs/benchmarks.md); root_late is
    assert not client_limited(m, 4)
    assert client_limited(dataclasses.replace(m, warnings=("root_late: p95 0.3s",)), 4)
    quiet = dataclasses.replace(m, warnings=())
    assert not client_limited(quiet, 4)  # 3.79 of 4 streams
    assert client_limited(quiet, 8)  # 3.79 of 8 streams
    assert not client_limited(quiet, None)
    with pytest.raises(ValueError):
        client_limited(quiet, 0)


def test_measurement_round_trips_through_json() -> None:
    m = parse_guidellm_report(REPORT)
    again = Measurement.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again == m
    record = m.to_dict()
    del record["ttft_p95_ms"], record["duration_s"]
    with pytest.raises(ValueError, match="ttft_p95_ms, duration_s"):
        Measurement.from_dict(record)
    with pytest.raises(ValueError):
        Measurement.from_dict({**m.to_dict(), "output_tok_s": float("nan")})
    extra = Measurement.from_dict({**m.to_dict(), "added_in_v2": 1})
    assert extra == m


def test_error_rate_ignores_incomplete_requests() -> None:
    m = dataclasses.replace(
        parse_guidellm_report(REPORT),
        successful_requests=90,
        errored_requests=10,
        incomplete_requests=50,
    )
    assert m.error_rate == pytest.approx(0.1)


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    return path


def test_benchmark_index(tmp_path: Path) -> None:
    data = json.loads(REPORT.read_text())
    second = json.loads(json.dumps(data["benchmarks"][0]))
    second["metrics"]["request_totals"]["successful"] = 7
    data["benchmarks"].append(second)
    path = _write(tmp_path, data)
    assert parse_guidellm_report(path).successful_requests == 7
    assert parse_guidellm_report(path, index=0).successful_requests == 332
    with pytest.raises(GuidellmReportError, match="2 benchmark"):
        parse_guidellm_report(path, index=2)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(GuidellmReportError, match=r"nope\.json does not exist"):
        parse_guidellm_report(path)


def test_truncated_report(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    text = REPORT.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(GuidellmReportError, match=r"report\.json is not valid JSON"):
        parse_guidellm_report(path)


@pytest.mark.parametrize("content", ["", "{]", "not json", "[1, 2]", '{"benchmarks": []}'])
def test_malformed_reports(tmp_path: Path, content: str) -> None:
    path = tmp_path / "report.json"
    path.write_text(content)
    with pytest.raises(GuidellmReportError, match=str(path)):
        parse_guidellm_report(path)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (("metrics", "request_latency"), "benchmarks[0].metrics.request_latency.successful"),
        (("metrics", "request_totals"), "benchmarks[0].metrics.request_totals"),
        (("duration",), "benchmarks[0].duration"),
        (("metrics",), "benchmarks[0].metrics"),
    ],
)
def test_missing_keys_are_named(tmp_path: Path, keys: tuple[str, ...], expected: str) -> None:
    data = json.loads(REPORT.read_text())
    target = data["benchmarks"][0]
    for key in keys[:-1]:
        target = target[key]
    del target[keys[-1]]
    with pytest.raises(GuidellmReportError, match=f"missing {re.escape(expected)}"):
        parse_guidellm_report(_write(tmp_path, data))


def test_non_numeric_value(tmp_path: Path) -> None:
    data = json.loads(REPORT.read_text())
    data["benchmarks"][0]["metrics"]["output_tokens_per_second"]["successful"]["mean"] = "fast"
    with pytest.raises(GuidellmReportError, match=r"output_tokens_per_second\.successful\.mean"):
        parse_guidellm_report(_write(tmp_path, data))


def test_zero_successful_requests(tmp_path: Path) -> None:
    data = json.loads(REPORT.read_text())
    data["benchmarks"][0]["metrics"]["request_totals"].update(
        {"successful": 0, "errored": 16, "incomplete": 4, "total": 20}
    )
    with pytest.raises(GuidellmReportError, match=r"zero successful requests \(errored=16"):
        parse_guidellm_report(_write(tmp_path, data))


# --- progress lines --------------------------------------------------------------------------


def test_progress_lines_from_real_log() -> None:
    lines = PROGRESS_LOG.read_text().splitlines()
    records = [p for p in map(parse_progress_line, lines) if p is not None]
    assert [r.status for r in records] == ["started", "active", "compile", "completed"]
    assert {r.benchmark_index for r in records} == {1}
    assert {r.strategy for r in records} == {"concurrent@4"}
    active = records[1]
    assert (active.elapsed_s, active.successful, active.errored, active.incomplete) == (
        10.0,
        193,
        0,
        0,
    )
    assert (active.requests_per_s, active.output_tok_s) == (32.81, 524.98)
    # The final record counts the measured window only, like the report.
    assert records[-1].successful == parse_guidellm_report(REPORT).successful_requests
    assert sum(1 for line in lines if "Benchmark " in line and "elapsed=" in line) == 4


def test_progress_line_variants() -> None:
    line = (
        "\x1b[32m26-11-22 07:52:53\x1b[0m|\x1b[1mINFO    \x1b[0m |guidellm.benchmark.progress:"
        "_log_update:420 - \x1b[1mBenchmark 2 (poisson@2.50): cooldown | elapsed=31.5s | "
        "successful=12 errored=3 incomplete=1 | requests/s=inf output_tokens/s=1234.50\x1b[0m"
    )
    p = parse_progress_line(line)
    assert p is not None
    assert (p.benchmark_index, p.strategy, p.status) == (2, "poisson@2.50", "cooldown")
    assert (p.successful, p.errored, p.incomplete) == (12, 3, 1)
    assert p.requests_per_s == float("inf") and p.output_tok_s == 1234.5
    assert parse_progress_line("Starting benchmark for strategy: concurrent@4") is None
    assert parse_progress_line("") is None


# --- runner ----------------------------------------------------------------------------------


def _script(tmp_path: Path, body: str, name: str = "fake_guidellm") -> Path:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\nimport os, signal, subprocess, sys, time\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def _gone(pids: list[int], pgid: int, within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and _not_zombie(p)]
        if not alive and not group_alive(pgid):
            return True
        await asyncio.sleep(0.05)
    return False


def _not_zombie(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rfind(")") + 2] != "Z"


async def test_runner_streams_lines_and_returns_exit_code(tmp_path: Path) -> None:
    exe = _script(
        tmp_path,
        "print('one', flush=True)\n"
        "print('two to stderr', file=sys.stderr, flush=True)\n"
        "print('x' * 100000)\n"
        "print('env=' + os.environ.get('TUI_TEST_VAR', '-'))\n"
        "sys.stdout.write('no newline')\n"
        "sys.exit(3)",
    )
    seen: list[str] = []
    log = tmp_path / "logs" / "guidellm.log"
    rc = await run_guidellm(
        [str(exe), "run"],
        env={"TUI_TEST_VAR": "hello"},
        on_line=seen.append,
        log_path=log,
        timeout_s=20,
    )
    assert rc == 3
    assert seen == ["one", "two to stderr", "x" * 100000, "env=hello", "no newline"]
    assert log.read_text().splitlines() == seen


async def test_runner_kills_group_on_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    exe = _script(
        tmp_path,
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"  # forces the SIGKILL escalation
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "print('started', flush=True)\n"
        "time.sleep(60)",
    )
    start = time.monotonic()
    with pytest.raises(GuidellmTimeout) as info:
        await run_guidellm(
            [str(exe)],
            env=None,
            on_line=lambda _: None,
            log_path=tmp_path / "log",
            timeout_s=1.0,
            term_grace_s=0.3,
        )
    assert time.monotonic() - start < 8
    assert info.value.timeout_s == 1.0
    leader, child = map(int, pids.read_text().split())
    assert await _gone([leader, child], leader)
    assert "started" in (tmp_path / "log").read_text()


async def test_runner_kills_group_when_cancelled(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    exe = _script(
        tmp_path,
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "print('started', flush=True)\n"
        "time.sleep(60)",
    )
    started = asyncio.Event()
    task = asyncio.ensure_future(
        run_guidellm(
            [str(exe)],
            env=None,
            on_line=lambda _: started.set(),
            log_path=tmp_path / "log",
            timeout_s=60,
            term_grace_s=2.0,
        )
    )
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    leader, child = map(int, pids.read_text().split())
    assert await _gone([leader, child], leader)


async def test_runner_reaps_workers_left_after_leader_exits(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    exe = _script(
        tmp_path,
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "print('done', flush=True)",
    )
    start = time.monotonic()
    rc = await run_guidellm(
        [str(exe)],
        env=None,
        on_line=lambda _: None,
        log_path=tmp_path / "log",
        timeout_s=30,
        term_grace_s=1.0,
        drain_s=0.3,
    )
    assert rc == 0 and time.monotonic() - start < 5
    leader, child = map(int, pids.read_text().split())
    assert await _gone([child], leader)


async def test_runner_kills_group_when_on_line_fails(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    exe = _script(
        tmp_path,
        f"open({str(pids)!r}, 'w').write(str(os.getpid()))\n"
        "print('boom', flush=True)\n"
        "time.sleep(60)",
    )

    def on_line(line: str) -> None:
        raise RuntimeError(f"handler failed on {line}")

    with pytest.raises(RuntimeError, match="handler failed on boom"):
        await run_guidellm(
            [str(exe)], env=None, on_line=on_line, log_path=tmp_path / "log", timeout_s=30
        )
    leader = int(pids.read_text())
    assert await _gone([leader], leader)


async def test_runner_missing_executable(tmp_path: Path) -> None:
    missing = tmp_path / "venv" / "bin" / "guidellm"
    with pytest.raises(GuidellmNotFound) as info:
        await run_guidellm(
            [str(missing), "run"],
            env=None,
            on_line=lambda _: None,
            log_path=tmp_path / "log",
            timeout_s=5,
        )
    message = str(info.value)
    assert str(missing) in message
    assert "pip install guidellm==0.8.1 torch==2.13.0" in message
    assert isinstance(info.value, FileNotFoundError)


async def test_runner_not_executable_or_not_on_path(tmp_path: Path) -> None:
    plain = tmp_path / "guidellm"
    plain.write_text("not a program")
    with pytest.raises(GuidellmNotFound, match="not executable"):
        await run_guidellm(
            [str(plain)], env=None, on_line=lambda _: None, log_path=tmp_path / "a", timeout_s=5
        )
    with pytest.raises(GuidellmNotFound, match="was not found"):
        await run_guidellm(
            ["no-such-guidellm-binary-xyz"],
            env={"PATH": str(tmp_path)},
            on_line=lambda _: None,
            log_path=tmp_path / "b",
            timeout_s=5,
        )


def test_find_guidellm_honours_an_explicit_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exe = tmp_path / "guidellm"
    exe.write_text("#!/bin/sh\n")
    with pytest.raises(GuidellmNotFound, match="is not executable"):
        find_guidellm(str(exe))  # said before any server starts, not by the first trial
    exe.chmod(0o755)
    monkeypatch.setenv("TUI_TUNER_GUIDELLM", str(exe))
    assert find_guidellm(None) == exe
    assert find_guidellm(str(exe)) == exe
    with pytest.raises(GuidellmNotFound, match="missing"):
        find_guidellm(str(tmp_path / "missing"))  # never silently another one
    monkeypatch.setenv("TUI_TUNER_GUIDELLM", str(tmp_path / "gone"))
    with pytest.raises(GuidellmNotFound, match="make guidellm"):
        find_guidellm(None)
