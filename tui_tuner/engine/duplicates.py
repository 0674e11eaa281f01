"""What has been tried already: a configuration is never measured twice under the same setup.

A configuration counts as tried only under the same `server_key` (the server command, model,
fixed flags, environment and workload): changing any of them measures everything again.
Interrupted trials were not tried: they are queued to run again. These functions read the
trials they are given (from ``StudyStore``) and never call Optuna themselves.

Configurations that cannot differ under the study's load (`core.equivalence`: with S concurrent
streams, every ``max_num_seqs`` of S or more with the same CUDA graph sizes) are one
configuration here: compared by their `canonical` key, counted once, and an equivalent of a
*measured* one is answered from the store. A failure answers only the very same values: a larger
``max_num_seqs`` may fail at start-up (memory) where a smaller one runs. The stored ``params``
stay as the sampler proposed them; only the lookup is canonical.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from datetime import datetime

from optuna.trial import FrozenTrial, TrialState

from tui_tuner.core.config import StudyConfig
from tui_tuner.core.equivalence import Setup, canonical
from tui_tuner.core.space import Param, SearchSpace, params_key
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.records import to_record
from tui_tuner.engine.samplers import encode_choice

__all__ = [
    "FINISHED",
    "distinct_configs",
    "find_running_same",
    "find_same",
    "measured",
    "server_key",
    "tried_keys",
    "untried_config",
    "why_same",
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
    setup: Setup,
) -> TrialRecord | None:
    """A finished trial (other than ``number``) with exactly these parameters under the setup
    ``key`` (measured, failed by its configuration, or pruned by the user), or else a measured
    one equivalent to them under the load of ``setup`` (`core.equivalence`), or None. The
    baseline only matches the baseline. A trial queued to run again (``rerun``: it failed for
    reasons outside its flags) is no result of its configuration."""
    wanted = params_key(params)
    wanted_class = canonical(params, setup).key
    equivalent = None
    for t in finished:
        if t.number == number or "interrupted" in t.user_attrs:
            continue
        if t.user_attrs.get("server_key") != key:
            continue  # measured with other fixed flags, model or environment
        if "tuner" not in t.user_attrs or bool(t.user_attrs.get("baseline")) != baseline:
            continue
        record = to_record(t)
        if record.rerun or record.duplicate_of is not None:
            continue  # runs again; or its result is another trial's
        if params_key(record.params) == wanted:
            return record
        if (
            equivalent is None
            and wanted_class != wanted  # a rule applies to the proposal at all
            and measured(record)
            and canonical(record.params, setup).key == wanted_class
        ):
            equivalent = record
    return equivalent


def why_same(params: Mapping[str, object], same: TrialRecord, setup: Setup) -> str | None:
    """Why ``params`` count as the configuration of ``same`` (found by `find_same`) although
    their values differ (`Canonical.why`); None when they are the very same values."""
    if params_key(params) == params_key(same.params):
        return None
    return canonical(params, setup).why


def measured(record: TrialRecord) -> bool:
    """A trial with figures of its own: the only kind that answers an equivalent proposal."""
    return (
        record.state == "complete"
        and record.measurement is not None
        and record.failure is None
        and record.values is not None
    )


def find_running_same(
    running: Iterable[FrozenTrial],
    *,
    number: int,
    params: Mapping[str, object],
    baseline: bool,
    key: str,
    setup: Setup,
) -> int | None:
    """The number of a running trial (other than ``number``, so another worker's) with these
    parameters, or ones equivalent to them under the load of ``setup``, under the setup
    ``key``, or None. Only a trial that started running before ``number`` counts (the lower
    number breaks a tie): two workers that took the same configuration at the same moment
    (two baselines queued by workers started together) would otherwise each skip theirs for
    the other's, and neither would be measured."""
    running = list(running)
    first = _started(running, number)
    wanted = canonical(params, setup).key
    for t in running:
        if t.number == number or t.user_attrs.get("server_key") != key:
            continue
        if (t.datetime_start or datetime.max, t.number) > first:
            continue  # it started after this one: it is the one to skip
        if bool(t.user_attrs.get("baseline")) == baseline and (
            baseline or canonical(dict(t.params), setup).key == wanted
        ):
            return t.number
    return None


def _started(running: list[FrozenTrial], number: int) -> tuple[datetime, int]:
    """When trial ``number`` went running, with its number (a tie's breaker)."""
    own = next((t.datetime_start for t in running if t.number == number), None)
    return (own or datetime.max, number)


def distinct_configs(trials: Iterable[FrozenTrial], *, key: str, setup: Setup) -> int:
    """Distinct configurations among finished and running ``trials`` under the setup ``key``
    (the baseline counts as one, equivalent ones under the load of ``setup`` as one: see
    `core.equivalence.distinct_size` for the space's count), those other workers are running
    now included."""
    keys = set()
    for t in trials:
        if "interrupted" in t.user_attrs or t.user_attrs.get("server_key") != key:
            continue
        if t.state == TrialState.RUNNING:
            baseline = bool(t.user_attrs.get("baseline"))
            keys.add("baseline" if baseline else canonical(dict(t.params), setup).key)
            continue
        record = to_record(t)
        if record.duplicate_of is None and not record.rerun:
            keys.add("baseline" if record.baseline else canonical(record.params, setup).key)
    return len(keys)


def tried_keys(trials: Iterable[FrozenTrial], *, key: str, setup: Setup) -> set[str]:
    """The canonical key (`core.equivalence.canonical` under ``setup``) of every configuration
    that has a result under the setup ``key``, or will have one (running, or queued to run),
    the baseline left out."""
    out = set()
    for t in trials:
        if t.user_attrs.get("baseline") or "interrupted" in t.user_attrs:
            continue
        if t.state == TrialState.WAITING:
            queued = dict(t.params) or t.system_attrs.get("fixed_params", {})
            out.add(canonical(queued, setup).key)
            continue
        if t.user_attrs.get("server_key") != key:
            continue
        if t.state == TrialState.RUNNING:
            out.add(canonical(dict(t.params), setup).key)
            continue
        record = to_record(t)
        if record.duplicate_of is None and not record.rerun:
            out.add(canonical(record.params, setup).key)
    return out


def untried_config(
    space: SearchSpace, tried: set[str], rng: random.Random, setup: Setup
) -> dict[str, object] | None:
    """A configuration of ``space`` (its enabled parameters, values as the sampler stores them)
    whose canonical key under ``setup`` is not in ``tried`` (`tried_keys`), chosen at random;
    None when every one is tried. For when the sampler keeps proposing configurations that
    have results already."""
    params = space.enabled()
    size = space.size()
    if size is not None and size <= _LIST_UP_TO:
        keys = [p.key for p in params]
        values = [[encode_choice(c) for c in p.choices() or ()] for p in params]
        combos = (dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values))
        left = [c for c in combos if canonical(c, setup).key not in tried]
        return rng.choice(left) if left else None
    for _ in range(_DRAWS):
        draw = {p.key: _draw(p, rng) for p in params}
        if canonical(draw, setup).key not in tried:
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
