"""Failures that are nobody's fault never strand a study (issue 16).

A trial that fails for reasons outside its flags (GuideLLM killed, the server killed from
outside) or is measured on a frozen server runs again, once; twice, and it is told as
infeasible so that the search moves on. A sampler that only proposes configurations with
results is redirected to an untried one, so a study never ends on "tried already" while its
budget is not spent and some configuration is unmeasured; a seeded sampler never replays itself
after a resume. Against the fake adapters: no process is started.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tests.fakes.engine import Fakes, make_config, seqs_of
from tui_tuner.core.config import StudyConfig, StudySettings
from tui_tuner.core.events import Event, Notice, TrialFinished
from tui_tuner.core.objectives import best_trials
from tui_tuner.core.stop import StopKind
from tui_tuner.core.trial import counts_against_budget
from tui_tuner.engine.orchestrator import Orchestrator
from tui_tuner.engine.stop_rules import REDIRECT_AFTER_DUPLICATES
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.engine.trial_runner import TrialRunner


def build(
    tmp_path: Path, config: StudyConfig, fakes: Fakes, sampler: optuna.samplers.BaseSampler | None
) -> tuple[Orchestrator, list[Event]]:
    events: list[Event] = []
    store = StudyStore(config, default_storage_url(tmp_path))
    if sampler is not None:
        store.study.sampler = sampler
    runner = TrialRunner(config, tmp_path, fakes, fakes, fakes, events.append)
    return Orchestrator(config, store, runner, events.append, study_dir=tmp_path), events


async def run(
    tmp_path: Path,
    options: list[int],
    fakes: Fakes,
    *,
    n_trials: int,
    sampler: optuna.samplers.BaseSampler | None = None,
    baseline: bool = False,
) -> tuple[list, list[Event], object]:
    config = make_config(tmp_path, options, n_trials=n_trials)
    config = replace(config, study=replace(config.study, baseline=baseline))
    orch, events = build(tmp_path, config, fakes, sampler)
    outcome = await orch.run()
    return outcome.records, events, outcome.stop


def launches(fakes: Fakes, seqs: int) -> int:
    return sum(seqs_of(a) == seqs for a in fakes.launched)


async def test_a_killed_load_generator_runs_the_configuration_again(tmp_path: Path) -> None:
    fakes = Fakes(bench_crashes={16: 1})
    records, events, stop = await run(tmp_path, [16, 32], fakes, n_trials=2)
    first, again = (r for r in records if r.params.get("max_num_seqs") == 16)
    assert first.failure_class == "benchmark_failed" and first.rerun
    assert again.state == "complete" and again.measurement is not None
    assert again.note == f"runs trial {first.number} again"
    assert launches(fakes, 16) == 2
    # The failed run does not spend the budget; the study measured both configurations.
    assert [counts_against_budget(r) for r in records].count(True) == 2
    assert stop.kind in (StopKind.BUDGET, StopKind.SPACE_DONE)  # type: ignore[attr-defined]
    assert any(isinstance(e, Notice) and "it runs again" in e.text for e in events)


async def test_a_configuration_that_fails_so_twice_is_told_infeasible(tmp_path: Path) -> None:
    fakes = Fakes(bench_crashes={16: 5})
    records, _, _ = await run(tmp_path, [16, 32], fakes, n_trials=2)
    runs = [r for r in records if r.params.get("max_num_seqs") == 16]
    assert len(runs) == 2 and launches(fakes, 16) == 2  # one run again, no more
    assert runs[0].rerun and not runs[1].rerun
    assert runs[1].values == (0.0,) and runs[1].feasible is False  # the sampler learns
    assert "told as infeasible" in runs[1].note
    study = optuna.load_study(study_name="t", storage=default_storage_url(tmp_path))
    assert study.trials[runs[1].number].state == TrialState.COMPLETE


async def test_a_server_killed_from_outside_runs_again(tmp_path: Path) -> None:
    fakes = Fakes(killed={16: 1})
    records, _, _ = await run(tmp_path, [16, 32], fakes, n_trials=2)
    first, again = (r for r in records if r.params.get("max_num_seqs") == 16)
    assert first.failure_class == "server_killed" and first.rerun
    assert "killed by SIGKILL" in str((first.failure or {}).get("message"))
    assert again.state == "complete"


async def test_a_measurement_on_a_stalled_server_runs_again_and_never_wins(
    tmp_path: Path,
) -> None:
    fakes = Fakes(stalls={32: 1})
    records, _, _ = await run(tmp_path, [16, 32], fakes, n_trials=2)
    first, again = (r for r in records if r.params.get("max_num_seqs") == 32)
    assert first.rerun and first.state == "failed" and "measured through a stall" in first.note
    assert first.measurement is not None and first.measurement.stall_s == 15.0  # kept, shown
    assert again.state == "complete" and again.measurement is not None
    assert again.measurement.output_tok_s == 3200.0
    # Stalled twice: measured, but never the best.
    fakes = Fakes(stalls={32: 2})
    (tmp_path / "b").mkdir()
    records, _, _ = await run(tmp_path / "b", [16, 32], fakes, n_trials=2)
    last = [r for r in records if r.params.get("max_num_seqs") == 32][-1]
    assert last.state == "complete" and "never the best" in last.note
    assert [b.params["max_num_seqs"] for b in best_trials("throughput", records)] == [16]


async def test_a_baseline_whose_load_generator_was_killed_is_measured_again(
    tmp_path: Path,
) -> None:
    fakes = Fakes(bench_crashes={10: 1})  # the fakes measure the baseline as seqs 10
    records, _, stop = await run(tmp_path, [16], fakes, n_trials=2, baseline=True)
    assert [r.baseline for r in records[:2]] == [True, True]
    assert records[0].rerun and records[1].state == "complete"
    assert stop.kind is not StopKind.BASELINE_FAILED  # type: ignore[attr-defined]


class _Stuck(optuna.samplers.RandomSampler):
    """A sampler that proposes one configuration forever (as TPE did, for a configuration it
    had no value for)."""

    def sample_independent(self, study, trial, param_name, param_distribution):  # type: ignore[no-untyped-def]
        return 16


async def test_a_sampler_stuck_on_a_tried_configuration_is_redirected(tmp_path: Path) -> None:
    fakes = Fakes()
    records, events, stop = await run(tmp_path, [8, 16, 32], fakes, n_trials=3, sampler=_Stuck())
    measured = {r.params["max_num_seqs"] for r in records if r.measurement is not None}
    assert measured == {8, 16, 32}  # every configuration, not "tried already" at one
    assert stop.kind in (StopKind.BUDGET, StopKind.SPACE_DONE)  # type: ignore[attr-defined]
    streak = longest = 0
    for e in events:
        if isinstance(e, TrialFinished):
            streak = streak + 1 if e.record.duplicate_of is not None else 0
            longest = max(longest, streak)
    assert longest <= REDIRECT_AFTER_DUPLICATES
    # Once every configuration has a result, the study ends, and a resume adds no trial.
    records, _, stop = await run(tmp_path, [8, 16, 32], fakes, n_trials=10, sampler=_Stuck())
    assert stop.kind is StopKind.SPACE_DONE  # type: ignore[attr-defined]
    before = len(records)
    records, _, _ = await run(tmp_path, [8, 16, 32], fakes, n_trials=10, sampler=_Stuck())
    assert len(records) == before


def test_a_seeded_sampler_does_not_replay_itself_after_a_resume(tmp_path: Path) -> None:
    config = make_config(tmp_path, list(range(1, 1001)), n_trials=10)
    config = replace(config, study=StudySettings(name="t", n_trials=10, seed=7, sampler="random",
                                                 baseline=False))  # fmt: skip

    def propose(n: int) -> list[object]:
        store = StudyStore(config, default_storage_url(tmp_path))
        out = []
        for _ in range(n):
            plan = store.ask(config.space)
            store.study.tell(plan.number, 1.0)
            out.append(plan.params["max_num_seqs"])
        return out

    first = propose(3)
    assert propose(3) != first


async def test_measuring_starts_when_the_warmup_is_over_between_progress_records(
    tmp_path: Path,
) -> None:
    """GuideLLM logs progress every 10 s: its "active" may come late or never in a short run.
    The phase follows the warmup's own clock from the "started" record (issue 16)."""
    from tui_tuner.core.events import TrialPhaseChanged

    fakes = Fakes(quiet_s=1.0)
    config = make_config(tmp_path, [16], n_trials=1)
    config = replace(config, study=replace(config.study, baseline=False),
                     workload=replace(config.workload, warmup_s=0.3))  # fmt: skip
    orch, events = build(tmp_path, config, fakes, None)
    await orch.run()
    phases = [(e.phase, e.elapsed_s) for e in events if isinstance(e, TrialPhaseChanged)]
    names = [p for p, _ in phases]
    assert names == ["launching", "ready", "warmup", "measuring", "teardown"], phases
    warmup_at, measuring_at, teardown_at = (
        dict(phases)[p] for p in ("warmup", "measuring", "teardown")
    )
    assert 0.25 <= measuring_at - warmup_at < 0.9 and teardown_at - measuring_at > 0.4, phases


