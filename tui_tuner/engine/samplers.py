"""Which Optuna sampler proposes the next configuration, and how a parameter is asked of it.

``study.sampler`` names the sampler (``tpe`` by default). Every parameter of the search space is
suggested through `suggest`, so all samplers see the same distributions, and a stored study
keeps them from one run to the next.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tui_tuner.core.config import StudyConfig
from tui_tuner.core.errors import UserError
from tui_tuner.core.space import Param, json_text

__all__ = ["encode_choice", "make_sampler", "suggest"]


def make_sampler(config: StudyConfig, *, trials_before: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler. ``trials_before``: trials the study holds already. A seeded sampler
    started again on a resumed study would replay its first proposals, which all have results
    by then; its seed is moved on by that count, so a study is reproducible run by run and a
    resume never replays. Not the grid's: its seed orders the grid points, which the study's
    trials name by number, and it never proposes a point twice anyway."""
    name, seed = config.study.sampler, config.study.seed
    if seed is not None and trials_before and name != "grid":
        seed += trials_before
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "grid":
        grid = {
            p.key: [encode_choice(c) for c in p.choices() or ()] for p in config.space.enabled()
        }
        return _AskTellGrid(grid, seed=seed)
    if name == "gp":
        if importlib.util.find_spec("scipy") is None or importlib.util.find_spec("torch") is None:
            raise UserError(
                "study.sampler: gp needs scipy and torch in the tuner's environment "
                "(pip install scipy torch); or use tpe"
            )
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


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
