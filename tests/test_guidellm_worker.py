"""GuideLLM's long-lived worker: one process a study, replaced when it fails, gone with the tuner.

Most tests drive a fake driver (the same protocol as tui_tuner/adapters/guidellm/driver.py, run
by this interpreter) that can crash, hang, grow or refuse; the slow ones run the real driver
under GuideLLM 0.8.1's interpreter against the simulated server, and kill it mid-run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.conftest import FAST_PROFILE, SimProcess
from tui_tuner.adapters.guidellm import (
    GuidellmBenchmarker,
    GuidellmWorkerBenchmarker,
    guidellm_python,
    pick_benchmarker,
)
from tui_tuner.adapters.guidellm.driver import MARK
from tui_tuner.adapters.guidellm.worker import GuidellmWorker, WorkerHung
from tui_tuner.adapters.processes import group_alive
from tui_tuner.core.config import WorkloadSettings
from tui_tuner.engine.ports import BenchmarkFailed, BenchRequest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "guidellm" / "report_concurrent.json"
FAKE_CLI = ROOT / "tests" / "fakes" / "fake_guidellm.py"

# A driver that speaks the real one's protocol. Per run it prints a progress line as GuideLLM's
# logger does and copies the fixture report to the --output path, or fails as FAKE_MODES says:
# one mode a run, counted in FAKE_RUNS across worker processes, the last one repeating.
# ok; crash (exits mid-run, a child left in its group); hang (never answers, a child in its
# group); grow (200 MB during the run); leak (keeps 120 MB a run); usage (exit status 2, as a
# click usage error). FAKE_UNAVAILABLE makes it refuse at once, as without GuideLLM.
FAKE_DRIVER = textwrap.dedent(f"""
    import json, os, shutil, subprocess, sys, time
    MARK = {MARK!r}
    def say(payload):
        sys.stdout.flush()
        os.write(1, (MARK + json.dumps(payload) + "\\n").encode())
    if os.environ.get("FAKE_UNAVAILABLE"):
        say({{"unavailable": "ModuleNotFoundError: No module named 'guidellm'"}})
        sys.exit(3)
    modes = os.environ.get("FAKE_MODES", "ok").split(",")
    kept = []
    say({{"ready": True, "pid": os.getpid()}})
    for raw in sys.stdin.buffer:
        request = json.loads(raw)
        argv = request["argv"]
        with open(os.environ["FAKE_RUNS"], "a+") as runs:  # counted across worker processes
            runs.seek(0)
            n = len(runs.readlines())
            runs.write(f"{{os.getpid()}}\\n")
        mode = modes[min(n, len(modes) - 1)]
        print("fake guidellm:", " ".join(argv[:2]), flush=True)
        print("26-12-03 10:00:00|INFO     |guidellm.benchmark.progress:_log_update:420 - "
              "Benchmark 1 (concurrent@8): started | elapsed=0.0s | successful=0 errored=0 "
              "incomplete=0 | requests/s=0.00 output_tokens/s=0.0", flush=True)
        if mode in ("crash", "hang"):
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            print("child", child.pid, flush=True)
            if mode == "crash":
                print("Traceback (most recent call last):\\nRuntimeError: boom", flush=True)
                os._exit(1)
            time.sleep(600)
        if mode == "grow":
            kept.append(bytearray(200 * 2**20))
            time.sleep(3)
        if mode == "leak":
            kept.append(bytearray(120 * 2**20))
        if mode == "usage":
            print("Error: No such option: --bogus", flush=True)
            say({{"id": request["id"], "exit": 2, "error": "No such option", "seconds": 0.0}})
            continue
        spec = argv[argv.index("--output") + 1]
        out = json.loads(spec)["path"] if spec.startswith("{{") else spec.split("path=", 1)[1]
        shutil.copy({str(FIXTURE)!r}, out)
        say({{"id": request["id"], "exit": 0, "error": None, "seconds": 0.1}})
