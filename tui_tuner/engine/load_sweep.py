"""Load sweeps: a server configuration measured at several loads back to back, on one server.

When the search space holds a load setting (``workload.streams`` or ``workload.rate``), every
trial is one server configuration at one load. The server's start-up (minutes for a real vLLM)
is then paid again for each load the sampler happens to pair with the same flags. So, once a
new server configuration has measured well, the other levels of its load (`sweep_levels`) are
queued right behind it, as trials of their own (each its own measurement, told to Optuna like
any other), and the trial runner keeps the server running for them (`kept_server.py`): the
next trial with the same server flags skips the launch, the smoke test and the teardown.

Only a new configuration is swept: a repeat, a trial run again, or flags measured before are
not. A level the study has a result for (or has queued) is not queued again. Whatever stops
the chain (a failure, a prune, a stop, a pause, another configuration queued first) stops the
server through the runner, as a trial's own teardown would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from optuna.trial import TrialState

from tui_tuner.core.events import Event, Notice
from tui_tuner.core.space import WORKLOAD_PREFIX, Param, SearchSpace, params_key
from tui_tuner.core.trial import TrialPlan
from tui_tuner.engine.study import StudyStore
from tui_tuner.engine.trial_runner import TrialRunner

__all__ = ["MAX_LEVELS", "LoadSweep", "sweep_levels"]

#: Load levels a sweep measures per server configuration (the sampled one included).
MAX_LEVELS = 4


def sweep_levels(p: Param, most: int = MAX_LEVELS) -> list[Any]:
    """The loads a sweep measures for parameter ``p``: every value when it has at most
    ``most``, else ``most`` spread over its range (geometrically on a log scale), each one a
    value ``p`` can take."""
    choices = p.choices() if (p.count() or most + 1) <= most else None
    if choices is not None:
        return list(choices)
    if p.kind == "options":
        picks = [round(i * (len(p.options) - 1) / (most - 1)) for i in range(most)]
        return [p.options[i] for i in dict.fromkeys(picks)]
    assert p.low is not None and p.high is not None
    lo, hi = float(p.low), float(p.high)
    out: list[Any] = []
    for i in range(most):
        f = i / (most - 1)
        x = lo * (hi / lo) ** f if p.log and lo > 0 else lo + (hi - lo) * f
        if p.step:
            x = lo + round((x - lo) / p.step) * p.step
        value: Any = round(x) if p.kind == "int" else round(x, 12)
        if p.contains(value) and value not in out:
            out.append(value)
    return out


def _server_part(params: dict[str, Any]) -> str:
    return params_key({k: v for k, v in params.items() if not k.startswith(WORKLOAD_PREFIX)})


def _params(t: Any) -> dict[str, Any]:
    return dict(t.params) or dict(t.system_attrs.get("fixed_params", {}))


class LoadSweep:
    """Queues the other load levels of a new server configuration and says whether the next
    trial runs on the same server. ``io`` runs a blocking storage call in the orchestrator's
    storage thread; ``space`` is the space in use now (the user may edit it)."""

    def __init__(
        self,
        store: StudyStore,
        runner: TrialRunner,
        io: Callable[..., Any],
        space: Callable[[], SearchSpace],
        emit: Callable[[Event], None],
    ) -> None:
        self.store, self._io, self._space, self._emit = store, io, space, emit
        self.runner = runner

    async def release(self, plan: TrialPlan | None) -> bool:
        """Stop a kept server unless ``plan`` runs on it (None: whatever comes next); False,
        said as a warning, when its GPU memory was not released in time."""
        if self.runner.kept is None:
            return True
        released = await self.runner.release(plan)
        if not released:
            self._emit(Notice("warning", "the GPU memory of the server kept for a load sweep "
                              "was not released after it stopped"))  # fmt: skip
        return released

    def load_param(self) -> Param | None:
        return next((p for p in self._space().enabled() if p.key.startswith(WORKLOAD_PREFIX)),
                    None)  # fmt: skip

    async def keep_after(self, plan: TrialPlan) -> bool:
        """Called after ``plan`` measured well on a healthy server: queue its sweep if it is a
        new configuration, and whether the next trial to run has the same server flags."""
        param = self.load_param()
        if param is None or plan.baseline or plan.repeat:
            return False  # a repeat measures on a server of its own: its spread is the noise
        if plan.rerun_of is None and param.key in plan.params:
            queued = await self._io(self._queue, plan, param, sweep_levels(param))
            if queued:
                self._emit(Notice("info", f"{queued} more load levels of these server flags "
                                  "run next, on the same server", plan.number))  # fmt: skip
        return bool(await self._io(self._next_same, plan))

    def _queue(self, plan: TrialPlan, param: Param, levels: Sequence[Any]) -> int:
        """Enqueue ``plan``'s server flags at the other ``levels`` (blocking); how many. None
        are when the flags were measured or queued before (at any load): they are not new."""
        study = self.store.study
        trials = study.get_trials(deepcopy=False)
        server = _server_part(plan.params)
        if any(t.number != plan.number and _server_part(_params(t)) == server for t in trials):
            return 0
        seen = {params_key(_params(t)) for t in trials}
        queued = 0
        for value in levels:
            params = {**plan.params, param.key: value}
            if params_key(params) not in seen:
                study.enqueue_trial(params, user_attrs={"sweep_of": plan.number})
                queued += 1
        return queued

    def _next_same(self, plan: TrialPlan) -> bool:
        """Whether the next trial Optuna hands out (the oldest queued) has ``plan``'s server
        flags. Blocking."""
        waiting = self.store.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting:
            return False
        first = min(waiting, key=lambda t: t.number)
        if first.user_attrs.get("baseline") or first.user_attrs.get("repeat"):
            return False
        return _server_part(_params(first)) == _server_part(plan.params)
