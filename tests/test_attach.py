"""`tui-tuner attach`: a study watched and steered through its storage.

The fast tests drive a real SQLite study by hand, as a worker would (ask, its shared log tail,
tell), and check what the observer makes of it and what its commands write. The slow ones run
a real `tui-tuner tune` (simulated server, fake GuideLLM) and steer it from another process:
it pauses within 2 s of the request, and prunes its running trial.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.fakes.engine import measurement
from tests.fakes.studies import records, sim_study, start, tuner
from tui_tuner.core.confidence import REMEASURE_ROUNDS
from tui_tuner.core.config_load import load_config
from tui_tuner.core.errors import UserError
from tui_tuner.core.events import (
    Event,
    LogLine,
    Notice,
    StudyFinished,
    StudyStarted,
    StudyStateChanged,
    TrialFinished,
    TrialStarted,
)
from tui_tuner.core.stop import StopKind
from tui_tuner.core.trial import TrialPlan, TrialRecord
from tui_tuner.engine.control import (
    LIVE_ATTR,
    LOG_CHARS,
    LOG_LINES,
    ControlChannel,
    SharedLogs,
)
from tui_tuner.engine.observer import Observer
from tui_tuner.engine.storage import StorageThread
from tui_tuner.engine.study import StudyStore, default_storage_url

FAST = {"poll_s": 0.05, "details_wait_s": 0.3, "finish_grace_s": 0.3}


def store_of(tmp_path: Path, tiny_model: Path, n_trials: int = 3) -> StudyStore:
    config = sim_study(tmp_path, tiny_model, name="watched", study=f"n_trials: {n_trials}")
    return StudyStore(load_config(config), default_storage_url(tmp_path))


def measured(plan: TrialPlan, tok_s: float) -> TrialRecord:
    return TrialRecord(plan.number, "complete", plan.params, plan.baseline,
                       measurement=measurement(tok_s), values=(tok_s,))  # fmt: skip


def tell(store: StudyStore, plan: TrialPlan, tok_s: float) -> None:
    store.tell(plan, measured(plan, tok_s), values=[tok_s], state=TrialState.COMPLETE)


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def shared(plan: TrialPlan, lines: list[str], total: int | None = None) -> dict[str, object]:
    """A worker's shared tail of ``plan`` (as `SharedLogs` writes it)."""
    return {"host": "node-7", "dir": f"/w/trials/{plan.number}", "command": ["vllm", "serve"],
            "study": {"n_trials": 3}, "guidellm": {"n": 0, "lines": []},
            "server": {"n": len(lines) if total is None else total, "lines": lines}}  # fmt: skip