""")


@pytest.fixture
def fake_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAKE_RUNS", str(tmp_path / "runs"))
    path = tmp_path / "fake_driver.py"
    path.write_text(FAKE_DRIVER)
    return path


def _request(tmp_path: Path, n: int, timeout_s: float = 30.0) -> BenchRequest:
    run = tmp_path / f"trial-{n}"
    workload = WorkloadSettings(prompt_tokens=64, output_tokens=32, streams=8, duration_s=5)
    return BenchRequest(
        "http://127.0.0.1:9", "m", None, workload, 8, None, None,
        run / "report.json", run / "guidellm.log", timeout_s,
    )  # fmt: skip


def _bench(fake_driver: Path, **kw: object) -> GuidellmWorkerBenchmarker:
    exe = Path("/nonexistent/guidellm")  # the worker never runs the executable itself
    return GuidellmWorkerBenchmarker(exe, Path(sys.executable), driver=fake_driver, **kw)  # type: ignore[arg-type]


def _pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _children(log: Path) -> list[int]:
    return [int(x.split()[1]) for x in log.read_text().splitlines() if x.startswith("child ")]


async def test_one_worker_serves_every_run_with_the_clis_lines_and_report(
    tmp_path: Path, fake_driver: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = _bench(fake_driver)
    lines: list[str] = []
    progress: list[tuple[object, ...]] = []
    try:
        for n in range(3):
            m = await bench.run(_request(tmp_path, n), lines.append, lambda *a: progress.append(a))
            assert m.successful_requests > 0
        assert bench.worker is not None and bench.worker.starts == 1
        log = (tmp_path / "trial-2" / "guidellm.log").read_text()
        assert log.startswith("$ /nonexistent/guidellm run --backend ")  # the CLI's own line
        assert "fake guidellm: run --backend" in log  # the argv after the executable
        assert sum("fake guidellm" in x for x in lines) == 3
        assert not any(MARK in x for x in lines)  # protocol lines never reach the log
        assert [p[0] for p in progress] == ["started"] * 3
        pid = bench.worker.pid
        assert pid is not None
    finally:
        await bench.close()
    assert _pid_gone(pid) and not group_alive(pid)


async def test_a_worker_that_crashes_mid_run_fails_the_trial_and_is_replaced(
    tmp_path: Path, fake_driver: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODES", "crash,ok")
    bench = _bench(fake_driver)
    try:
        with pytest.raises(BenchmarkFailed, match="exited with code 1 before its result") as err:
            await bench.run(_request(tmp_path, 0), lambda _: None, lambda *a: None)
        assert any("RuntimeError: boom" in x for x in err.value.tail)
        (child,) = _children(tmp_path / "trial-0" / "guidellm.log")
        assert _pid_gone(child)  # what it started died with it (its process group)
        # The verdict runs the trial again: a fresh worker measures it.
        m = await bench.run(_request(tmp_path, 1), lambda _: None, lambda *a: None)
        assert m.successful_requests > 0
        assert bench.worker is not None and bench.worker.starts == 2
    finally:
        await bench.close()


async def test_a_worker_killed_between_runs_is_replaced_at_the_next_run(
    tmp_path: Path, fake_driver: Path
) -> None:
    bench = _bench(fake_driver)
    try:
        await bench.run(_request(tmp_path, 0), lambda _: None, lambda *a: None)
        assert bench.worker is not None and bench.worker.pid is not None
        first = bench.worker.pid
        os.kill(first, signal.SIGKILL)  # the OOM killer, an operator
        deadline = time.monotonic() + 10
        while bench.worker.alive and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        m = await bench.run(_request(tmp_path, 1), lambda _: None, lambda *a: None)
        assert m.successful_requests > 0
        assert bench.worker.starts == 2 and bench.worker.pid != first
    finally:
        await bench.close()


async def test_a_worker_with_no_result_by_the_deadline_is_killed_and_replaced(
    tmp_path: Path, fake_driver: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODES", "hang,ok")
    bench = _bench(fake_driver)
    try:
        started = time.monotonic()
        with pytest.raises(BenchmarkFailed, match="did not finish its run within 3 s"):
            await bench.run(_request(tmp_path, 0, timeout_s=3), lambda _: None, lambda *a: None)
        assert time.monotonic() - started < 15
        (child,) = _children(tmp_path / "trial-0" / "guidellm.log")
        assert _pid_gone(child)
        m = await bench.run(_request(tmp_path, 1), lambda _: None, lambda *a: None)
        assert m.successful_requests > 0
        assert bench.worker is not None and bench.worker.starts == 2
    finally:
        await bench.close()


async def test_a_worker_growing_past_its_bound_during_a_run_is_killed(
    tmp_path: Path, fake_driver: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODES", "grow,ok")
    bench = _bench(fake_driver, max_rss_bytes=150 * 2**20)
    try:
        with pytest.raises(BenchmarkFailed, match=r"grew to \d+ MiB during the run, past 150"):
            await bench.run(_request(tmp_path, 0), lambda _: None, lambda *a: None)
        await bench.run(_request(tmp_path, 1), lambda _: None, lambda *a: None)
        assert bench.worker is not None and bench.worker.starts == 2
    finally:
        await bench.close()


async def test_a_worker_grown_past_its_bound_between_runs_is_replaced_without_a_failure(
    tmp_path: Path, fake_driver: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODES", "leak")  # 120 MB kept per run: over 200 MB after the 2nd
    bench = _bench(fake_driver, max_rss_bytes=200 * 2**20)
    lines: list[str] = []
    try:
        for n in range(3):
            await bench.run(_request(tmp_path, n), lines.append, lambda *a: None)
        assert any("replaced for the next run" in x for x in lines)
        assert bench.worker is not None and bench.worker.starts == 2
    finally:
        await bench.close()


async def test_a_guidellm_error_fails_the_trial_and_the_next_run_gets_a_fresh_worker(
    tmp_path: Path, fake_driver: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODES", "usage,ok")
    bench = _bench(fake_driver)
    try:
        with pytest.raises(BenchmarkFailed, match="GuideLLM exited with code 2") as err:
            await bench.run(_request(tmp_path, 0), lambda _: None, lambda *a: None)
        assert "Error: No such option: --bogus" in err.value.tail
        await bench.run(_request(tmp_path, 1), lambda _: None, lambda *a: None)
        assert bench.worker is not None and bench.worker.starts == 2
    finally:
        await bench.close()


async def test_a_cancelled_run_takes_the_worker_down(
    tmp_path: Path, fake_driver: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODES", "hang")
    bench = _bench(fake_driver)
    task = asyncio.ensure_future(bench.run(_request(tmp_path, 0), lambda _: None, lambda *a: None))
    log = tmp_path / "trial-0" / "guidellm.log"
    deadline = time.monotonic() + 20
    while not (log.exists() and _children(log)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert bench.worker is not None and bench.worker.pid is not None
    pid = bench.worker.pid
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not group_alive(pid) and _pid_gone(_children(log)[0])
    await bench.close()


def _cli(tmp_path: Path) -> Path:
    """A CLI stand-in: writes the fixture report and exits 0."""
    cli = tmp_path / "guidellm"
    cli.write_text(
        textwrap.dedent(f"""\
        #!{sys.executable}
        import shutil, sys
        out = sys.argv[sys.argv.index("--output") + 1].split("path=", 1)[1]
        shutil.copy({str(FIXTURE)!r}, out)
        print("cli stand-in ran")
    """)
    )
    cli.chmod(0o755)
    return cli


async def test_an_interpreter_removed_since_the_study_started_falls_back_to_the_cli(
    tmp_path: Path,
) -> None:
    bench = GuidellmWorkerBenchmarker(_cli(tmp_path), tmp_path / "gone" / "python")
    lines: list[str] = []
    m = await bench.run(_request(tmp_path, 0), lines.append, lambda *a: None)
    assert m.successful_requests > 0 and bench.worker is None
    assert any("cannot be started" in x for x in lines) and "cli stand-in ran" in lines


async def test_an_interpreter_without_guidellm_falls_back_to_the_cli(
    tmp_path: Path, fake_driver: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_UNAVAILABLE", "1")
    bench = GuidellmWorkerBenchmarker(_cli(tmp_path), Path(sys.executable), driver=fake_driver)
    lines: list[str] = []
    try:
        for n in range(2):
            m = await bench.run(_request(tmp_path, n), lines.append, lambda *a: None)
            assert m.successful_requests > 0
        assert bench.worker is None
        assert sum("running the guidellm CLI instead" in x for x in lines) == 1
        assert sum(x == "cli stand-in ran" for x in lines) == 2
    finally:
        await bench.close()


def test_guidellms_interpreter_is_found_from_its_script(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "lib" / "python3.11" / "site-packages" / "guidellm").mkdir(parents=True)
    (venv / "lib" / "python3.11" / "site-packages" / "guidellm" / "__init__.py").touch()
    (venv / "bin").mkdir()
    python = venv / "bin" / "python3"
    python.touch()
    script = venv / "bin" / "guidellm"
    script.write_text(f"#!{python}\n# -*- coding: utf-8 -*-\nimport re\n")
    assert guidellm_python(script) == python
    script.write_text("#!/bin/sh\nexec something\n")  # no shebang python: the one beside it
    assert guidellm_python(script) == python
    # A stand-in run by an interpreter without GuideLLM: the CLI.
    assert guidellm_python(FAKE_CLI) is None
    bench, note = pick_benchmarker("worker", FAKE_CLI, None)
    assert type(bench) is GuidellmBenchmarker and note and "runs the guidellm CLI" in note
    bench, note = pick_benchmarker("cli", script, None)
    assert type(bench) is GuidellmBenchmarker and note is None
    bench, note = pick_benchmarker("worker", script, None)
    assert isinstance(bench, GuidellmWorkerBenchmarker) and note is None


TUNER = """
import asyncio, sys
from pathlib import Path
from tui_tuner.adapters.guidellm.worker import GuidellmWorker
from tui_tuner.adapters.reaper import Reaper

