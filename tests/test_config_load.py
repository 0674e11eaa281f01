"""Study configuration files: the samples load, every mistake is reported with file, line and key,
the predecessor tuner's format maps as documented, and no input raises anything but ConfigError."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tui_tuner.core.config import StudyConfig, StudySettings
from tui_tuner.core.config_load import (
    ConfigError,
    load_config,
    param_from_mapping,
    parse_config,
    parse_space,
)
from tui_tuner.core.vllm_flags import removed

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted(
    p for p in (ROOT / "sample_configs").glob("*.yaml") if not p.name.startswith("sim-profile")
)
PREDECESSOR_OVERRIDES = {"server.model": "/models/qwen", "study.name": "old-study"}
HEAD = "study: {name: t, n_trials: 4}\nserver: {model: /m}\n"


def parse(text: str, **kwargs: Any) -> StudyConfig:
    return parse_config(textwrap.dedent(text), Path("config.yaml"), **kwargs)


def error_of(text: str | bytes, **kwargs: Any) -> str:
    source = text if isinstance(text, bytes) else textwrap.dedent(text)
    with pytest.raises(ConfigError) as info:
        parse_config(source, Path("config.yaml"), **kwargs)
    return str(info.value)


# -- the samples -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_loads(path: Path) -> None:
    overrides = PREDECESSOR_OVERRIDES if path.name.startswith("predecessor") else None
    config = load_config(path, overrides)
    assert config.source == path
    assert config.space.enabled(), "a sample should search something"


def test_samples_exist() -> None:
    names = {p.name for p in SAMPLES}
    assert {
        "demo-sim.yaml",
        "max-throughput.yaml",
        "min-latency.yaml",
        "pareto-sla.yaml",
        "predecessor-format.yaml",
    } <= names


def test_demo_sample_is_the_simulated_demo() -> None:
    config = load_config(ROOT / "sample_configs" / "demo-sim.yaml")
    assert config.server.simulated
    assert config.server.command == ("tui-tuner", "sim-serve")
    assert "--sim-profile" in config.server.extra_args
    assert config.study.n_trials == 8
    # The noise is measured and the best measured again: the demo's answer has its confidence.
    assert (config.study.noise_repeats, config.study.remeasure_top) == (3, 2)
    assert (config.workload.prompt_tokens, config.workload.output_tokens) == (3072, 128)
    assert (config.workload.streams, config.workload.duration_s) == (16, 8.0)
    assert [p.key for p in config.space] == [
        "max_num_seqs",
        "max_num_batched_tokens",
        "enable_chunked_prefill",
        "kv_cache_dtype",
        "gpu_memory_utilization",
    ]
    gpu = config.space.get("gpu_memory_utilization")
    assert gpu is not None and gpu.choices() == (0.82, 0.88, 0.94)


def test_the_noise_is_measured_by_default_and_can_be_turned_off() -> None:
    """Issue 10: the baseline runs 3 times and the 3 best are measured again unless the file
    says otherwise (the loader's defaults and the dataclass's agree); 1 and 0 turn both off,
    and less is refused naming the field."""
    config = parse(HEAD)
    assert (config.study.noise_repeats, config.study.remeasure_top) == (3, 3)
    settings = StudySettings(name="t")
    assert (settings.noise_repeats, settings.remeasure_top) == (3, 3)
    off = parse("study: {name: t, n_trials: 4, noise_repeats: 1, remeasure_top: 0}\n"
                "server: {model: /m}\n")  # fmt: skip
    assert (off.study.noise_repeats, off.study.remeasure_top) == (1, 0)
    said = error_of("study: {name: t, n_trials: 4, noise_repeats: 0, remeasure_top: -1}\n"
                    "server: {model: /m}\n")  # fmt: skip
    assert "study.noise_repeats: 0 is not allowed; noise_repeats must be an integer >= 1" in said
    assert "study.remeasure_top: -1 is not allowed; remeasure_top must be an integer >= 0" in said


def test_pareto_sample_has_sla_and_baseline_constraint() -> None:
    config = load_config(ROOT / "sample_configs" / "pareto-sla.yaml")
    assert config.objective.kind == "pareto"
    assert config.objective.latency_vs_baseline
    assert ("p95_ttft_ms", "ttft_p95_ms", 500.0) in [
        (t.key, t.metric, t.limit) for t in config.objective.sla
    ]


# -- the native format -----------------------------------------------------------------------


def test_native_example_reads_into_typed_settings() -> None:
    config = parse(
        """\
        study: {name: demo, sampler: tpe, seed: 0, n_trials: 12, baseline: true}
        server:
          model: /models/llama
          flags: {max-model-len: 4096, --enforce-eager: true, kv-cache-memory-bytes: 8G}
          env: {VLLM_CPU_KVCACHE_SPACE: 1}
        workload: {prompt_tokens: 512, output_tokens: 128, profile: concurrent, streams: 32}
        objective: {kind: throughput, sla: {p95_ttft_ms: 500, itl_p95_ms: 40}}
        search_space:
          --max-num-seqs: {type: int, low: 16, high: 512, log: true}
          max-num-batched-tokens: {options: [2048, 4096, 8192]}
          gpu_memory_utilization: {type: float, low: 0.85, high: 0.95, step: 0.01}
          enable_prefix_caching: {}
          workload.streams: {type: int, low: 8, high: 64, step: 8, enabled: false}
        """
    )
    assert config.server.command == ("vllm", "serve")
    assert config.server.flags == {
        "max_model_len": 4096,
        "enforce_eager": True,
        "kv_cache_memory_bytes": 8 * 2**30,
    }
    assert config.server.env == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    seqs = config.space.params[0]
    assert (seqs.key, seqs.name, seqs.kind, seqs.log) == (
        "max_num_seqs",
        "--max-num-seqs",
        "int",
        True,
    )
    assert config.space.params[1].key == "max_num_batched_tokens"
    assert config.space.get("enable_prefix_caching") is not None
    assert config.space.get("enable_prefix_caching").kind == "bool"  # type: ignore[union-attr]
    streams = config.space.get("workload.streams")
    assert streams is not None and streams.target == "workload" and not streams.enabled
    assert [t.metric for t in config.objective.sla] == ["ttft_p95_ms", "itl_p95_ms"]
    assert config.notes == ()


def test_rate_profiles_take_a_rate_and_no_streams() -> None:
    config = parse(HEAD + "workload: {profile: poisson, rate: 2.5}\n")
    assert (config.workload.profile, config.workload.rate, config.workload.streams) == (
        "poisson",
        2.5,
        None,
    )
    searched = parse(
        HEAD + "workload: {profile: constant}\nsearch_space:\n"
        "  workload.rate: {type: float, low: 1, high: 8}\n"
    )
    assert searched.space.get("workload.rate") is not None


def test_benchmark_grace_defaults_to_five_minutes_and_can_be_shortened() -> None:
    assert parse(HEAD).workload.benchmark_grace_s == 300.0
    assert parse(HEAD + "workload: {benchmark_grace_s: 2.5}\n").workload.benchmark_grace_s == 2.5


def test_dataset_is_resolved_from_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prompts.jsonl").write_text('{"prompt": "hi"}\n')
    path = tmp_path / "study.yaml"
    path.write_text(HEAD + "workload: {dataset: data/prompts.jsonl}\n")
    config = load_config(path)
    assert config.workload.dataset == str((tmp_path / "data" / "prompts.jsonl").resolve())


def test_overrides_replace_file_values_and_fill_missing_sections() -> None:
    config = parse(HEAD, overrides={"server.model": "/other", "study.n_trials": 2})
    assert (config.server.model, config.study.n_trials) == ("/other", 2)
    message = error_of(HEAD, overrides={"study.name": "a b"})
    assert "config.yaml: study.name: 'a b' is not allowed" in message  # no line: not in the file


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(tmp_path / "nope.yaml")


def test_every_problem_is_listed_under_one_heading() -> None:
    message = error_of(
        """\
        study: {name: t, n_trials: 0}
        server: {model: /m}
        workload: {streams: 0, repeats: 10}
        """
    )
    lines = message.splitlines()
    assert lines[0] == "invalid configuration in config.yaml (3 problems):"
    assert lines[1].startswith("config.yaml:1: study.n_trials: 0 is not allowed")
    assert lines[2].startswith("config.yaml:3: workload.streams: 0 is not allowed")
    assert lines[3].startswith("config.yaml:3: workload.repeats: 10 is not allowed")


def test_long_bad_values_are_cut_short() -> None:
    message = error_of(HEAD + "workload: {prompt_tokens: " + "x" * 200 + "}\n")
    line = next(line for line in message.splitlines() if "prompt_tokens" in line)
    assert "..." in line and len(line) < 160


# -- bad configurations ------------------------------------------------------------------------

SPACE = HEAD + "search_space:\n"
BAD_CASES: list[tuple[str, str | bytes, list[str]]] = [
    ("invalid yaml", "study: {name: t\nserver: [\n", ["config.yaml:2", "invalid YAML"]),
    ("tab indentation", "study:\n\tname: t\n", ["config.yaml:2", "invalid YAML"]),
    ("two documents", "a: 1\n---\nb: 2\n", ["config.yaml:2", "single document"]),
    ("bad date", "study: {name: 2001-02-30}\n", ["invalid YAML", "day is out of range"]),
    ("not utf-8", b"study:\n  name: \xff\n", ["config.yaml:2", "byte 0xff at offset 15"]),
    ("empty file", "", ["the file is empty"]),
    ("only comments", "# nothing here\n", ["the file is empty"]),
    ("top level list", "- study\n- server\n", ["expected a mapping of sections"]),
    ("top level text", "hello\n", ["expected a mapping of sections", "'hello'"]),
    (
        "section not mapping",
        "study: [1]\nserver: {model: /m}\n",
        ["config.yaml:1: study: expected a mapping"],
    ),
    (
        "unknown section",
        HEAD + "stduy: {}\n",
        ["config.yaml:3: stduy: unknown section", "did you mean 'study'"],
    ),
    (
        "misspelt section",
        "study: {name: t, n_trials: 4}\nserverr: {model: /m, name: x}\n",
        ["config.yaml:2: serverr: unknown section 'serverr'; did you mean 'server'?"],
    ),
    (
        "unknown key",
        HEAD + "workload: {promt_tokens: 5}\n",
        ["workload.promt_tokens", "did you mean 'prompt_tokens'"],
    ),
    (
        "non-string key",
        "study: {1: 2, name: t, n_trials: 1}\nserver: {model: /m}\n",
        ["study.1: unknown key '1'"],
    ),
    (
        "missing name",
        "study: {n_trials: 3}\nserver: {model: /m}\n",
        ["config.yaml:1: study.name: required"],
    ),
    (
        "missing model",
        "study: {name: t, n_trials: 3}\nserver: {}\n",
        ["config.yaml:2: server.model: required"],
    ),
    (
        "missing everything",
        "workload: {}\n",
        ["study.name: required", "server.model: required", "n_trials or time_budget_s"],
    ),
    (
        "unsafe study name",
        "study: {name: ../x, n_trials: 1}\nserver: {model: /m}\n",
        ["study.name: '../x' is not allowed", "names a directory"],
    ),
    (
        "hidden study name",
        "study: {name: .x, n_trials: 1}\nserver: {model: /m}\n",
        ["not starting with '.'"],
    ),
    (
        "zero trials",
        "study: {name: t, n_trials: 0}\nserver: {model: /m}\n",
        ["study.n_trials: 0 is not allowed", "integer >= 1"],
    ),
    (
        "no stopping rule",
        "study: {name: t}\nserver: {model: /m}\n",
        ["config.yaml:1: study: give n_trials or time_budget_s"],
    ),
    (
        "zero budget",
        "study: {name: t, time_budget_s: 0}\nserver: {model: /m}\n",
        ["time_budget_s: 0 is not allowed", "a positive number"],
    ),
    (
        "text trials",
        "study: {name: t, n_trials: '12'}\nserver: {model: /m}\n",
        ["expected an integer, got the text '12'"],
    ),
    (
        "bool trials",
        "study: {name: t, n_trials: true}\nserver: {model: /m}\n",
        ["true/false is not a number"],
    ),
    (
        "yaml 1.1 exponent",
        "study: {name: t, time_budget_s: 1e3}\nserver: {model: /m}\n",
        ["write a plain number"],
    ),
    (
        "bad sampler",
        "study: {name: t, n_trials: 1, sampler: tpee}\nserver: {model: /m}\n",
        ["sampler must be one of: auto, tpe, random, nsga2, grid, gp, cmaes", "did you mean 'tpe'"],
    ),
    (
        "bad seed",
        "study: {name: t, n_trials: 1, seed: x}\nserver: {model: /m}\n",
        ["study.seed: expected an integer"],
    ),
    (
        "command as text",
        HEAD + "server: {model: /m, command: vllm serve}\n",
        ['such as ["vllm", "serve"]', "never goes through a shell"],
    ),
    (
        "empty command",
        "study: {name: t, n_trials: 4}\nserver: {model: /m, command: []}\n",
        ["command must not be empty"],
    ),
    (
        "bool env",
        "study: {name: t, n_trials: 4}\nserver: {model: /m, env: {A: true}}\n",
        ["server.env.A: expected a string, got True", "quote it"],
    ),
    (
        "host number",
        "study: {name: t, n_trials: 4}\nserver: {model: /m, host: 1}\n",
        ["server.host: expected a string"],
    ),
    (
        "negative timeout",
        "study: {name: t, n_trials: 4}\nserver: {model: /m, startup_timeout_s: -1}\n",
        ["startup_timeout_s: -1 is not allowed"],
    ),
    (
        "infinite timeout",
        "study: {name: t, n_trials: 4}\nserver: {model: /m, stop_grace_s: .inf}\n",
        ["stop_grace_s: inf is not allowed", "finite"],
    ),
    (
        "unknown fixed flag",
        "study: {name: t, n_trials: 4}\nserver: {model: /m, flags: {enforce_eagr: true}}\n",
        [
            "server.flags.enforce_eagr",
            "not a `vllm serve` flag of vLLM 0.33",
            "did you mean 'enforce_eager'",
        ],
    ),
    (
        "removed fixed flag",
        "study: {name: t, n_trials: 4}\nserver: {model: /m, flags: {swap_space: 4}}\n",
        ["--swap-space was removed in vLLM 0.11; preemption always recomputes now"],
    ),
    (
        "removed extra arg",
        "study: {name: t, n_trials: 4}\n"
        "server: {model: /m, extra_args: [--num-scheduler-steps, '8']}\n",
        ["server.extra_args[0]", "--num-scheduler-steps was removed"],
    ),
    (
        "port flag",
        "study: {name: t, n_trials: 4}\nserver: {model: /m, flags: {port: 8000}}\n",
        ["--port is set by the tuner"],
    ),
    (
        "bad fixed value",
        "study: {name: t, n_trials: 4}\nserver: {model: /m, flags: {dtype: fp64}}\n",
        ["server.flags.dtype: 'fp64' is not allowed", "--dtype takes one of: auto, half"],
    ),
    (
        "fixed flag bound",
        "study: {name: t, n_trials: 4}\nserver: {model: /m, flags: {max_num_seqs: 0}}\n",
        ["--max-num-seqs must be an integer >= 1"],
    ),
    (
        "zero streams",
        HEAD + "workload: {streams: 0}\n",
        ["workload.streams: 0 is not allowed", ">= 1"],
    ),
    (
        "negative prefix",
        HEAD + "workload: {prefix_tokens: -1}\n",
        ["workload.prefix_tokens: -1 is not allowed", ">= 0"],
    ),
    (
        "concurrent with rate",
        HEAD + "workload: {profile: concurrent, rate: 3}\n",
        ["workload.rate", "takes streams, not a rate"],
    ),
    ("concurrent without streams", HEAD + "workload: {streams: null}\n", ["needs streams"]),
    (
        "constant without rate",
        HEAD + "workload: {profile: constant}\n",
        ["workload.rate: required", "needs a rate"],
    ),
    (
        "poisson with streams",
        HEAD + "workload: {profile: poisson, rate: 2, streams: 8}\n",
        ["workload.streams", "takes a rate, not streams"],
    ),
    (
        "bad profile",
        HEAD + "workload: {profile: sweep}\n",
        ["profile must be one of: concurrent, constant, poisson"],
    ),
    (
        "too many repeats",
        HEAD + "workload: {repeats: 10}\n",
        ["repeats must be an integer from 1 to 9"],
    ),
    (
        "error rate above one",
        HEAD + "workload: {max_error_rate: 1.5}\n",
        ["max_error_rate must be a number from 0 to 1"],
    ),
    (
        "zero benchmark grace",
        HEAD + "workload: {benchmark_grace_s: 0}\n",
        ["workload.benchmark_grace_s: 0 is not allowed", "must be a positive number"],
    ),
    (
        "endless benchmark grace",
        HEAD + "workload: {benchmark_grace_s: .inf}\n",
        ["workload.benchmark_grace_s: inf is not allowed", "finite"],
    ),
    (
        "benchmark grace as text",
        HEAD + "workload: {benchmark_grace_s: 5 min}\n",
        ["workload.benchmark_grace_s: expected a number, got the text '5 min'"],
    ),
    (
        "missing dataset",
        HEAD + "workload: {dataset: nowhere.jsonl}\n",
        ["workload.dataset: no such file", "nowhere.jsonl"],
    ),
    (
        "bad objective",
        HEAD + "objective: {kind: speed}\n",
        ["kind must be one of: throughput, latency, pareto"],
    ),
    (
        "unknown sla",
        HEAD + "objective: {sla: {p95_ttft: 500}}\n",
        ["objective.sla.p95_ttft: unknown SLA metric", "did you mean 'p95_ttft_ms'"],
    ),
    (
        "negative sla",
        HEAD + "objective: {sla: {p95_ttft_ms: -5}}\n",
        ["p95_ttft_ms: -5 is not allowed", "positive"],
    ),
    (
        "sla twice",
        HEAD + "objective: {sla: {p95_ttft_ms: 5, ttft_p95_ms: 6}}\n",
        ["limits ttft_p95_ms a second time"],
    ),
    (
        "latency flag not bool",
        HEAD + "objective: {latency_vs_baseline: yes please}\n",
        ["expected true or false"],
    ),
    (
        "latency vs no baseline",
        "study: {name: t, n_trials: 4, baseline: false}\nserver: {model: /m}\n"
        "objective: {latency_vs_baseline: true}\n",
        ["needs study.baseline: true"],
    ),
    (
        "step zero",
        SPACE + "  max_num_seqs:\n    range: {start: 8, end: 64, step: 0}\n",
        [
            "config.yaml:5: search_space.max_num_seqs.range.step: "
            "0 is not allowed; step must be a positive"
        ],
    ),
    (
        "inverted range",
        SPACE + "  max_num_seqs: {low: 64, high: 8}\n",
        ["config.yaml:4: search_space.max_num_seqs.high", "the range is empty"],
    ),
    (
        "one-value range",
        SPACE + "  max_num_seqs: {low: 8, high: 8}\n",
        ["for one value, use options"],
    ),
    (
        "step above range",
        SPACE + "  block_size: {low: 8, high: 16, step: 100}\n",
        ["step 100 is larger than the range 8..16"],
    ),
    (
        "log from zero",
        SPACE + "  long_prefill_token_threshold: {low: 0, high: 64, log: true}\n",
        ["a log scale needs low > 0"],
    ),
    (
        "log and step",
        SPACE + "  max_num_seqs: {low: 8, high: 64, step: 8, log: true}\n",
        ["log and step cannot be combined"],
    ),
    (
        "fractional int bound",
        SPACE + "  max_num_seqs: {low: 8.5, high: 64}\n",
        ["low: 8.5 is not allowed; low must be a whole number"],
    ),
    (
        "nan bound",
        SPACE + "  gpu_memory_utilization: {low: .nan, high: 0.9}\n",
        ["nan is not allowed", "finite"],
    ),
    (
        "bound beyond vllm",
        SPACE + "  gpu_memory_utilization: {type: float, low: 0.5, high: 1.2}\n",
        [
            "config.yaml:4: search_space.gpu_memory_utilization.high: 1.2 is not allowed; "
            "--gpu-memory-utilization must be a number > 0 and <= 1"
        ],
    ),
    (
        "missing high",
        SPACE + "  max_num_seqs: {low: 8}\n",
        ["search_space.max_num_seqs.high: required"],
    ),
    ("empty options", SPACE + "  max_num_seqs: {options: []}\n", ["expected a non-empty list"]),
    ("duplicate options", SPACE + "  max_num_seqs: {options: [8, 16, 8]}\n", ["8 is listed twice"]),
    (
        "mixed options",
        SPACE + "  max_model_len: {options: [auto, 4096]}\n",
        ["options mix types (int and str)"],
    ),
    (
        "text in int options",
        SPACE + "  max_num_seqs: {options: [8, many]}\n",
        ["max_num_seqs.options[1]: expected an integer, got the text 'many'"],
    ),
    (
        "bad choice",
        SPACE + "  kv_cache_dtype: {options: [auto, fp9]}\n",
        ["kv_cache_dtype.options[1]: 'fp9' is not allowed", "did you mean 'fp8'"],
    ),
    ("list option", SPACE + "  max_num_seqs: {options: [[8]]}\n", ["expected a single value"]),
    (
        "options and range",
        SPACE + "  max_num_seqs: {options: [8], low: 1, high: 9}\n",
        ["either options or a range, not both"],
    ),
    (
        "nothing to search",
        SPACE + "  max_num_seqs: {enabled: true}\n",
        ["give options: [...], a range"],
    ),
    (
        "float type for int flag",
        SPACE + "  max_num_seqs: {type: float, low: 1, high: 9}\n",
        ["--max-num-seqs takes integer values; type may be: int, options"],
    ),
    ("range on bool flag", SPACE + "  enforce_eager: {low: 0, high: 1}\n", ["takes no range"]),
    (
        "range on text flag",
        SPACE + "  kv_cache_dtype: {type: options, low: 0, high: 1}\n",
        ["takes no range"],
    ),
    (
        "bool type on int flag",
        SPACE + "  max_num_seqs: {type: bool}\n",
        ["type may be: int, options"],
    ),
    (
        "unknown param key",
        SPACE + "  max_num_seqs: {low: 8, hihg: 64}\n",
        ["max_num_seqs.hihg: unknown key", "did you mean 'high'"],
    ),
    (
        "unknown flag",
        SPACE + "  max_num_seq: {options: [8]}\n",
        [
            "config.yaml:4: search_space.max_num_seq: 'max_num_seq' is not a `vllm serve` flag "
            "of vLLM 0.33; did you mean 'max_num_seqs'?"
        ],
    ),
    (
        "removed flag enabled",
        SPACE + "  cuda_graph_sizes:\n"
        "    {name: cuda-graph-sizes, enabled: true, range: {start: 8, end: 64, step: 8}}\n",
        [
            "--cuda-graph-sizes was removed in vLLM 0.11; "
            "use --cudagraph-capture-sizes and --max-cudagraph-capture-size instead"
        ],
    ),
    (
        "not tunable",
        SPACE + "  served_model_name: {options: [a, b]}\n",
        ["--served-model-name cannot be searched"],
    ),
    (
        "json flag",
        SPACE + "  compilation_config: {options: [{level: 3}]}\n",
        ["--compilation-config takes JSON and cannot be searched"],
    ),
    (
        "list flag",
        SPACE + "  cudagraph_capture_sizes: {options: [8]}\n",
        ["--cudagraph-capture-sizes takes a list and cannot be searched"],
    ),
    (
        "unknown workload param",
        SPACE + "  workload.duration_s: {low: 1, high: 9}\n",
        ["cannot be searched; allowed: workload.streams, workload.rate"],
    ),
    (
        "searched streams at a rate",
        HEAD + "workload: {profile: constant, rate: 1}\n"
        "search_space:\n  workload.streams: {low: 1, high: 9}\n",
        ["config.yaml:5: search_space.workload.streams", "do not search workload.streams"],
    ),
    (
        "fractional streams",
        SPACE + "  workload.streams: {options: [1.5]}\n",
        ["must be a whole number"],
    ),
    (
        "same flag twice",
        SPACE + "  max_num_seqs: {options: [8]}\n  --max-num-seqs: {options: [16]}\n",
        ["config.yaml:5: search_space.--max-num-seqs: sets max_num_seqs again"],
    ),
    (
        "name and key disagree",
        SPACE + "  max_num_seqs: {name: block-size, options: [8]}\n",
        ["names --block-size, but the key names --max-num-seqs"],
    ),
    (
        "searched and fixed",
        "study: {name: t, n_trials: 4}\nserver: {model: /m, flags: {max_num_seqs: 8}}\n"
        "search_space:\n  max_num_seqs: {options: [16, 32]}\n",
        ["config.yaml:4: search_space.max_num_seqs: max_num_seqs is also fixed in server.flags"],
    ),
    (
        "tokens always below seqs",
        "study: {name: t, n_trials: 4}\nserver: {model: /m, flags: {max_num_seqs: 256}}\n"
        "search_space:\n  max_num_batched_tokens: {options: [64, 128]}\n",
        [
            "config.yaml:4: search_space.max_num_batched_tokens",
            "max_num_batched_tokens >= max_num_seqs",
        ],
    ),
    (
        "grid on continuous",
        "study: {name: t, n_trials: 4, sampler: grid}\nserver: {model: /m}\n"
        "search_space:\n  gpu_memory_utilization: {low: 0.8, high: 0.9}\n",
        ["config.yaml:1: study.sampler: grid search needs a finite space"],
    ),
    (
        "huge grid",
        "study: {name: t, n_trials: 4, sampler: grid}\nserver: {model: /m}\n"
        "search_space:\n  max_num_batched_tokens: {low: 1024, high: 1000000000, step: 1}\n"
        "  max_num_seqs: {low: 1, high: 1024}\n",
        [
            "config.yaml:1: study.sampler: grid search over 1,023,998,952,448 configurations "
            "(999,998,977 max_num_batched_tokens x 1,024 max_num_seqs) would never finish"
        ],
    ),
    (
        "trials twice",
        HEAD + "optimization: {n_trials: 5}\n",
        ["optimization.n_trials: also given as study.n_trials"],
    ),
    (
        "bad approach",
        HEAD + "optimization: {approach: both}\n",
        ["approach must be one of: single_objective, multi_objective, p95_latency"],
    ),
    ("deep nesting", "study: " + "[" * 5000 + "]" * 5000 + "\n", ["invalid YAML"]),
]


@pytest.mark.parametrize(
    ("text", "expected"), [case[1:] for case in BAD_CASES], ids=[case[0] for case in BAD_CASES]
)
def test_bad_configuration_is_explained(text: str | bytes, expected: list[str]) -> None:
    message = error_of(text)
    assert message.startswith("invalid configuration in config.yaml (")
    for part in expected:
        assert part in message, f"{part!r} not in:\n{message}"


def test_bad_case_table_is_large_enough() -> None:
    assert len(BAD_CASES) >= 30
    assert len({case[0] for case in BAD_CASES}) == len(BAD_CASES)


# -- the predecessor's format ----------------------------------------------------------------


def test_a_huge_space_is_counted_without_listing_it() -> None:
    """A sampler other than grid takes any size; counting it must not build a list of 10^12."""
    text = (
        "study: {name: t, n_trials: 4, sampler: tpe}\nserver: {model: /m}\nsearch_space:\n"
        "  max_num_batched_tokens: {low: 1, high: 1000000000000, step: 1}\n"
        "  gpu_memory_utilization: {low: 0.5, high: 0.95, step: 0.05}\n"
    )
    config = parse_config(text, Path("config.yaml"))
    assert config.space.size() == 1_000_000_000_000 * 10


def test_predecessor_sample_maps_as_documented() -> None:
    config = load_config(ROOT / "sample_configs" / "predecessor-format.yaml", PREDECESSOR_OVERRIDES)
    assert (config.study.name, config.server.model) == ("old-study", "/models/qwen")
    assert (config.study.n_trials, config.study.sampler) == (200, "gp")
    assert config.objective.kind == "pareto"
    keys = [p.key for p in config.space]
    assert keys == [
        "max_num_batched_tokens",
        "optimization_level",
        "block_size",
        "kv_cache_dtype",
        "gpu_memory_utilization",
        "workload.streams",
        "long_prefill_token_threshold",
    ]
    opt = config.space.get("optimization_level")
    assert opt is not None and opt.options == (0, 3) and opt.name == "compilation_config"
    streams = config.space.get("workload.streams")
    assert streams is not None and streams.target == "workload"
    assert (streams.low, streams.high, streams.step) == (10, 240, 10)
    gpu = config.space.get("gpu_memory_utilization")
    assert gpu is not None and (gpu.kind, gpu.low, gpu.high, gpu.step) == ("float", 0.9, 0.95, 0.01)
    notes = "\n".join(config.notes)
    for text in (
        "compilation_config: integer compilation levels are read as -O levels",
        "guidellm_concurrency: read as workload.streams",
        "'botorch' is read as 'gp'",
        "read as objective.kind: pareto",
        "settings.trial_interval: ignored",
        removed("cuda_graph_sizes").explain(),  # type: ignore[union-attr]
        removed("max_seq_len_to_capture").explain(),  # type: ignore[union-attr]
        removed("max_num_partial_prefills").explain(),  # type: ignore[union-attr]
        removed("preemption-mode").explain(),  # type: ignore[union-attr]
    ):
        assert text in notes
    assert config.workload.profile == "concurrent"  # no workload section: defaults


def test_predecessor_file_needs_model_and_name_from_the_caller() -> None:
    message = error_of((ROOT / "sample_configs" / "predecessor-format.yaml").read_text())
    assert "study.name: required" in message and "server.model: required" in message


@pytest.mark.parametrize(
    ("approach", "kind"),
    [("single_objective", "throughput"), ("multi_objective", "pareto"), ("p95_latency", "latency")],
)
def test_predecessor_approaches(approach: str, kind: str) -> None:
    config = parse(
        f"""\
        max_num_batched_tokens:
          name: "--max-num-batched-tokens"
          enabled: true
          options: [8192, 16384]
        optimization: {{approach: {approach}, n_trials: 5, sampler: tpe}}
        """,
        overrides=PREDECESSOR_OVERRIDES,
    )
    assert config.objective.kind == kind
    assert config.study.n_trials == 5
    assert config.space.params[0].key == "max_num_batched_tokens"
    assert config.space.params[0].name == "max_num_batched_tokens"


@pytest.mark.parametrize(
    "flag", ["cuda_graph_sizes", "max_seq_len_to_capture", "max_num_partial_prefills"]
)
def test_removed_predecessor_flag_in_use_is_an_error(flag: str) -> None:
    message = error_of(
        f"""\
        parameters:
          {flag}:
            name: "{flag.replace("_", "-")}"
            enabled: true
            options: [8, 16]
        """,
        overrides={**PREDECESSOR_OVERRIDES, "study.n_trials": 3},
    )
    explain = removed(flag).explain()  # type: ignore[union-attr]
    assert f"config.yaml:2: parameters.{flag}: {explain}" in message


def test_compilation_levels_outside_o_levels_are_refused() -> None:
    message = error_of(SPACE + "  compilation_config: {level: [0, 4]}\n")
    assert "search optimization_level (-O0..-O3) instead" in message


def test_fixed_compilation_level_becomes_o_level() -> None:
    config = parse(HEAD.replace("{model: /m}", "{model: /m, flags: {compilation_config: 3}}"))
    assert config.server.flags == {"optimization_level": 3}
    assert any("-O levels" in note for note in config.notes)


# -- the editor's entry points ---------------------------------------------------------------


def test_param_from_mapping_builds_one_parameter() -> None:
    param = param_from_mapping("max-num-seqs", {"type": "int", "low": 8, "high": 64, "step": 8})
    assert (param.key, param.name, param.kind, param.choices()) == (
        "max_num_seqs",
        "max-num-seqs",
        "int",
        (8, 16, 24, 32, 40, 48, 56, 64),
    )
    assert param_from_mapping("enforce_eager", {}).kind == "bool"


def test_param_from_mapping_raises_config_error_without_lines() -> None:
    with pytest.raises(ConfigError) as info:
        param_from_mapping("max_num_seqs", {"low": 8, "high": 64, "step": 0})
    problem = info.value.problems[0]
    assert (problem.line, problem.key, problem.value) == (None, "max_num_seqs.step", 0)
    assert "<string>: max_num_seqs.step: 0 is not allowed" in str(info.value)
    with pytest.raises(ConfigError, match="skipped because it is disabled"):
        param_from_mapping("swap_space", {"enabled": False, "options": [1]})


def test_parse_space_takes_plain_data_and_optional_lines() -> None:
    space = parse_space({"max_num_seqs": {"options": [8, 16]}, "enable_chunked_prefill": {}})
    assert [p.key for p in space] == ["max_num_seqs", "enable_chunked_prefill"]
    with pytest.raises(ConfigError) as info:
        parse_space({"max_num_seqs": {"options": []}}, lines={"search_space.max_num_seqs": 7})
    assert info.value.problems[0].line == 7


# -- nothing but ConfigError -------------------------------------------------------------------

VALID = yaml.safe_load((ROOT / "sample_configs" / "demo-sim.yaml").read_text())
KEYS = st.sampled_from(
    ["study", "server", "workload", "objective", "search_space", "name", "model", "options",
     "low", "high", "step", "log", "type", "range", "start", "end", "flags", "sla", "profile",
     "rate", "streams", "n_trials", "max_num_seqs", "workload.streams", "optimization",
     "parameters", "enabled", "level", "compilation_config", "sampler", "command", "env"]
) | st.text(max_size=12)  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["grid", "poisson", "botorch", "auto", "8k", "-1", "bool", "int"])
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5)
)


def _accepts_or_explains(source: str | bytes) -> None:
    try:
        parse_config(source, Path("fuzz.yaml"))
    except ConfigError as err:
        assert str(err).startswith("invalid configuration in fuzz.yaml")


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    _accepts_or_explains(text)


@settings(max_examples=200, deadline=None)
@given(st.binary())
def test_any_bytes_give_a_config_or_a_config_error(raw: bytes) -> None:
    _accepts_or_explains(raw)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_any_nested_data_gives_a_config_or_a_config_error(data: dict[str, object]) -> None:
    _accepts_or_explains(yaml.safe_dump(data))


PARAM_DATA = st.dictionaries(
    st.sampled_from(["type", "enabled", "name", "options", "level", "low", "high", "step", "log",
                     "range"]),
    VALUES,
    max_size=5,
)  # fmt: skip
FLAG_NAMES = st.sampled_from(
    ["max_num_seqs", "--max-num-seqs", "gpu_memory_utilization", "enforce_eager", "-O",
     "kv_cache_dtype", "compilation_config", "workload.streams", "workload.rate", "port",
     "guidellm_concurrency", "cuda_graph_sizes", "max_model_len", "cudagraph_capture_sizes"]
) | st.text(max_size=8)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(FLAG_NAMES, PARAM_DATA)
def test_any_parameter_mapping_gives_a_param_or_a_config_error(
    key: str, data: dict[str, object]
) -> None:
    try:
        param = param_from_mapping(key, data)
    except ConfigError:
        return
    assert param.describe()


def _paths(node: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    return found


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_paths(VALID)), VALUES)
def test_one_bad_value_in_a_good_file_gives_a_config_error(
    path: tuple[str, ...], value: object
) -> None:
    data = yaml.safe_load(yaml.safe_dump(VALID))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    _accepts_or_explains(yaml.safe_dump(data))