def test_the_observer_turns_a_study_into_the_tuners_events(
    tmp_path: Path, tiny_model: Path
) -> None:
    worker = store_of(tmp_path, tiny_model)
    worker.ensure_baseline()
    base = worker.ask(worker.config.space)
    tell(worker, base, 100.0)  # finished before the TUI attaches
    events: list[Event] = []

    async def scenario() -> StopKind:
        # The TUI reads the budget from the storage (what the workers share), not its own config.
        observer = Observer(StudyStore(worker.config, worker.storage_url), events.append,
                            **FAST)  # fmt: skip
        task = asyncio.ensure_future(observer.run())
        await until(lambda: any(isinstance(e, StudyStarted) for e in events))
        one = await asyncio.to_thread(worker.ask, worker.config.space)
        await asyncio.to_thread(worker.set_trial_attr, one, LIVE_ATTR, shared(one, ["a", "b"]))
        await until(lambda: any(isinstance(e, TrialStarted) for e in events))
        lines = [f"line {i}" for i in range(60)]
        await asyncio.to_thread(worker.set_trial_attr, one, LIVE_ATTR,
                                shared(one, lines[-40:], total=60))  # fmt: skip
        await until(lambda: any(isinstance(e, LogLine) and e.text == "line 59" for e in events))
        await asyncio.to_thread(tell, worker, one, 120.0)
        # A trial that starts and ends between two reads (a duplicate's verdict) is not lost.
        two = await asyncio.to_thread(worker.ask, worker.config.space)
        await asyncio.to_thread(tell, worker, two, 90.0)
        return (await asyncio.wait_for(task, 10)).kind

    assert asyncio.run(scenario()) == StopKind.BUDGET
    started = [e for e in events if isinstance(e, StudyStarted)]
    assert len(started) == 1 and [r.number for r in started[0].trials] == [0]
    assert started[0].n_trials is None or started[0].n_trials == 3
    runs = [e for e in events if isinstance(e, TrialStarted)]
    assert [(r.number, r.host, r.trial_dir) for r in runs] == [(1, "node-7", "/w/trials/1")]
    logs = [e.text for e in events if isinstance(e, LogLine) and e.number == 1]
    # Two lines, then 58 more of which the tail holds the last 40: one line says where the rest
    # are, then the 40, in order, none twice.
    assert logs[:2] == ["a", "b"]
    assert logs[2] == "[18 earlier lines are in node-7:/w/trials/1/server.log]"
    assert logs[3:] == [f"line {i}" for i in range(20, 60)]
    finished = [e.record.number for e in events if isinstance(e, TrialFinished)]
    assert finished == [1, 2]
    end = events[-1]
    assert isinstance(end, StudyFinished) and end.stop_kind == StopKind.BUDGET
    assert "3 of 3" in end.reason


def test_a_worker_that_shares_nothing_is_shown_with_its_host_and_where_its_logs_are(
    tmp_path: Path, tiny_model: Path
) -> None:
    worker = store_of(tmp_path, tiny_model)
    events: list[Event] = []

    async def scenario() -> None:
        observer = Observer(StudyStore(worker.config, worker.storage_url), events.append,
                            **FAST)  # fmt: skip
        task = asyncio.ensure_future(observer.run())
        await asyncio.to_thread(worker.ask, worker.config.space)
        await until(lambda: any(isinstance(e, TrialStarted) for e in events))
        observer.leave()
        stop = await asyncio.wait_for(task, 5)
        assert stop.kind == StopKind.USER and "workers go on" in stop.text

    asyncio.run(scenario())
    run = next(e for e in events if isinstance(e, TrialStarted))
    assert run.host == socket.gethostname() and run.trial_dir == ""
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert "does not share its logs" in notices[0] and socket.gethostname() in notices[0]
    assert "trials/0/" in notices[0]
    assert len(notices) == 1  # its heartbeat is fresh: nothing more is said


def test_a_running_trial_whose_worker_fell_silent_is_said_once(
    tmp_path: Path, tiny_model: Path
) -> None:
    worker = store_of(tmp_path, tiny_model)
    plan = worker.ask(worker.config.space)
    worker.set_trial_attr(plan, "heartbeat", time.time() - 600)
    events: list[Event] = []

    async def scenario() -> None:
        observer = Observer(StudyStore(worker.config, worker.storage_url), events.append,
                            **FAST)  # fmt: skip
        task = asyncio.ensure_future(observer.run())
        await until(lambda: any(isinstance(e, Notice) and "heartbeat" in e.text
                                for e in events))  # fmt: skip
        await asyncio.sleep(0.3)  # several reads more
        observer.leave()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    silent = [e.text for e in events if isinstance(e, Notice) and "heartbeat" in e.text]
    assert len(silent) == 1 and "for 600 s" in silent[0] and "may be dead" in silent[0]


