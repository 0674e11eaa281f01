"""`tui-tuner import` (issue 12): the predecessor's vllm_config.yaml and `vllm bench sweep`
inputs become a native configuration that loads, with a note for what has no equivalent."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tui_tuner.cli import main
from tui_tuner.core.config import StudyConfig
from tui_tuner.core.config_load import load_config
from tui_tuner.core.space import SearchSpace

SAMPLES = sorted((ROOT / "sample_configs").glob("*.yaml"))
SWEEP = ROOT / "sample_configs" / "vllm-bench-sweep"


def _same(config: StudyConfig) -> StudyConfig:
    """A configuration as compared: no source or notes, parameters named by their key (the
    predecessor's `compilation_config` is written as the `optimization_level` it was read as)."""
    space = SearchSpace(tuple(replace(p, name=p.key) for p in config.space))
    return replace(config, source=None, notes=(), space=space)


def _overrides(path: Path) -> tuple[list[str], dict[str, object]]:
    if "predecessor" not in path.name:
        return [], {}
    return ["--model", "Qwen/Qwen3-32B-FP8", "--study-name", "old"], {
        "server.model": "Qwen/Qwen3-32B-FP8",
        "study.name": "old",
    }


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_every_sample_round_trips(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, overrides = _overrides(sample)
    out = tmp_path / "imported.yaml"
    assert main(["import", str(sample), *args, "-o", str(out)]) == 0
    original = load_config(sample, overrides)
    imported = load_config(out)
    assert _same(imported) == _same(original)
    assert imported.notes == ()  # the written file needs no mapping of its own
    text, printed = out.read_text(), capsys.readouterr().out
    for note in original.notes:  # what was mapped is said, in the file and on the terminal
        where = note.split(":")[0]
        assert where in text and where in printed


def test_predecessor_notes_are_written_and_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = ROOT / "sample_configs" / "predecessor-format.yaml"
    out = tmp_path / "old.yaml"
    assert main(["import", str(sample), *_overrides(sample)[0], "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    text = out.read_text()
    for what in ("settings.trial_interval", "botorch", "guidellm_concurrency", "preemption-mode"):
        assert what in text and what in printed
    assert "optimization_level: {options: [0, 3]}" in text
    assert "workload.streams: {type: int, low: 10, high: 240, step: 10}" in text
    config = load_config(out)
    assert config.study.sampler == "gp" and config.objective.kind == "pareto"


def test_the_sweep_samples_become_a_grid_over_their_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep.yaml"
    code = main([
        "import", "--serve-cmd",
        "VLLM_CPU_KVCACHE_SPACE=1 vllm serve meta-llama/Llama-2-7b-chat-hf --max-model-len 4096 "
        "--port 9000 --enforce-eager",
        "--serve-params", str(SWEEP / "serve-params.json"),
        "--bench-params", str(SWEEP / "bench-params.json"),
        "--bench-cmd", "vllm bench serve --model m --dataset-name random --max-concurrency 16 "
        "--num-prompts 200",
        "-o", str(out),
    ])  # fmt: skip
    assert code == 0
    config = load_config(out)
    records = json.loads((SWEEP / "serve-params.json").read_text())
    for key in ("max_num_seqs", "max_num_batched_tokens"):
        param = config.space.get(key)
        assert param is not None and param.kind == "options"
        assert sorted(param.options) == sorted({r[key] for r in records})  # type: ignore[type-var]
    assert config.study.sampler == "grid" and config.study.n_trials == 4 * 3 + 1
    assert config.server.model == "meta-llama/Llama-2-7b-chat-hf"
    assert config.server.command == ("vllm", "serve")
    assert dict(config.server.flags) == {"max_model_len": 4096, "enforce_eager": True}
    assert dict(config.server.env) == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    assert (config.workload.prompt_tokens, config.workload.output_tokens) == (128, 32)
    assert (config.workload.profile, config.workload.streams) == ("concurrent", 16)
    printed = capsys.readouterr().out
    for note in ("--port: dropped", "num_prompts", "random_input_len", "6 listed combinations"):
        assert note in printed and note in out.read_text()


def test_serve_cmd_spellings(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    out = tmp_path / "s.yaml"
    cmd = (
        f"python -m vllm.entrypoints.openai.api_server --model {model} --no-enable-prefix-caching "
        "--max-num-batched-tokens=8k -O3 --cudagraph-capture-sizes 1 2 4 --api-key abc "
        "--cuda-graph-sizes 8 --kv-cache-dtype fp8 --some-new-flag x"
    )
    assert main(["import", "--serve-cmd", cmd, "-o", str(out)]) == 0
    config = load_config(out)
    assert config.server.command == ("python", "-m", "vllm.entrypoints.openai.api_server")
    assert config.server.model == str(model)
    flags = dict(config.server.flags)
    assert flags["enable_prefix_caching"] is False
    assert flags["optimization_level"] == 3
    assert flags["cudagraph_capture_sizes"] == [1, 2, 4]
    assert flags["kv_cache_dtype"] == "fp8"
    assert "api_key" not in flags and config.server.extra_args == ("--some-new-flag", "x")
    text = out.read_text()
    assert "--cuda-graph-sizes was removed" in text and "--api-key: dropped" in text


def test_named_records_bools_and_rates(tmp_path: Path) -> None:
    serve = tmp_path / "serve.json"
    serve.write_text(json.dumps({
        "eager": {"enforce_eager": True, "compilation_config": {"mode": 0}},
        "graphs": {"enforce_eager": False, "compilation_config": {"mode": 3}},
    }))  # fmt: skip
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps([{"request_rate": r} for r in (1, 4, "inf")]))
    out = tmp_path / "o.yaml"
    args = ["import", "--model", "org/m", "--serve-params", str(serve)]
    assert main([*args, "--bench-params", str(bench), "-o", str(out)]) == 0
    config = load_config(out)
    assert config.space.get("enforce_eager").kind == "bool"  # type: ignore[union-attr]
    assert config.space.get("workload.rate").options == (1.0, 4.0)  # type: ignore[union-attr]
    assert config.workload.profile == "poisson"
    assert dict(config.server.flags) == {"compilation_config": {"mode": 0}}
    text = out.read_text()
    assert "cannot be searched" in text and "inf (all requests at once)" in text
    assert "eager, graphs" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--serve-params", "SERVE"], "no model"),
        (["CONFIG", "--serve-cmd", "vllm serve m"], "not both"),
        ([], "nothing to import"),
        (["--model", "m", "--serve-params", "BAD"], "cannot read it as JSON"),
    ],
)
def test_refusals_are_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    fill = {"SERVE": str(SWEEP / "serve-params.json"), "CONFIG": str(SAMPLES[0]), "BAD": str(bad)}
    assert main(["import", *(fill.get(a, a) for a in args)]) == 2
    assert message in capsys.readouterr().err


def test_an_existing_output_is_kept_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keep.yaml"
    out.write_text("mine\n")
    sample = str(ROOT / "sample_configs" / "demo-sim.yaml")
    assert main(["import", sample, "-o", str(out)]) == 2
    assert out.read_text() == "mine\n" and "--force" in capsys.readouterr().err
    assert main(["import", sample, "-o", str(out), "--force"]) == 0
    assert load_config(out).study.name == load_config(Path(sample)).study.name


def test_without_output_the_file_goes_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    sample = ROOT / "sample_configs" / "predecessor-format.yaml"
    assert main(["import", str(sample), *_overrides(sample)[0]]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("# Written by `tui-tuner import`")
    assert "note: settings.trial_interval" in captured.err


def test_what_a_file_leaves_out_is_left_out_and_a_time_budget_alone_is_kept(
    tmp_path: Path,
) -> None:
    """Defaults are the loader's (what a key left out means), not a dataclass's: the written file
    holds only what the source set, and loads back to the same configuration."""
    source = tmp_path / "budget.yaml"
    source.write_text("study: {name: b, time_budget_s: 600}\nserver: {model: org/m}\n")
    out = tmp_path / "out.yaml"
    assert main(["import", str(source), "-o", str(out)]) == 0
    body = out.read_text().split("\n\n", 1)[1]
    expected = "study:\n  name: b\n  time_budget_s: 600.0\nserver:\n  model: org/m\n"
    assert body == expected
    assert _same(load_config(out)) == _same(load_config(source))
