"""Settings that cannot differ under the load are one configuration (core/equivalence.py): their
canonical forms, duplicates answered from the store, and the count that ends a study."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from tests.fakes.engine import Fakes, make_config, seqs_of
from tui_tuner.core.config import ServerSettings, StudyConfig, StudySettings, WorkloadSettings
from tui_tuner.core.equivalence import (
    GRAPH_CEILING,
    Setup,
    canonical,
    distinct_size,
    duplicate_note,
)
from tui_tuner.core.space import Param, SearchSpace, params_key
from tui_tuner.core.stop import StopKind
from tui_tuner.core.trial import TrialPlan
from tui_tuner.engine.orchestrator import Orchestrator
from tui_tuner.engine.stop_rules import Limits, Streaks, at_boundary
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.engine.trial_runner import TrialRunner

EAGER = {"enforce_eager": True}


def setup(
    streams: int | None = 32, fixed: Mapping[str, object] | None = None, **load: object
) -> Setup:
    return Setup(fixed or {}, WorkloadSettings(streams=streams, **load))  # type: ignore[arg-type]


def same(a: Mapping[str, object], b: Mapping[str, object], s: Setup) -> bool:
    return canonical(a, s).key == canonical(b, s).key


# -- canonical forms -------------------------------------------------------------------------


def test_without_cuda_graphs_every_cap_at_or_above_the_streams_is_one() -> None:
    s = setup(32, EAGER)
    assert same({"max_num_seqs": 32}, {"max_num_seqs": 1024}, s)
    assert same({"max_num_seqs": 64}, {"max_num_seqs": 64.0}, s)  # as Optuna may store it
    assert not same({"max_num_seqs": 16}, {"max_num_seqs": 32}, s)  # 16 binds: 16 of 32 run
    assert not same({"max_num_seqs": 16}, {"max_num_seqs": 31}, s)
    form = canonical({"max_num_seqs": 64, "enable_prefix_caching": True}, s)
    assert form.why == "max_num_seqs >= streams (32)"
    assert canonical({"max_num_seqs": 16}, s) == canonical({"max_num_seqs": 16}, s)
    assert canonical({"max_num_seqs": 16}, s).why is None
    assert canonical({"max_num_seqs": 16}, s).key == params_key({"max_num_seqs": 16})
    # The other values still tell configurations apart.
    assert not same(
        {"max_num_seqs": 64, "enable_prefix_caching": True},
        {"max_num_seqs": 128, "enable_prefix_caching": False},
        s,
    )


@pytest.mark.parametrize(
    "off",
    [
        {"optimization_level": 0},
        {"compilation_config": {"cudagraph_mode": "NONE"}},
        {"compilation_config": '{"cudagraph_mode":"none"}'},  # a searched JSON option's text
        {"cudagraph_capture_sizes": [1, 2, 4, 8]},
        {"max_cudagraph_capture_size": 64},
        {"compilation_config": {"max_cudagraph_capture_size": 128}},
    ],
)
def test_graph_sizes_that_do_not_follow_the_cap_join_every_cap_above_the_streams(
    off: dict[str, object],
) -> None:
    fixed = setup(8, off)
    assert same({"max_num_seqs": 8}, {"max_num_seqs": 256}, fixed)
    searched = setup(8)  # the same setting searched instead of fixed
    assert same({"max_num_seqs": 8, **off}, {"max_num_seqs": 256, **off}, searched)


def test_with_cuda_graphs_only_caps_with_the_same_largest_graph_are_one() -> None:
    s = setup(32)
    assert canonical({"max_num_seqs": 64}, s).why == (
        "max_num_seqs >= streams (32), the same CUDA graph sizes"
    )
    assert not same({"max_num_seqs": 64}, {"max_num_seqs": 128}, s)  # graphs to 128 or 256
    assert not same({"max_num_seqs": 256}, {"max_num_seqs": 512}, s)  # 512; 1024 on Blackwell
    assert same({"max_num_seqs": 512}, {"max_num_seqs": 1024}, s)  # both at the ceiling
    # The token budget caps the graphs too: 128 and 256 both capture up to 256 tokens.
    tokens = {"max_num_batched_tokens": 256}
    assert same({"max_num_seqs": 128, **tokens}, {"max_num_seqs": 256, **tokens}, s)
    assert same({"max_num_seqs": 128}, {"max_num_seqs": 256}, setup(32, tokens))


def vllm_capture_sizes(seqs: int, ceiling: int, tokens: int | None) -> list[int]:
    """vLLM's default capture list (`VllmConfig._set_cudagraph_sizes`, 0.32, no speculative
    decoding), written out on its own: the grid to the largest size, the token budget and
    ``max_num_seqs`` when they fit."""
    budget = 16384 if tokens is None else tokens  # a default budget is above every ceiling
    top = min(seqs * 2, ceiling)
    decode = [seqs] if seqs <= top else []
    top = min(budget, top)
    sizes = [s for s in (1, 2, 4) if s <= top]
    sizes += list(range(8, min(top + 1, 256), 8)) if top >= 8 else []
    sizes += list(range(256, top + 1, 16)) if top >= 256 else []
    sizes += [budget] if budget <= top else []
    sizes += [s for s in decode if s <= budget]
    return sorted(set(sizes))


def test_the_join_never_puts_together_caps_whose_graphs_differ() -> None:
    """The rule takes the GPU's ceiling as 1024; on any GPU, two caps it joins get the same
    CUDA graphs in vLLM."""
    joined = 0
    for tokens in (None, 96, 300, 700, 4096):
        s = setup(24, {} if tokens is None else {"max_num_batched_tokens": tokens})
        groups: dict[str, list[int]] = {}
        for m in range(24, 1300 if tokens is None else tokens + 1):
            groups.setdefault(canonical({"max_num_seqs": m}, s).key, []).append(m)
        for first, *rest in groups.values():
            joined += len(rest)
            for m, ceiling in itertools.product(rest, (512, GRAPH_CEILING)):
                want = vllm_capture_sizes(first, ceiling, tokens)
                assert vllm_capture_sizes(m, ceiling, tokens) == want, (first, m, ceiling, tokens)
    assert joined > 1000  # the rule does join: 1024 and 1299, 48 and 56 under 96 tokens...


def test_a_size_of_its_own_keeps_a_cap_apart() -> None:
    """vLLM captures max_num_seqs itself when it fits: 600 is a graph of its own on Blackwell
    (1024), so 600 is not 1024 there; 608 lies on the grid and is."""
    s = setup(32)
    assert vllm_capture_sizes(600, 1024, None) != vllm_capture_sizes(1024, 1024, None)
    assert not same({"max_num_seqs": 600}, {"max_num_seqs": 1024}, s)
    assert same({"max_num_seqs": 608}, {"max_num_seqs": 1024}, s)


@pytest.mark.parametrize(
    "extra",
    [
        ["--speculative-config", '{"method": "ngram", "num_speculative_tokens": 3}'],
        ["-sc.num_speculative_tokens=3"],
        ["--max-cudagraph-capture-size=64"],
        ["-O0"],
        ["-cc.cudagraph_mode=NONE"],
        ["--no-enforce-eager"],
        ["--max-num-batched-tokens", "64"],
    ],
)
def test_extra_arguments_that_touch_the_rule_turn_it_off(extra: list[str]) -> None:
    s = replace(setup(32, EAGER), extra_args=tuple(extra))
    assert not same({"max_num_seqs": 32}, {"max_num_seqs": 1024}, s)


def test_extra_arguments_that_do_not_touch_it_leave_it_on() -> None:
    args = ("--sim-profile-file", "/tmp/inspect-spec/p.yaml", "--sim-time-scale", "4")
    s = replace(setup(32, EAGER), extra_args=args)
    assert same({"max_num_seqs": 32}, {"max_num_seqs": 1024}, s)


def test_no_rule_under_a_rate_a_goodput_search_or_for_the_baseline() -> None:
    pair = ({"max_num_seqs": 64}, {"max_num_seqs": 128})
    assert not same(*pair, setup(None, EAGER, profile="constant", rate=4.0))
    assert not same(*pair, setup(None, EAGER, profile="poisson", rate=4.0))
    assert not same(*pair, replace(setup(32, EAGER), goodput=True))
    assert canonical({}, setup(32, EAGER)).key == params_key({})


def test_searched_streams_decide_per_trial() -> None:
    s = setup(4, EAGER)
    low = {"workload.streams": 8}
    assert same({"max_num_seqs": 8, **low}, {"max_num_seqs": 64, **low}, s)
    high = {"workload.streams": 128}
    assert not same({"max_num_seqs": 8, **high}, {"max_num_seqs": 64, **high}, s)
    assert not same({"max_num_seqs": 64, **low}, {"max_num_seqs": 64, **high}, s)


def test_a_configuration_vllm_refuses_is_judged_by_its_own_values() -> None:
    """max_num_seqs 64 with a budget of 48 tokens never starts; 40 does. Joined, the refused one
    would be answered with the other's figures."""
    s = setup(32, EAGER)
    refused = {"max_num_seqs": 64, "max_num_batched_tokens": 48}
    started = {"max_num_seqs": 40, "max_num_batched_tokens": 48}
    assert canonical(refused, s).why is None
    assert not same(refused, started, s)


