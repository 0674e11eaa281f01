"""What a finished trial tells the optimiser, as pure functions: its state, its objective values
and constraints, and the record the study keeps.

- Measured: the objective's values and the constraints (SLA terms, latency against the
  baseline); Optuna's COMPLETE.
- Failed by its configuration (``CONFIG_CAUSED``: it would fail again): COMPLETE with the worst
  values and every constraint violated, so that samplers learn to avoid the region; the tuner's
  record says ``failed``.
- Failed for another reason (a load generator crash, a kill from outside, a busy GPU), or
  measured on a server that froze (``measurement.stalled``): it says nothing about the flags.
  FAIL, and the record is marked ``rerun``: the orchestrator queues the configuration to run
  again, so the sampler learns from that trial. A configuration that does it again
  (``RERUNS``) is told as infeasible, so that the search moves on; but not for a cause of the
  machine (a busy GPU or port, ``MACHINE_WIDE``): that stays a FAIL (the study's failure streak
  stops a study on a busy machine, and the orchestrator redirects a sampler stuck on it).
- Pruned by the user: PRUNED, its partial figures kept in the note.
- Stopped early as hopeless (``core/early_stop.py``: it cannot beat the best so far by the
  noise): PRUNED too, its note saying so with the figures the rule judged (the partial figures
  on the record). TPE puts pruned trials in its "worse" group, behind every complete one, which
  is what a hopeless trial is; no intermediate value is reported (TPE would only order pruned
  trials among themselves by it, and would give the trial a value in the storage). A load
  stopped for its errors is not this: it fails as ``too_many_errors``, as its whole run would.
- Interrupted by the tuner (a stop, a pause now, a full disk): not told at all: it is failed and
  queued to run again (``Verdict.state`` None).

Nothing here calls Optuna or the storage (tests/test_verdict.py); the orchestrator tells.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from optuna.trial import TrialState

from tui_tuner.core.config import ObjectiveSettings
from tui_tuner.core.equivalence import duplicate_note
from tui_tuner.core.failures import CONFIG_CAUSED, MACHINE_WIDE, Failure, FailureClass
from tui_tuner.core.gpus import too_many_gpus
from tui_tuner.core.measurement import stalled
from tui_tuner.core.objectives import (
    constraint_values,
    failed_constraints,
    failed_values,
    objective_values,
)
from tui_tuner.core.trial import TrialPlan, TrialRecord
from tui_tuner.core.vllm_rules import given_violations
from tui_tuner.engine.trial_runner import TrialProgress

__all__ = ["RERUNS", "Verdict", "duplicate", "judge", "rejected", "running_elsewhere"]

#: How many times a configuration runs again after a trial that failed, or was measured on a
#: frozen server, for reasons outside its flags.
RERUNS = 1


@dataclass(frozen=True)
class Verdict:
    """The record the study keeps, and what Optuna is told (``state``, ``values``; the
    constraints are the record's). ``state`` None: interrupted, to run again."""

    record: TrialRecord
    state: TrialState | None
    values: list[float] | None = None

    @property
    def interrupted(self) -> bool:
        return self.state is None


def judge(
    plan: TrialPlan,
    progress: TrialProgress,
    *,
    objective: ObjectiveSettings,
    command: tuple[str, ...],
    files: Mapping[str, str],
    finished_at: float,
    interrupted: str | None = None,
    pruned: bool = False,
    baseline_p95_ms: float | None = None,
) -> Verdict:
    """The verdict on a trial that ran (``progress``: how far it got). ``interrupted``: the note
    of a trial the tuner cut short (it wins over everything else); ``pruned``: the user pruned
    it; ``baseline_p95_ms``: the baseline's p95 latency, for ``latency_vs_baseline``."""
    record = TrialRecord(
        number=plan.number,
        state="complete",
        params=plan.params,
        baseline=plan.baseline,
        measurement=progress.measurement,
        timings=dict(progress.timings),
        command=command,
        files=dict(files),
        partial=dict(progress.partial),
        client_limited=progress.client_limited,
        repeats_output_tok_s=tuple(progress.repeats_output_tok_s),
        note="" if plan.rerun_of is None else f"runs trial {plan.rerun_of} again",
        repeat=plan.repeat,
        server_of=progress.server_of,
        started_at=progress.started_at,
        finished_at=finished_at,
    )
    if interrupted is not None:
        return Verdict(replace(record, state="failed", note=interrupted, interrupted=True), None)
    if progress.early_stopped is not None and not pruned:  # the user's prune is said as such
        return Verdict(replace(record, state="pruned", note=progress.early_stopped,
                               measurement=None), TrialState.PRUNED)  # fmt: skip
    if pruned:
        done = progress.partial
        note = f"pruned by the user during {progress.stopped_in or progress.phase}"
        if done:
            note += (
                f"; so far {int(done['successful'])} ok, {int(done['errored'])} errors, "
                f"{done['output_tok_s']:.0f} output tok/s"
            )
        return Verdict(replace(record, state="pruned", note=note, measurement=None),
                       TrialState.PRUNED)  # fmt: skip
    failure = progress.failure
    if failure is not None:
        record = replace(record, state="failed", failure=failure.to_dict())
        if failure.cls not in CONFIG_CAUSED:
            if plan.retries < RERUNS:
                note = f"failed ({failure.cls}), not because of its flags; it runs again"
                return Verdict(replace(record, rerun=True, note=note), TrialState.FAIL)
            if failure.cls in MACHINE_WIDE:
                note = f"failed again ({failure.cls}): the machine, not the flags"
                return Verdict(replace(record, note=note), TrialState.FAIL)
            note = (
                f"failed again ({failure.cls}) on its run number {plan.retries + 1}; "
                "told as infeasible so that the search moves on"
            )
            record = replace(record, note=note)
        values = failed_values(objective.kind)
        record = replace(record, values=tuple(values), constraints=failed_constraints(objective))
        return Verdict(record, TrialState.COMPLETE, list(values))
    m = progress.measurement
    assert m is not None, "a trial that neither failed nor was stopped has a measurement"
    if stalled(m) and plan.retries < RERUNS:
        note = (
            f"measured through a stall: no token for {m.stall_s:.1f} s with requests in flight "
            "(a frozen server or load generator); the figure is kept but not used, and it "
            "runs again"
        )
        return Verdict(replace(record, state="failed", rerun=True, note=note), TrialState.FAIL)
    values = objective_values(objective.kind, m)
    base = None if plan.baseline else baseline_p95_ms
    record = replace(
        record, values=tuple(values), constraints=constraint_values(objective, m, base)
    )
    if stalled(m):
        note = f"stalled again ({m.stall_s:.1f} s without a token): never the best"
        record = replace(record, note=f"{record.note}; {note}" if record.note else note)
    return Verdict(record, TrialState.COMPLETE, list(values))


def duplicate(plan: TrialPlan, same: TrialRecord, now: float, *, why: str | None = None) -> Verdict:
    """The sampler proposed a configuration tried already (``same``), or one that cannot
    differ from it under this load (``why``, `core/equivalence.py`): its result is repeated,
    nothing runs, and the sampler is told the same again."""
    note = f"same configuration as trial {same.number}; its result is repeated, nothing was run"
    record = replace(
        same,
        number=plan.number,
        params=plan.params,
        duplicate_of=same.number,
        note=note if why is None else duplicate_note(same.number, why),
        timings={},
        files={},
        server_of=None,
        started_at=now,
        finished_at=now,
    )
    if same.values is not None:
        return Verdict(record, TrialState.COMPLETE, list(same.values))
    return Verdict(record, TrialState.PRUNED if same.state == "pruned" else TrialState.FAIL)


def running_elsewhere(plan: TrialPlan, number: int, now: float) -> Verdict:
    """Another worker runs this configuration now (trial ``number``): skipped, as a failed
    Optuna trial (which samplers ignore), not counted against the budget."""
    record = TrialRecord(
        number=plan.number,
        state="failed",
        params=plan.params,
        baseline=plan.baseline,
        duplicate_of=number,
        note=f"skipped: trial {number} runs the same configuration on another worker",
        started_at=now,
        finished_at=now,
    )
    return Verdict(record, TrialState.FAIL)


def rejected(
    plan: TrialPlan,
    fixed: Mapping[str, object],
    objective: ObjectiveSettings,
    now: float,
    *,
    gpus_on_node: int | None = None,
) -> Verdict | None:
    """A configuration vLLM is sure to refuse at start-up, judged from the fixed flags and the
    trial's own (``core.vllm_rules.given_violations``: vLLM's cross-field checks, applied only
    when every input is given), or one that needs more GPUs than the tuner hands out
    (``gpus_on_node``, `core/gpus.py`): told infeasible, as its failed launch would be, without
    the launch. None when vLLM would start it."""
    if plan.baseline:
        return None
    values = {**fixed, **{flag.dest: value for flag, value in plan.settings.server}}
    found = [v.message for v in given_violations(values)]
    if gpus_on_node is not None:
        found += filter(None, [too_many_gpus(values, gpus_on_node)])
    if not found:
        return None
    message = f"vLLM would reject it at start-up: {found[0]}"
    failure = Failure(FailureClass.INVALID_ARGS, message, None, (), "startup")
    worst = failed_values(objective.kind)
    record = TrialRecord(
        number=plan.number,
        state="failed",
        params=plan.params,
        values=tuple(worst),
        constraints=failed_constraints(objective),
        failure=failure.to_dict(),
        note="not launched: told infeasible at no cost",
        rejected=True,
        started_at=now,
        finished_at=now,
    )
    return Verdict(record, TrialState.COMPLETE, list(worst))
