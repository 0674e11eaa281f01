"""Server-side faults, end to end: the real `tui-tuner tune --headless` against a fake server.

Each test runs a study whose first trial starts tests/fakes/fake_serve.py in one fault mode (its
--max-num-seqs value) and the quick fake GuideLLM, then checks what the tuner made of the trial,
that no process of the study is left (the tuner's descendants as seen while it ran, and anything
whose command line names the test's directory or the study's unique model name), that the
finished trials are intact. Where the fault could leave the study in a bad state (a server killed
with SIGKILL, a failed trial) `tui-tuner resume` must continue it with the next configuration;
the others end as a clean measured trial, which those two tests already cover for resume.
The log flood also checks that the tuner's memory, the server.log on disk and the event stream
stay bounded, and prints its figures (run with -s to see them). The simulated server stands in
for vLLM (fast start-up profile, time scale 4).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.conftest import FAST_PROFILE, ROOT
from tests.fakes.fake_serve import FLOOD_LINE
from tui_tuner.core.config_load import load_config
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.study_dir import saved_overrides

pytestmark = pytest.mark.timeout(240)

FAKE_SERVE = ROOT / "tests" / "fakes" / "fake_serve.py"
FAKE_GUIDELLM = ROOT / "tests" / "fakes" / "fake_guidellm.py"
MiB = 1 << 20


@dataclass
class Study:
    tmp: Path
    config: Path
    dir: Path
    events: Path
    marker: str

    def records(self) -> list[TrialRecord]:
        cfg = load_config(self.config, saved_overrides(self.dir))
        return StudyStore(cfg, default_storage_url(self.dir)).records()

    def server_log(self, number: int) -> Path:
        return self.dir / "trials" / f"{number:04d}" / "server.log"


def make_study(
    tmp_path: Path,
    model: Path,
    mode: int,
    *,
    stop_grace_s: float = 30.0,
    env: dict[str, str] | None = None,
) -> Study:
    """A throughput study over max_num_seqs in (16, mode), no baseline: the grid (seed 0) runs
    the fault first, then the simulated server (16). Short load: 1 s, no warmup."""
    marker = f"srvfault-{mode}-{uuid.uuid4().hex[:10]}"  # the served model name: in every argv
    text = f"""
study: {{name: fault{mode}, seed: 0, sampler: grid, baseline: false, remeasure_top: 0}}
server:
  command: {json.dumps([sys.executable, str(FAKE_SERVE)])}
  model: {model}
  flags: {{served_model_name: {marker}}}
  extra_args: ["--sim-profile-file", "{FAST_PROFILE}", "--sim-time-scale", "4"]
  startup_timeout_s: 60
  stop_grace_s: {stop_grace_s}
  env: {json.dumps(env or {})}