def test_the_note_says_which_trial_and_why() -> None:
    text = duplicate_note(4, "max_num_seqs >= streams (32)")
    assert text.startswith("same as trial 4 under this load: max_num_seqs >= streams (32)")


# -- the space's count ----------------------------------------------------------------------


def space(*params: Param) -> SearchSpace:
    return SearchSpace(params)


SEQS = Param("max_num_seqs", "max_num_seqs", "options", options=(8, 16, 32, 64, 128))


def test_the_space_counts_equivalent_configurations_once() -> None:
    assert distinct_size(space(SEQS), setup(32, EAGER)) == 3  # 8, 16, and 32 or more
    assert distinct_size(space(SEQS), setup(32)) == 5  # graphs to 64, 128, 256 differ
    assert distinct_size(space(SEQS), setup(None, EAGER, profile="constant", rate=2.0)) == 5
    prefix = Param("enable_prefix_caching", "enable_prefix_caching", "bool")
    assert distinct_size(space(SEQS, prefix), setup(32, EAGER)) == 6
    streams = Param("workload.streams", "workload.streams", "options", target="workload",
                    options=(16, 64))  # fmt: skip
    # streams 16: 8, and 16 or more; streams 64: 8, 16, 32, and 64 or more
    assert distinct_size(space(SEQS, streams), setup(32, EAGER)) == 2 + 4
    unbounded = Param("gpu_memory_utilization", "gpu_memory_utilization", "float", low=0.8,
                      high=0.9)  # fmt: skip
    assert distinct_size(space(SEQS, unbounded), setup(32, EAGER)) is None
    assert distinct_size(space(replace(SEQS, enabled=False), prefix), setup(32, EAGER)) == 2


