"""The study's memory: Optuna ask/tell over any Optuna storage, plus what the tuner adds.

Each trial keeps, as Optuna user attributes, everything needed to show and reproduce it
(``tuner``: measurement, failure, timings, command, files) and who runs it (``worker``,
``heartbeat``), so that a study can be resumed after a crash and watched or steered from another
process. Control requests (pause, stop, prune) are study attributes for the same reason.

Every method here blocks on the storage; the orchestrator calls them from one worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import socket
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tui_tuner.core.config import StudyConfig
from tui_tuner.core.errors import UserError
from tui_tuner.core.objectives import directions, metric_names
from tui_tuner.core.space import Param, SearchSpace, params_key
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.records import record_attrs, record_from
from tui_tuner.engine.storage import open_storage, shown_url

__all__ = [
    "Control",
    "StudyStore",
    "TrialPlan",
    "default_storage_url",
    "make_sampler",
    "record_attrs",
    "to_record",
]

#: A RUNNING trial whose worker has not written a heartbeat for this long is taken as dead.
STALE_AFTER_S = 120.0


def server_key(config: StudyConfig) -> str:
    """What, besides the searched parameters, decides what a trial measures: the server command,
    model, fixed flags, extra arguments and environment, and the workload. A configuration
    counts as "tried" only under the same key."""
    s, w = config.server, config.workload
    setup = {
        "command": list(s.command),
        "model": s.model,
        "flags": dict(s.flags),
        "extra_args": list(s.extra_args),
        "env": dict(s.env),
        "workload": {k: v for k, v in asdict(w).items() if k != "guidellm"},
    }
    text = json.dumps(setup, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_storage_url(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def _suggest(trial: optuna.Trial, p: Param) -> object:
    if p.kind == "int":
        assert p.low is not None and p.high is not None
        return trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    if p.kind == "float":
        assert p.low is not None and p.high is not None
        return trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
    return trial.suggest_categorical(p.key, [_encode(c) for c in p.choices() or ()])


def _encode(value: object) -> Any:
    """Categorical choices must be plain scalars; JSON values (compilation configs) go as text."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def make_sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    name, seed = config.study.sampler, config.study.seed
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "grid":
        grid = {p.key: [_encode(c) for c in p.choices() or ()] for p in config.space.enabled()}
        return _AskTellGrid(grid, seed=seed)
    if name == "gp":
        if importlib.util.find_spec("scipy") is None or importlib.util.find_spec("torch") is None:
            raise UserError(
                "study.sampler: gp needs scipy and torch in the tuner's environment "
                "(pip install scipy torch); or use tpe"
            )
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


class _AskTellGrid(optuna.samplers.GridSampler):
    """GridSampler ends an `optimize` loop when the grid is done by calling `study.stop()`, which
    raises under ask/tell; the orchestrator stops by itself once every configuration ran."""

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


@dataclass(frozen=True)
class TrialPlan:
    """What to run next: a trial number and its parameter values."""

    number: int
    params: dict[str, object]
    baseline: bool
    rerun_of: int | None = None


@dataclass
class Control:
    """Requests any process may leave in the study: pause, stop (with its time), prune."""

    paused: bool = False
    stop_at: float | None = None
    prune: set[int] = field(default_factory=set)


