"""A TrialRecord to and from what the study stores with each trial (Optuna user attributes).

Free of Optuna, so that the TUI's first look at a study (``engine/preview.py``) builds records
the same way as the study store, before Optuna and SQLAlchemy have loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from tui_tuner.core.measurement import Measurement
from tui_tuner.core.trial import TrialRecord
from tui_tuner.core.trial import TrialState as RecordState

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["record_attrs", "record_from", "to_record"]

#: Optuna's trial states by name, as the tuner names them.
STATES: Mapping[str, RecordState] = {
    "WAITING": "waiting",
    "RUNNING": "running",
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
}


def record_attrs(record: TrialRecord) -> dict[str, Any]:
    """The ``tuner`` user attribute of a finished trial (JSON-safe)."""
    out = asdict(record)
    out["measurement"] = None if record.measurement is None else record.measurement.to_dict()
    out["values"] = None if record.values is None else [_finite(v) for v in record.values]
    # Kept apart: Optuna's own (number, params, state), the trial's user attributes
    # (``baseline``, ``interrupted``, set when it was queued or interrupted).
    for key in ("number", "params", "baseline", "state", "interrupted"):
        out.pop(key)
    return out


def _finite(v: float) -> float | str:
    return v if v == v and abs(v) != float("inf") else str(v)


def record_from(
    number: int, state_name: str, params: Mapping[str, object], user_attrs: Mapping[str, Any]
) -> TrialRecord:
    """The record of an Optuna trial from its number, state name, params and user attributes."""
    attrs: dict[str, Any] = dict(user_attrs.get("tuner") or {})
    measurement = attrs.pop("measurement", None)
    values = attrs.pop("values", None)
    state = STATES[state_name]
    if attrs.get("failure") is not None:
        state = "failed"
    note = attrs.pop("note", "") or str(user_attrs.get("interrupted", ""))
    return TrialRecord(
        number=number,
        state=state,
        params=dict(params),
        baseline=bool(user_attrs.get("baseline")),
        measurement=None if measurement is None else Measurement.from_dict(measurement),
        values=None if values is None else tuple(float(v) for v in values),
        constraints=dict(attrs.get("constraints") or {}),
        failure=attrs.get("failure"),
        timings=dict(attrs.get("timings") or {}),
        command=tuple(attrs.get("command") or ()),
        files=dict(attrs.get("files") or {}),
        duplicate_of=attrs.get("duplicate_of"),
        note=note,
        interrupted="interrupted" in user_attrs,
        rerun=bool(attrs.get("rerun")),
        repeat=bool(attrs.get("repeat") or user_attrs.get("repeat")),
        rejected=bool(attrs.get("rejected")),
        repeats_output_tok_s=tuple(attrs.get("repeats_output_tok_s") or ()),
        partial=dict(attrs.get("partial") or {}),
        client_limited=bool(attrs.get("client_limited")),
        server_of=attrs.get("server_of"),
        started_at=attrs.get("started_at"),
        finished_at=attrs.get("finished_at"),
    )


def to_record(t: FrozenTrial) -> TrialRecord:
    """The record of an Optuna trial."""
    return record_from(t.number, t.state.name, t.params, t.user_attrs)