workload: {{prompt_tokens: 128, output_tokens: 16, streams: 4, duration_s: 1, warmup_s: 0}}
objective: {{kind: throughput}}
search_space: {{max_num_seqs: {{options: [16, {mode}]}}}}
"""
    config = tmp_path / "study.yaml"
    config.write_text(text)
    return Study(tmp_path, config, tmp_path / "study", tmp_path / "events.jsonl", marker)


@dataclass
class Run:
    returncode: int
    out: str
    wall_s: float
    peak_rss: int
    cpu_s: float
    #: (seconds since start, CPU seconds used so far) every 0.1 s.
    cpu: list[tuple[float, float]] = field(default_factory=list)
    #: Every process seen below the tuner while it ran.
    family: dict[int, psutil.Process] = field(default_factory=dict)


def run_tuner(study: Study, *args: str, timeout: float = 150.0) -> Run:
    """Run `python -m tui_tuner ARGS` and sample its memory, CPU and process tree as it goes."""
    cmd = [sys.executable, "-m", "tui_tuner", *args, "--headless",
           "--guidellm", str(FAKE_GUIDELLM), "--events-jsonl", str(study.events)]  # fmt: skip
    out_path = study.tmp / f"out-{time.monotonic_ns()}.txt"
    started = time.monotonic()
    with out_path.open("w") as out:
        tuner = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    me = psutil.Process(tuner.pid)
    run = Run(0, "", 0.0, 0, 0.0)
    try:
        while tuner.poll() is None:
            assert time.monotonic() - started < timeout, f"the tuner ran past {timeout} s"
            try:
                with me.oneshot():
                    run.peak_rss = max(run.peak_rss, me.memory_info().rss)
                    cpu = me.cpu_times()
                    run.cpu_s = cpu.user + cpu.system
                run.cpu.append((time.monotonic() - started, run.cpu_s))
                for p in me.children(recursive=True):
                    run.family.setdefault(p.pid, p)
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.1)
    finally:
        if tuner.poll() is None:
            tuner.kill()
        tuner.wait()
    run.returncode = tuner.returncode
    run.wall_s = time.monotonic() - started
    run.out = out_path.read_text()
    return run


def tune(study: Study, *extra: str) -> Run:
    return run_tuner(study, "tune", str(study.config), "--study-dir", str(study.dir), *extra)


def resume(study: Study, *extra: str) -> Run:
    return run_tuner(study, "resume", str(study.dir), *extra)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def leftovers(study: Study, run: Run, wait_s: float = 10.0) -> list[str]:
    """Processes of the study still alive after the tuner has exited (waits `wait_s` for them
    to go, so a slow exit is not reported as a leak)."""
    deadline = time.monotonic() + wait_s
    while True:
        left = [p for p in run.family.values() if _alive(p)]
        for p in psutil.process_iter(["cmdline"]):
            line = " ".join(p.info["cmdline"] or [])
            if (study.marker in line or str(study.tmp) in line) and _alive(p):
                left.append(p)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    found = []
    for p in left:
        try:
            found.append(f"{p.pid}: {' '.join(p.cmdline())}")
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return found


def check_ran(study: Study, run: Run) -> None:
    assert run.returncode == 0, run.out
    assert not leftovers(study, run), leftovers(study, run)


def resume_runs_the_next_trial(study: Study, before: list[TrialRecord]) -> None:
    """Resume (one more trial): the simulated server is measured, earlier trials are intact."""
    run = resume(study, "--trials", "2")
    check_ran(study, run)
    after = study.records()
    assert after[: len(before)] == before
    last = after[-1]
    assert len(after) == 2 and last.params == {"max_num_seqs": 16}
    assert last.state == "complete" and last.measurement is not None, last


def first_trial(study: Study, mode: int) -> TrialRecord:
    done = study.records()
    assert len(done) == 1 and done[0].params == {"max_num_seqs": mode}, done
    return done[0]


def measured(record: TrialRecord) -> None:
    assert record.state == "complete" and record.measurement is not None, record.failure
    assert record.measurement.output_tok_s > 0
    assert Path(record.files["report.json"]).is_file()


def test_server_that_ignores_sigterm_is_measured_then_killed(
    tmp_path: Path, tiny_model: Path
) -> None:
    study = make_study(tmp_path, tiny_model, 8, stop_grace_s=2)
    run = tune(study, "--trials", "1")
    check_ran(study, run)
    trial = first_trial(study, 8)
    measured(trial)
    # SIGTERM did nothing: the tuner waited stop_grace_s, then killed the group, and says so.
    assert 2 <= trial.timings["teardown"] < 20, trial.timings
    log = study.server_log(0).read_text()
    assert "did not exit within 2 s of SIGTERM" in log.splitlines()[-1]
    resume_runs_the_next_trial(study, [trial])


def test_server_worker_in_its_own_session_is_killed(tmp_path: Path, tiny_model: Path) -> None:
    study = make_study(tmp_path, tiny_model, 9)
    run = tune(study, "--trials", "1")
    check_ran(study, run)
    trial = first_trial(study, 9)
    measured(trial)
    found = re.search(r"worker (\d+) started in its own session", study.server_log(0).read_text())
    assert found, "the fake's setsid worker did not start"
    worker = int(found[1])
    assert worker in run.family  # seen as the server's descendant while the tuner ran
    assert not _alive(run.family[worker])


def test_completions_that_all_fail_are_a_classified_failure_not_a_measurement(
    tmp_path: Path, tiny_model: Path
) -> None:
    study = make_study(tmp_path, tiny_model, 11)
    run = tune(study, "--trials", "1")
    check_ran(study, run)
    trial = first_trial(study, 11)
    assert trial.state == "failed" and trial.measurement is None
    assert trial.failure_class == "too_many_errors", trial.failure
    assert trial.failure is not None and trial.failure["phase"] == "ready"  # the smoke test
    assert "HTTP 500" in trial.failure["message"] or any(
        "HTTP 500" in line for line in trial.failure["tail"]
    ), trial.failure
    assert "report.json" not in trial.files  # no load was put on a server that cannot answer
    assert "too_many_errors" in run.out
    resume_runs_the_next_trial(study, [trial])


def test_server_slow_to_die_is_waited_for(tmp_path: Path, tiny_model: Path) -> None:
    study = make_study(tmp_path, tiny_model, 12, stop_grace_s=20)
    run = tune(study, "--trials", "1")
    check_ran(study, run)
    trial = first_trial(study, 12)
    measured(trial)
    # It exits by itself after 5 s, inside the grace period: waited for, not killed.
    assert 4.5 <= trial.timings["teardown"] < 20, trial.timings
    log = study.server_log(0).read_text().splitlines()
    assert log[-1] == "INFO Shutdown complete.", log[-3:]


def test_log_flood_is_bounded(tmp_path: Path, tiny_model: Path) -> None:
    """64 MB/s of log lines for the whole trial: the server is still measured, is not slowed
    down by the tuner reading its output, and the log, the events and the memory are bounded."""
    stats = tmp_path / "flood-stats.txt"
    study = make_study(tmp_path, tiny_model, 10, env={"FAKE_SERVE_STATS": str(stats)})
    run = tune(study, "--trials", "1")
    check_ran(study, run)
    trial = first_trial(study, 10)
    measured(trial)
    written, seconds = (float(x) for x in stats.read_text().split())
    log = study.server_log(0)
    events = [json.loads(line) for line in study.events.open()]
    shown = [e["text"] for e in events if e["kind"] == "log" and e["source"] == "server"]
    notices = [t for t in shown if t.startswith("[tui-tuner]")]
    not_shown = sum(int(t.split()[1].replace(",", "")) for t in notices)
    flood = [(t, c) for t, c in run.cpu if trial.timings["total"] + 1 > run.wall_s - t > 1]
    figures = {
        "flood_MB_s": round(written / seconds / 1e6, 1),
        "flood_MB": round(written / 1e6),
        "tuner_peak_rss_MiB": round(run.peak_rss / MiB, 1),
        "tuner_cpu_pct_whole_run": round(100 * run.cpu_s / run.wall_s),
        "tuner_cpu_pct_during_trial": round(
            100 * (flood[-1][1] - flood[0][1]) / (flood[-1][0] - flood[0][0])
        ),
        "server_log_MiB": round(log.stat().st_size / MiB, 1),
        "events_jsonl_MiB": round(study.events.stat().st_size / MiB, 2),
        "server_log_events": len(shown),
        "lines_not_shown": not_shown,
        "wall_s": round(run.wall_s, 1),
    }
    print(figures)
    # The fake wrote at its full rate: the tuner drained the pipe as fast as it was filled.
    assert written / seconds > 50e6, figures
    # server.log: the first 32 MiB, a line on what was dropped, then the last 1 MiB, which ends
    # as the server's output ended (the simulator's shutdown line comes after the drop line).
    assert log.stat().st_size <= (32 + 1) * MiB + 4096, figures
    with log.open("rb") as f:
        f.seek(-2 * MiB, 2)
        end = f.read().decode(errors="replace")
    dropped = re.search(
        r"\[tui-tuner\] ([\d,]+) bytes \(([\d,]+) lines\) of server output dropped", end
    )
    assert dropped, end[-2000:]
    assert int(dropped[1].replace(",", "")) > written - 40 * MiB
    assert "Shutting down FastAPI HTTP server." in end[dropped.end() :]
    # Events: a burst, then 200 lines a second, and every line not shown is counted.
    assert len(shown) <= 2000 + 200 * run.wall_s + 100, figures
    assert not_shown + len(shown) >= written / len(FLOOD_LINE), figures
    server_lines = [t for t in shown if not t.startswith("[tui-tuner]")]
    assert server_lines[-1] == end.splitlines()[-1]  # the log panel ends as the log does
    assert run.peak_rss < 300 * MiB, figures
