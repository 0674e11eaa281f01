"""What has been tried already: a configuration is never measured twice under the same setup.

A configuration counts as tried only under the same `server_key` (the server command, model,
fixed flags, environment and workload): changing any of them measures everything again.
Interrupted trials were not tried: they are queued to run again. These functions read the
trials they are given (from ``StudyStore``) and never call Optuna themselves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict

from optuna.trial import FrozenTrial, TrialState

from tui_tuner.core.config import StudyConfig
from tui_tuner.core.space import params_key
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.records import to_record

__all__ = ["FINISHED", "distinct_configs", "find_running_same", "find_same", "server_key"]

#: Optuna's states of a trial that has ended.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


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


def find_same(
    finished: Iterable[FrozenTrial],
    *,
    number: int,
    params: Mapping[str, object],
    baseline: bool,
    key: str,
) -> TrialRecord | None:
    """A finished trial (other than ``number``) with exactly these parameters under the setup
    ``key`` (measured, failed by its configuration, or pruned by the user), or None. The
    baseline only matches the baseline."""
    wanted = params_key(params)
    for t in finished:
        if t.number == number or "interrupted" in t.user_attrs:
            continue
        if t.user_attrs.get("server_key") != key:
            continue  # measured with other fixed flags, model or environment
        if "tuner" not in t.user_attrs or bool(t.user_attrs.get("baseline")) != baseline:
            continue
        record = to_record(t)
        if record.duplicate_of is None and params_key(record.params) == wanted:
            return record
    return None


def find_running_same(
    running: Iterable[FrozenTrial],
    *,
    number: int,
    params: Mapping[str, object],
    baseline: bool,
    key: str,
) -> int | None:
    """The number of a running trial (other than ``number``, so another worker's) with exactly
    these parameters under the setup ``key``, or None."""
    wanted = params_key(params)
    for t in running:
        if t.number == number or t.user_attrs.get("server_key") != key:
            continue
        if bool(t.user_attrs.get("baseline")) == baseline and (
            baseline or params_key(dict(t.params)) == wanted
        ):
            return t.number
    return None


def distinct_configs(trials: Iterable[FrozenTrial], *, key: str) -> int:
    """Distinct configurations among finished and running ``trials`` under the setup ``key``
    (the baseline counts as one), those other workers are running now included."""
    keys = set()
    for t in trials:
        if "interrupted" in t.user_attrs or t.user_attrs.get("server_key") != key:
            continue
        if t.state == TrialState.RUNNING:
            baseline = bool(t.user_attrs.get("baseline"))
            keys.add("baseline" if baseline else params_key(dict(t.params)))
            continue
        record = to_record(t)
        if record.duplicate_of is None:
            keys.add("baseline" if record.baseline else params_key(record.params))
    return len(keys)