def test_the_observers_commands_are_requests_in_the_storage(
    tmp_path: Path, tiny_model: Path
) -> None:
    worker = store_of(tmp_path, tiny_model)
    events: list[Event] = []

    async def scenario() -> None:
        observer = Observer(StudyStore(worker.config, worker.storage_url), events.append,
                            **FAST)  # fmt: skip
        task = asyncio.ensure_future(observer.run())
        plan = await asyncio.to_thread(worker.ask, worker.config.space)
        await until(lambda: any(isinstance(e, TrialStarted) for e in events))
        assert not observer.prune(plan.number + 5)  # not running: nothing written
        assert observer.prune(plan.number)
        observer.pause(now=True)
        assert observer.paused
        await until(lambda: worker.control().paused and plan.number in worker.control().prune)
        observer.set_space(worker.config.space)
        observer.resume()
        await until(lambda: not worker.control().paused)
        observer.stop(StopKind.USER, "stopped from the test")
        await until(lambda: worker.control().stop_at is not None)
        await asyncio.to_thread(worker.interrupt, plan, "interrupted: stopped by a request")
        stop = await asyncio.wait_for(task, 10)
        assert stop.kind == StopKind.REQUEST

    asyncio.run(scenario())
    states = [(e.state, e.reason) for e in events if isinstance(e, StudyStateChanged)]
    assert [s for s, _ in states] == ["paused", "running", "stopping", "finished"]
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert any("cannot stop running trials at once" in n for n in notices)
    assert any("search space was not changed" in n for n in notices)


def test_requests_left_by_others_become_state_changes(tmp_path: Path, tiny_model: Path) -> None:
    worker = store_of(tmp_path, tiny_model)
    events: list[Event] = []

    async def scenario() -> None:
        observer = Observer(StudyStore(worker.config, worker.storage_url), events.append,
                            **FAST)  # fmt: skip
        task = asyncio.ensure_future(observer.run())
        await until(lambda: any(isinstance(e, StudyStarted) for e in events))
        await asyncio.to_thread(lambda: worker.update_control(paused=True))
        await until(lambda: observer.paused)
        await asyncio.to_thread(lambda: worker.update_control(paused=False))
        await until(lambda: not observer.paused)
        await asyncio.to_thread(lambda: worker.update_control(stop_at=time.time()))
        assert (await asyncio.wait_for(task, 10)).kind == StopKind.REQUEST

    asyncio.run(scenario())
    states = [e.state for e in events if isinstance(e, StudyStateChanged)]
    assert states == ["paused", "running", "stopping", "finished"]


def test_shared_logs_stay_a_few_kb_at_any_rate() -> None:
    seen: list[Event] = []
    logs = SharedLogs(seen.append)
    plan = TrialPlan(4, {}, False)
    logs(TrialStarted(4, {}, False, ("vllm", "serve"), "/w/trials/4"))
    start = time.perf_counter()
    for i in range(20_000):
        logs(LogLine(4, "server", f"{i:06d} " + "x" * 500))
    per_line_us = (time.perf_counter() - start) / 20_000 * 1e6
    assert per_line_us < 50, per_line_us  # a deque append, not a copy (about 1 µs here)
    assert len(seen) == 20_001  # every event still goes on to the display
    attr = logs.take(plan.number)
    assert attr is not None and logs.take(plan.number) is None  # unchanged: nothing to write
    assert attr["server"]["n"] == 20_000
    lines = attr["server"]["lines"]
    assert 0 < len(lines) <= LOG_LINES and lines[-1].startswith("019999")
    assert len(json.dumps(attr)) < 2 * LOG_CHARS + 1000
    logs(TrialFinished(TrialRecord(4, "complete")))
    assert logs.take(4) is None  # let go with its trial


