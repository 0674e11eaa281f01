"""`tui-tuner worker`: its log lines, its argument errors, and workers on one study.

The log lines (`report/lines.py`) are checked from a list of events; the argument errors and
an unreachable storage in-process; and, marked slow, three worker processes share a study in a
real PostgreSQL server, once to its end and once with one of them killed (SIGKILL) in the middle
of a trial. The simulated server and the quick fake GuideLLM stand in for vLLM and GuideLLM.
"""

from __future__ import annotations

import io
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fakes.engine import measurement
from tests.fakes.studies import FAKE_GUIDELLM, leftovers, sim_study
from tests.postgres import postgres_server
from tui_tuner.adapters.vllm_server import free_port
from tui_tuner.cli import main
from tui_tuner.cli_worker import EXIT_UNREACHABLE, WORKER_EXIT_CODES
from tui_tuner.core.config_load import load_config
from tui_tuner.core.events import (
    BenchProgress,
    LogLine,
    Notice,
    StudyFinished,
    StudyStarted,
    StudyStateChanged,
    TrialFinished,
    TrialPhaseChanged,
    TrialStarted,
)
from tui_tuner.core.space import params_key
from tui_tuner.core.stop import StopKind, StopReason
from tui_tuner.core.trial import TrialRecord, counts_against_budget
from tui_tuner.engine.study import StudyStore
from tui_tuner.report.lines import LineSink
from tui_tuner.study_dir import saved_overrides

T0 = 1_764_790_801.5  # 2025-12-03T19:40:01.500Z

EVENTS = [
    StudyStarted("llama", "throughput", "postgresql://tuner:***@db/tuner", "/s/w", 8, None,
                 True, 2, repaired=(3,)),
    TrialStarted(4, {"max_num_seqs": 16}, False, ("vllm", "serve"), "/s/w/trials/0004",
                 gpus=(0, 1)),
    LogLine(4, "server", "INFO: loading weights"),
    TrialPhaseChanged(4, "measuring", 12.4),
    BenchProgress(4, 0, "running", 3.0, 10, 0, 500.0),
    TrialFinished(TrialRecord(4, "complete", {"max_num_seqs": 16}, measurement=measurement(
        1234.5, 250.0, 40.0), timings={"total": 31.2}, note="on the second try")),
    TrialFinished(TrialRecord(5, "failed", {"max_num_seqs": 512},
                              failure={"class": "oom_startup", "message": "CUDA out of memory"},
                              files={"server.log": "/s/w/trials/0005/server.log"})),
    TrialFinished(TrialRecord(6, "failed", {}, baseline=True, interrupted=True,
                              note="interrupted: stopped by SIGTERM")),
    Notice("warning", "two\nlines \x1b[31mred\x1b[0m", 6),
    StudyStateChanged("finished", "budget spent"),
    StudyFinished.of(StopReason(StopKind.BUDGET, "8 trials done")),
]  # fmt: skip


def test_plain_lines_are_one_per_event_with_time_level_trial_and_text() -> None:
    out = io.StringIO()
    sink = LineSink(out, log_format="plain", host="node-1", clock=lambda: T0)
    for event in EVENTS:
        sink(event)
    lines = out.getvalue().splitlines()
    stamp = "2025-12-03T19:40:01.500Z"
    assert lines == [
        f"{stamp} INFO    -        study llama (throughput) on the SIMULATED server: 8 trials, 2 "
        "finished before; storage postgresql://tuner:***@db/tuner; directory /s/w; failed and "
        "queued again the trials dead workers left: 3",
        f"{stamp} INFO    trial 4  started: max_num_seqs=16 on GPUs 0,1; files /s/w/trials/0004",
        f"{stamp} INFO    trial 4  measuring (12 s in)",
        f"{stamp} INFO    trial 4  complete in 31 s: 1,234.5 output tok/s, p95 250 ms, TTFT p95 "
        "40 ms; on the second try",
        f"{stamp} WARNING trial 5  failed(oom_startup): CUDA out of memory; log "
        "/s/w/trials/0005/server.log",
        f"{stamp} WARNING trial 6  interrupted: stopped by SIGTERM; it runs again",
        f"{stamp} WARNING trial 6  two / lines red",
        f"{stamp} INFO    -        study finished (budget): 8 trials done",
    ]


