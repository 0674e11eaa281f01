"""The search: numbers are searched as ordered values, and a study's trials keep real values.

A list of numeric options is stored as Optuna's categorical distribution (the trial's params hold
the option itself, and studies written before still load) but TPE searches it by position; a list
of words or a boolean stays categorical. The bench's JSON contract (bench/search_efficiency.py) is
checked on one landscape with two seeds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from tests.conftest import ROOT
from tests.fakes.engine import make_config
from tui_tuner.core.config import StudyConfig
from tui_tuner.core.space import Param, SearchSpace
from tui_tuner.engine.samplers import _UntriedTPE, make_sampler, ordered_options, suggest
from tui_tuner.engine.study import StudyStore

SEQS = (8, 16, 32, 64, 128, 256)


def config_with(tmp_path: Path, sampler: str, space: SearchSpace) -> StudyConfig:
    config = make_config(tmp_path, list(SEQS), n_trials=20)
    return replace(config, study=replace(config.study, sampler=sampler), space=space)  # type: ignore[arg-type]


SPACE = SearchSpace(
    (
        Param("max_num_seqs", "max_num_seqs", "options", options=SEQS),
        Param("kv_cache_dtype", "kv_cache_dtype", "options", options=("auto", "fp8")),
        Param("enforce_eager", "enforce_eager", "bool"),
    )
)


def test_numeric_options_are_ordered_by_position() -> None:
    ordered = ordered_options(CategoricalDistribution([64, 8, 16.0, 32]))
    assert isinstance(ordered, IntDistribution)
    assert (ordered.low, ordered.high) == (0, 3)
    assert ordered.to_internal_repr(8) == 0 and ordered.to_internal_repr(64) == 3
    assert ordered.to_external_repr(2) == 32 and ordered.to_external_repr(2.6) == 64
    assert ordered.to_internal_repr(30) == 2  # a value edited away: the nearest option


@pytest.mark.parametrize("choices", [("auto", "fp8"), (False, True), ('{"mode":3}', "{}"), (8,)])
def test_unordered_choices_stay_categorical(choices: tuple[Any, ...]) -> None:
    dist = CategoricalDistribution(choices)
    assert ordered_options(dist) is dist


class _Spy(optuna.samplers.RandomSampler):
    """Records the joint search spaces the wrapped sampler is asked to sample."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.spaces: list[dict[str, BaseDistribution]] = []

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        self.spaces.append(dict(search_space))
        return {}


def test_auto_searches_options_as_ordered_and_stores_real_values(tmp_path: Path) -> None:
    config = config_with(tmp_path, "auto", SPACE)
    store = StudyStore(config, f"sqlite:///{tmp_path / 'study.db'}")
    store.ensure_baseline()  # a trial without parameters first, as every study has
    for n in range(12):
        plan = store.ask(config.space)
        value = float(n) if plan.baseline else float(plan.params["max_num_seqs"])  # type: ignore[arg-type]
        store.study.tell(plan.number, value)
        store._live.pop(plan.number)
    trials = store.study.get_trials()
    for t in trials[1:]:
        assert t.params["max_num_seqs"] in SEQS  # the option itself, not its position
        assert isinstance(t.distributions["max_num_seqs"], CategoricalDistribution)
    # Past the random start, TPE models all three jointly (the baseline does not empty the
    # joint space) and sees the numbers in order, the words and booleans as categories.
    spy = _Spy()
    sampler = make_sampler(config)
    sampler.inner = spy  # type: ignore[attr-defined]
    trial = store.study.ask()
    frozen = store.study._storage.get_trial(trial._trial_id)
    space = sampler.infer_relative_search_space(store.study, frozen)
    assert set(space) == {"max_num_seqs", "kv_cache_dtype", "enforce_eager"}
    sampler.sample_relative(store.study, frozen, space)
    seen = spy.spaces[-1]
    assert isinstance(seen["max_num_seqs"], IntDistribution)
    assert isinstance(seen["kv_cache_dtype"], CategoricalDistribution)
    assert isinstance(seen["enforce_eager"], CategoricalDistribution)


def test_tpe_proposes_near_the_best_of_ordered_options(tmp_path: Path) -> None:
    """Throughput peaks at 64: after the start, TPE's proposals gather around it."""
    space = SearchSpace((Param("max_num_seqs", "max_num_seqs", "options", options=SEQS),))
    config = config_with(tmp_path, "auto", space)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(config))
    for _ in range(25):
        trial = study.ask()
        seqs = suggest(trial, space.params[0])
        study.tell(trial, 1000.0 - abs(SEQS.index(seqs) - 3) * 100)  # type: ignore[arg-type]
    late = [t.params["max_num_seqs"] for t in study.trials[-10:]]
    assert sum(v in (32, 64, 128) for v in late) >= 8


