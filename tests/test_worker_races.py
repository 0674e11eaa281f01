"""Two workers of one study at the same instant: who runs a configuration both took, and who
repairs a dead worker's trial. Two `StudyStore`s on one SQLite study stand for two workers
(their storage calls are what races; the processes around them are not needed)."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.engine import make_config
from tui_tuner.engine.study import StudyStore, default_storage_url


def two_workers(tmp_path: Path) -> tuple[StudyStore, StudyStore]:
    config = make_config(tmp_path, [8, 16])
    url = default_storage_url(tmp_path)
    return StudyStore(config, url), StudyStore(config, url)


def test_two_workers_that_took_the_same_configuration_at_once_skip_only_the_later(
    tmp_path: Path,
) -> None:
    a, b = two_workers(tmp_path)
    # Started together, each queued a baseline before seeing the other's.
    for store in (a, b):
        store.study.enqueue_trial({}, user_attrs={"baseline": True})
    first, second = a.ask(a.config.space), b.ask(b.config.space)
    assert first.baseline and second.baseline
    # Before: each found the other's running and skipped its own; neither was measured.
    assert a.find_running_same(first) is None  # the earlier one runs
    assert b.find_running_same(second) == first.number  # the later one is skipped


def test_a_dead_workers_trial_repaired_by_two_workers_is_queued_once(tmp_path: Path) -> None:
    a, b = two_workers(tmp_path)
    dead = a.ask(a.config.space)  # a's worker dies with it RUNNING
    running = [t.number for t in b.study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
    assert running == [dead.number]  # b reads it RUNNING, and so does c
    c = StudyStore(a.config, default_storage_url(tmp_path))
    assert c._interrupt(dead.number, dead.params, dead.baseline, "interrupted: died") is True
    # b repairs what it read a moment before: the storage says it is finished, b queues nothing
    # (it stopped with Optuna's "has already finished" error before, or queued it twice).
    assert b._interrupt(dead.number, dead.params, dead.baseline, "interrupted: died") is False
    queued = [t for t in c.study.get_trials(deepcopy=False) if t.state.name == "WAITING"]
    assert [t.user_attrs.get("rerun_of") for t in queued].count(dead.number) == 1


async def test_a_worker_joining_a_paused_study_starts_paused_and_resumes_nobody(
    tmp_path: Path,
) -> None:
    from tests.fakes.engine import Fakes
    from tui_tuner.engine.orchestrator import Orchestrator
    from tui_tuner.engine.trial_runner import TrialRunner

    a, b = two_workers(tmp_path)
    a.ensure_baseline()
    a.ask(a.config.space)  # another worker's trial runs
    a.update_control(paused=True, prune=7)  # and the study was paused from an attached TUI
    fakes = Fakes()
    runner = TrialRunner(b.config, tmp_path, fakes, fakes, fakes, lambda e: None)
    joining = Orchestrator(b.config, b, runner, lambda e: None, study_dir=tmp_path)
    try:
        await joining._open()
    finally:
        joining._io.close()
    assert joining.paused  # it obeys the pause at once, before its first trial
    control = b.control()
    assert control.paused and control.prune == {7}  # the others stay paused


async def test_a_worker_starting_alone_clears_what_an_earlier_run_left(tmp_path: Path) -> None:
    from tests.fakes.engine import Fakes
    from tui_tuner.engine.orchestrator import Orchestrator
    from tui_tuner.engine.trial_runner import TrialRunner

    a, _ = two_workers(tmp_path)
    a.update_control(paused=True, prune=3)  # left by a run that ended paused
    fakes = Fakes()
    runner = TrialRunner(a.config, tmp_path, fakes, fakes, fakes, lambda e: None)
    orch = Orchestrator(a.config, a, runner, lambda e: None, study_dir=tmp_path)
    try:
        await orch._open()
    finally:
        orch._io.close()
    assert not orch.paused and not a.control().paused and a.control().prune == set()


def test_a_restarted_worker_with_its_predecessors_host_and_pid_repairs_its_trial(
    tmp_path: Path,
) -> None:
    """A pod of an Indexed Job restarted: the same hostname, and often the same pid. Its dead
    predecessor's trial is not taken for its own live one (it would wait 120 s, or forever
    for a study run by one pod)."""
    import os

    a, _ = two_workers(tmp_path)
    left = a.ask(a.config.space)
    worker = {**a._worker, "run": "a-process-before-this-one"}  # same host, same pid
    a.set_trial_attr(left, "worker", worker)
    restarted = StudyStore(a.config, default_storage_url(tmp_path))
    restarted.pid_alive = lambda pid: pid == os.getpid()
    assert restarted.repair() == [left.number]
    # This process's own running trials (any lane's) are never repaired by it.
    mine = restarted.ask(restarted.config.space)
    assert mine.number not in restarted.repair()
