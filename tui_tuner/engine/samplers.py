"""Which Optuna sampler proposes the next configuration, and how a parameter is asked of it.

``study.sampler`` names the sampler (``auto`` by default: see `make_sampler`). Every parameter
of the search space is suggested through `suggest`, so all samplers see the same distributions,
and a stored study keeps them from one run to the next.

Numbers are searched as ordered values. An int or float range (with a step, on a log scale) is
Optuna's own ordered distribution. A list of numeric options (``max_num_seqs: {options: [8, 16,
32, 64]}``) is stored as Optuna's categorical distribution, so that the trial keeps the real
value (``trial.params``, which the duplicate check, the records and the UI read) and studies
written before stay loadable, but ``auto`` and ``tpe`` search it by position, as an ordered int
(`_OrderedOptions`): 32 lies between 16 and 64, and a good 32 makes 64 likelier than 8. Truly
unordered choices (a dtype, a boolean, a JSON value) stay categorical.

`_TunerSampler` also fixes what a tuner study did to Optuna's multivariate samplers: their
joint search space is the intersection of every finished trial's parameters, and the baseline
(vLLM's defaults) has none, so that intersection was always empty and every parameter was drawn
on its own. Here the intersection is over the trials that have parameters.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from tui_tuner.core.config import StudyConfig
from tui_tuner.core.errors import UserError
from tui_tuner.core.space import Param, json_text

__all__ = ["AUTO_STARTUP_TRIALS", "encode_choice", "make_sampler", "ordered_options", "suggest"]

#: Trials before TPE models the results (the baseline and its noise runs count; the rest are
#: random proposals). Optuna's default; 3 was faster on one bench landscape but got stuck on two
#: others (bench/search_efficiency.py, docs/benchmarks.md "Search efficiency").
AUTO_STARTUP_TRIALS = 10


def make_sampler(config: StudyConfig, *, trials_before: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler. ``trials_before``: trials the study holds already. A seeded sampler
    started again on a resumed study would replay its first proposals, which all have results
    by then; its seed is moved on by that count, so a study is reproducible run by run and a
    resume never replays. Not the grid's: its seed orders the grid points, which the study's
    trials name by number, and it never proposes a point twice anyway.

    ``auto`` (the default): multivariate TPE over numbers searched as ordered values, with
    `AUTO_STARTUP_TRIALS` trials first, the constant liar for several workers, and proposals
    no trial holds yet (`_UntriedTPE`). ``tpe``: multivariate TPE with Optuna's defaults,
    numbers ordered too.
    Every Optuna sampler reads SLA terms and failures from the trials' constraints."""
    name, seed = str(config.study.sampler), config.study.seed
    if seed is not None and trials_before and name != "grid":
        seed += trials_before
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return _TunerSampler(optuna.samplers.NSGAIISampler(seed=seed), ordered=False)
    if name == "grid":
        grid = {
            p.key: [encode_choice(c) for c in p.choices() or ()] for p in config.space.enabled()
        }
        return _AskTellGrid(grid, seed=seed)
    if name == "gp":
        _needs(name, "scipy", "torch", extra="gp")
        return _TunerSampler(optuna.samplers.GPSampler(seed=seed), ordered=False)
    if name == "cmaes":
        _needs(name, "cmaes", extra="cmaes")
        return _TunerSampler(
            optuna.samplers.CmaEsSampler(seed=seed),
            ordered=False,
        )
    if name == "tpe":  # the constant liar changes nothing with one trial at a time
        tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
        return _TunerSampler(tpe)
    tpe = _UntriedTPE(
        seed=seed,
        multivariate=True,
        n_startup_trials=AUTO_STARTUP_TRIALS,
        constant_liar=True,
    )
    return _TunerSampler(tpe)


