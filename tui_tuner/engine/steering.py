"""What a display steers a study through: the commands of `Orchestrator`, of the lanes that run
several trials at once (`engine/lanes.py`), and of a study steered from afar through its storage
(``tui-tuner attach``). Each only sets flags or leaves a request, so a UI calls them from its own
event loop without blocking.
"""

from __future__ import annotations

from typing import Protocol

from tui_tuner.core.space import SearchSpace
from tui_tuner.core.stop import StopKind

__all__ = ["Steering"]


class Steering(Protocol):
    @property
    def paused(self) -> bool: ...

    @property
    def stopping(self) -> bool: ...

    def pause(self, *, now: bool = False) -> None:
        """Wait after the running trial(s); with ``now``, stop them and run them again on resume."""

    def resume(self) -> None: ...

    def stop(self, kind: StopKind, text: str, *, now: bool = True) -> None:
        """Stop the study, at once (running trials run again on resume) or after them."""

    def prune(self, number: int) -> bool:
        """Stop the running trial ``number`` and record it as pruned; False if it is not running."""

    def set_space(self, space: SearchSpace) -> None:
        """Use ``space`` from the next trial on."""
