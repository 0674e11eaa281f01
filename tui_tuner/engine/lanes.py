"""Trials side by side in one tuner (``study.workers: N``): N lanes, each an `Orchestrator` with
its own `TrialRunner` (its own port, trial directory and load generator), on one study.

The lanes share what a study shares between workers on several machines, only closer: the
study's store and one storage thread, Optuna's sampler with its constant liar (a running
trial counts as a guess, so two lanes do not propose the same point; one that does is skipped
as running elsewhere), the budget (a lane waits while the last trials run on others), and the
node's GPUs (`GpuPool`: a trial's server gets its own, never another's). What a display sees
is one study: the lanes' own study events are merged (one start, one state, one end), their
trial events pass through. Commands reach every lane; a prune reaches the lane running that
trial.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from tui_tuner.core.config import StudyConfig
from tui_tuner.core.events import Event, StudyFinished, StudyStarted, StudyStateChanged
from tui_tuner.core.space import SearchSpace
from tui_tuner.core.stop import StopKind, StopReason
from tui_tuner.engine.gpu_pool import GpuPool
from tui_tuner.engine.orchestrator import Orchestrator, StudyOutcome
from tui_tuner.engine.storage import StorageThread
from tui_tuner.engine.study import StudyStore
from tui_tuner.engine.trial_runner import TrialRunner

__all__ = ["Lanes"]

#: Stops that one lane reaches for the study as a whole (each lane sees the budget and the
#: space itself; these are about the machine or the study's health).
_STUDY_WIDE = (StopKind.FAILURES, StopKind.BASELINE_FAILED, StopKind.DISK_FULL,
               StopKind.GPU_NOT_RELEASED)  # fmt: skip


class Lanes:
    def __init__(
        self,
        config: StudyConfig,
        store: StudyStore,
        runners: Sequence[TrialRunner],
        emit: Callable[[Event], None],
        *,
        study_dir: Path,
        pool: GpuPool | None,
    ) -> None:
        self.emit, self.pool = emit, pool
        self._io = StorageThread(store.storage_url, config.study.storage_timeout_s)
        self._state = ""
        self._opened = asyncio.Event()  # the first lane has opened the study
        self._lanes: list[Orchestrator] = []
        turn = asyncio.Lock()  # the budget's check and the ask, one lane at a time
        for index, runner in enumerate(runners):
            runner.pool = pool
            lane = Orchestrator(config, store, runner, self._lane_emit(index),
                                study_dir=study_dir, io=self._io, turn=turn)  # fmt: skip
            self._lanes.append(lane)

    @property
    def lanes(self) -> tuple[Orchestrator, ...]:
        return tuple(self._lanes)

    # -- one study to the display ------------------------------------------------------------

    def _lane_emit(self, index: int) -> Callable[[Event], None]:
        def emit(event: Event) -> None:
            if isinstance(event, StudyStarted):
                if index == 0:
                    gpus = () if self.pool is None else self.pool.gpus
                    self.emit(dataclasses.replace(event, gpus=gpus, workers=len(self._lanes)))
                    self._opened.set()
            elif isinstance(event, StudyStateChanged):
                if event.state != "finished":  # said once, when every lane is done
                    self._say_state(event)
            elif not isinstance(event, StudyFinished):
                self.emit(event)

        return emit

    def _say_state(self, event: StudyStateChanged) -> None:
        if event.state != self._state:
            self._state = event.state
            self.emit(event)

    # -- commands (`engine/steering.py`) -----------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._lanes[0].paused

    @property
    def stopping(self) -> bool:
        return any(lane.stopping for lane in self._lanes)

    def pause(self, *, now: bool = False) -> None:
        for lane in self._lanes:
            lane.pause(now=now)

    def resume(self) -> None:
        for lane in self._lanes:
            lane.resume()

    def stop(self, kind: StopKind, text: str, *, now: bool = True) -> None:
        for lane in self._lanes:
            lane.stop(kind, text, now=now)

    def prune(self, number: int) -> bool:
        return any(lane.prune(number) for lane in self._lanes)

    def set_space(self, space: SearchSpace) -> None:
        for lane in self._lanes:
            lane.set_space(space)

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> StudyOutcome:
        """Every lane until each has stopped; a stop about the study's health in one stops the
        others after their running trials. The study's end is the first such stop, else the
        last lane's reason (the budget or the space, which each lane sees for itself)."""
        # The first lane opens the study (repairs, queues the baseline, says what it holds)
        # before the others ask for trials.
        tasks = [asyncio.ensure_future(self._lanes[0].run())]
        opened = asyncio.ensure_future(self._opened.wait())
        await asyncio.wait({tasks[0], opened}, return_when=asyncio.FIRST_COMPLETED)
        opened.cancel()
        if not tasks[0].done():  # ended at once (a failure, nothing left): the others neither
            tasks += [asyncio.ensure_future(lane.run()) for lane in self._lanes[1:]]
        try:
            outcomes: list[StudyOutcome] = []
            first: StopReason | None = None
            for done in asyncio.as_completed(tasks):
                outcome = await done
                outcomes.append(outcome)
                if first is None and outcome.stop.kind in _STUDY_WIDE:
                    first = outcome.stop
                    for lane in self._lanes:
                        lane.stop(outcome.stop.kind, outcome.stop.text, now=False)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            self._io.close()
        stop = first or outcomes[-1].stop
        records = outcomes[-1].records
        self._say_state(StudyStateChanged("finished", stop.text))
        self.emit(StudyFinished.of(stop))
        return StudyOutcome(stop, records)
