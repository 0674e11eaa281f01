"""What a finished trial tells the optimiser (engine/verdict.py), without Optuna or a storage."""

from __future__ import annotations

import math
from typing import Any

from optuna.trial import TrialState

from tests.fakes.engine import measurement
from tui_tuner.core.config import ObjectiveSettings, SlaTerm
from tui_tuner.core.failures import Failure, FailureClass
from tui_tuner.core.objectives import BASELINE_CONSTRAINT, FAILED_CONSTRAINT
from tui_tuner.core.trial import TrialPlan, TrialRecord
from tui_tuner.engine.trial_runner import TrialProgress
from tui_tuner.engine.verdict import Verdict, duplicate, judge, running_elsewhere

PLAN = TrialPlan(3, {"max_num_seqs": 16}, baseline=False)
SLA = ObjectiveSettings(sla=(SlaTerm("p95_ttft_ms", "ttft_p95_ms", 150.0),))


def progress(**fields: Any) -> TrialProgress:
    p = TrialProgress(PLAN.number, argv=["vllm", "serve", "m"], phase="teardown")
    p.timings = {"launching": 2.0, "total": 9.0}
    for key, value in fields.items():
        setattr(p, key, value)
    return p


def verdict(p: TrialProgress, objective: ObjectiveSettings = SLA, **given: Any) -> Verdict:
    return judge(PLAN, p, objective=objective, command=("vllm", "serve", "m"),
                 files={"server.log": "/s/server.log"}, finished_at=100.0, **given)  # fmt: skip


def test_a_measured_trial_is_complete_with_values_and_constraints() -> None:
    m = measurement(1600.0, ttft_p95_ms=120.0)
    v = verdict(progress(measurement=m, repeats_output_tok_s=[1500.0, 1600.0]))
    assert v.state == TrialState.COMPLETE and v.values == [1600.0] and not v.interrupted
    r = v.record
    assert r.state == "complete" and r.measurement == m and r.feasible
    assert r.constraints == {"p95_ttft_ms": -30.0, FAILED_CONSTRAINT: 0.0}
    assert r.values == (1600.0,) and r.repeats_output_tok_s == (1500.0, 1600.0)
    assert r.command == ("vllm", "serve", "m") and r.files == {"server.log": "/s/server.log"}
    assert r.timings["total"] == 9.0 and r.finished_at == 100.0


def test_latency_is_judged_against_the_baseline() -> None:
    objective = ObjectiveSettings(latency_vs_baseline=True)
    p = progress(measurement=measurement(1600.0, p95_ms=1300.0))
    worse = verdict(p, objective, baseline_p95_ms=1000.0).record
    assert worse.constraints[BASELINE_CONSTRAINT] == 300.0 and worse.feasible is False
    # No baseline measured yet: the trial is its own reference.
    assert verdict(p, objective).record.constraints[BASELINE_CONSTRAINT] == 0.0


def test_a_failure_of_the_configuration_is_infeasible_with_the_worst_values() -> None:
    failure = Failure(FailureClass.OOM_STARTUP, "CUDA out of memory", 1, ("oom",), "startup")
    v = verdict(progress(failure=failure), ObjectiveSettings(kind="pareto", sla=SLA.sla))
    assert v.state == TrialState.COMPLETE and v.values == [0.0, math.inf]
    r = v.record
    assert r.state == "failed" and r.failure_class == "oom_startup" and r.feasible is False
    assert r.constraints == {"p95_ttft_ms": 1.0, FAILED_CONSTRAINT: 1.0}


def test_a_failure_of_the_environment_says_nothing_to_the_sampler() -> None:
    failure = Failure(FailureClass.GPU_BUSY, "the GPU is busy", None, (), "startup")
    v = verdict(progress(failure=failure))
    assert v.state == TrialState.FAIL and v.values is None
    assert v.record.state == "failed" and v.record.values is None and not v.record.constraints


def test_pruned_by_the_user_keeps_what_was_seen_in_the_note() -> None:
    partial = {"elapsed_s": 4.0, "successful": 12, "errored": 1, "output_tok_s": 812.4}
    p = progress(measurement=measurement(900.0), partial=partial, stopped_in="measuring")
    v = verdict(p, pruned=True)
    assert v.state == TrialState.PRUNED and v.values is None
    assert v.record.state == "pruned" and v.record.measurement is None
    assert v.record.note == (
        "pruned by the user during measuring; so far 12 ok, 1 errors, 812 output tok/s"
    )
    assert v.record.partial == partial
    assert verdict(progress(phase="launching"), pruned=True).record.note == (
        "pruned by the user during launching"
    )


def test_an_interrupted_trial_is_not_told_and_runs_again() -> None:
    note = "interrupted: stopped by SIGINT; it runs again on resume"
    failure = Failure(FailureClass.BENCHMARK_FAILED, "killed", None, (), "load")
    v = verdict(progress(failure=failure), interrupted=note, pruned=True)
    assert v.interrupted and v.state is None and v.values is None
    assert v.record.state == "failed" and v.record.interrupted and v.record.note == note


def test_a_rerun_says_which_trial_it_runs_again() -> None:
    plan = TrialPlan(5, {"max_num_seqs": 16}, baseline=False, rerun_of=2)
    v = judge(plan, progress(measurement=measurement(1.0)), objective=SLA, command=(),
              files={}, finished_at=1.0)  # fmt: skip
    assert v.record.note == "runs trial 2 again"


def test_a_duplicate_repeats_what_the_sampler_was_told() -> None:
    same = TrialRecord(1, "complete", {"max_num_seqs": 16}, measurement=measurement(1600.0),
                       values=(1600.0,), constraints={"x": -1.0}, timings={"total": 9.0},
                       files={"server.log": "/s"})  # fmt: skip
    v = duplicate(PLAN, same, now=50.0)
    assert v.state == TrialState.COMPLETE and v.values == [1600.0]
    r = v.record
    assert (r.number, r.duplicate_of, r.constraints) == (3, 1, {"x": -1.0})
    assert r.timings == {} and r.files == {} and r.started_at == r.finished_at == 50.0
    assert r.note == "same configuration as trial 1; its result is repeated, nothing was run"
    pruned = TrialRecord(1, "pruned", {"max_num_seqs": 16})
    assert duplicate(PLAN, pruned, 1.0).state == TrialState.PRUNED
    failed = TrialRecord(1, "failed", {"max_num_seqs": 16}, failure={"class": "gpu_busy"})
    assert duplicate(PLAN, failed, 1.0).state == TrialState.FAIL


def test_a_configuration_running_elsewhere_is_skipped_uncounted() -> None:
    v = running_elsewhere(PLAN, 2, now=7.0)
    assert v.state == TrialState.FAIL and v.values is None
    assert v.record.state == "failed" and v.record.duplicate_of == 2
    assert v.record.note == "skipped: trial 2 runs the same configuration on another worker"
