"""A server kept running between two trials of a load sweep, and what identifies it.

A trial owns its server: it is started in the trial and stopped in its teardown. A load sweep
(`load_sweep.py`) measures the same server flags at several loads back to back; launching the
same server again for each level only pays its start-up again. So a healthy server whose next
trial has the same server flags is handed over instead of stopped: its launcher's context (the
``AsyncExitStack`` that stops it and everything it started), its port and API key, and the
trial that started it. The next trial adopts it (or `TrialRunner.release` stops it), so a
failure, a prune or a stop in that trial stops it as it would have stopped its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from tui_tuner.core.space import params_key
from tui_tuner.core.trial import TrialPlan
from tui_tuner.engine.ports import ServerHandle

__all__ = ["KeepAfter", "KeptServer", "server_flags"]

#: Asked once a trial has measured well: whether its server should stay up for the next one.
KeepAfter = Callable[[TrialPlan], Awaitable[bool]]


def server_flags(plan: TrialPlan) -> str:
    """The server part of a trial's values, as one text: the baseline (vLLM's defaults) is its
    own server even where a trial of the space sets no flag either."""
    if plan.baseline:
        return "baseline"
    flags = {k: v for k, v in plan.params.items() if not k.startswith("workload.")}
    return params_key(flags)


@dataclass
class KeptServer:
    stack: contextlib.AsyncExitStack
    server: ServerHandle
    flags: str
    key: str | None
    port: int
    #: The trial number its log lines go to (the trial measuring on it now).
    owner: list[int]
    started_by: int
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.server.returncode is None

    def serves(self, plan: TrialPlan) -> bool:
        """Whether ``plan`` runs on this server: the same server flags, whatever its load."""
        return server_flags(plan) == self.flags
