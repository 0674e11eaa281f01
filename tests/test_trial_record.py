"""One rule each for the baseline and for the budget, read from records (core/trial.py), and the
``interrupted`` flag as records are stored and read back (engine/records.py)."""

from __future__ import annotations

from dataclasses import replace

from tests.fakes.engine import measurement
from tui_tuner.core.trial import TrialRecord, baseline_of, counts_against_budget
from tui_tuner.engine.records import record_attrs, record_from

MEASURED = TrialRecord(2, "complete", {"max_num_seqs": 8}, measurement=measurement(800.0))


def test_what_counts_against_the_budget() -> None:
    assert counts_against_budget(MEASURED)
    assert counts_against_budget(replace(MEASURED, state="failed", measurement=None))
    assert counts_against_budget(replace(MEASURED, state="pruned", measurement=None))
    assert not counts_against_budget(replace(MEASURED, state="failed", interrupted=True))
    assert not counts_against_budget(replace(MEASURED, duplicate_of=1))
    assert not counts_against_budget(replace(MEASURED, state="running"))
    assert not counts_against_budget(replace(MEASURED, state="waiting"))


def test_the_baseline_is_the_first_measured_one() -> None:
    failed = TrialRecord(0, "failed", {}, baseline=True, failure={"class": "invalid_args"})
    first = TrialRecord(1, "complete", {}, baseline=True, measurement=measurement(500.0))
    second = replace(first, number=4, measurement=measurement(600.0))
    assert baseline_of([failed, MEASURED, first, second]) is first
    assert baseline_of([failed, MEASURED]) is None
    assert baseline_of([]) is None
    infeasible = replace(first, constraints={"x": 1.0})  # still the reference
    assert baseline_of([infeasible]) is infeasible


def test_interrupted_is_read_from_the_trials_attribute_not_its_note() -> None:
    note = "interrupted: stopped by SIGINT; it runs again on resume"
    record = replace(MEASURED, state="failed", note=note, interrupted=True)
    stored = record_attrs(record)
    assert "interrupted" not in stored  # the trial's own attribute says it
    back = record_from(2, "FAIL", record.params, {"tuner": stored, "interrupted": note})
    assert back.interrupted and back.note == note and not counts_against_budget(back)
    # A trial a dead tuner left: only the attribute, no record of its own.
    died = "interrupted: the tuner running it died"
    repaired = record_from(3, "FAIL", {}, {"interrupted": died})
    assert repaired.interrupted and repaired.note == died
    # A note alone does not make a trial interrupted.
    pruned = record_from(4, "PRUNED", {}, {"tuner": {"note": "interrupted by nobody"}})
    assert not pruned.interrupted and counts_against_budget(pruned)
