"""Why a study stopped, as a value, and the exit code that says it.

The engine decides why a study stops once, as a `StopReason`: a `StopKind` and the text a user
reads. Whether the study can be resumed and how the process exits follow from the kind alone,
never from the text, so every display (the headless console, the TUI, a JSON-lines reader)
agrees.

The exit codes of ``tui-tuner tune``, ``resume`` and ``demo``, headless or under the TUI, are
`EXIT_CODES`; ``tui-tuner --help`` and the README show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "EXIT_CODES",
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_SIGNAL",
    "StopKind",
    "StopReason",
    "exit_code",
]

#: The study finished, or the user stopped it.
EXIT_OK = 0
#: The study stopped on a failure (see `StopKind.failed`).
EXIT_FAILED = 1
#: An error: bad input, the storage, a crash.
EXIT_ERROR = 2
#: Stopped by a signal, or interrupted before the study could end (128 + SIGINT).
EXIT_SIGNAL = 130

#: Each exit code and what it means, as `--help` shows it.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "the study finished (its budget is spent, or every configuration was tried), or "
              "you stopped it (q in the TUI, a stop request in its storage)"),
    (EXIT_FAILED, "it stopped on a failure: the baseline failed, too many trials failed in a "
                  "row, the disk is full, or a server's GPU memory was not released; fix the "
                  "cause, then resume"),
    (EXIT_ERROR, "an error: a bad configuration or argument, the study's storage unavailable, "
                 "a crash"),
    (EXIT_SIGNAL, "stopped by a signal (Ctrl-C, SIGTERM, SIGHUP), or interrupted before the "
                  "study could end"),
)  # fmt: skip


class StopKind(str, Enum):
    """Why a study stopped. The value is what JSON-lines readers see (``"budget"``...)."""

    #: ``study.n_trials`` or ``study.time_budget_s`` is spent.
    BUDGET = "budget"
    #: Every configuration of the search space was tried, or the sampler proposes only
    #: configurations tried already.
    SPACE_DONE = "space_done"
    #: Quit or stopped from the UI (or by a caller of ``Orchestrator.stop``).
    USER = "user"
    #: SIGINT, SIGTERM or SIGHUP.
    SIGNAL = "signal"
    #: A stop request left in the study's storage by another process (an attached TUI).
    REQUEST = "request"
    #: ``study.max_consecutive_failures`` trials failed in a row.
    FAILURES = "failures"
    #: The baseline (vLLM defaults) failed: nothing else can be compared with it.
    BASELINE_FAILED = "baseline_failed"
    #: The disk the study writes to is full.
    DISK_FULL = "disk_full"
    #: A server's GPU memory was not released after it stopped.
    GPU_NOT_RELEASED = "gpu_not_released"

    @property
    def resumable(self) -> bool:
        """Whether ``tui-tuner resume`` has anything left to do: all but a finished study."""
        return self not in (StopKind.BUDGET, StopKind.SPACE_DONE)

    @property
    def failed(self) -> bool:
        """Whether the study stopped on a failure that the user has to fix before resuming."""
        return self in _FAILED


_FAILED = frozenset(
    {
        StopKind.FAILURES,
        StopKind.BASELINE_FAILED,
        StopKind.DISK_FULL,
        StopKind.GPU_NOT_RELEASED,
    }
)


@dataclass(frozen=True)
class StopReason:
    """Why a study stopped: the kind decides, the text explains (and says what to do)."""

    kind: StopKind
    text: str

    @property
    def resumable(self) -> bool:
        return self.kind.resumable

    def __str__(self) -> str:
        return self.text


def exit_code(stop: StopReason | None, *, error: bool = False) -> int:
    """The process's exit code (see the table above). ``stop`` is None when the study was
    interrupted before it could finish (a second signal, a cancelled engine); ``error``: it
    ended on an exception (bad input, the storage, a crash), whatever ``stop`` says."""
    if error:
        return EXIT_ERROR
    if stop is None or stop.kind is StopKind.SIGNAL:
        return EXIT_SIGNAL
    return EXIT_FAILED if stop.kind.failed else EXIT_OK