def test_json_lines_are_the_events_with_time_level_and_host() -> None:
    out = io.StringIO()
    sink = LineSink(out, log_format="json", host="node-1", clock=lambda: T0)
    for event in EVENTS:
        sink(event)
    sink.say("info", "worker finished", kind="worker_finished", fields={"exit_code": 0})
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    kinds = [r["kind"] for r in rows]
    assert kinds == ["study_started", "trial_started", "trial_phase", "trial_finished",
                     "trial_finished", "trial_finished", "notice", "study_finished",
                     "worker_finished"]  # fmt: skip
    assert all(r["time"] == "2025-12-03T19:40:01.500Z" and r["host"] == "node-1" for r in rows)
    assert [r["level"] for r in rows][3:7] == ["info", "warning", "warning", "warning"]
    started, finished = rows[1], rows[3]
    assert started["number"] == 4 and started["gpus"] == [0, 1]
    assert started["params"] == {"max_num_seqs": 16}
    assert finished["record"]["measurement"]["output_tok_s"] == 1234.5
    assert finished["text"].startswith("complete in 31 s: 1,234.5 output tok/s")
    assert rows[7]["stop_kind"] == "budget" and rows[7]["resumable"] is False
    assert rows[8] == {"time": "2025-12-03T19:40:01.500Z", "level": "info", "host": "node-1",
                       "kind": "worker_finished", "number": None, "exit_code": 0,
                       "text": "worker finished"}  # fmt: skip


