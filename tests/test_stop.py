"""Why a study stopped, as a value: whether it resumes and how the process exits follow from the
kind alone, the same headless and under the TUI."""

from __future__ import annotations

import json

import pytest

from tui_tuner.core.events import StudyFinished, to_json
from tui_tuner.core.stop import StopKind, StopReason, exit_code


@pytest.mark.parametrize(
    ("kind", "code", "resumable"),
    [
        (StopKind.BUDGET, 0, False),
        (StopKind.SPACE_DONE, 0, False),
        (StopKind.USER, 0, True),
        (StopKind.REQUEST, 0, True),
        (StopKind.FAILURES, 1, True),
        (StopKind.BASELINE_FAILED, 1, True),
        (StopKind.DISK_FULL, 1, True),
        (StopKind.GPU_NOT_RELEASED, 1, True),
        (StopKind.SIGNAL, 130, True),
    ],
)
def test_the_kind_decides_the_exit_code_and_resumability(
    kind: StopKind, code: int, resumable: bool
) -> None:
    stop = StopReason(kind, "whatever the text says: budget reached, failed in a row")
    assert exit_code(stop) == code
    assert stop.resumable is resumable is kind.resumable
    assert exit_code(stop, error=True) == 2  # an error wins over how the loop ended


def test_every_kind_has_an_exit_code() -> None:
    assert {exit_code(StopReason(kind, "")) for kind in StopKind} == {0, 1, 130}


def test_interrupted_before_the_end_exits_as_a_signal_unless_an_error() -> None:
    assert exit_code(None) == 130
    assert exit_code(None, error=True) == 2


def test_study_finished_carries_the_kind_for_json_readers() -> None:
    stop = StopReason(StopKind.BUDGET, "budget reached: 2 of 2 trials")
    event = StudyFinished.of(stop)
    assert (event.reason, event.resumable, event.stop_kind) == (stop.text, False, StopKind.BUDGET)
    line = json.loads(json.dumps(to_json(event), default=str))
    assert line == {
        "kind": "study_finished",
        "reason": "budget reached: 2 of 2 trials",
        "resumable": False,
        "stop_kind": "budget",
    }
