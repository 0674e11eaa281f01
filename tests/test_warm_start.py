"""``study.warm_start``: earlier studies' best configurations run first, mapped onto this space.

The mapping is pure (`core.warm_start`): kept, clamped to the nearest allowed value, or left out,
each change said. The queue order (baseline, its noise runs, then the warm start, once a study)
is checked on the fake adapters, and the whole path (an earlier study read from its directory,
the notices, a bad source) with the real CLI on the simulated server and the quick fake GuideLLM.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from tests.fakes.engine import Fakes, make_config, seqs_of
from tests.fakes.studies import records, sim_study, tuner
from tui_tuner.core.config_load import ConfigError, load_config
from tui_tuner.core.space import Param, SearchSpace
from tui_tuner.core.warm_start import TOP_PER_STUDY, map_configurations, map_onto
from tui_tuner.engine.orchestrator import Orchestrator
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.engine.trial_runner import TrialRunner

SPACE = SearchSpace(
    (
        Param("max_num_seqs", "max_num_seqs", "options", options=(16, 64, 256)),
        Param(
            "gpu_memory_utilization",
            "gpu_memory_utilization",
            "float",
            low=0.8,
            high=0.9,
            step=0.05,
        ),
        Param(
            "max_num_batched_tokens", "max_num_batched_tokens", "int", low=1024, high=8192, log=True
        ),
        Param("kv_cache_dtype", "kv_cache_dtype", "options", options=("auto", "fp8")),
        Param("enable_prefix_caching", "enable_prefix_caching", "bool"),
    )
)


def test_values_the_space_allows_are_kept() -> None:
    params = {"max_num_seqs": 64, "gpu_memory_utilization": 0.85, "kv_cache_dtype": "fp8",
              "enable_prefix_caching": False}  # fmt: skip
    assert map_onto(SPACE, params) == (params, [])


def test_numbers_outside_the_space_go_to_the_nearest_allowed_value_and_say_so() -> None:
    mapped, notes = map_onto(
        SPACE,
        {"max_num_seqs": 100, "gpu_memory_utilization": 0.95, "max_num_batched_tokens": 16384},
    )
    assert mapped == {
        "max_num_seqs": 64,  # 100 is nearer 64 than 256
        "gpu_memory_utilization": 0.9,  # clamped to the range
        "max_num_batched_tokens": 8192,
    }
    assert notes == [
        "max_num_seqs=100 clamped to 64 ([16, 64, 256])",
        "gpu_memory_utilization=0.95 clamped to 0.9 (0.8..0.9 step 0.05)",
        "max_num_batched_tokens=16384 clamped to 8192 (1024..8192 log)",
    ]


def test_values_the_space_cannot_take_are_left_out_and_said() -> None:
    mapped, notes = map_onto(SPACE, {"kv_cache_dtype": "fp8_e5m2", "block_size": 32})
    assert mapped == {}
    assert notes == [
        "kv_cache_dtype=fp8_e5m2 left out: not among [auto, fp8]",
        "block_size=32 left out: not searched here",
    ]


def test_each_study_gives_its_best_few_and_repeats_are_queued_once() -> None:
    first = [{"max_num_seqs": s} for s in (256, 200, 64, 16, 16)]
    second = [{"max_num_seqs": 250}, {"block_size": 16}]
    queued, notes = map_configurations(SPACE, [("a", first), ("b", second), ("c", [])])
    assert [(m.source, m.params["max_num_seqs"]) for m in queued] == [("a", 256), ("a", 64)]
    assert len(first[:TOP_PER_STUDY]) == 3  # 200 maps onto 256, which is queued already
    assert "b: a best configuration shares no setting with this space" in notes
    assert "c: no measured configuration to start from" in notes


def test_a_bad_entry_names_the_file_the_field_and_what_is_allowed(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "study: {name: x, n_trials: 2, warm_start: [studies/a, 3]}\n"
        "server: {model: /m}\nsearch_space: {max_num_seqs: {options: [8]}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(config)
    text = str(info.value)
    assert "bad.yaml:1: study.warm_start" in text
    assert "entry 2: 3 is not allowed; give a study directory" in text


async def test_the_warm_start_runs_after_the_baseline_and_its_noise_runs_once(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, [2, 4, 8, 16], n_trials=4)
    config = replace(config, study=replace(config.study, noise_repeats=2))
    fakes = Fakes()
    store = StudyStore(config, default_storage_url(tmp_path))
    assert store.queue_warm_start([({"max_num_seqs": 16}, "earlier"), ({"max_num_seqs": 8}, "e")])
    assert store.queue_warm_start([({"max_num_seqs": 2}, "again")]) == 0  # once a study
    runner = TrialRunner(config, tmp_path, fakes, fakes, fakes, lambda _: None)
    outcome = await Orchestrator(config, store, runner, lambda _: None, study_dir=tmp_path).run()
    order = [(r.baseline, r.params.get("max_num_seqs")) for r in outcome.records]
    assert order[:4] == [(True, None), (True, None), (False, 16), (False, 8)], order
    assert [seqs_of(a) for a in fakes.launched][2:4] == [16, 8]


@pytest.mark.slow
def test_a_study_starts_from_an_earlier_one_read_from_its_directory(
    tmp_path: Path, tiny_model: Path
) -> None:
    earlier = sim_study(tmp_path, tiny_model, name="earlier", study="n_trials: 3")
    first = subprocess.run(tuner("tune", earlier, "--study-dir", str(tmp_path / "a")),
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    best = next(r for r in records(tmp_path / "a").values() if not r.baseline)

    # The new study's space lists 12 and 32, not 8 or 16: both are nearer 12, queued once.
    later = sim_study(tmp_path, tiny_model, name="later", options=(12, 32),
                      study=f'n_trials: 3, warm_start: ["{tmp_path / "a"}"]')  # fmt: skip
    run = subprocess.run(tuner("tune", later, "--study-dir", str(tmp_path / "b")),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    out = " ".join((run.stdout + run.stderr).split())  # the console wraps long lines
    assert run.returncode == 0, out[-3000:]
    expected = 12
    assert "warm start: 1 configuration(s) of earlier studies run first, after the baseline" in out
    assert f"max_num_seqs={best.params['max_num_seqs']} clamped to {expected}" in out
    b = records(tmp_path / "b")
    assert b[0].baseline and b[1].params == {"max_num_seqs": expected}, b

    missing = sim_study(tmp_path, tiny_model, name="missing",
                        study=f'n_trials: 2, warm_start: ["{tmp_path / "nowhere"}"]')  # fmt: skip
    bad = subprocess.run(tuner("tune", missing, "--study-dir", str(tmp_path / "c")),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert bad.stderr.startswith(f"tui-tuner: error: study.warm_start: cannot read {tmp_path}")
    assert "Traceback" not in bad.stdout + bad.stderr
