"""When a study stops, as pure functions: from what the loop counted, the budget, the space, the
free disk and the clock, the `StopReason`, or None to go on.

Nothing here reads the storage, the disk or the clock: the orchestrator reads them and passes
the figures in, so every rule is tested on its own (tests/test_stop_rules.py). The texts are
what the user reads at the end of a study; each says what to do next.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, replace
from pathlib import Path

from tui_tuner.core.config import StudySettings
from tui_tuner.core.stop import StopKind, StopReason
from tui_tuner.core.trial import TrialRecord

__all__ = [
    "LOW_DISK_BYTES",
    "MAX_DUPLICATES_IN_A_ROW",
    "REDIRECT_AFTER_DUPLICATES",
    "Limits",
    "Streaks",
    "at_boundary",
    "baseline_failed",
    "disk_full",
    "gpu_not_released",
    "low_disk",
]

#: Proposals of already-tried configurations in a row after which the orchestrator queues an
#: untried one itself (each such proposal is cheap: its result is repeated, nothing runs).
REDIRECT_AFTER_DUPLICATES = 5
#: ... and after which the space counts as exhausted, should no untried one be queued (a guard:
#: the orchestrator stops on an exhausted space as soon as it finds no untried configuration).
MAX_DUPLICATES_IN_A_ROW = 30
#: Below this much free space where the study writes, no trial starts and a running one ends.
LOW_DISK_BYTES = 16 * 2**20
#: What a write that failed for lack of space (or of quota) raises.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class Streaks:
    """Trials in a row that failed, and proposals in a row of configurations tried already."""

    failures: int = 0
    duplicates: int = 0

    def after(self, record: TrialRecord) -> Streaks:
        """The streaks once ``record`` has finished (not for an interrupted trial: it runs
        again, and counts then). A duplicate or a configuration rejected before a launch (both
        cost nothing) breaks no failure streak; a pruned trial neither breaks nor extends it."""
        if record.duplicate_of is not None or record.rejected:  # nothing ran
            return replace(self, duplicates=self.duplicates + 1)
        if record.state == "failed":
            return Streaks(self.failures + 1, 0)
        if record.state == "complete":
            return Streaks(0, 0)
        return Streaks(self.failures, 0)


@dataclass(frozen=True)
class Limits:
    """The study's limits, from its ``study`` section."""

    max_failures: int
    n_trials: int | None = None
    time_budget_s: float | None = None
    #: The baseline is a trial of its own (one configuration more than the space holds).
    baseline: bool = True

    @classmethod
    def of(cls, study: StudySettings) -> Limits:
        return cls(study.max_consecutive_failures, study.n_trials, study.time_budget_s,
                   study.baseline)  # fmt: skip


def at_boundary(
    *,
    streaks: Streaks,
    limits: Limits,
    free_bytes: int | None,
    where: Path,
    space_size: int | None,
    tried: int | None,
    counted: int,
    elapsed_s: float,
) -> StopReason | None:
    """Why the study stops before its next trial, or None to run one (a stop asked for, by the
    user, a signal or a request, is the orchestrator's and wins over these).

    ``free_bytes``: free space where the study writes (``where``; None if unknown).
    ``space_size``: configurations in the search space (None: too many to count); ``tried``:
    distinct configurations tried so far (None when the size is). ``counted``: finished trials
    that count against the budget. ``elapsed_s``: seconds since this run of the study started
    (the time budget is per run).
    """
    if streaks.failures >= limits.max_failures:
        return StopReason(
            StopKind.FAILURES,
            f"{streaks.failures} trials failed in a row (study.max_consecutive_failures); "
            "see their logs, fix the configuration, then resume",
        )
    disk = low_disk(free_bytes, where)
    if disk is not None:
        return disk
    if streaks.duplicates >= MAX_DUPLICATES_IN_A_ROW:
        return StopReason(
            StopKind.SPACE_DONE, "every configuration the sampler proposes has been tried already"
        )
    every = None if space_size is None else space_size + (1 if limits.baseline else 0)
    if every is not None and tried is not None and tried >= every:
        return StopReason(
            StopKind.SPACE_DONE,
            f"every configuration of the search space ({space_size}) has been tried",
        )
    if limits.n_trials is not None and counted >= limits.n_trials:
        return StopReason(StopKind.BUDGET, f"budget reached: {counted} of {limits.n_trials} trials")
    if limits.time_budget_s is not None and elapsed_s >= limits.time_budget_s:
        return StopReason(
            StopKind.BUDGET, f"budget reached: time budget of {limits.time_budget_s:g} s used"
        )
    return None


def low_disk(free_bytes: int | None, where: Path) -> StopReason | None:
    """Too little free space where the study writes (``free_bytes``; None: unknown, go on)."""
    if free_bytes is None or free_bytes >= LOW_DISK_BYTES:
        return None
    return StopReason(
        StopKind.DISK_FULL,
        f"the disk holding {where} is full ({free_bytes / 2**20:.1f} MiB free); free some "
        "space, then resume",
    )


def disk_full(err: OSError) -> StopReason | None:
    """A trial's file (a log, a report) could not be written for lack of space; None if ``err``
    is another error."""
    if err.errno not in DISK_FULL_ERRNOS:
        return None
    return StopReason(StopKind.DISK_FULL, f"the disk is full: {err}; free some space, then resume")


def baseline_failed(record: TrialRecord) -> StopReason | None:
    """A failed baseline stops the study: every gain is measured against it."""
    if not record.baseline or record.state != "failed":
        return None
    if record.interrupted or record.rerun or record.duplicate_of is not None:
        return None  # it runs again; or nothing ran (the failed baseline was stopped on)
    message = (record.failure or {}).get("message", "")
    return StopReason(
        StopKind.BASELINE_FAILED,
        f"the baseline (vLLM defaults) failed ({record.failure_class}): {message}. Fix the "
        "server section (model, fixed flags, environment), then resume",
    )


def gpu_not_released() -> StopReason:
    return StopReason(
        StopKind.GPU_NOT_RELEASED,
        "GPU memory of the last server was not released; check nvidia-smi",
    )