class StudyStore:
    """One study in one Optuna storage."""

    def __init__(self, config: StudyConfig, storage_url: str) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger("optuna").propagate = False
        self.config = config
        self.storage_url = storage_url
        wait = config.study.storage_timeout_s
        kwargs: dict[str, Any] = {"pool_pre_ping": True}  # a dropped connection is reopened
        if storage_url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": wait}  # wait for a lock instead of failing
        elif storage_url.startswith("postgresql"):
            kwargs["connect_args"] = {"connect_timeout": max(1, round(wait))}
        try:
            self.storage = open_storage(storage_url, kwargs)
        except Exception as exc:  # any driver or URL error is the user's to fix
            shown = shown_url(storage_url)
            raise UserError(f"study.storage: cannot open {shown!r}: {exc}") from None
        kind = config.objective.kind
        self.study = optuna.create_study(
            study_name=config.study.name,
            storage=self.storage,
            sampler=make_sampler(config),
            directions=directions(kind),
            load_if_exists=True,
        )
        if [d.name.lower() for d in self.study.directions] != directions(kind):
            raise UserError(
                f"study {config.study.name!r} in {storage_url} was created with objective "
                f"directions {[d.name.lower() for d in self.study.directions]}; this "
                f"configuration's objective {kind!r} needs {directions(kind)}. "
                "Use another study name."
            )
        if self._is_new():
            with warnings.catch_warnings():  # experimental since 3.2, and still the only way
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names(metric_names(kind))
        self._worker = {"host": socket.gethostname(), "pid": os.getpid()}
        self._live: dict[int, optuna.Trial] = {}
        #: RUNNING trials seen with no heartbeat yet, and when this store first saw them.
        self._first_seen: dict[int, float] = {}
        self.server_key = server_key(config)

    def ensure_baseline(self) -> bool:
        """Queue the baseline unless this server setup has one; True if it was queued. Only the
        orchestrator calls this: opening a study to read it never adds a trial."""
        if not self.config.study.baseline or self._has_baseline():
            return False
        self.study.enqueue_trial({}, user_attrs={"baseline": True})
        return True

    def _has_baseline(self) -> bool:
        """A baseline of this server setup exists (queued, running, or finished and not
        interrupted). A study whose fixed flags, command, model or environment changed gets a
        new baseline: the old one measured another setup."""
        for t in self.study.get_trials(deepcopy=False):
            if not t.user_attrs.get("baseline") or "interrupted" in t.user_attrs:
                continue
            if t.state == TrialState.WAITING or t.user_attrs.get("server_key") == self.server_key:
                return True
        return False

    def _is_new(self) -> bool:
        """No trial yet; asks for trial 0 alone (counting would load every trial)."""
        study_id = self.storage.get_study_id_from_name(self.config.study.name)
        try:
            self.storage.get_trial_id_from_study_id_trial_number(study_id, 0)
        except KeyError:
            return True
        return False

    # -- the trial loop ------------------------------------------------------------------------

    def repair(self, stale_after_s: float = STALE_AFTER_S) -> list[int]:
        """Fail the RUNNING trials a dead worker left, and queue their configurations again."""
        repaired = []
        now = time.time()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker") or {}
            beat = t.user_attrs.get("heartbeat")
            if beat is None:
                # Just taken by a worker that has not written its name and first heartbeat yet
                # (another worker's `ask` in progress), or one that died right then: judged by
                # how long this store has seen it so, not failed at once under a live worker.
                beat = self._first_seen.setdefault(t.number, now)
            beat = float(beat)
            mine = worker.get("host") == self._worker["host"]
            if mine and worker.get("pid") == os.getpid():
                continue
            dead = (mine and not _pid_alive(int(worker.get("pid", 0)))) or (
                now - beat > stale_after_s
            )
            if not dead:
                continue
            baseline = bool(t.user_attrs.get("baseline"))
            self._interrupt(t.number, t.params, baseline, "interrupted: the tuner running it died")
            repaired.append(t.number)
        return repaired

    def ask(self, space: SearchSpace) -> TrialPlan:
        trial = self.study.ask()
        attrs = trial.user_attrs
        # Who runs it, first: other workers' `repair` must see a live trial (see there).
        trial.set_user_attr("worker", self._worker)
        trial.set_user_attr("heartbeat", time.time())
        baseline = bool(attrs.get("baseline"))
        params: dict[str, object] = {}
        if not baseline:
            for p in space.enabled():
                params[p.key] = _suggest(trial, p)
            # A re-queued trial may fix params disabled since; it runs as it was.
            for key, value in trial.params.items():
                params.setdefault(key, value)
        trial.set_user_attr("server_key", self.server_key)
        trial.set_user_attr("space", {p.key: p.describe() for p in space.enabled()})
        self._live[trial.number] = trial
        rerun = attrs.get("rerun_of")
        return TrialPlan(trial.number, params, baseline, None if rerun is None else int(rerun))

    def heartbeat(self, plan: TrialPlan) -> None:
        self._live[plan.number].set_user_attr("heartbeat", time.time())

    def set_trial_attr(self, plan: TrialPlan, key: str, value: object) -> None:
        self._live[plan.number].set_user_attr(key, value)

    def tell(
        self,
        plan: TrialPlan,
        record: TrialRecord,
        *,
        values: list[float] | None,
        state: TrialState,
    ) -> None:
        """Store the record and finish the trial. ``skip_if_finished``: a prune request from
        another process may have finished it already; the record is kept either way."""
        trial = self._live.pop(plan.number)
        trial.set_user_attr("tuner", record_attrs(record))
        if state == TrialState.COMPLETE:
            for key, value in record.constraints.items():
                trial.set_constraint(key, value)
        self.study.tell(trial, values, state=state, skip_if_finished=True)

    def interrupt(self, plan: TrialPlan, note: str) -> None:
        """Fail a trial the tuner stopped (quit, signal, pause now) and queue it to run again."""
        self._live.pop(plan.number, None)
        self._interrupt(plan.number, plan.params, plan.baseline, note)

    def _interrupt(self, number: int, params: Mapping[str, Any], baseline: bool, note: str) -> None:
        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, number)
        self.storage.set_trial_user_attr(trial_id, "interrupted", note)
        self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        attrs: dict[str, Any] = {"rerun_of": number}
        if baseline:
            attrs["baseline"] = True
        self.study.enqueue_trial(dict(params), user_attrs=attrs)

    # -- reading ---------------------------------------------------------------------------

    def records(self) -> list[TrialRecord]:
        return [to_record(t) for t in self.study.get_trials(deepcopy=False)]

    def find_same(self, plan: TrialPlan) -> TrialRecord | None:
        """A finished trial with exactly these parameters (measured, failed by its
        configuration, or pruned by the user), or None. The baseline only matches the baseline.
        Interrupted trials do not count: they are queued to run again."""
        key = params_key(plan.params)
        for t in self.study.get_trials(deepcopy=False, states=_FINISHED):
            if t.number == plan.number or "interrupted" in t.user_attrs:
                continue
            if t.user_attrs.get("server_key") != self.server_key:
                continue  # measured with other fixed flags, model or environment
            if "tuner" not in t.user_attrs or bool(t.user_attrs.get("baseline")) != plan.baseline:
                continue
            record = to_record(t)
            if record.duplicate_of is None and params_key(record.params) == key:
                return record
        return None

    def running_count(self) -> int:
        """Trials running now, by any worker of the study."""
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def counted(self) -> int:
        """Finished trials that count against the budget: not interrupted, not duplicates."""
        n = 0
        for t in self.study.get_trials(deepcopy=False, states=_FINISHED):
            if "interrupted" in t.user_attrs:
                continue
            if (t.user_attrs.get("tuner") or {}).get("duplicate_of") is not None:
                continue
            n += 1
        return n

    # -- control requests (shared with other processes) --------------------------------------

    def control(self) -> Control:
        raw = self.study.user_attrs.get("control") or {}
        stop_at = raw.get("stop_at")
        return Control(
            paused=bool(raw.get("paused")),
            stop_at=None if stop_at is None else float(stop_at),
            prune={int(n) for n in raw.get("prune", [])},
        )

    def update_control(
        self,
        *,
        paused: bool | None = None,
        stop_at: float | None = None,
        prune: int | None = None,
        pruned: int | None = None,
        reset: bool = False,
    ) -> Control:
        """Read, change and write the control requests (``pruned``: drop a handled request)."""
        control = Control() if reset else self.control()
        if paused is not None:
            control.paused = paused
        if stop_at is not None:
            control.stop_at = stop_at
        if prune is not None:
            control.prune.add(prune)
        if pruned is not None:
            control.prune.discard(pruned)
        self.study.set_user_attr(
            "control",
            {"paused": control.paused, "stop_at": control.stop_at, "prune": sorted(control.prune)},
        )
        return control

    def find_running_same(self, plan: TrialPlan) -> int | None:
        """The number of a trial another worker is running with exactly these parameters (and
        this server setup), or None."""
        key = params_key(plan.params)
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number == plan.number or t.user_attrs.get("server_key") != self.server_key:
                continue
            if bool(t.user_attrs.get("baseline")) == plan.baseline and (
                plan.baseline or params_key(dict(t.params)) == key
            ):
                return t.number
        return None

    def distinct_configs(self) -> int:
        """Distinct configurations tried so far under this server setup (the baseline counts
        as one), those other workers are running now included."""
        keys = set()
        states = (*_FINISHED, TrialState.RUNNING)
        for t in self.study.get_trials(deepcopy=False, states=states):
            if "interrupted" in t.user_attrs or t.user_attrs.get("server_key") != self.server_key:
                continue
            if t.state == TrialState.RUNNING:
                baseline = bool(t.user_attrs.get("baseline"))
                keys.add("baseline" if baseline else params_key(dict(t.params)))
                continue
            record = to_record(t)
            if record.duplicate_of is None:
                keys.add("baseline" if record.baseline else params_key(record.params))
        return len(keys)


_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rfind(")") + 2 :].startswith("Z"):
            return False
    return True


def to_record(t: FrozenTrial) -> TrialRecord:
    return record_from(t.number, t.state.name, t.params, t.user_attrs)
