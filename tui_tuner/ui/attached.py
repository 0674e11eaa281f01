"""The TUI attached to a study that workers elsewhere run (``tui-tuner attach``).

The same app, fed by `engine.observer.Observer` instead of an engine of its own; its commands
become requests in the study's storage. What differs is said where a key would otherwise
promise what an attached display cannot do: quitting leaves the workers running (``q`` is not
a stop; ``S`` twice asks every worker to stop), pausing waits for the running trials, and the
search space and the exports belong to the workers' configuration.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable

from textual.app import SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from tui_tuner.core.stop import EXIT_OK, StopKind
from tui_tuner.engine.observer import Observer
from tui_tuner.ui.app import TunerApp

__all__ = ["AttachedApp"]

#: ``S`` pressed again within this many seconds asks every worker to stop.
CONFIRM_S = 5.0


class AttachedApp(TunerApp):
    # The footer offers what an attached display does: no edit, no export (refused with why).
    BINDINGS = [
        Binding("e", "edit_space", "Edit", show=False),
        Binding("s", "export", "Export", show=False),
        Binding("S", "stop_workers", "Stop all"),
    ]

    observer: Observer | None = None
    #: What ``tui-tuner export`` is given to export this study.
    export_hint = ""
    _stop_armed = 0.0

    def attach_observer(self, observer: Observer) -> None:
        self.observer = observer

    async def _leave(self) -> None:
        """Leave once the requests made here are written; the workers go on (quitting an
        attached TUI is not stopping the study)."""
        if self.observer is not None:
            self.observer.leave()
            await self.observer.settle()
        self.exit(EXIT_OK)

    def action_quit_study(self) -> None:
        self.call_later(self._leave)

    def on_signal(self, sig: signal.Signals) -> None:
        self.call_later(self._leave)

    def action_stop_workers(self) -> None:
        if self.observer is None or self.outcome is not None:
            self.notify("the study is not running", severity="warning", timeout=3)
            return
        if time.monotonic() - self._stop_armed > CONFIRM_S:
            self._stop_armed = time.monotonic()
            self.notify("S again: every worker of this study stops (it stays resumable); "
                        "q leaves them running", timeout=CONFIRM_S)  # fmt: skip
            return
        self._stop_armed = 0.0
        self.observer.stop(StopKind.REQUEST, "stopped from an attached TUI")
        self.notify("stop requested: every worker stops within seconds", timeout=5)

    def action_pause_now(self) -> None:
        # The observer says that the running trials finish first (a worker stops a running
        # trial at once only for its own TUI or a signal).
        if (steering := self._orch()) is not None:
            steering.pause(now=True)

    def action_edit_space(self) -> None:
        self.notify("the search space belongs to the workers' configuration: edit search_space "
                    "there and restart them", severity="warning", timeout=8)  # fmt: skip

    def action_export(self) -> None:
        self.notify(f"export it from any machine that reaches the storage: tui-tuner export "
                    f"{self.export_hint}", timeout=12, markup=False)  # fmt: skip

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Stop every worker", "S twice: ask each worker to stop; q leaves "
                            "them running", self.action_stop_workers)  # fmt: skip
