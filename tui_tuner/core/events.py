"""Typed events the engine emits while a study runs.

A sink (the headless console, a JSON-lines file, the TUI) receives them in order from the
engine's event loop. Sinks must return quickly: slow work belongs in the sink's own task.
Every event is a frozen dataclass with a ``kind`` tag and converts to JSON with ``to_json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar, Literal

from tui_tuner.core.stop import StopKind, StopReason
from tui_tuner.core.telemetry import GpuState, ServerFigures
from tui_tuner.core.trial import Phase, TrialRecord

__all__ = [
    "BenchProgress",
    "Event",
    "EventSink",
    "GpuSampled",
    "LogLine",
    "Notice",
    "ServerFiguresRead",
    "StudyFinished",
    "StudyStarted",
    "StudyStateChanged",
    "TrialFinished",
    "TrialPhaseChanged",
    "TrialStarted",
    "to_json",
]

StudyState = Literal["running", "paused", "stopping", "finished"]


@dataclass(frozen=True)
class StudyStarted:
    kind: ClassVar[str] = "study_started"
    study_name: str
    objective: str
    storage: str
    study_dir: str
    n_trials: int | None
    time_budget_s: float | None
    simulated: bool
    #: Trials already finished (a resumed study).
    finished_before: int
    #: Numbers of trials that a dead run left running and that were failed and queued again.
    repaired: tuple[int, ...] = ()
    #: The trials the study already had (a resumed study), so a display can show them at once.
    trials: tuple[TrialRecord, ...] = ()
    #: The GPUs this tuner hands out to its trials (``study.workers``), by index; empty when
    #: trials run one at a time on whatever ``CUDA_VISIBLE_DEVICES`` the tuner was given.
    gpus: tuple[int, ...] = ()
    #: How many trials run side by side (``study.workers``).
    workers: int = 1


@dataclass(frozen=True)
class StudyStateChanged:
    kind: ClassVar[str] = "study_state"
    state: StudyState
    reason: str = ""


@dataclass(frozen=True)
class StudyFinished:
    kind: ClassVar[str] = "study_finished"
    reason: str
    #: Whether `tui-tuner resume` can continue it (budget left, or stopped early).
    resumable: bool
    #: Why it stopped, as a value (``"budget"``, ``"signal"``...; see `core/stop.py`).
    stop_kind: StopKind

    @classmethod
    def of(cls, stop: StopReason) -> StudyFinished:
        return cls(stop.text, stop.resumable, stop.kind)


@dataclass(frozen=True)
class TrialStarted:
    kind: ClassVar[str] = "trial_started"
    number: int
    params: Mapping[str, object]
    baseline: bool
    command: tuple[str, ...]
    trial_dir: str
    #: Where the trial's server answers (``http://127.0.0.1:PORT``), for its own figures.
    base_url: str = ""
    #: The GPUs the trial's server was given (its ``CUDA_VISIBLE_DEVICES``); empty when the
    #: tuner does not hand out GPUs.
    gpus: tuple[int, ...] = ()
    #: The host of the worker running it (another machine's, on an attached display).
    host: str = ""


@dataclass(frozen=True)
class TrialPhaseChanged:
    kind: ClassVar[str] = "trial_phase"
    number: int
    phase: Phase
    elapsed_s: float


@dataclass(frozen=True)
class LogLine:
    kind: ClassVar[str] = "log"
    number: int
    source: Literal["server", "guidellm"]
    text: str


@dataclass(frozen=True)
class BenchProgress:
    kind: ClassVar[str] = "bench_progress"
    number: int
    repeat: int
    status: str
    elapsed_s: float
    successful: int
    errored: int
    output_tok_s: float


@dataclass(frozen=True)
class TrialFinished:
    kind: ClassVar[str] = "trial_finished"
    record: TrialRecord


@dataclass(frozen=True)
class Notice:
    kind: ClassVar[str] = "notice"
    level: Literal["info", "warning", "error"]
    text: str
    number: int | None = None


@dataclass(frozen=True)
class GpuSampled:
    """The GPUs as NVML sees them now (about once a second while a display wants them)."""

    kind: ClassVar[str] = "gpu"
    state: GpuState


@dataclass(frozen=True)
class ServerFiguresRead:
    """What the running trial's server says about itself; None: it reports none, or no trial
    runs (the figures shown go away)."""

    kind: ClassVar[str] = "server_figures"
    number: int | None
    figures: ServerFigures | None


Event = (
    StudyStarted
    | StudyStateChanged
    | StudyFinished
    | TrialStarted
    | TrialPhaseChanged
    | LogLine
    | BenchProgress
    | TrialFinished
    | Notice
    | GpuSampled
    | ServerFiguresRead
)
EventSink = Callable[[Event], None]


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf; "inf" is what a reader sees anyway
    return value


def to_json(event: Event) -> dict[str, Any]:
    """The event as a JSON-ready dict with its ``kind`` first."""
    return {"kind": event.kind, **_plain(event)}