async def main() -> None:
    reaper = await Reaper.start(grace_s=1.0, poll_s=0.1)
    worker = GuidellmWorker(Path(sys.executable), {}, reaper, driver=Path(sys.argv[1]))
    run = asyncio.ensure_future(worker.run(["run", "--output", "kind=json,path=x"], print, 600))
    while worker.pid is None:
        await asyncio.sleep(0.05)
    print("worker", worker.pid, flush=True)
    await run

asyncio.run(main())
"""


def test_the_worker_dies_with_a_tuner_killed_by_sigkill(tmp_path: Path, fake_driver: Path) -> None:
    script = tmp_path / "tuner.py"
    script.write_text(TUNER)
    env = {**os.environ, "FAKE_MODES": "hang", "PYTHONPATH": str(ROOT)}  # FAKE_RUNS: the fixture
    tuner = subprocess.Popen(
        [sys.executable, str(script), str(fake_driver)], stdout=subprocess.PIPE, env=env
    )
    try:
        assert tuner.stdout is not None
        pids: dict[str, int] = {}
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:
            word, _, pid = tuner.stdout.readline().decode().partition(" ")
            if word in ("worker", "child"):
                pids[word] = int(pid)
        assert set(pids) == {"worker", "child"}
        tuner.kill()  # no clean-up in the tuner: only the reaper can stop them
        tuner.wait(5)
        deadline = time.monotonic() + 10
        while not all(map(_pid_gone, pids.values())) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(map(_pid_gone, pids.values())), pids
    finally:
        tuner.kill()
        tuner.wait(5)


async def test_a_worker_start_that_never_says_ready_is_a_hang(tmp_path: Path) -> None:
    silent = tmp_path / "silent.py"
    silent.write_text("import time; time.sleep(600)\n")
    worker = GuidellmWorker(Path(sys.executable), {}, driver=silent)
    with pytest.raises(WorkerHung, match="start-up"):
        await worker.run(["run"], lambda _: None, 1.0)
    assert not worker.alive


# --- the real driver, under GuideLLM 0.8.1's own interpreter ----------------------------------


def _real_request(sim: SimProcess, model: Path, tmp_path: Path, n: int) -> BenchRequest:
    run = tmp_path / f"real-{n}"
    workload = WorkloadSettings(
        prompt_tokens=64, output_tokens=32, streams=4, duration_s=4, warmup_s=1
    )
    return BenchRequest(
        sim.url, str(model), None, workload, 4, None, str(model),
        run / "report.json", run / "guidellm.log", 240,
    )  # fmt: skip


@pytest.mark.slow
async def test_the_real_worker_measures_twice_and_survives_being_killed_mid_run(
    start_sim: Callable[..., SimProcess], tiny_model: Path, guidellm_exe: Path, tmp_path: Path
) -> None:
    sim = start_sim("--max-num-seqs", "8", "--sim-profile-file", str(FAST_PROFILE),
                    model=str(tiny_model))  # fmt: skip
    bench, note = pick_benchmarker("worker", guidellm_exe, None)
    assert isinstance(bench, GuidellmWorkerBenchmarker) and note is None
    statuses: list[str] = []
    try:
        for n in range(2):
            m = await bench.run(
                _real_request(sim, tiny_model, tmp_path, n),
                lambda _: None,
                lambda status, *_: statuses.append(status),
            )
            assert m.successful_requests > 10 and m.errored_requests == 0
            assert json.loads((tmp_path / f"real-{n}" / "report.json").read_text())["benchmarks"]
        assert bench.worker is not None and bench.worker.starts == 1
        assert statuses.count("completed") == 2
        # Killed mid-run (after its load started): the trial fails, GuideLLM's spawned
        # processes go with it, and the next run gets a fresh worker that measures.
        worker_pid = bench.worker.pid
        assert worker_pid is not None

        def kill_when_loading(status: str, *_: object) -> None:
            if status == "started":
                os.kill(worker_pid, signal.SIGKILL)

        with pytest.raises(BenchmarkFailed, match="exited with code -9 before its result"):
            await bench.run(
                _real_request(sim, tiny_model, tmp_path, 2), lambda _: None, kill_when_loading
            )
        assert not group_alive(worker_pid)
        m = await bench.run(_real_request(sim, tiny_model, tmp_path, 3), lambda _: None,
                            lambda *a: None)  # fmt: skip
        assert m.successful_requests > 10
        assert bench.worker.starts == 2
    finally:
        await bench.close()


@pytest.mark.slow
def test_a_study_runs_every_trial_in_one_worker_and_leaves_none_behind(
    tmp_path: Path, tiny_model: Path, guidellm_exe: Path
) -> None:
    from tests.test_study_sim import SIM, records, tune, write_config

    body = "objective: {kind: throughput}\nsearch_space: {max_num_seqs: {options: [8]}}\n"
    config = write_config(tmp_path, tiny_model, name="w", body=body, command=SIM)
    study_dir = tmp_path / "study"
    result = tune(config, study_dir, guidellm_exe, "--trials", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    done = records(config, study_dir)
    assert [r.state for r in done] == ["complete", "complete"]
    pids = set()
    for r in done:
        log = Path(r.files["report.json"]).with_name("guidellm.log").read_text()
        pids.update(x.split("pid ")[1].rstrip(")") for x in log.splitlines() if "worker (pid" in x)
    assert len(pids) == 2 and "starting" in pids  # the first trial started it, the second reused it
    (pid,) = (int(p) for p in pids if p != "starting")
    assert _pid_gone(pid)  # stopped with the study
