"""The study loop against fake adapters: budgets, failures as results, duplicates, control.

No process is started here; the fakes decide per parameter set what a "server" does. The
end-to-end behaviour with real processes is in test_study_sim.py.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from tests.fakes.engine import Fakes, make_config, measurement, seqs_of
from tui_tuner.core.config import SlaTerm, StudyConfig, StudySettings
from tui_tuner.core.events import (
    Event,
    Notice,
    StudyFinished,
    TrialFinished,
    TrialPhaseChanged,
)
from tui_tuner.core.stop import StopKind
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.orchestrator import Orchestrator
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.engine.trial_runner import TrialRunner


def build(tmp_path: Path, config: StudyConfig, fakes: Fakes) -> tuple[Orchestrator, list[Event]]:
    events: list[Event] = []
    store = StudyStore(config, default_storage_url(tmp_path))
    runner = TrialRunner(config, tmp_path, fakes, fakes, fakes, events.append)
    return Orchestrator(config, store, runner, events.append, study_dir=tmp_path), events


def finished(events: list[Event]) -> list[TrialFinished]:
    return [e for e in events if isinstance(e, TrialFinished)]


async def test_baseline_first_then_measured_trials(tmp_path: Path) -> None:
    fakes = Fakes()
    orch, events = build(tmp_path, make_config(tmp_path, [8, 16, 32]), fakes)
    outcome = await orch.run()
    records = outcome.records
    assert [r.baseline for r in records] == [True, False, False, False]
    assert "--max-num-seqs" not in fakes.launched[0]  # the baseline is vLLM's defaults
    assert fakes.stopped == 4  # every server was stopped
    assert {r.params["max_num_seqs"] for r in records[1:]} == {8, 16, 32}
    assert all(r.state == "complete" and r.measurement is not None for r in records)
    assert records[1].timings.keys() >= {"launching", "ready", "warmup", "measuring", "teardown"}
    assert outcome.stop.kind in (StopKind.BUDGET, StopKind.SPACE_DONE)
    # Each server finds its own key in its environment, the client gets the same one, and the
    # stored command says where the key was without giving it.
    assert fakes.server_keys == fakes.client_keys and len(set(fakes.server_keys)) == 4
    command = (tmp_path / "trials" / "0001" / "command.txt").read_text()
    key = fakes.server_keys[1]
    assert command.startswith("# VLLM_API_KEY: ") and key is not None and key not in command
    phases = [e.phase for e in events if isinstance(e, TrialPhaseChanged) and e.number == 1]
    assert phases == ["launching", "ready", "warmup", "measuring", "teardown"]


async def test_failures_are_results_and_classified(tmp_path: Path) -> None:
    fakes = Fakes()
    config = make_config(tmp_path, [1, 3, 5, 16], n_trials=5)
    orch, _events = build(tmp_path, config, fakes)
    outcome = await orch.run()
    by_seqs = {r.params.get("max_num_seqs"): r for r in outcome.records if not r.baseline}
    assert by_seqs[1].failure_class == "invalid_args"
    assert by_seqs[3].failure_class == "oom_startup"
    assert by_seqs[5].failure_class == "too_many_errors"
    assert by_seqs[16].state == "complete"
    for r in (by_seqs[1], by_seqs[3]):
        assert r.state == "failed" and r.command and r.failure and r.failure["tail"]
    # A failed configuration is told as infeasible with the worst value, so samplers avoid it.
    assert by_seqs[3].values == (0.0,) and by_seqs[3].feasible is False
    assert fakes.stopped == 3  # servers that started were stopped (baseline, 5, 16)


async def test_consecutive_failures_stop_the_study(tmp_path: Path) -> None:
    fakes = Fakes()
    config = make_config(tmp_path, [1, 3], n_trials=10, failures=2)
    orch, _ = build(tmp_path, config, fakes)
    outcome = await orch.run()
    assert "2 trials failed in a row" in outcome.reason
    assert outcome.stop.kind is StopKind.FAILURES and outcome.resumable


async def test_a_failed_configuration_is_never_launched_again(tmp_path: Path) -> None:
    fakes = Fakes()
    config = replace(make_config(tmp_path, [3], n_trials=6), study=StudySettings(
        name="t", n_trials=6, seed=1, sampler="random",
        noise_repeats=1, remeasure_top=0))  # fmt: skip
    orch, _ = build(tmp_path, config, fakes)
    outcome = await orch.run()
    launched_with_3 = [a for a in fakes.launched if seqs_of(a) == 3]
    assert len(launched_with_3) == 1
    assert "every configuration" in outcome.reason
    assert outcome.stop.kind is StopKind.SPACE_DONE and not outcome.resumable


async def test_sla_makes_trials_infeasible_and_best_feasible(tmp_path: Path) -> None:
    from tui_tuner.core.objectives import best_trials

    fakes = Fakes()
    sla = (SlaTerm("p95_request_latency_ms", "request_latency_p95_ms", 1020.0),)
    config = make_config(tmp_path, [8, 16, 32], sla=sla)
    orch, _ = build(tmp_path, config, fakes)
    outcome = await orch.run()
    by_seqs = {r.params.get("max_num_seqs"): r for r in outcome.records if not r.baseline}
    assert by_seqs[32].feasible is False  # p95 1032 ms > 1020
    best = best_trials("throughput", outcome.records)
    assert [b.params["max_num_seqs"] for b in best] == [16]


async def test_prune_stops_the_running_trial(tmp_path: Path) -> None:
    fakes = Fakes()
    config = replace(make_config(tmp_path, [7], n_trials=2), study=StudySettings(
        name="t", n_trials=2, seed=1, sampler="random", baseline=False,
        remeasure_top=0))  # fmt: skip
    orch, _events = build(tmp_path, config, fakes)
    task = asyncio.ensure_future(orch.run())
    await asyncio.wait_for(fakes.bench_started.wait(), 10)
    assert orch.prune(0)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.records[0].state == "pruned"
    assert "pruned by the user during measuring" in outcome.records[0].note
    assert fakes.stopped == 1


async def test_stop_interrupts_and_requeues_for_resume(tmp_path: Path) -> None:
    fakes = Fakes()
    config = replace(make_config(tmp_path, [7], n_trials=2), study=StudySettings(
        name="t", n_trials=2, seed=1, sampler="random", baseline=False,
        remeasure_top=0))  # fmt: skip
    orch, events = build(tmp_path, config, fakes)
    task = asyncio.ensure_future(orch.run())
    await asyncio.wait_for(fakes.bench_started.wait(), 10)
    orch.stop(StopKind.SIGNAL, "stopped by SIGINT")
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.resumable and outcome.reason == "stopped by SIGINT"
    assert outcome.stop.kind is StopKind.SIGNAL
    assert fakes.stopped == 1
    states = [(r.number, r.state) for r in outcome.records]
    assert states == [(0, "failed"), (1, "waiting")]  # queued again with the same params
    assert outcome.records[1].params == {} or outcome.records[1].state == "waiting"
    assert not any(isinstance(e, StudyFinished) and not e.resumable for e in events)


async def test_a_stop_in_teardown_keeps_the_finished_measurement(tmp_path: Path) -> None:
    fakes = Fakes(stop_s=0.5)
    config = replace(make_config(tmp_path, [8], n_trials=2), study=StudySettings(
        name="t", n_trials=2, seed=1, sampler="random", baseline=False,
        remeasure_top=0))  # fmt: skip
    orch, _events = build(tmp_path, config, fakes)
    task = asyncio.ensure_future(orch.run())
    await asyncio.wait_for(fakes.stopping.wait(), 10)
    orch.stop(StopKind.SIGNAL, "stopped by SIGHUP")
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.resumable and outcome.reason == "stopped by SIGHUP"
    assert [(r.number, r.state) for r in outcome.records] == [(0, "complete")]
    assert outcome.records[0].measurement is not None and fakes.stopped == 1


def _disk_fills_when_a_server_stops(monkeypatch: pytest.MonkeyPatch, fakes: Fakes) -> None:
    real = shutil.disk_usage

    def usage(path: str | Path) -> Any:
        total, used, free = real(path)
        return type(real(path))(total, used, 2**20 if fakes.stopping.is_set() else free)

    monkeypatch.setattr("tui_tuner.engine.between_trials.shutil.disk_usage", usage)


@pytest.mark.parametrize(
    ("seqs", "state"),
    [(8, "complete"), (5, "failed")],  # 5: the benchmark fails, as GuideLLM does on a full disk
    ids=["measured-is-kept", "failure-runs-again"],
)
async def test_a_full_disk_stops_the_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seqs: int, state: str
) -> None:
    """A failure on a full disk says nothing about the flags: the trial runs again once there is
    room. A whole measurement is kept. No trial starts until there is room."""
    fakes = Fakes(stop_s=0.2)
    config = replace(make_config(tmp_path, [seqs, 16], n_trials=3), study=StudySettings(
        name="t", n_trials=3, seed=1, sampler="grid", baseline=False, remeasure_top=0))  # fmt: skip
    orch, _events = build(tmp_path, config, fakes)
    _disk_fills_when_a_server_stops(monkeypatch, fakes)
    outcome = await asyncio.wait_for(orch.run(), 10)
    assert outcome.reason.startswith("the disk holding") and outcome.resumable
    assert outcome.stop.kind is StopKind.DISK_FULL
    assert "(1.0 MiB free); free some space, then resume" in outcome.reason
    first = outcome.records[0]
    assert first.params == {"max_num_seqs": seqs} and first.state == state
    if state == "failed":
        assert first.note.startswith("interrupted: the disk holding") and not first.failure
        assert outcome.records[1].state == "waiting"  # queued to run again
    assert len(fakes.launched) == 1  # nothing started once the disk was full


async def test_a_trial_left_by_a_worker_that_died_meanwhile_runs_again(tmp_path: Path) -> None:
    """In a shared study another worker can die at any time, not only before this one starts:
    its RUNNING trial (silent past the heartbeat limit) is repaired between trials."""
    fakes = Fakes()
    config = make_config(tmp_path, [8, 16, 32], n_trials=4)
    orch, events = build(tmp_path, config, fakes)
    task = asyncio.ensure_future(orch.run())
    await asyncio.wait_for(fakes.bench_started.wait(), 10)
    other = StudyStore(config, default_storage_url(tmp_path))
    plan = other.ask(config.space)  # the other worker's trial, then it dies
    trial = other._live[plan.number]
    trial.set_user_attr("worker", {"host": "elsewhere", "pid": 1})
    trial.set_user_attr("heartbeat", 0.0)
    outcome = await asyncio.wait_for(task, 20)
    notes = [e.text for e in events if isinstance(e, Notice)]
    assert f"trial {plan.number} was left running by a dead tuner" in " ".join(notes)
    dead = next(r for r in outcome.records if r.number == plan.number)
    assert dead.interrupted and dead.note.startswith("interrupted: the tuner running it died")
    rerun = [r for r in outcome.records if r.note == f"runs trial {plan.number} again"]
    assert len(rerun) == 1 and rerun[0].state == "complete"


async def test_the_budgets_last_trial_running_elsewhere_is_waited_for(tmp_path: Path) -> None:
    """Two workers, a budget of two: with the baseline done here and the other worker's trial
    running, this worker neither starts a third trial nor stops; it ends when that one ends."""
    fakes = Fakes()
    config = make_config(tmp_path, [8, 16, 32], n_trials=2)
    other = StudyStore(config, default_storage_url(tmp_path))
    plan = other.ask(config.space)  # the other worker's trial, running
    orch, events = build(tmp_path, config, fakes)
    task = asyncio.ensure_future(orch.run())
    for _ in range(100):
        if any(isinstance(e, Notice) and "run on other workers" in e.text for e in events):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("no notice of waiting for the other worker")
    assert len(fakes.launched) == 1 and not task.done()  # the baseline only
    done = TrialRecord(plan.number, "complete", plan.params, False, measurement(500.0),
                       values=(500.0,))  # fmt: skip
    other.tell(plan, done, values=[500.0], state=TrialState.COMPLETE)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.reason == "budget reached: 2 of 2 trials"
    assert outcome.stop.kind is StopKind.BUDGET and not outcome.resumable
    assert len(fakes.launched) == 1 and len(outcome.records) == 2


def test_a_trial_another_worker_is_just_taking_is_not_repaired(tmp_path: Path) -> None:
    """Between Optuna handing a worker its trial and the worker writing its heartbeat, another
    worker's repair must not take the trial for dead: it used to fail it and queue it again
    without its parameters, which GridSampler then refused (a crash seen in CI)."""
    config = make_config(tmp_path, [8, 16, 32])
    taker = StudyStore(config, default_storage_url(tmp_path))
    other = StudyStore(config, default_storage_url(tmp_path))
    taken = taker.study.ask()  # RUNNING, nothing written on it yet
    assert other.repair() == []
    assert taker.study.get_trials(deepcopy=False)[taken.number].state == TrialState.RUNNING
    # A trial that stays so (its worker died right then) is repaired once it is stale.
    assert other.repair(stale_after_s=0.2) == []
    time.sleep(0.3)
    assert other.repair(stale_after_s=0.2) == [taken.number]


def test_a_dead_worker_of_this_host_is_told_by_the_probe_it_is_given(tmp_path: Path) -> None:
    """Without a liveness probe a trial is judged by its heartbeat alone; with one (the
    adapters' ``pid_alive``, given by the assembly), a dead worker of this host is seen at once."""
    config = make_config(tmp_path, [8, 16, 32])
    url = default_storage_url(tmp_path)
    other = StudyStore(config, url)
    plan = other.ask(config.space)
    other._live[plan.number].set_user_attr("worker", {"host": socket.gethostname(), "pid": 999})
    assert StudyStore(config, url).repair() == []  # its heartbeat is fresh
    probed = StudyStore(config, url, pid_alive=lambda pid: pid != 999)
    assert probed.repair() == [plan.number]


async def test_a_stop_request_in_the_storage_stops_this_worker(tmp_path: Path) -> None:
    fakes = Fakes()
    config = make_config(tmp_path, [7, 8], n_trials=3)
    orch, events = build(tmp_path, config, fakes)
    task = asyncio.ensure_future(orch.run())
    await asyncio.wait_for(fakes.bench_started.wait(), 10)
    StudyStore(config, default_storage_url(tmp_path)).update_control(stop_at=time.time())
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.stop.kind is StopKind.REQUEST and outcome.resumable
    assert outcome.reason == "stopped by a request in the study storage"
    assert [e.stop_kind for e in events if isinstance(e, StudyFinished)] == [StopKind.REQUEST]


async def test_gpu_memory_not_released_stops_after_the_trial(tmp_path: Path) -> None:
    class HeldGpu(Fakes):
        async def wait_released(
            self, pids: Collection[int], timeout_s: float
        ) -> tuple[bool, float]:
            return False, timeout_s

    fakes = HeldGpu()
    orch, _ = build(tmp_path, make_config(tmp_path, [8, 16]), fakes)
    outcome = await asyncio.wait_for(orch.run(), 10)
    assert outcome.stop.kind is StopKind.GPU_NOT_RELEASED and outcome.resumable
    assert outcome.reason == "GPU memory of the last server was not released; check nvidia-smi"
    assert [r.state for r in outcome.records] == ["complete"]  # its result is kept


async def test_pause_waits_after_the_running_trial(tmp_path: Path) -> None:
    fakes = Fakes()
    orch, events = build(tmp_path, make_config(tmp_path, [8, 16, 32]), fakes)
    task = asyncio.ensure_future(orch.run())
    await asyncio.wait_for(fakes.bench_started.wait(), 10)
    orch.pause()
    await asyncio.sleep(0.3)
    assert len(finished(events)) == 1 and not task.done()
    orch.resume()
    outcome = await asyncio.wait_for(task, 10)
    assert len(outcome.records) == 4


@pytest.mark.parametrize("kind", ["latency", "pareto"])
async def test_other_objectives(tmp_path: Path, kind: str) -> None:
    fakes = Fakes()
    orch, _ = build(tmp_path, make_config(tmp_path, [8, 16], kind=kind, n_trials=3), fakes)
    outcome = await orch.run()
    values = [r.values for r in outcome.records]
    assert all(v is not None and len(v) == (2 if kind == "pareto" else 1) for v in values)


async def test_a_changed_server_setup_gets_a_new_baseline_and_retries(tmp_path: Path) -> None:
    """A failed baseline is not retried under the same setup, but fixing the server section
    (here: other fixed flags) measures a new baseline and tries configurations again."""
    fakes = Fakes()
    config = make_config(tmp_path, [3, 16], n_trials=3)
    failing = replace(config, server=replace(config.server, flags={"max_num_seqs": 1}))
    orch, _ = build(tmp_path, failing, fakes)
    outcome = await orch.run()
    assert "the baseline (vLLM defaults) failed (invalid_args)" in outcome.reason
    assert outcome.stop.kind is StopKind.BASELINE_FAILED
    fixed = replace(config, server=replace(config.server, flags={"max_model_len": 4096}))
    orch, _ = build(tmp_path, fixed, fakes)
    outcome = await orch.run()
    baselines = [r for r in outcome.records if r.baseline]
    assert [r.state for r in baselines] == ["failed", "complete"]


@pytest.mark.parametrize("where", ["ask", "find_same", "find_running_same"])
async def test_a_stop_between_two_trials_starts_no_other(tmp_path: Path, where: str) -> None:
    """A signal that arrives while the next trial is being asked for (a storage call, long on a
    loaded machine) stops the study there: the trial asked for is queued again, unlaunched.
    It used to be launched and measured to its end (issue 16, seen with SIGTERM and SIGHUP)."""
    fakes = Fakes()
    config = make_config(tmp_path, [8, 16, 32], n_trials=4)
    orch, _events = build(tmp_path, config, fakes)
    loop = asyncio.get_running_loop()
    calls = {"n": 0}
    original = getattr(orch.store, where)

    def stop_during(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the trial after the baseline: the signal lands mid-call
            loop.call_soon_threadsafe(orch.stop, StopKind.SIGNAL, "stopped by SIGTERM")
            time.sleep(0.05)
        return original(*args)

    setattr(orch.store, where, stop_during)
    outcome = await asyncio.wait_for(orch.run(), 20)
    assert outcome.stop.kind is StopKind.SIGNAL
    assert len(fakes.launched) == 1  # the baseline's server, and no other
    asked = [r for r in outcome.records if not r.baseline]
    assert [r.interrupted for r in asked if r.state == "failed"] == [True]
    assert any(r.state == "waiting" for r in asked)  # queued to run on resume


async def test_a_pause_while_the_next_trial_is_asked_for_holds_it(tmp_path: Path) -> None:
    """`p` pauses after the running trial; pressed while the next one is being asked for, that
    one waits too (queued again, unlaunched) and runs on resume."""
    fakes = Fakes()
    config = make_config(tmp_path, [8, 16], n_trials=3)
    orch, _events = build(tmp_path, config, fakes)
    loop = asyncio.get_running_loop()
    calls = {"n": 0}
    original = orch.store.ask

    def pause_during(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            loop.call_soon_threadsafe(orch.pause)
            time.sleep(0.05)
        return original(*args)

    orch.store.ask = pause_during  # type: ignore[method-assign]
    task = asyncio.ensure_future(orch.run())
    while not orch.paused:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    assert len(fakes.launched) == 1  # the baseline only: the paused study launched nothing
    orch.resume()
    outcome = await asyncio.wait_for(task, 20)
    assert outcome.stop.kind in (StopKind.BUDGET, StopKind.SPACE_DONE)
    assert len(fakes.launched) == 3
