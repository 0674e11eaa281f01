"""What the study loop decides between two trials, from the storage: whether to stop (the
budget, the space, the disk: `stop_rules.at_boundary`), whether repeats run first, whether the
sampler is redirected to an untried configuration, and whether the budget's last trials run on
other workers (or other lanes of this tuner) so that this one waits.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tui_tuner.core.config import StudyConfig
from tui_tuner.core.events import Event, Notice
from tui_tuner.core.space import SearchSpace
from tui_tuner.core.stop import StopKind, StopReason
from tui_tuner.engine.stop_rules import REDIRECT_AFTER_DUPLICATES, Limits, Streaks, at_boundary
from tui_tuner.engine.storage import StorageThread
from tui_tuner.engine.study import StudyStore

__all__ = ["BetweenTrials", "free_bytes"]


class BetweenTrials:
    def __init__(
        self,
        config: StudyConfig,
        store: StudyStore,
        io: StorageThread,
        emit: Callable[[Event], None],
        *,
        study_dir: Path,
        started: float,
    ) -> None:
        self.config, self.store, self._io, self.emit = config, store, io, emit
        self.study_dir, self.started = study_dir, started
        self.limits = Limits.of(config.study)
        self.n_trials = config.study.n_trials
        self._waiting_for_others = False  # said once per wait (see rest_runs_elsewhere)

    async def boundary(self, streaks: Streaks, space: SearchSpace) -> StopReason | None:
        """Why the study stops before its next trial (``stop_rules.at_boundary``), or None."""
        # Exact configurations, not `core.equivalence.distinct_size`: a failure answers only
        # its own values, so a class of equivalent ones is not done when one of them failed.
        # A study whose equivalents all have results ends through `redirect` instead.
        size = space.size()
        return at_boundary(
            streaks=streaks,
            limits=self.limits,
            free_bytes=await asyncio.to_thread(free_bytes, self.study_dir),
            where=self.study_dir,
            space_size=size,
            tried=None if size is None else await self._io(self.store.distinct_configs),
            counted=await self._io(self.store.counted),
            elapsed_s=time.time() - self.started,
        )

    async def measure_again(self, stop: StopReason) -> bool:
        """Before a study ends on its budget or its space: whether repeats are queued to run
        first (the baseline's noise runs, or the best configurations measured again,
        interleaved, which this queues once: ``study.remeasure_top``). Not when the time
        budget is spent: that limit is the user's."""
        if stop.kind not in (StopKind.BUDGET, StopKind.SPACE_DONE):
            return False
        budget = self.limits.time_budget_s
        if budget is not None and time.time() - self.started >= budget:
            return False
        if await self._io(self.store.repeats_waiting):
            return True
        if self.config.study.remeasure_top <= 0:
            return False
        queued = await self._io(self.store.queue_remeasure)
        if queued:
            self.emit(Notice("info", f"before the study ends, the best configurations are "
                             f"measured again, interleaved ({queued} trials): the answer is "
                             "chosen on the repeated figures"))  # fmt: skip
        return queued > 0

    async def redirect(self, space: SearchSpace) -> StopReason | None:
        """The sampler proposed only configurations with results for a while (it has learnt
        all it can from them, or a seeded one replays itself): queue one that has none. The
        study ends on "tried already" only when no configuration of the space is left."""
        params = await self._io(self.store.enqueue_untried, space)
        if params is None:
            return StopReason(StopKind.SPACE_DONE,
                              "every configuration of the search space has been tried")  # fmt: skip
        self.emit(Notice("info", f"the sampler proposed {REDIRECT_AFTER_DUPLICATES} tried "
                         "configurations in a row; an untried one runs next"))  # fmt: skip
        return None

    async def rest_runs_elsewhere(self) -> bool:
        """The budget's last trials are running on other workers of a shared study (or other
        lanes of this tuner). Starting one more would overshoot ``study.n_trials``; stopping
        would come short if one of them ends up not counted (interrupted, a duplicate). So
        wait: they finish, or their worker dies and they are repaired and run here."""
        if self.n_trials is None:
            return False
        running = await self._io(self.store.running_count)  # none of them this lane's
        # `counted` was just read by boundary; read it again only when others run.
        if not running or await self._io(self.store.counted) + running < self.n_trials:
            self._waiting_for_others = False
            return False
        if not self._waiting_for_others:
            self._waiting_for_others = True
            self.emit(Notice("info", f"the budget's last {running} trial(s) run on other "
                             "workers; waiting for them to finish"))  # fmt: skip
        return True


def free_bytes(path: Path) -> int | None:
    """Free space on the disk holding ``path``; None if it cannot be told. Blocking."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None