def test_a_worker_writes_its_running_trials_tail_into_the_storage(
    tmp_path: Path, tiny_model: Path
) -> None:
    worker = store_of(tmp_path, tiny_model)
    emit = SharedLogs.around(lambda _: None, worker)
    plan = worker.ask(worker.config.space)

    async def scenario() -> None:
        io = StorageThread(worker.storage_url, 10)
        channel = ControlChannel(worker, io, emit, poll_s=0.05)
        emit(StudyStarted("watched", "throughput", "", "", 3, None, True, 0))
        emit(TrialStarted(plan.number, plan.params, plan.baseline, ("vllm",), "/w/trials/0"))
        emit(LogLine(plan.number, "guidellm", "warming up"))
        follow = asyncio.ensure_future(channel.follow(lambda _: None, lambda: plan))
        try:
            await until(lambda: LIVE_ATTR in worker.study.trials[0].user_attrs, timeout=5)
        finally:
            follow.cancel()
            io.close()

    asyncio.run(scenario())
    live = worker.study.trials[0].user_attrs[LIVE_ATTR]
    assert live["host"] == socket.gethostname() and live["dir"] == "/w/trials/0"
    assert live["guidellm"] == {"n": 1, "lines": ["warming up"]}
    assert live["study"]["n_trials"] == 3


async def test_the_attached_tui_steers_through_the_storage_and_quits_without_stopping(
    tmp_path: Path, tiny_model: Path
) -> None:
    from tui_tuner.attach import attached_app

    worker = store_of(tmp_path, tiny_model)
    plan = worker.ask(worker.config.space)
    worker.set_trial_attr(plan, LIVE_ATTR, shared(plan, ["INFO the server is up"]))
    app = attached_app(str(tmp_path / "study.db"), None, theme=None)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: plan.number in app.model.runs)
        assert app.model.runs[plan.number].host == "node-7"
        await until(lambda: bool(app.model.log(plan.number, "server").lines))
        await pilot.press("p")
        await until(lambda: worker.control().paused, timeout=2)
        await pilot.press("x")
        await pilot.press("y")
        await until(lambda: plan.number in worker.control().prune, timeout=2)
        await pilot.press("e")  # the space is the workers': nothing opens, nothing is written
        await pilot.pause()
        assert len(app.screen_stack) == 1
        await pilot.press("p", "q")  # resume, and leave at once: the resume is written first
    assert worker.control().stop_at is None  # quitting left the workers running
    assert not worker.control().paused
    assert app.return_code == 0


