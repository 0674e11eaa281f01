"""When a study stops (engine/stop_rules.py): pure rules over counts, limits, disk and clock."""

from __future__ import annotations

import errno
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.engine import measurement
from tui_tuner.core.config import StudySettings
from tui_tuner.core.stop import StopKind, StopReason
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.stop_rules import (
    LOW_DISK_BYTES,
    MAX_DUPLICATES_IN_A_ROW,
    Limits,
    Streaks,
    at_boundary,
    baseline_failed,
    disk_full,
    gpu_not_released,
    low_disk,
)

WHERE = Path("/studies/s")
PLENTY = 10 * 2**30


def boundary(**given: Any) -> StopReason | None:
    """`at_boundary` with a study that has room for more: override one figure at a time."""
    figures: dict[str, Any] = {
        "streaks": Streaks(),
        "limits": Limits(max_failures=3, n_trials=10, time_budget_s=None, baseline=True),
        "free_bytes": PLENTY,
        "where": WHERE,
        "space_size": 4,
        "tried": 2,
        "counted": 2,
        "elapsed_s": 5.0,
    }
    figures.update(given)
    return at_boundary(**figures)


def test_a_study_with_room_goes_on() -> None:
    assert boundary() is None
    assert boundary(space_size=None, tried=None, free_bytes=None) is None  # unknowns go on


def test_failures_in_a_row() -> None:
    stop = boundary(streaks=Streaks(failures=3))
    assert stop is not None and stop.kind is StopKind.FAILURES
    assert stop.text == ("3 trials failed in a row (study.max_consecutive_failures); see their "
                         "logs, fix the configuration, then resume")  # fmt: skip
    assert boundary(streaks=Streaks(failures=2)) is None


def test_low_disk_before_any_trial() -> None:
    stop = boundary(free_bytes=2**20)
    assert stop is not None and stop.kind is StopKind.DISK_FULL
    assert stop.text == (
        "the disk holding /studies/s is full (1.0 MiB free); free some space, then resume"
    )
    assert boundary(free_bytes=LOW_DISK_BYTES) is None
    assert low_disk(None, WHERE) is None  # unknown: go on


def test_the_space_is_done_when_every_configuration_was_tried() -> None:
    stop = boundary(tried=5)  # 4 configurations and the baseline
    assert stop == StopReason(
        StopKind.SPACE_DONE, "every configuration of the search space (4) has been tried"
    )
    assert boundary(tried=4) is None
    no_baseline = Limits(max_failures=3, n_trials=10, baseline=False)
    assert boundary(tried=4, limits=no_baseline) is not None
    stop = boundary(streaks=Streaks(duplicates=MAX_DUPLICATES_IN_A_ROW), space_size=None)
    assert stop == StopReason(
        StopKind.SPACE_DONE, "every configuration the sampler proposes has been tried already"
    )


def test_budgets() -> None:
    assert boundary(counted=10) == StopReason(StopKind.BUDGET, "budget reached: 10 of 10 trials")
    timed = Limits(max_failures=3, n_trials=None, time_budget_s=60.0)
    assert boundary(limits=timed, counted=99, elapsed_s=59.9) is None
    assert boundary(limits=timed, elapsed_s=60.0) == StopReason(
        StopKind.BUDGET, "budget reached: time budget of 60 s used"
    )


def test_the_order_of_the_rules() -> None:
    """Failures are said before a full disk, a full disk before a spent budget."""
    everything = {"streaks": Streaks(failures=3), "free_bytes": 0, "tried": 9, "counted": 10}
    kinds = []
    for _ in range(4):
        stop = boundary(**everything)
        assert stop is not None
        kinds.append(stop.kind)
        key = {
            StopKind.FAILURES: "streaks",
            StopKind.DISK_FULL: "free_bytes",
            StopKind.SPACE_DONE: "tried",
            StopKind.BUDGET: "counted",
        }[stop.kind]
        everything.pop(key)
    assert kinds == [StopKind.FAILURES, StopKind.DISK_FULL, StopKind.SPACE_DONE, StopKind.BUDGET]


def test_limits_from_the_study_section() -> None:
    settings = StudySettings(name="t", n_trials=7, time_budget_s=30.0, baseline=False,
                             max_consecutive_failures=2)  # fmt: skip
    assert Limits.of(settings) == Limits(2, 7, 30.0, False)


def _record(state: str, **fields: Any) -> TrialRecord:
    return TrialRecord(1, state, {"max_num_seqs": 8}, **fields)  # type: ignore[arg-type]


def test_streaks_follow_the_finished_trials() -> None:
    s = Streaks()
    s = s.after(_record("failed"))
    s = s.after(_record("failed"))
    assert s == Streaks(failures=2)
    s = s.after(_record("complete", duplicate_of=0))  # a duplicate breaks no failure streak
    assert s == Streaks(failures=2, duplicates=1)
    s = s.after(_record("pruned"))  # neither breaks nor extends it; ends the duplicates
    assert s == Streaks(failures=2)
    assert s.after(_record("complete", measurement=measurement(100.0))) == Streaks()


def test_a_failed_baseline_stops_the_study() -> None:
    failure = {"class": "invalid_args", "message": "unrecognized arguments: --x"}
    failed = TrialRecord(0, "failed", {}, baseline=True, failure=failure)
    stop = baseline_failed(failed)
    assert stop is not None and stop.kind is StopKind.BASELINE_FAILED and stop.resumable
    assert stop.text == (
        "the baseline (vLLM defaults) failed (invalid_args): unrecognized arguments: --x. Fix the "
        "server section (model, fixed flags, environment), then resume"
    )
    assert baseline_failed(replace(failed, baseline=False)) is None
    assert baseline_failed(replace(failed, state="complete", failure=None)) is None
    assert baseline_failed(replace(failed, interrupted=True)) is None  # it runs again
    assert baseline_failed(replace(failed, duplicate_of=3)) is None  # nothing ran


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EDQUOT])
def test_a_write_that_found_no_room(number: int) -> None:
    stop = disk_full(OSError(number, "No space left on device"))
    assert stop is not None and stop.kind is StopKind.DISK_FULL
    assert stop.text.startswith("the disk is full: ")
    assert stop.text.endswith("; free some space, then resume")
    assert disk_full(OSError(errno.EACCES, "Permission denied")) is None


def test_gpu_memory_not_released() -> None:
    stop = gpu_not_released()
    assert stop.kind is StopKind.GPU_NOT_RELEASED and stop.kind.failed
