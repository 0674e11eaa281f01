"""Studies opened to be read, never run: what `show`, `studies` and `export` look at.

A study directory (its kept configuration, its storage) or a storage URL (every study in it) is
opened read-only, so it works on a study another tuner is running: nothing is created, no lock
is taken, no trial is added (``StudyStore`` would queue a baseline and set the sampler; this
opens Optuna's storage with ``skip_table_creation`` and a SQLite file with ``mode=ro``). What
the running tuner shows as "running" is read from its directory's lock (`study_dir.StudyDir`)
and its trials' heartbeats.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tui_tuner.core.config import (
    ObjectiveSettings,
    ServerSettings,
    StudyConfig,
    StudySettings,
)
from tui_tuner.core.config_load import load_config
from tui_tuner.core.errors import UserError
from tui_tuner.core.objectives import best_trials
from tui_tuner.core.trial import TrialRecord, counts_against_budget
from tui_tuner.study_dir import StudyDir, saved_overrides

__all__ = ["StudyView", "list_studies", "open_study", "setup_facts"]

#: A RUNNING trial with a heartbeat this recent belongs to a live tuner (engine.study's rule).
FRESH_S = 120.0


@dataclass(frozen=True)
class StudyView:
    """One study as stored now. ``state``: running (a tuner holds it), paused, finished (its
    budget is spent), stopped (resumable), or empty (no trial yet)."""

    name: str
    config: StudyConfig
    records: list[TrialRecord]
    storage_url: str
    study_dir: Path | None
    state: str
    holder: str | None = None
    #: The last time anything happened to it (a trial started or ended), seconds since epoch.
    last_activity: float | None = None
    #: Whether the configuration is the study directory's (else guessed from the storage).
    config_known: bool = True
    paused: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return sum(counts_against_budget(r) for r in self.records)

    def summary(self, now: float | None = None) -> dict[str, object]:
        """The line `studies` prints, as data."""
        best = best_trials(self.config.objective.kind, self.records)
        age = None if self.last_activity is None else (now or time.time()) - self.last_activity
        top = best[0] if best else None
        return {
            "name": self.name,
            "study_dir": None if self.study_dir is None else str(self.study_dir),
            "storage": _shown(self.storage_url),
            "state": self.state,
            "holder": self.holder,
            "objective": self.config.objective.kind,
            "simulated": self.config.server.simulated,
            "trials_done": self.done,
            "trials_budget": self.config.study.n_trials,
            "trials_running": sum(r.state == "running" for r in self.records),
            "best_trial": None if top is None else top.number,
            "best_output_tok_s": None if top is None else top.measurement.output_tok_s,  # type: ignore[union-attr]
            "best_request_latency_p95_ms": (
                None if top is None else top.measurement.request_latency_p95_ms  # type: ignore[union-attr]
            ),
            "pareto_size": len(best) if self.config.objective.kind == "pareto" else None,
            "last_activity": self.last_activity,
            "age_s": age,
        }


def _shown(url: str) -> str:
    from tui_tuner.engine.storage import shown_url

    return shown_url(url)


# -- opening ------------------------------------------------------------------------------


def _is_url(target: str) -> bool:
    return "://" in target


def open_study(target: str, study: str | None = None) -> StudyView:
    """A study directory, a ``study.db`` file or a storage URL (``--study NAME`` picks one of
    several), opened read-only."""
    if _is_url(target):
        names = _study_names(target)
        if study is None:
            if len(names) != 1:
                listed = ", ".join(names) or "none"
                raise UserError(
                    f"{_shown(target)} holds {len(names)} studies ({listed}); pick one with "
                    "--study NAME"
                )
            study = names[0]
        elif study not in names:
            raise UserError(f"no study {study!r} in {_shown(target)} (it has: {', '.join(names)})")
        return _view_from_storage(target, study)
    path = Path(target)
    if path.is_file() and path.suffix == ".db":
        return open_study(_sqlite_url(path), study)
    if not (path / StudyDir.CONFIG).is_file():
        raise UserError(
            f"{target} is not a study directory ({StudyDir.CONFIG} is missing) nor a storage "
            "URL; `tui-tuner studies` lists the studies under studies/"
        )
    return _view_from_dir(path, study)


def list_studies(target: str | None) -> list[StudyView]:
    """The studies of a directory of study directories (default ``studies``), of one study
    directory, or of a storage URL, by name."""
    if target is not None and _is_url(target):
        return [_view_from_storage(target, name) for name in _study_names(target)]
    root = Path(target or "studies")
    if (root / StudyDir.CONFIG).is_file():
        return [_view_from_dir(root, None)]
    if not root.is_dir():
        raise UserError(f"{root} is not a directory of studies nor a storage URL")
    views = []
    for sub in sorted(root.iterdir()):
        if (sub / StudyDir.CONFIG).is_file():
            try:
                views.append(_view_from_dir(sub, None))
            except UserError as err:  # one broken study must not hide the others
                views.append(_broken(sub, str(err)))
    return views


def _broken(path: Path, why: str) -> StudyView:
    config = StudyConfig(study=StudySettings(name=path.name), server=ServerSettings(model="?"))
    return StudyView(path.name, config, [], "", path, f"unreadable: {why}")


def _sqlite_url(db: Path) -> str:
    return f"sqlite:///{db.resolve()}"


def _view_from_dir(path: Path, study: str | None) -> StudyView:
    directory = StudyDir(path)
    config = load_config(directory.config_path, saved_overrides(directory.path))
    edited = directory.saved_space()
    if edited is not None:
        config = replace(config, space=edited)
    url = config.study.storage or _sqlite_url(directory.path / "study.db")
    name = study or config.study.name
    holder = _lock_holder(directory.path / StudyDir.LOCK)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        return StudyView(name, config, [], url, directory.path, _state(config, [], holder, {}),
                         holder)  # fmt: skip
    records, attrs, _ = _load(url, name)
    return _view(name, config, records, attrs, url, directory.path, holder, known=True)


def _view_from_storage(url: str, name: str) -> StudyView:
    records, attrs, directions = _load(url, name)
    kind = {1: "latency" if directions == ["minimize"] else "throughput"}.get(len(directions),
                                                                             "pareto")  # fmt: skip
    command = next((r.command for r in records if r.command), ())
    server = _server_from_command(command)
    config = StudyConfig(
        study=StudySettings(name=name, storage=url),
        server=server,
        objective=ObjectiveSettings(kind=kind),  # type: ignore[arg-type]
    )
    return _view(name, config, records, attrs, url, None, None, known=False)


def _server_from_command(command: tuple[str, ...]) -> ServerSettings:
    """What a trial's stored command says of the server: its model and whether it was the
    simulated one (the study's configuration is in its directory, not in the storage)."""
    for i, arg in enumerate(command[:-1]):
        if arg.endswith("serve"):  # vllm serve, tui-tuner sim-serve
            return ServerSettings(model=command[i + 1], command=tuple(command[: i + 1]))
    return ServerSettings(model="unknown")


def _view(
    name: str,
    config: StudyConfig,
    records: list[TrialRecord],
    attrs: Mapping[str, Any],
    url: str,
    study_dir: Path | None,
    holder: str | None,
    *,
    known: bool,
) -> StudyView:
    times = [t for r in records for t in (r.started_at, r.finished_at) if t is not None]
    beats = [float(b) for b in attrs.get("_heartbeats", ())]
    last = max([*times, *beats], default=None)
    paused = bool((attrs.get("control") or {}).get("paused"))
    state = _state(config, records, holder, attrs)
    return StudyView(name, config, records, url, study_dir, state, holder, last, known, paused)


def _state(
    config: StudyConfig, records: list[TrialRecord], holder: str | None, attrs: Mapping[str, Any]
) -> str:
    now = time.time()
    live = any(now - float(b) < FRESH_S for b in attrs.get("_heartbeats", ()))
    if holder is not None or live:
        return "paused" if (attrs.get("control") or {}).get("paused") else "running"
    if not records:
        return "empty"
    budget = config.study.n_trials
    if budget is not None and sum(counts_against_budget(r) for r in records) >= budget:
        return "finished"
    return "stopped"


def _lock_holder(lock: Path) -> str | None:
    """Who holds a study directory's lock (what the tuner wrote in it), or None if nobody does.
    The lock is tried shared and let go at once; the file is never created."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 4096).decode("utf-8", "replace").strip()
            return text or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# -- the storage, read-only -----------------------------------------------------------------


def _read_only(url: str) -> Any:
    import optuna
    import sqlalchemy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    shown = _shown(url)  # as the user gave it, not the read-only form below
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if not path.is_file():
            raise UserError(f"no study storage at {path}")
        url = f"sqlite:///file:{quote(str(path.resolve()))}?mode=ro&uri=true"
        kwargs["connect_args"] = {"timeout": 30}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=True)
    except optuna.exceptions.OptunaError:  # a database, but not one Optuna has written
        raise UserError(f"{shown} holds no study: it has none of Optuna's tables") from None
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, RuntimeError) as err:
        raise UserError(f"cannot open the study storage {shown}: {err}") from None


def _study_names(url: str) -> list[str]:
    storage = _read_only(url)
    try:
        return sorted(s.study_name for s in storage.get_all_studies())
    except Exception as err:
        raise UserError(f"cannot read the study storage {_shown(url)}: {err}") from None


def _load(url: str, name: str) -> tuple[list[TrialRecord], dict[str, Any], list[str]]:
    """A study's records, its user attributes (with the RUNNING trials' heartbeats under
    ``_heartbeats``) and its directions."""
    import optuna
    import sqlalchemy.exc

    from tui_tuner.engine.records import to_record

    storage = _read_only(url)
    try:
        study_id = storage.get_study_id_from_name(name)
        trials = storage.get_all_trials(study_id, deepcopy=False)
        attrs = dict(storage.get_study_user_attrs(study_id))
        directions = [d.name.lower() for d in storage.get_study_directions(study_id)]
    except KeyError:
        raise UserError(f"no study {name!r} in {_shown(url)} yet") from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
        raise UserError(f"cannot read the study storage {_shown(url)}: {err}") from None
    attrs["_heartbeats"] = [
        t.user_attrs["heartbeat"]
        for t in trials
        if t.state == optuna.trial.TrialState.RUNNING and "heartbeat" in t.user_attrs
    ]
    return [to_record(t) for t in trials], attrs, directions


# -- what the trials' files say --------------------------------------------------------------

_VLLM_VERSION = re.compile(r"vLLM API server version (\S+)|vLLM version (\S+)")
_SIM_GPU = re.compile(r"SIMULATED vLLM server: (.+?)(?:;|$)")


def setup_facts(view: StudyView) -> dict[str, str | None]:
    """The set-up a report names, where a trial's files tell it: the vLLM version (the
    server's log), the GuideLLM version (its report), the GPU (the simulated server names the
    one it models; a real vLLM's log does not)."""
    out: dict[str, str | None] = {"vllm": None, "guidellm": None, "gpu": None}
    for r in sorted(view.records, key=lambda r: r.measurement is None):
        log = r.files.get("server.log")
        if log and out["vllm"] is None:
            head = _head(Path(log))
            found = _VLLM_VERSION.search(head)
            if found:
                out["vllm"] = found.group(1) or found.group(2)
            sim = _SIM_GPU.search(head)
            if sim:
                out["gpu"] = f"{sim.group(1)} (SIMULATED)"
        report = r.files.get("report.json")
        if report and out["guidellm"] is None:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                meta = json.loads(Path(report).read_text(encoding="utf-8")).get("metadata", {})
                out["guidellm"] = meta.get("guidellm_version")
        if all(out.values()):
            break
    return out