def _needs(name: str, *modules: str, extra: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(
            f"study.sampler: {name} needs {' and '.join(missing)} in the tuner's environment "
            f"(pip install 'tui-tuner[{extra}]'); or use auto"
        )


def suggest(trial: optuna.Trial, p: Param) -> object:
    """Ask the trial's sampler for a value of ``p``, with ``p``'s distribution."""
    if p.kind == "int":
        assert p.low is not None and p.high is not None
        return trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    if p.kind == "float":
        assert p.low is not None and p.high is not None
        return trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
    return trial.suggest_categorical(p.key, [encode_choice(c) for c in p.choices() or ()])


def encode_choice(value: object) -> Any:
    """Categorical choices must be plain scalars; JSON values (compilation configs) go as their
    one compact text (`core.space.json_text`), which is also what the server's command line gets:
    the value is never decoded and encoded again on its way there."""
    if isinstance(value, (dict, list)):
        return json_text(value)
    return value


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def ordered_options(distribution: BaseDistribution) -> BaseDistribution:
    """``distribution`` as the sampler searches it: a categorical one over two or more numbers
    becomes `_OrderedOptions` (their positions, in ascending order); anything else is kept."""
    if not isinstance(distribution, CategoricalDistribution):
        return distribution
    choices = distribution.choices
    if len(choices) < 2 or not all(_number(c) for c in choices):
        return distribution
    return _OrderedOptions(choices)


class _OrderedOptions(IntDistribution):
    """Numeric options seen by their rank: the internal value is the position of the option in
    ascending order, the external one the option itself. A value that is not an option (a study
    whose options were edited) is read as the position of the nearest one (on a log scale when
    every option is positive, as option lists of batch sizes and token counts usually grow)."""

    def __init__(self, choices: Sequence[Any]) -> None:
        self.options = tuple(sorted(choices, key=float))
        super().__init__(0, len(self.options) - 1)

    def _scale(self, value: float) -> float:
        positive = all(float(o) > 0 for o in self.options)
        return math.log(value) if positive and value > 0 else value

    def to_internal_repr(self, param_value_in_external_repr: Any) -> float:
        value = float(param_value_in_external_repr)
        x = self._scale(value)
        return float(min(range(len(self.options)),
                         key=lambda i: abs(self._scale(float(self.options[i])) - x)))  # fmt: skip

    def to_external_repr(self, param_value_in_internal_repr: float) -> Any:
        index = min(max(round(param_value_in_internal_repr), 0), len(self.options) - 1)
        return self.options[int(index)]


class _TunerSampler(BaseSampler):
    """An Optuna sampler (``inner``) whose joint search space is the intersection over the
    finished trials that have parameters (the baseline has none), with numeric options ordered
    (``ordered``: for samplers that read values through the distribution, as TPE does)."""

    def __init__(self, inner: BaseSampler, *, ordered: bool = True) -> None:
        self.inner, self.ordered = inner, ordered

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        self.inner.infer_relative_search_space(study, trial)  # the inner one keeps state (groups)
        states = (TrialState.COMPLETE, TrialState.PRUNED)
        joint: dict[str, BaseDistribution] | None = None
        for done in study._get_trials(deepcopy=False, states=states, use_cache=True):
            if not done.distributions:
                continue  # the baseline: vLLM's defaults, no parameters
            if joint is None:
                joint = dict(done.distributions)
            else:
                joint = {k: d for k, d in joint.items() if done.distributions.get(k) == d}
        return {name: d for name, d in sorted((joint or {}).items()) if not d.single()}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        if self.ordered:  # the trial checks the values against the stored distributions
            search_space = {name: ordered_options(d) for name, d in search_space.items()}
        if isinstance(self.inner, _UntriedTPE):
            self.inner.tried = _tried(study, trial, search_space)
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.inner.after_trial(study, trial, state, values)


def _key(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(round(float(v), 9) for v in values)


def _tried(
    study: optuna.Study, trial: FrozenTrial, space: dict[str, BaseDistribution]
) -> set[tuple[float, ...]]:
    """The points of ``space`` (internal values, in its order) that finished or running trials
    hold already."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    out = set()
    for t in study._get_trials(deepcopy=False, states=states, use_cache=False):
        if t.number != trial.number and space.keys() <= t.params.keys():
            out.add(_key([d.to_internal_repr(t.params[name]) for name, d in space.items()]))
    return out


class _UntriedTPE(optuna.samplers.TPESampler):
    """TPE that proposes the best candidate no trial holds yet. Plain TPE, once it has found a
    good region, keeps proposing its best configuration again; a study answers such a repeat
    from its store (nothing runs), and after a few it runs a random untried configuration
    instead: a lost proposal and a random one. Here the candidates TPE draws that were tried
    already lose to any untried one (all tried: TPE's own choice)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tried: set[tuple[float, ...]] = set()

    def _compute_acquisition_func(
        self,
        samples: dict[str, np.ndarray],
        mpe_below: Any,
        mpe_above: Any,
    ) -> np.ndarray:
        acq = super()._compute_acquisition_func(samples, mpe_below, mpe_above)
        if not self.tried or not samples:
            return acq
        seen = np.array([_key(row) in self.tried for row in zip(*samples.values(), strict=True)])
        return acq if seen.all() else np.where(seen, -np.inf, acq)


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
