"""vLLM 0.33's `vllm serve` tuning flags, written down once.

Three users read this table: the simulated server builds its argument parser from it, the study
configuration validates search-space parameters against it, and the export of a best configuration
renders flags from it. Names, types, defaults and constraints follow vLLM 0.33's `EngineArgs`
(see REFERENCE.md section 1); where a default is decided at run time, `runtime_default` says how.

Pure: no argparse objects are kept here, only data and small parsing helpers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

FlagKind = Literal["int", "float", "str", "bool", "enable_disable", "int_list", "json", "opt_level"]


@dataclass(frozen=True)
class Flag:
    """One `vllm serve` option.

    `dest` is the attribute name vLLM's parser produces (and the name used in the tuner's search
    space). `ge`/`gt`/`le` are pydantic-style bounds that vLLM checks after parsing (exit code 1),
    unlike type and choice errors which argparse reports (exit code 2).
    """

    name: str
    dest: str
    kind: FlagKind
    default: object
    help: str
    group: str
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    human_int: bool = False
    runtime_default: str = ""
    tunable: bool = True
    config_class: str = ""

    @property
    def option_strings(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class RemovedFlag:
    """A flag that older vLLM releases accepted and 0.33 rejects with `unrecognized arguments`."""

    name: str
    removed_in: str
    replaced_by: tuple[str, ...] = ()
    note: str = ""

    def explain(self) -> str:
        if self.replaced_by:
            what = " and ".join(self.replaced_by)
            return f"{self.name} was removed in vLLM {self.removed_in}; use {what} instead"
        instead = self.note or "nothing replaces it"
        return f"{self.name} was removed in vLLM {self.removed_in}; {instead}"


# fmt: off
KV_CACHE_DTYPES = (
    "auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla",
    "nvfp4_ds_mla", "int8_per_token_head", "int4_per_token_head", "fp8_per_token_head", "nvfp4",
    "nvfp4_4over6",
)
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
QUANTIZATIONS = (
    "awq", "awq_marlin", "fp8", "gptq", "gptq_marlin", "compressed-tensors", "bitsandbytes",
    "gguf", "mxfp4", "modelopt", "modelopt_fp4", "fp8_per_block", "fp8_per_tensor",
)
CUDAGRAPH_MODES = ("NONE", "PIECEWISE", "FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE")
PERFORMANCE_MODES = ("balanced", "interactivity", "throughput")

_S, _C, _M, _P, _O, _F = (
    "SchedulerConfig", "CacheConfig", "ModelConfig", "ParallelConfig", "CompilationConfig",
    "Frontend",
)

FLAGS: tuple[Flag, ...] = (
    # -- scheduler --------------------------------------------------------------------------
    Flag("--max-num-seqs", "max_num_seqs", "int", None, "Maximum number of sequences per step.",
         _S, ge=1, config_class=_S,
         runtime_default="1024 on GPUs with >=70 GiB (not A100), 256 on others, 128 x world size "
         "on CPU; doubled in throughput mode; capped at max-num-batched-tokens"),
    Flag("--max-num-batched-tokens", "max_num_batched_tokens", "int", None,
         "Maximum number of tokens per scheduler step.", _S, ge=1, human_int=True,
         config_class=_S,
         runtime_default="8192 on GPUs with >=70 GiB (not A100), 16384 with >=160 GiB, 2048 "
         "otherwise; doubled in throughput mode; at least max-model-len without chunked prefill"),
    Flag("--enable-chunked-prefill", "enable_chunked_prefill", "enable_disable", None,
         "Chunk long prefills so they share steps with decodes.", _S,
         aliases=("--disable-chunked-prefill",), config_class=_S,
         runtime_default="on if the model supports it"),
    Flag("--long-prefill-token-threshold", "long_prefill_token_threshold", "int", 0,
         "Cap on the tokens one long prefill takes per step (0 = no cap).", _S, ge=0,
         config_class=_S),
    Flag("--async-scheduling", "async_scheduling", "bool", None,
         "Overlap CPU scheduling with GPU execution.", _S, config_class=_S,
         runtime_default="on unless incompatible"),
    Flag("--scheduling-policy", "scheduling_policy", "str", "fcfs", "Request ordering.", _S,
         choices=("fcfs", "priority"), config_class=_S),
    Flag("--stream-interval", "stream_interval", "int", 1,
         "Tokens buffered before a streamed chunk is sent.", _S, ge=1, config_class=_S),
    # -- cache --------------------------------------------------------------------------------
    Flag("--block-size", "block_size", "int", None, "KV cache block size in tokens.", _C, gt=0,
         config_class=_C,
         runtime_default="16, or what the attention backend needs (CPU: multiples of 32)"),
    Flag("--gpu-memory-utilization", "gpu_memory_utilization", "float", 0.92,
         "Fraction of GPU memory vLLM may use (weights, activations, KV cache).", _C,
         aliases=("--device-memory-utilization",), gt=0.0, le=1.0, config_class=_C),
    Flag("--kv-cache-dtype", "kv_cache_dtype", "str", "auto", "Data type of the KV cache.", _C,
         choices=KV_CACHE_DTYPES, config_class=_C),
    Flag("--enable-prefix-caching", "enable_prefix_caching", "enable_disable", None,
         "Reuse KV blocks of shared prompt prefixes.", _C,
         aliases=("--disable-prefix-caching",), config_class=_C,
         runtime_default="on if the model supports it"),
    Flag("--kv-cache-memory-bytes", "kv_cache_memory_bytes", "int", None,
         "KV cache size in bytes; overrides gpu-memory-utilization.", _C, ge=1, human_int=True,
         config_class=_C),
    # -- model ---------------------------------------------------------------------------------
    Flag("--max-model-len", "max_model_len", "int", None,
         "Maximum context length (prompt + output); -1 or auto = largest that fits.", _M,
         human_int=True, config_class=_M, runtime_default="from the model's config.json"),
    Flag("--dtype", "dtype", "str", "auto", "Data type of weights and activations.", _M,
         choices=DTYPES, config_class=_M),
    Flag("--quantization", "quantization", "str", None, "Weight quantization method.", _M,
         aliases=("-q",), choices=QUANTIZATIONS, config_class=_M,
         runtime_default="read from the checkpoint"),
    Flag("--enforce-eager", "enforce_eager", "bool", False,
         "Disable compilation and CUDA graphs.", _M, config_class=_M),
    Flag("--served-model-name", "served_model_name", "str", None,
         "Model name in the API (default: the model argument).", _M, tunable=False,
         config_class=_M),
    # -- parallelism ---------------------------------------------------------------------------
    Flag("--tensor-parallel-size", "tensor_parallel_size", "int", 1, "Tensor parallel degree.",
         _P, aliases=("-tp",), ge=1, config_class=_P),
    Flag("--pipeline-parallel-size", "pipeline_parallel_size", "int", 1,
         "Pipeline parallel degree.", _P, aliases=("-pp",), ge=1, config_class=_P),
    Flag("--data-parallel-size", "data_parallel_size", "int", 1, "Data parallel replicas.", _P,
         aliases=("-dp",), ge=1, config_class=_P),
    # -- compilation ---------------------------------------------------------------------------
    Flag("--optimization-level", "optimization_level", "opt_level", 2,
         "O0 no compile/graphs, O1 Inductor + piecewise graphs, O2/O3 also full graphs.", _O,
         aliases=("-O",), ge=0, le=3, config_class="VllmConfig"),
    Flag("--compilation-config", "compilation_config", "json", None,
         "torch.compile and CUDA graph settings as JSON or dotted keys (-cc.mode=3).", _O,
         aliases=("-cc",), config_class=_O),
    Flag("--cudagraph-capture-sizes", "cudagraph_capture_sizes", "int_list", None,
         "Batch sizes to capture CUDA graphs for.", _O, config_class=_O,
         runtime_default="1, 2, 4, then steps of 8 up to max-cudagraph-capture-size"),
    Flag("--max-cudagraph-capture-size", "max_cudagraph_capture_size", "int", None,
         "Largest batch captured as a CUDA graph.", _O, ge=1, config_class=_O,
         runtime_default="512 (1024 on data-centre Blackwell)"),
    Flag("--performance-mode", "performance_mode", "str", "balanced",
         "Preset: throughput doubles the default max-num-seqs and max-num-batched-tokens.", _O,
         choices=PERFORMANCE_MODES, config_class="VllmConfig"),
    # -- frontend (not tuned) --------------------------------------------------------------------
    Flag("--host", "host", "str", None,
         "Address to listen on (vLLM: every interface; sim-serve: 127.0.0.1).", _F,
         tunable=False),
    Flag("--port", "port", "int", 8000, "Port to listen on.", _F, tunable=False),
    Flag("--api-key", "api_key", "str", None, "Require this bearer key on /v1 routes.", _F,
         tunable=False),
    Flag("--uvicorn-log-level", "uvicorn_log_level", "str", "info", "Log level of the server.",
         _F, choices=("debug", "info", "warning", "error", "critical", "trace"), tunable=False),
    Flag("--disable-log-stats", "disable_log_stats", "bool", False,
         "Turn off the periodic throughput log line.", _F, tunable=False),
)

REMOVED_FLAGS: tuple[RemovedFlag, ...] = (
    RemovedFlag("--max-seq-len-to-capture", "0.11", note="nothing replaces it"),
    RemovedFlag("--max-num-partial-prefills", "0.11",
                note="vLLM V1 schedules partial prefills itself"),
    RemovedFlag("--max-long-partial-prefills", "0.11",
                note="vLLM V1 schedules partial prefills itself"),
    RemovedFlag("--cuda-graph-sizes", "0.11",
                replaced_by=("--cudagraph-capture-sizes", "--max-cudagraph-capture-size")),
    RemovedFlag("--swap-space", "0.11", note="preemption always recomputes now"),
    RemovedFlag("--preemption-mode", "0.11", note="preemption always recomputes now"),
    RemovedFlag("--num-scheduler-steps", "0.11", note="use --async-scheduling"),
)
# fmt: on

FLAGS_BY_DEST: dict[str, Flag] = {f.dest: f for f in FLAGS}
FLAGS_BY_OPTION: dict[str, Flag] = {o: f for f in FLAGS for o in f.option_strings}
REMOVED_BY_NAME: dict[str, RemovedFlag] = {r.name: r for r in REMOVED_FLAGS}


def lookup(name: str) -> Flag | None:
    """Find a flag by option string (`--max-num-seqs`), dest (`max_num_seqs`) or bare name."""
    if name in FLAGS_BY_DEST:
        return FLAGS_BY_DEST[name]
    key = name if name.startswith("-") else "--" + name.replace("_", "-")
    return FLAGS_BY_OPTION.get(key)


def removed(name: str) -> RemovedFlag | None:
    key = name if name.startswith("-") else "--" + name.replace("_", "-")
    return REMOVED_BY_NAME.get(key.replace("_", "-"))


_HUMAN_INT = re.compile(r"^(?P<num>\d+(?:\.\d+)?)(?P<suffix>[kKmMgGtT]?)$")
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def human_readable_int(text: str) -> int:
    """Parse `2048`, `2k` (= 2,000) or `2K` (= 2,048), as vLLM's `human_readable_int` does.

    Lower-case suffixes are decimal, upper-case binary. `-1` is allowed (max-model-len uses it).
    Raises ValueError, which argparse turns into `invalid human_readable_int value`.
    """
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    match = _HUMAN_INT.match(text)
    if match is None or not match["suffix"]:
        raise ValueError(text)
    number, suffix = match["num"], match["suffix"]
    scale = _DECIMAL[suffix] if suffix.islower() else _BINARY[suffix]
    value = float(number) * scale
    if suffix.isupper() and "." in number:
        raise ValueError(f"decimals are not allowed with binary suffixes: {text}")
    if value != int(value):
        raise ValueError(text)
    return int(value)


@dataclass(frozen=True)
class BatchDefaults:
    max_num_seqs: int
    max_num_batched_tokens: int


def batch_defaults(
    *,
    device_memory_gib: float,
    device_name: str,
    performance_mode: str = "balanced",
    on_cpu: bool = False,
    world_size: int = 1,
) -> BatchDefaults:
    """Run-time defaults of vLLM 0.33's `get_batch_defaults` (`arg_utils.py`), API server."""
    if on_cpu:
        seqs, tokens = 128 * world_size, 2048
    elif device_memory_gib >= 70 and "A100" not in device_name and "GB10" not in device_name:
        seqs = 1024
        tokens = 16384 if device_memory_gib >= 160 else 8192
    else:
        seqs, tokens = 256, 2048
    if performance_mode == "throughput":
        seqs, tokens = seqs * 2, tokens * 2
    return BatchDefaults(max_num_seqs=min(seqs, tokens), max_num_batched_tokens=tokens)


def default_cudagraph_capture_sizes(max_size: int) -> list[int]:
    """vLLM's default capture list: 1, 2, 4, then every 8 up to 256, every 16 beyond."""
    sizes = [s for s in (1, 2, 4) if s <= max_size]
    sizes += list(range(8, min(max_size, 256) + 1, 8))
    sizes += list(range(272, max_size + 1, 16))
    return sizes


@dataclass
class ServeArgs:
    """Parsed `vllm serve` arguments: the model plus every flag's value by dest."""

    model: str
    values: dict[str, object] = field(default_factory=dict)

    def get(self, dest: str) -> object:
        return self.values.get(dest, FLAGS_BY_DEST[dest].default)
