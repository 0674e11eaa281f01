"""What the tuner knows about one trial, independent of how it is stored.

The engine builds these from Optuna's trials; reports, the headless console and the UI read only
these, so none of them depends on Optuna.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from tui_tuner.core.measurement import Measurement
from tui_tuner.core.space import TrialSettings, split_params

__all__ = [
    "PHASES",
    "Phase",
    "TrialPlan",
    "TrialRecord",
    "TrialState",
    "baseline_of",
    "counts_against_budget",
]

TrialState = Literal["waiting", "running", "complete", "pruned", "failed"]
Phase = Literal["launching", "ready", "warmup", "measuring", "teardown"]
PHASES: tuple[Phase, ...] = ("launching", "ready", "warmup", "measuring", "teardown")


@dataclass(frozen=True)
class TrialPlan:
    """What to run next: a trial number and its parameter values (none for the baseline).
    ``rerun_of``: the interrupted trial whose configuration this one runs again; ``retries``:
    how many trials of this configuration before it failed for reasons outside its flags
    (a load generator crash, a kill from outside, a busy GPU). ``settings``:
    the values split once by what they set (server flags with their `Flag`, load settings),
    which is all the command builders read."""

    number: int
    params: dict[str, object]
    baseline: bool
    rerun_of: int | None = None
    retries: int = 0
    #: Measures a configuration that has a result on purpose (the baseline's noise runs, the
    #: re-measurement of the best at the end): never answered from the store as a duplicate.
    repeat: bool = False
    settings: TrialSettings = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", split_params(self.params))


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the study stores it.

    ``state`` is the tuner's view: a configuration that crashed the server is ``failed`` here even
    though Optuna holds it as a complete, infeasible trial (so that its sampler learns to avoid
    the region). ``feasible`` is None until the trial has a measurement.
    """

    number: int
    state: TrialState
    params: Mapping[str, object] = field(default_factory=dict)
    baseline: bool = False
    measurement: Measurement | None = None
    #: Objective values as told to the optimiser (one or two), in the objective's order.
    values: tuple[float, ...] | None = None
    #: Constraint values by name; <= 0 is satisfied.
    constraints: Mapping[str, float] = field(default_factory=dict)
    #: FailureClass value and the failure's details (message, exit code, tail, phase).
    failure: Mapping[str, object] | None = None
    #: Seconds per phase (launching, ready, warmup, measuring, teardown, total).
    timings: Mapping[str, float] = field(default_factory=dict)
    #: The server command exactly as run (the API key is in its environment, never here).
    command: tuple[str, ...] = ()
    #: Where its files are: server.log, guidellm.log, report.json, command.txt.
    files: Mapping[str, str] = field(default_factory=dict)
    #: Number of the trial whose result this one repeats instead of measuring again.
    duplicate_of: int | None = None
    #: Why it was pruned or interrupted (by the user, a stop, a dead tuner).
    note: str = ""
    #: Cut short by the tuner (a stop, a pause now, a full disk, a dead tuner), not by its
    #: configuration: it says nothing about the flags and runs again as a new trial.
    interrupted: bool = False
    #: Failed, or measured on a stalled server, for reasons outside its flags: it says nothing
    #: about them, and its configuration was queued to run again (``TrialPlan.retries``).
    rerun: bool = False
    #: A run again of a configuration measured before, on purpose (``TrialPlan.repeat``): its
    #: figures join that configuration's; it does not spend the budget.
    repeat: bool = False
    #: Never launched: vLLM is sure to refuse it at start-up (``core.vllm_rules``), so it was
    #: told infeasible at no cost; it does not spend the budget.
    rejected: bool = False
    #: What the load generator had seen when a trial was pruned or interrupted mid-load.
    partial: Mapping[str, float] = field(default_factory=dict)
    #: The load generator said it could not drive the load (the figure may be the client's).
    client_limited: bool = False
    #: Output tok/s of each repeat, when there were several.
    repeats_output_tok_s: tuple[float, ...] = ()
    #: Measured on the server this earlier trial started (a load sweep): no launch of its own.
    server_of: int | None = None
    #: Seconds since the epoch when it started and finished.
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def feasible(self) -> bool | None:
        if self.measurement is None or self.failure is not None:
            return None if self.failure is None else False
        return all(v <= 0 for v in self.constraints.values())

    @property
    def failure_class(self) -> str | None:
        return None if self.failure is None else str(self.failure.get("class", ""))

    @property
    def label(self) -> str:
        """State as a user reads it: ``complete``, ``infeasible``, ``failed(oom_startup)``..."""
        if self.state == "failed" and self.failure_class:
            return f"failed({self.failure_class})"
        if self.state == "complete" and self.feasible is False:
            return "infeasible"
        return self.state


def counts_against_budget(record: TrialRecord) -> bool:
    """Whether a trial spends the study's budget (``study.n_trials``): it finished (measured,
    failed or pruned), and it was neither interrupted nor queued again (it runs again and
    counts then) nor a duplicate (its result is another trial's, nothing ran) nor a repeat (a
    measurement again of a configuration counted already) nor rejected before a launch."""
    return (
        record.state in ("complete", "pruned", "failed")
        and not record.interrupted
        and not record.rerun
        and not record.repeat
        and not record.rejected
        and record.duplicate_of is None
    )


def baseline_of(records: Iterable[TrialRecord]) -> TrialRecord | None:
    """The measured baseline (vLLM defaults) gains are reported against: the first complete
    baseline trial with a measurement, or None."""
    for r in records:
        if r.baseline and r.state == "complete" and r.measurement is not None:
            return r
    return None