def open_when_there(study_dir: Path, proc: subprocess.Popen[str]) -> StudyStore:
    """The study a starting tuner creates, once it is in the storage."""
    from tui_tuner.attach import open_attached

    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        try:
            return open_attached(str(study_dir), None)[0].store
        except UserError:
            assert time.monotonic() < deadline, "the tuner never created its study"
            time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_running_tune_is_watched_and_obeys_pause_and_prune(
    tmp_path: Path, tiny_model: Path
) -> None:
    config = sim_study(tmp_path, tiny_model, name="steered", study="n_trials: 4",
                       options=[8, 16, 32], duration_s=6)  # fmt: skip
    study_dir, jsonl = tmp_path / "study", tmp_path / "events.jsonl"
    proc = start(tuner("tune", config, "--study-dir", str(study_dir), "--events-jsonl", str(jsonl)))
    events: list[Event] = []
    try:
        store = open_when_there(study_dir, proc)

        async def scenario() -> tuple[float, int]:
            observer = Observer(store, events.append)  # as attached: polls once a second
            task = asyncio.ensure_future(observer.run())
            await until(lambda: any(isinstance(e, LogLine) and e.source == "server"
                                    for e in events), timeout=60)  # fmt: skip
            running = next(e for e in reversed(events) if isinstance(e, TrialStarted))
            asked = time.monotonic()
            observer.pause()
            await until(lambda: jsonl.exists() and "paused by a request" in jsonl.read_text(),
                        timeout=5)  # fmt: skip
            obeyed_s = time.monotonic() - asked
            assert observer.prune(running.number)
            await until(lambda: any(isinstance(e, TrialFinished)
                                    and e.record.number == running.number for e in events),
                        timeout=30)  # fmt: skip
            observer.resume()
            await asyncio.wait_for(task, 200)
            return obeyed_s, running.number

        obeyed_s, pruned = asyncio.run(scenario())
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    assert obeyed_s < 2.0, obeyed_s  # workers read the requests once a second
    finished = {e.record.number: e.record for e in events if isinstance(e, TrialFinished)}
    assert finished[pruned].state == "pruned"
    stored = {r.number: r.state for r in records(study_dir).values()}
    seen = {r.number: r.state for r in (events[0].trials if isinstance(events[0], StudyStarted)
                                        else ())}  # fmt: skip
    seen.update({n: r.state for n, r in finished.items()})
    assert seen == stored  # every trial, as stored
    hosts = {e.host for e in events if isinstance(e, TrialStarted)}
    assert hosts == {socket.gethostname()}
    end = events[-1]
    assert isinstance(end, StudyFinished) and end.stop_kind == StopKind.BUDGET, events[-5:]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_workers_on_postgresql_are_watched_as_one_study(
    tmp_path: Path, tiny_model: Path
) -> None:
    """Trials of both workers, side by side, with the budget the workers share (a storage URL
    carries no configuration), to the study's end."""
    from tests.postgres import postgres_server
    from tui_tuner.attach import open_attached

    with postgres_server() as url:
        config = sim_study(tmp_path, tiny_model, name="pair", options=[8, 16, 32, 64, 128],
                           study=f'n_trials: 6, storage: "{url}"')  # fmt: skip
        dirs = [tmp_path / f"worker-{i}" for i in (1, 2)]
        procs = [start(tuner("tune", config, "--study-dir", str(d))) for d in dirs]
        events: list[Event] = []
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    store = open_attached(url, "pair")[0].store
                    break
                except UserError:
                    assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
                    time.sleep(0.2)
            stop = asyncio.run(Observer(store, events.append).run())
            outs = [p.communicate(timeout=120)[0] for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        assert all(p.returncode == 0 for p in procs), [o[-2000:] for o in outs]
        stored = {r.number: r.state for r in StudyStore(load_config(config), url).records()}
    assert stop.kind == StopKind.BUDGET, stop
    first = events[0]
    assert isinstance(first, StudyStarted)
    seen = {r.number: r.state for r in first.trials}
    seen.update({e.record.number: e.record.state for e in events if isinstance(e, TrialFinished)})
    assert seen == stored
    dirs_seen = {
        Path(e.trial_dir).parent.parent.name for e in events if isinstance(e, TrialStarted)
    }
    assert dirs_seen == {"worker-1", "worker-2"}  # each worker's trials, from its own directory
    running, most = set(), 0
    for e in events:
        if isinstance(e, TrialStarted):
            running.add(e.number)
        elif isinstance(e, TrialFinished):
            running.discard(e.record.number)
        most = max(most, len(running))
    assert most == 2  # the two ran side by side, and were shown so


def test_a_storage_that_stops_answering_is_said_once_and_watched_again(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tui_tuner.engine.storage import StorageUnavailable

    worker = store_of(tmp_path, tiny_model)
    events: list[Event] = []
    down = {"reads": 0}

    async def scenario() -> None:
        observer = Observer(StudyStore(worker.config, worker.storage_url), events.append,
                            **FAST)  # fmt: skip
        read = observer._read

        def flaky(*args: object) -> object:
            if down["reads"] < 5:
                down["reads"] += 1
                raise StorageUnavailable("the study storage did not answer (test)")
            return read(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(observer, "_read", flaky)
        task = asyncio.ensure_future(observer.run())
        await until(lambda: down["reads"] == 5)
        await asyncio.to_thread(worker.ask, worker.config.space)
        await until(lambda: any(isinstance(e, TrialStarted) for e in events))
        observer.leave()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    said = [e.text for e in events if isinstance(e, Notice)]
    assert said[0] == "the study storage did not answer (test) (still trying)"
    assert said[1] == "the study storage answers again"
    assert sum("did not answer" in s for s in said) == 1


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("{tmp}/nowhere.db", "is not a study directory"),
        ("sqlite:///{tmp}/nowhere.db", "no study storage at"),
        ("{tmp}/study.db --study other", "no study 'other'"),
    ],
    ids=["no-file", "no-sqlite-url", "no-such-study"],
)
def test_attaching_to_nothing_is_one_line_and_exit_2(
    tmp_path: Path, tiny_model: Path, target: str, message: str
) -> None:
    store_of(tmp_path, tiny_model)  # a study named "watched" in tmp/study.db
    args = target.format(tmp=tmp_path).split()
    done = subprocess.run([sys.executable, "-m", "tui_tuner", "attach", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("tui-tuner: error: ") and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize("how", ["ctrl+q", "SIGTERM"])
async def test_ctrl_q_or_a_signal_leaves_the_attached_tui_and_the_workers_running(
    tmp_path: Path, tiny_model: Path, how: str
) -> None:
    import os
    import signal

    from tui_tuner.attach import attached_app

    worker = store_of(tmp_path, tiny_model)
    plan = worker.ask(worker.config.space)
    worker.set_trial_attr(plan, LIVE_ATTR, shared(plan, []))  # shown at once
    app = attached_app(str(tmp_path / "study.db"), None, theme=None)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: plan.number in app.model.runs)
        assert app.observer is not None  # its signal handlers are installed with it
        if how == "SIGTERM":
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            await pilot.press("ctrl+q")
        await until(lambda: not app.is_running, timeout=5)
    assert app.return_code == 0
    assert worker.control().stop_at is None and not worker.control().paused
    assert worker.study.trials[plan.number].state == TrialState.RUNNING  # untouched


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_tuner_running_two_trials_side_by_side_shares_both_logs(
    tmp_path: Path, tiny_model: Path
) -> None:
    """`study.workers: 2`: the lanes wrap the study's sink each their own way; each lane's
    channel still finds the log tail by the store and shares its own trial's lines. With the
    baseline's noise runs and the best measured again (repeats queued at the start and at the
    budget), the study is seen finished only once the repeats have run."""
    config = sim_study(tmp_path, tiny_model, name="lanes", options=[8, 16, 32, 64], duration_s=4,
                       study="n_trials: 4, noise_repeats: 2, remeasure_top: 1")  # fmt: skip
    study_dir = tmp_path / "study"
    extra = ("--workers", "2", "--sim-gpus", "2", "--study-dir", str(study_dir))
    proc = start(tuner("tune", config, *extra))
    events: list[Event] = []
    try:
        store = open_when_there(study_dir, proc)
        stop = asyncio.run(Observer(store, events.append).run())
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    assert stop.kind == StopKind.BUDGET
    stored = records(study_dir)
    # a noise run of the baseline, and the best measured again in each round
    assert sum(r.repeat for r in stored.values()) == 1 + REMEASURE_ROUNDS
    finished = {e.record.number for e in events if isinstance(e, TrialFinished)}
    assert finished == set(stored)  # the end was not called before the repeats had run
    logged = {e.number for e in events if isinstance(e, LogLine) and e.source == "server"}
    started = {e.number for e in events if isinstance(e, TrialStarted)}
    assert len(started) >= 4 and logged == started  # every trial's own lines, both lanes'
    for number in started:  # its own server's first line, or where the lines before are
        lines = [e.text for e in events if isinstance(e, LogLine) and e.number == number]
        first = lines[0]
        assert "SIMULATED vLLM server" in "".join(lines[:5]) or "earlier lines" in first, lines
    running, most = set(), 0
    for e in events:
        if isinstance(e, TrialStarted):
            running.add(e.number)
        elif isinstance(e, TrialFinished):
            running.discard(e.record.number)
        most = max(most, len(running))
    assert most == 2  # side by side, and shown so
