"""What has been tried already: a configuration is never measured twice under the same setup.

A configuration counts as tried only under the same `server_key` (the server command, model,
fixed flags, environment and workload): changing any of them measures everything again.
Interrupted trials were not tried: they are queued to run again. These functions read the
trials they are given (from ``StudyStore``) and never call Optuna themselves.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict

from optuna.trial import FrozenTrial, TrialState

from tui_tuner.core.config import StudyConfig
from tui_tuner.core.space import Param, SearchSpace, params_key
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.records import to_record
from tui_tuner.engine.samplers import encode_choice

__all__ = [
    "FINISHED",
    "distinct_configs",
    "find_running_same",
    "find_same",
    "server_key",
    "tried_keys",
    "untried_config",
]

#: Spaces up to this size are listed whole to find an untried configuration; larger ones are
#: drawn from at random (a handful of tried ones among millions are rarely hit).
_LIST_UP_TO = 50_000
_DRAWS = 2_000

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
    baseline only matches the baseline. A trial queued to run again (``rerun``: it failed for
    reasons outside its flags) is no result of its configuration."""
    wanted = params_key(params)
    for t in finished:
        if t.number == number or "interrupted" in t.user_attrs:
            continue
        if t.user_attrs.get("server_key") != key:
            continue  # measured with other fixed flags, model or environment
        if "tuner" not in t.user_attrs or bool(t.user_attrs.get("baseline")) != baseline:
            continue
        record = to_record(t)
        if record.rerun:
            continue  # failed for reasons outside its flags: it runs again, not repeated
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
        if record.duplicate_of is None and not record.rerun:
            keys.add("baseline" if record.baseline else params_key(record.params))
    return len(keys)


def tried_keys(trials: Iterable[FrozenTrial], *, key: str) -> set[str]:
    """`params_key` of every configuration that has a result under the setup ``key``, or will
    have one (running, or queued to run), the baseline left out."""
    out = set()
    for t in trials:
        if t.user_attrs.get("baseline") or "interrupted" in t.user_attrs:
            continue
        if t.state == TrialState.WAITING:
            out.add(params_key(dict(t.params) or t.system_attrs.get("fixed_params", {})))
            continue
        if t.user_attrs.get("server_key") != key:
            continue
        if t.state == TrialState.RUNNING:
            out.add(params_key(dict(t.params)))
            continue
        record = to_record(t)
        if record.duplicate_of is None and not record.rerun:
            out.add(params_key(record.params))
    return out


def untried_config(
    space: SearchSpace, tried: set[str], rng: random.Random
) -> dict[str, object] | None:
    """A configuration of ``space`` (its enabled parameters, values as the sampler stores them)
    whose `params_key` is not in ``tried``, chosen at random; None when every one is tried.
    For when the sampler keeps proposing configurations that have results already."""
    params = space.enabled()
    size = space.size()
    if size is not None and size <= _LIST_UP_TO:
        keys = [p.key for p in params]
        values = [[encode_choice(c) for c in p.choices() or ()] for p in params]
        combos = (dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values))
        left = [c for c in combos if params_key(c) not in tried]
        return rng.choice(left) if left else None
    for _ in range(_DRAWS):
        draw = {p.key: _draw(p, rng) for p in params}
        if params_key(draw) not in tried:
            return draw
    return None


def _draw(p: Param, rng: random.Random) -> object:
    choices = p.choices()
    if choices is not None:
        return encode_choice(rng.choice(choices))
    assert p.low is not None and p.high is not None
    if p.log:
        return math.exp(rng.uniform(math.log(p.low), math.log(p.high)))
    return rng.uniform(p.low, p.high)