async def test_a_busy_gpu_runs_again_once_and_is_never_told_infeasible(tmp_path: Path) -> None:
    from tui_tuner.core.failures import Failure, FailureClass
    from tui_tuner.core.trial import TrialPlan
    from tui_tuner.engine.trial_runner import TrialProgress
    from tui_tuner.engine.verdict import judge

    config = make_config(tmp_path, [16])
    busy = Failure(FailureClass.GPU_BUSY, "GPU busy", 1, (), "startup")
    for retries, rerun, state in ((0, True, TrialState.FAIL), (1, False, TrialState.FAIL)):
        plan = TrialPlan(1, {"max_num_seqs": 16}, False, retries=retries)
        progress = TrialProgress(1, ["vllm"])
        progress.failure = busy
        verdict = judge(plan, progress, objective=config.objective, command=(), files={},
                        finished_at=0.0)  # fmt: skip
        assert (verdict.record.rerun, verdict.state, verdict.values) == (rerun, state, None)


async def test_a_configuration_vllm_would_refuse_is_told_infeasible_without_a_launch(
    tmp_path: Path,
) -> None:
    """With chunked prefill off, vLLM refuses max_num_batched_tokens below max_model_len at
    start-up: such a configuration is never launched (issue 10: no trial spent on it)."""
    from tui_tuner.core.space import Param, SearchSpace

    config = make_config(tmp_path, [16], n_trials=3)
    flags = {"max_model_len": 4096, "enable_chunked_prefill": False}
    space = SearchSpace(
        (Param("max_num_batched_tokens", "max_num_batched_tokens", "options",
               options=(1024, 8192)),)
    )  # fmt: skip
    config = replace(config, server=replace(config.server, flags=flags), space=space)
    fakes = Fakes()
    records, _, stop = await run_config(tmp_path, config, fakes)
    refused = [r for r in records if r.params.get("max_num_batched_tokens") == 1024]
    assert len(refused) == 1 and refused[0].rejected and not counts_against_budget(refused[0])
    assert refused[0].failure_class == "invalid_args" and refused[0].values == (0.0,)
    assert "is smaller than max_model_len" in str((refused[0].failure or {}).get("message"))
    assert not any("1024" in a for argv in fakes.launched for a in argv)  # never launched
    assert stop.kind in (StopKind.BUDGET, StopKind.SPACE_DONE)  # type: ignore[attr-defined]


async def run_config(
    tmp_path: Path, config: StudyConfig, fakes: Fakes
) -> tuple[list, list, object]:
    orch, events = build(tmp_path, config, fakes, None)
    outcome = await orch.run()
    return outcome.records, events, outcome.stop
