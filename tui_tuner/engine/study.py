"""The study's memory: Optuna ask/tell over any Optuna storage, plus what the tuner adds.

Each trial keeps, as Optuna user attributes, everything needed to show and reproduce it
(``tuner``: measurement, failure, timings, command, files) and who runs it (``worker``,
``heartbeat``), so that a study can be resumed after a crash and watched or steered from another
process. Control requests (pause, stop, prune) are study attributes for the same reason.

Every method here blocks on the storage; the orchestrator calls them from one worker thread.
Around it: the sampler (``samplers.py``), what counts as tried already (``duplicates.py``), the
control requests (``control.py``) and a record's stored form (``records.py``).
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from tui_tuner.core.confidence import REMEASURE_ROUNDS, best_configurations
from tui_tuner.core.config import StudyConfig
from tui_tuner.core.equivalence import Setup
from tui_tuner.core.errors import UserError
from tui_tuner.core.objectives import directions, metric_names
from tui_tuner.core.space import SearchSpace
from tui_tuner.core.trial import TrialPlan, TrialRecord, counts_against_budget
from tui_tuner.engine import duplicates
from tui_tuner.engine.control import Control
from tui_tuner.engine.duplicates import FINISHED, server_key
from tui_tuner.engine.records import record_attrs, to_record
from tui_tuner.engine.samplers import make_sampler, suggest
from tui_tuner.engine.storage import is_storage_error, open_storage, shown_url, unavailable

__all__ = [
    "Control",
    "StudyStore",
    "TrialPlan",
    "default_storage_url",
    "record_attrs",
    "to_record",
]

#: A RUNNING trial whose worker has not written a heartbeat for this long is taken as dead.
STALE_AFTER_S = 120.0


#: This process among all that ever ran on its host: a host and a pid name a worker only while
#: it lives (a restarted container gets its predecessor's hostname and, often, its pid).
RUN_ID = secrets.token_hex(8)


def default_storage_url(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


class StudyStore:
    """One study in one Optuna storage.

    ``pid_alive`` tells whether a process of this host lives (the adapters' ``pid_alive``):
    with it, a trial left RUNNING by a dead worker of this host is repaired at once; without
    it (None), only by its heartbeat, ``STALE_AFTER_S`` after the worker fell silent.
    """

    def __init__(
        self,
        config: StudyConfig,
        storage_url: str,
        *,
        pid_alive: Callable[[int], bool] | None = None,
    ) -> None:
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
        try:
            self._open_study(config)
        except Exception as err:  # created or loaded before any storage thread exists
            if not is_storage_error(err):
                raise
            raise unavailable(storage_url, err, wait) from None
        self._worker = {"host": socket.gethostname(), "pid": os.getpid(), "run": RUN_ID}
        self.pid_alive = pid_alive
        self._live: dict[int, optuna.Trial] = {}
        #: RUNNING trials seen with no heartbeat yet, and when this store first saw them.
        self._first_seen: dict[int, float] = {}
        self.server_key = server_key(config)

    def _open_study(self, config: StudyConfig) -> None:
        """Create or load the study (writes on first use, and a resumed study's sampler)."""
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
                f"study {config.study.name!r} in {self.storage_url} was created with objective "
                f"directions {[d.name.lower() for d in self.study.directions]}; this "
                f"configuration's objective {kind!r} needs {directions(kind)}. "
                "Use another study name."
            )
        before = self.storage.get_n_trials(self.storage.get_study_id_from_name(config.study.name))
        if before:  # a resumed study: see make_sampler
            self.study.sampler = make_sampler(config, trials_before=before)
        else:
            with warnings.catch_warnings():  # experimental since 3.2, and still the only way
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names(metric_names(kind))

    def ensure_baseline(self) -> bool:
        """Queue the baseline unless this server setup has one; True if it was queued. Only the
        orchestrator calls this: opening a study to read it never adds a trial."""
        if not self.config.study.baseline or self._has_baseline():
            return False
        self.study.enqueue_trial({}, user_attrs={"baseline": True})
        for _ in range(self.config.study.noise_repeats - 1):  # its spread is the noise
            self.study.enqueue_trial({}, user_attrs={"baseline": True, "repeat": True})
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
            ours = worker.get("host") == self._worker["host"] and worker.get("pid") == os.getpid()
            if ours and worker.get("run", RUN_ID) == RUN_ID:  # this process's (any lane's)
                continue
            # Our pid under another run id: a process before this one had it (a container
            # restarted with the same hostname gets the same pid): that one is dead.
            if not ours and not self._dead(worker, float(beat), now, stale_after_s):
                continue
            baseline, repeat = bool(t.user_attrs.get("baseline")), bool(t.user_attrs.get("repeat"))
            note = "interrupted: the tuner running it died"
            if self._interrupt(t.number, t.params, baseline, note, repeat=repeat):
                repaired.append(t.number)
        return repaired

    def _dead(
        self, worker: Mapping[str, Any], beat: float, now: float, stale_after_s: float
    ) -> bool:
        """Whether the worker that runs a trial is gone: silent for too long, or a process of
        this host that no longer lives."""
        if now - beat > stale_after_s:
            return True
        if self.pid_alive is None or worker.get("host") != self._worker["host"]:
            return False
        pid = int(worker.get("pid", 0))
        return pid <= 0 or not self.pid_alive(pid)

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
                params[p.key] = suggest(trial, p)
            # A re-queued trial may fix params disabled since; it runs as it was.
            for key, value in trial.params.items():
                params.setdefault(key, value)
        trial.set_user_attr("server_key", self.server_key)
        trial.set_user_attr("space", {p.key: p.describe() for p in space.enabled()})
        self._live[trial.number] = trial
        rerun = attrs.get("rerun_of")
        return TrialPlan(
            trial.number,
            params,
            baseline,
            None if rerun is None else int(rerun),
            retries=int(attrs.get("retries", 0)),
            repeat=bool(attrs.get("repeat")),
        )

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
        self._interrupt(plan.number, plan.params, plan.baseline, note, repeat=plan.repeat)

    def requeue(self, plan: TrialPlan) -> None:
        """Queue the configuration of ``plan`` (told already) to run again as the next trial:
        it failed, or was measured on a frozen server, for reasons outside its flags."""
        attrs: dict[str, Any] = {"rerun_of": plan.number, "retries": plan.retries + 1}
        attrs.update({k: True for k in ("baseline", "repeat") if getattr(plan, k)})
        self.study.enqueue_trial(dict(plan.params), user_attrs=attrs)

    def repeats_waiting(self) -> int:
        """Repeats queued and not yet run (the baseline's noise runs, a re-measurement)."""
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        return sum(bool(t.user_attrs.get("repeat")) for t in waiting)

    def queue_remeasure(self) -> int:
        """Queue the best ``study.remeasure_top`` configurations to be measured again,
        interleaved (A B C A B C); how many trials. Once for the trials the study has counted:
        the re-measurement may reorder the best, which is its point, and is not chased by
        another one; a resume that measures more configurations re-measures again."""
        records = self.records()
        counted = sum(counts_against_budget(r) for r in records)
        if self.study.user_attrs.get("remeasured_at") == counted:
            return 0
        top = best_configurations(self.config.objective.kind, records)
        top = top[: self.config.study.remeasure_top]
        for _ in range(REMEASURE_ROUNDS):
            for r in top:
                self.study.enqueue_trial(dict(r.params), user_attrs={"repeat": True})
        self.study.set_user_attr("remeasured_at", counted)
        return REMEASURE_ROUNDS * len(top)

    def queue_warm_start(self, configurations: Sequence[tuple[Mapping[str, object], str]]) -> int:
        """Queue ``(params, source)`` of earlier studies to run next, after the baseline (which
        is queued first if it is due); how many were queued. Once a study: a resume, or a
        second run with the same warm start, queues nothing again."""
        if self.study.user_attrs.get("warm_started"):
            return 0
        self.ensure_baseline()
        for params, source in configurations:
            self.study.enqueue_trial(dict(params), user_attrs={"warm_start": source})
        self.study.set_user_attr("warm_started", len(configurations))
        return len(configurations)

    def enqueue_untried(self, space: SearchSpace) -> dict[str, object] | None:
        """Queue a configuration of ``space`` that has no result yet (nor is running or queued)
        as the next trial, and return it; None if every configuration has one. Used when the
        sampler keeps proposing configurations tried already."""
        trials = self.study.get_trials(deepcopy=False)
        setup = Setup.of(self.config)
        tried = duplicates.tried_keys(trials, key=self.server_key, setup=setup)
        rng = random.Random(f"{self.config.study.seed}:{len(trials)}")
        params = duplicates.untried_config(space, tried, rng, setup)
        if params is not None:
            self.study.enqueue_trial(params, user_attrs={"untried": True})
        return params

    def _interrupt(
        self,
        number: int,
        params: Mapping[str, Any],
        baseline: bool,
        note: str,
        *,
        repeat: bool = False,
    ) -> bool:
        """Fail trial ``number`` and queue its configuration again; False when another worker
        finished it first (two repairing one dead worker's trial at once: the storage lets one
        change its state, and that one queues it)."""
        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, number)
        try:
            self.storage.set_trial_user_attr(trial_id, "interrupted", note)
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        attrs: dict[str, Any] = {"rerun_of": number}
        if baseline:
            attrs["baseline"] = True
        if repeat:
            attrs["repeat"] = True
        self.study.enqueue_trial(dict(params), user_attrs=attrs)
        return True

    # -- reading ---------------------------------------------------------------------------

    def records(self) -> list[TrialRecord]:
        return [to_record(t) for t in self.study.get_trials(deepcopy=False)]

    def find_same(self, plan: TrialPlan) -> TrialRecord | None:
        """A finished trial with exactly these parameters (measured, failed by its
        configuration, or pruned by the user), or else a measured one that cannot differ from
        them under this load (`core.equivalence`; `why_same` says why), or None. The baseline
        only matches the baseline. Interrupted trials do not count: they are queued to run
        again."""
        return duplicates.find_same(
            self.study.get_trials(deepcopy=False, states=FINISHED),
            number=plan.number,
            params=plan.params,
            baseline=plan.baseline,
            key=self.server_key,
            setup=Setup.of(self.config),
        )

    def why_same(self, plan: TrialPlan, same: TrialRecord) -> str | None:
        """Why ``plan`` is answered by ``same`` (from `find_same`) although their values
        differ, for its note (`core.equivalence.duplicate_note`); None for the same values."""
        return duplicates.why_same(plan.params, same, Setup.of(self.config))

    def running_count(self) -> int:
        """Trials running now, by any worker of the study."""
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def counted(self) -> int:
        """Finished trials that count against the budget (`counts_against_budget`)."""
        trials = self.study.get_trials(deepcopy=False, states=FINISHED)
        return sum(counts_against_budget(to_record(t)) for t in trials)

    # -- control requests (shared with other processes) --------------------------------------

    def control(self) -> Control:
        return Control.from_attr(self.study.user_attrs.get("control"))

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
        self.study.set_user_attr("control", control.to_attr())
        return control

    def find_running_same(self, plan: TrialPlan) -> int | None:
        """The number of a trial another worker is running with these parameters, or ones that
        cannot differ from them under this load (and this server setup), or None."""
        return duplicates.find_running_same(
            self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)),
            number=plan.number,
            params=plan.params,
            baseline=plan.baseline,
            key=self.server_key,
            setup=Setup.of(self.config),
        )

    def distinct_configs(self) -> int:
        """Distinct configurations tried so far under this server setup (the baseline counts
        as one, configurations that cannot differ under this load as one), those other workers
        are running now included."""
        states = (*FINISHED, TrialState.RUNNING)
        trials = self.study.get_trials(deepcopy=False, states=states)
        return duplicates.distinct_configs(trials, key=self.server_key, setup=Setup.of(self.config))