def _head(path: Path, size: int = 65536) -> str:
    try:
        with path.open("rb") as f:
            return f.read(size).decode("utf-8", "replace")
    except OSError:
        return ""


# -- parameter importances --------------------------------------------------------------------

#: Fewer measured trials than this, and importances are noise: the report says so instead.
MIN_TRIALS_FOR_IMPORTANCE = 5


def param_importances(view: StudyView) -> dict[str, float] | str:
    """How much each searched parameter explains of the first objective (Optuna's fANOVA over
    the measured, feasible trials, the baseline left out), or why there is no answer."""
    import optuna

    from tui_tuner.core.objectives import metric_names

    if not view.storage_url:
        return "no storage"
    storage = _read_only(view.storage_url)
    study_id = storage.get_study_id_from_name(view.name)
    usable = {
        r.number
        for r in view.records
        if r.state == "complete" and r.feasible and not r.baseline and r.duplicate_of is None
        and r.measurement is not None
    }  # fmt: skip
    metric = metric_names(view.config.objective.kind)[0]
    by_number = {r.number: r for r in view.records}
    trials = [t for t in storage.get_all_trials(study_id, deepcopy=False) if t.number in usable]
    if len(trials) < MIN_TRIALS_FOR_IMPORTANCE:
        return (
            f"not enough trials: {len(trials)} measured, feasible trials (at least "
            f"{MIN_TRIALS_FOR_IMPORTANCE} are needed for parameter importances)"
        )
    study = optuna.create_study(direction="minimize" if metric.endswith("_ms") else "maximize")
    for t in trials:
        value = getattr(by_number[t.number].measurement, metric)
        study.add_trial(optuna.trial.create_trial(
            params=t.params, distributions=t.distributions, value=float(value)))  # fmt: skip
    try:
        return dict(optuna.importance.get_param_importances(study, normalize=True))
    except (RuntimeError, ValueError) as err:
        return f"Optuna could not compute them: {err}"