# -- through the store and the loop -----------------------------------------------------------


def eager_config(tmp_path: Path, options: list[int], *, streams: int = 32) -> StudyConfig:
    config = make_config(tmp_path, options, n_trials=20)
    return replace(
        config,
        server=ServerSettings(model="m", command=("fake-serve",), flags=EAGER),
        workload=WorkloadSettings(duration_s=1, warmup_s=0, streams=streams),
    )


async def run(tmp_path: Path, config: StudyConfig, fakes: Fakes) -> tuple[StudyStore, object]:
    store = StudyStore(config, default_storage_url(tmp_path))
    runner = TrialRunner(config, tmp_path, fakes, fakes, fakes, lambda e: None)
    orch = Orchestrator(config, store, runner, lambda e: None, study_dir=tmp_path)
    return store, await orch.run()


async def test_equivalent_proposals_are_answered_from_the_store(tmp_path: Path) -> None:
    config = eager_config(tmp_path, [8, 16, 32, 64, 128])
    fakes = Fakes()
    store, outcome = await run(tmp_path, config, fakes)
    launched = sorted(s for s in (seqs_of(a) for a in fakes.launched) if s is not None)
    assert launched[:2] == [8, 16] and len(launched) == 3 and launched[2] >= 32
    records = outcome.records  # type: ignore[attr-defined]
    by_seqs = {r.params["max_num_seqs"]: r for r in records if not r.baseline and r.params}
    measured = by_seqs[launched[2]]
    for seqs in {32, 64, 128} - {launched[2]}:  # proposed by the grid, never launched
        r = by_seqs[seqs]
        assert r.duplicate_of == measured.number and r.values == measured.values
        assert r.params == {"max_num_seqs": seqs}  # stored as the sampler proposed it
        assert r.note.startswith(f"same as trial {measured.number} under this load: max_num_seqs")
        plan = TrialPlan(r.number, dict(r.params), False)
        assert store.why_same(plan, measured) == "max_num_seqs >= streams (32)"
    # Every distinct configuration has a result then: the baseline, 8, 16 and one of 32 or
    # more. The study ends when the sampler has nothing new to propose (the grid is done).
    assert outcome.stop.kind is StopKind.SPACE_DONE  # type: ignore[attr-defined]
    assert store.distinct_configs() == 4
    size = distinct_size(config.space, Setup.of(config))
    assert size == 3
    stop = at_boundary(streaks=Streaks(), limits=Limits.of(config.study), free_bytes=None,
                       where=tmp_path, space_size=size, tried=store.distinct_configs(),
                       counted=store.counted(), elapsed_s=0.0)  # fmt: skip
    assert stop is not None and stop.kind is StopKind.SPACE_DONE