def test_auto_prefers_candidates_no_trial_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain TPE proposes its best configuration again and again (a study answers those from
    its store, nothing runs); auto's candidates that a trial holds already lose to any untried
    one, and when every candidate was tried, TPE's own choice stands."""
    monkeypatch.setattr(
        optuna.samplers.TPESampler,
        "_compute_acquisition_func",
        lambda self, samples, below, above: np.array([5.0, 1.0, 3.0]),
    )
    tpe = _UntriedTPE(seed=0)
    samples = {"max_num_seqs": np.array([3.0, 1.0, 2.0]), "gpu_memory_utilization": np.full(3, 0.9)}
    tpe.tried = {(3.0, 0.9)}
    assert int(np.argmax(tpe._compute_acquisition_func(samples, None, None))) == 2
    tpe.tried = {(3.0, 0.9), (1.0, 0.9), (2.0, 0.9)}
    assert int(np.argmax(tpe._compute_acquisition_func(samples, None, None))) == 0


@pytest.mark.parametrize("sampler", ["auto", "tpe", "nsga2", "random"])
def test_a_study_written_before_still_asks(tmp_path: Path, sampler: str) -> None:
    """A study whose trials were asked with Optuna's plain TPE (categorical options, a
    baseline without parameters) resumes under every sampler, with the same distributions."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    config = config_with(tmp_path, sampler, SPACE)
    old = optuna.create_study(
        study_name=config.study.name, storage=url, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0),
    )  # fmt: skip
    old.enqueue_trial({}, user_attrs={"baseline": True})
    for n in range(12):
        trial = old.ask()
        if n:
            for p in SPACE:
                suggest(trial, p)
        old.tell(trial, float(n))
    store = StudyStore(config, url)
    for _ in range(3):
        plan = store.ask(config.space)
        assert plan.params["max_num_seqs"] in SEQS
        store.study.tell(plan.number, 1.0)
        store._live.pop(plan.number)


def test_bench_search_efficiency_json_contract(tmp_path: Path) -> None:
    """bench/search_efficiency.py on a small landscape of its own (the simulator's landscapes
    build tables of thousands of configurations the first time), two seeds: its last line is
    the contract."""
    bench = ROOT / "bench"
    config = tmp_path / "small.yaml"
    config.write_text(
        "study: {name: small, seed: 0, n_trials: 12, baseline: true, noise_repeats: 1,\n"
        "  remeasure_top: 0}\n"
        "server: {command: [tui-tuner, sim-serve], model: m}\n"
        "workload: {streams: 64}\n"
        "objective: {kind: throughput}\n"
        "search_space:\n"
        "  max_num_seqs: {options: [2, 4, 8, 16, 32, 64]}\n"
        "  kv_cache_dtype: {options: [auto, fp8]}\n"
    )
    landscape = tmp_path / "small.py"
    landscape.write_text(
        "def small(params):\n"
        "    seqs = params.get('max_num_seqs', 64)\n"
        "    if seqs == 2 and params.get('kv_cache_dtype') == 'fp8':\n"
        "        return {'failed': 'ValueError: a refusal of the landscape'}\n"
        "    fp8 = params.get('kv_cache_dtype') == 'fp8'\n"
        "    tok_s = 100.0 * min(seqs, 32) * (1.1 if fp8 else 1.0)\n"
        "    return {'output_tok_s': tok_s, 'request_latency_p95_ms': 1000.0 + seqs,\n"
        "            'ttft_p95_ms': 100.0}\n"
    )
    cmd = [
        sys.executable, str(bench / "search_efficiency.py"), "--config", str(config),
        "--landscape", f"{landscape}:small",
        "--seeds", "2", "--trials", "12", "--strategies", "auto,random,grid", "--json",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=True, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result) == {"strategies"}
    assert set(result["strategies"]) == {"auto", "random", "grid"}
    for figures in result["strategies"].values():
        assert figures["seeds"] == 2
        assert 0 <= figures["reached"] <= 2
        median = figures["trials_to_98_median"]
        assert median is None or median >= 1
        for key in ("best_at_15", "best_at_30", "reported_within_2pct"):
            assert 0.0 <= figures[key] <= 1.0