def test_a_log_format_not_known_is_refused() -> None:
    with pytest.raises(ValueError, match="allowed plain, json"):
        LineSink(io.StringIO(), log_format="yaml")


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["worker", "s.yaml"], "the following arguments are required: --storage"),
        (["worker", "s.yaml", "--storage", "db-host"], "not a storage URL: 'db-host'"),
        (["worker", "s.yaml", "--storage", "postgresql://h/db", "--log-format", "xml"],
         "invalid choice: 'xml'"),
        (["worker", "--storage", "postgresql://h/db"], "the following arguments are required: "
         "CONFIG"),
        (["worker", "s.yaml", "--storage", "postgresql://h/db", "--workers", "0"],
         "'0' is not a whole number from 1, nor auto"),
    ],
)  # fmt: skip
def test_argument_errors_are_usage_errors(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert said in capsys.readouterr().err


def test_a_missing_configuration_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["worker", str(tmp_path / "none.yaml"), "--storage", "postgresql://h/db"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("tui-tuner: error: ") and "none.yaml" in err and "cannot read it" in err


def test_an_unreachable_storage_is_one_line_and_its_own_exit_code(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    own = "postgresql://tuner:filepw@127.0.0.1:1/tuner"
    config = sim_study(
        tmp_path, tiny_model, name="unreached", study=f'n_trials: 2, storage: "{own}"'
    )
    url = f"postgresql://tuner:secretpw@127.0.0.1:{free_port()}/tuner"  # nobody listens
    monkeypatch.chdir(tmp_path)
    argv = ["worker", str(config), "--storage", url, "--guidellm", str(FAKE_GUIDELLM)]
    code = main([*argv, "--workers", "2"])
    out, err = capsys.readouterr()
    assert code == EXIT_UNREACHABLE == 3
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("tui-tuner: error: the study storage postgresql://tuner:***@127.0.0.1:")
    assert "cannot be reached" in err and "nothing was run" in err
    assert "secretpw" not in out + err and "filepw" not in out + err
    # The file's own storage differs from --storage: said, and --storage is the one used.
    assert "study.storage is postgresql://tuner:***@127.0.0.1:1/tuner; this worker uses " in out
    # The default study directory is this host's.
    host = socket.gethostname()
    study_dir = tmp_path / "tui-tuner-worker" / "unreached" / host
    assert (study_dir / "config.yaml").is_file()
    assert saved_overrides(study_dir)["study.workers"] == 2  # --workers reached the study
    assert re.search(rf"INFO +- +worker started: host {re.escape(host)}, pid \d+", out)


def test_sigterm_while_the_storage_is_opened_stops_the_worker_with_its_last_line(
    tmp_path: Path, tiny_model: Path
) -> None:
    """A database that takes the connection and never answers (a listening socket that is
    never read): the worker waits for it, and a SIGTERM then ends it at once with exit 130."""
    config = sim_study(tmp_path, tiny_model, name="silent", study="n_trials: 2, "
                       "storage_timeout_s: 60")  # fmt: skip
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgresql://tuner@127.0.0.1:{silent.getsockname()[1]}/tuner"
        worker = Worker(config, url, tmp_path, "--study-dir", "w0")
        try:
            silent.settimeout(60)
            connection, _ = silent.accept()  # the worker is connecting: it waits for an answer
            with connection:
                time.sleep(0.5)
                sent = time.monotonic()
                worker.proc.send_signal(signal.SIGTERM)
                code = worker.wait(30)
        finally:
            stopped([worker])
    assert code == 130, worker.out
    assert time.monotonic() - sent < 10, "the worker waited for the storage past the signal"
    last = worker.lines[-1]
    assert "worker finished (signal): stopped by SIGTERM before the study started" in last
    assert "trials run here: none; exit code 130" in last


def test_a_crash_is_its_last_line_a_traceback_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tui_tuner.cli_worker

    def crash(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(tui_tuner.cli_worker, "_prepare", crash)
    code = main(["worker", "s.yaml", "--storage", "postgresql://h/db"])
    out, err = capsys.readouterr()
    assert code == 2
    last = out.splitlines()[-1]
    assert "ERROR" in last and "worker finished: crashed: RuntimeError: boom" in last, out
    assert "exit code 2" in last and "Traceback" in err and "RuntimeError: boom" in err


def test_the_exit_codes_are_in_help_and_in_the_docs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["worker", "--help"])
    shown = capsys.readouterr().out
    docs = (ROOT / "docs" / "scale-out.md").read_text()
    for code, _ in WORKER_EXIT_CODES:
        assert re.search(rf"^  {code} +\S", shown, re.M), code
        assert re.search(rf"^\| {code} \|", docs, re.M), f"exit code {code} not in scale-out.md"


# -- workers on a real PostgreSQL server ---------------------------------------------------------

OPTIONS = [8, 16, 32, 64]
N_TRIALS = len(OPTIONS) + 1  # every configuration and the baseline


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


class Worker:
    """A `tui-tuner worker` process; its stdout read as it comes (so a pipe never fills)."""

    def __init__(self, config: Path, url: str, cwd: Path, *extra: str) -> None:
        cmd = [sys.executable, "-m", "tui_tuner", "worker", str(config), "--storage", url,
               "--guidellm", str(FAKE_GUIDELLM), *extra]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, cwd=cwd)  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        return code

    @property
    def out(self) -> str:
        return "".join(self.lines)


def shared_study(tmp_path: Path, model: Path, name: str, options: list[int] = OPTIONS) -> Path:
    """A grid study of ``options`` and the baseline, its budget exactly those (no noise runs
    and no re-measurement, so that every trial counts)."""
    budget = f"n_trials: {len(options) + 1}, noise_repeats: 1, remeasure_top: 0"
    return sim_study(tmp_path, model, name=name, study=budget, options=options)


def together(config: Path, url: str, cwd: Path, *extra: str) -> list[Worker]:
    """Three workers started at the same instant, as a Job starts its pods, each in its own
    directory."""
    return [Worker(config, url, cwd, "--study-dir", f"w{i}", *extra) for i in range(3)]


def wait_started(w: Worker, timeout: float = 90) -> str:
    """The first line of ``w`` that says a trial started (the worker must not end first)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [s for s in w.lines if re.search(r'trial \d+ +started:|"kind":"trial_started"', s)]
        if found:
            return found[0]
        assert w.proc.poll() is None, w.out[-3000:]
        assert time.monotonic() < deadline, w.out[-3000:]
        time.sleep(0.05)


def check_study(config: Path, url: str, n_trials: int = N_TRIALS) -> list[TrialRecord]:
    """Exactly the trials asked for, each configuration measured once, none left behind."""
    records = StudyStore(load_config(config), url).records()
    seen = "\n".join(f"{r.number} {r.state} {'baseline' if r.baseline else dict(r.params)} "
                     f"{r.note!r}" for r in records)  # fmt: skip
    measured = [r for r in records if r.state == "complete" and r.duplicate_of is None]
    runs = Counter("baseline" if r.baseline else params_key(r.params) for r in measured)
    assert len(runs) == n_trials, seen  # every configuration and the baseline
    assert set(runs.values()) == {1}, seen  # none measured twice
    assert sum(counts_against_budget(r) for r in records) == n_trials, seen
    assert all(r.state in ("complete", "failed") for r in records), seen  # none lost
    return records


def stopped(workers: list[Worker]) -> None:
    for w in workers:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
    for w in workers:
        w.wait(60)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_three_workers_finish_a_study_with_exactly_the_trials_asked_for(
    tmp_path: Path, tiny_model: Path, postgres_url: str
) -> None:
    config = shared_study(tmp_path, tiny_model, "three")
    workers = together(config, postgres_url, tmp_path)
    try:
        codes = [w.wait(180) for w in workers]
    finally:
        stopped(workers)
    for w, code in zip(workers, codes, strict=True):
        assert code == 0, w.out[-3000:]
        assert "worker finished (" in w.lines[-1] and "exit code 0" in w.lines[-1], w.out[-2000:]
    check_study(config, postgres_url)
    started = [len(re.findall(r"trial \d+ +started:", w.out)) for w in workers]
    assert sum(started) >= N_TRIALS and sum(1 for n in started if n) >= 2, started
    # A worker started once the study is done (a pod started again) runs nothing, exits 0.
    late = Worker(config, postgres_url, tmp_path, "--study-dir", "w0")
    try:
        assert late.wait(60) == 0, late.out[-3000:]
    finally:
        stopped([late])
    assert not re.search(r"trial \d+ +started:", late.out), late.out
    assert "trials run here: none; exit code 0" in late.lines[-1], late.out
    check_study(config, postgres_url)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_worker_killed_mid_trial_leaves_its_trial_to_the_others(
    tmp_path: Path, tiny_model: Path, postgres_url: str
) -> None:
    config = shared_study(tmp_path, tiny_model, "killed")
    workers = together(config, postgres_url, tmp_path, "--log-format", "json")
    victim = workers[0]
    try:
        started = json.loads(wait_started(victim))  # its first trial, launching
        victim.proc.kill()  # SIGKILL: no handler runs, its trial stays RUNNING in the storage
        assert victim.wait(10) == -signal.SIGKILL
        codes = [w.wait(180) for w in workers[1:]]
    finally:
        stopped(workers)
    for w, code in zip(workers[1:], codes, strict=True):
        assert code == 0, w.out[-3000:]
    records = {r.number: r for r in check_study(config, postgres_url)}
    lost = records[started["number"]]
    assert lost.state == "failed" and lost.interrupted, lost
    assert lost.note == "interrupted: the tuner running it died", lost
    again = [r for r in records.values() if r.number > lost.number and r.state == "complete"
             and r.baseline == lost.baseline and r.params == lost.params]  # fmt: skip
    assert again, records  # run again, by another worker (the killed one is gone)
    said = "".join(w.out for w in workers[1:])
    assert f"trial {lost.number} was left running by a dead tuner" in said
    # The killed worker's server and load generator went with it (the reaper).
    deadline = time.monotonic() + 30
    while (
        left := leftovers(str(tmp_path / "killed-profile.yaml"))
    ) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, left


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigterm_from_the_container_runtime_queues_the_trial_for_the_next_worker(
    tmp_path: Path, tiny_model: Path, postgres_url: str
) -> None:
    config = shared_study(tmp_path, tiny_model, "terminated", options=[8, 16])
    first = Worker(config, postgres_url, tmp_path, "--study-dir", "w0")
    try:
        number = int(re.findall(r"trial (\d+) +started:", wait_started(first))[0])
        first.proc.send_signal(signal.SIGTERM)  # what `docker stop` and Kubernetes send
        code = first.wait(60)
    finally:
        stopped([first])
    assert code == 130, first.out[-3000:]
    last = first.lines[-1]
    assert "worker finished (signal): stopped by SIGTERM" in last and "exit code 130" in last
    said = (
        rf"trial {number}  interrupted after \d+ s: stopped by SIGTERM; it runs again on resume\n"
    )
    assert re.search(said, first.out), first.out[-3000:]
    # Nothing of it is left running; a worker started later (a new pod) finishes the study.
    assert not leftovers(str(tmp_path / "terminated-profile.yaml"))
    second = Worker(config, postgres_url, tmp_path, "--study-dir", "w1")
    try:
        assert second.wait(120) == 0, second.out[-3000:]
    finally:
        stopped([second])
    records = {r.number: r for r in check_study(config, postgres_url, n_trials=3)}
    assert records[number].interrupted and records[number].state == "failed", records[number]