async def test_an_exact_repeat_wins_and_any_measured_equivalent_answers(tmp_path: Path) -> None:
    config = eager_config(tmp_path, [32, 64])
    config = replace(config, study=replace(config.study, baseline=False, n_trials=2))
    store, _ = await run(tmp_path, config, Fakes())
    first = store.records()[0]
    other = 64 if first.params["max_num_seqs"] == 32 else 32
    exact = store.find_same(TrialPlan(99, {"max_num_seqs": first.params["max_num_seqs"]}, False))
    assert exact is not None and exact.number == first.number
    plan = TrialPlan(99, {"max_num_seqs": 4096}, False)
    found = store.find_same(plan)
    assert found is not None and found.duplicate_of is None and found.measurement is not None
    assert store.why_same(plan, found) == "max_num_seqs >= streams (32)"
    assert store.why_same(TrialPlan(99, dict(found.params), False), found) is None
    assert store.find_same(TrialPlan(99, {"max_num_seqs": 16}, False)) is None  # 16 binds
    assert store.find_same(TrialPlan(99, {"max_num_seqs": other}, False)) is not None


async def test_a_failure_answers_only_its_own_values(tmp_path: Path) -> None:
    """max_num_seqs 3 runs out of memory at start-up (the fakes'); 4 is the same under two
    streams for the scheduler, but a smaller cap may start where a larger one does not: it is
    launched, not told failed."""
    config = eager_config(tmp_path, [3, 4], streams=2)
    config = replace(config, study=StudySettings(name="t", n_trials=3, seed=1, sampler="grid",
                                                 baseline=False, remeasure_top=0))  # fmt: skip
    StudyStore(config, default_storage_url(tmp_path)).study.enqueue_trial({"max_num_seqs": 3})
    fakes = Fakes()
    store, outcome = await run(tmp_path, config, fakes)
    assert sorted(s for s in (seqs_of(a) for a in fakes.launched) if s is not None) == [3, 4]
    records = outcome.records  # type: ignore[attr-defined]
    by_seqs = {r.params.get("max_num_seqs"): r for r in records if r.duplicate_of is None}
    assert by_seqs[3].failure_class == "oom_startup" and by_seqs[4].state == "complete"
    assert store.find_same(TrialPlan(99, {"max_num_seqs": 3}, False)) is not None  # exact
    # Once 4 is measured, it answers every equivalent; the failure of 3 never does.
    found = store.find_same(TrialPlan(99, {"max_num_seqs": 9}, False))
    assert found is not None and found.params == {"max_num_seqs": 4}


async def test_an_equivalent_running_on_another_worker_is_not_started_twice(
    tmp_path: Path,
) -> None:
    config = eager_config(tmp_path, [32, 64])
    config = replace(config, study=replace(config.study, baseline=False))
    store = StudyStore(config, default_storage_url(tmp_path))
    running = store.ask(config.space)
    assert running.params["max_num_seqs"] in (32, 64)
    assert store.find_running_same(TrialPlan(99, {"max_num_seqs": 512}, False)) == running.number
    assert store.find_running_same(TrialPlan(99, {"max_num_seqs": 8}, False)) is None
    assert store.distinct_configs() == 1
