"""The simulated engine's configuration, memory plan, step cost and start-up time.

`EngineConfig` is what vLLM resolves from the flags (run-time defaults included). `plan_memory`
follows vLLM's start-up: load weights, profile a peak batch, capture graphs, give what is left of
`gpu_memory_utilization x total` to the KV cache. `step_seconds` is a roofline of one scheduler
step. Every constant is in profiles.py and explained in docs/simulator.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

from tui_tuner.core.vllm_flags import ServeArgs, batch_defaults, default_cudagraph_capture_sizes
from tui_tuner.sim.profiles import Profile

GIB = 2**30
_KV_BYTES = {
    "auto": 2.0,
    "float16": 2.0,
    "bfloat16": 2.0,
    "nvfp4": 0.5625,
    "nvfp4_4over6": 0.5625,
    "int4_per_token_head": 0.5625,
}
_WEIGHT_BYTES = {
    None: 2.0,
    "fp8": 1.0,
    "fp8_per_block": 1.0,
    "fp8_per_tensor": 1.0,
    "modelopt": 1.0,
    "mxfp4": 0.53,
    "modelopt_fp4": 0.56,
}


@dataclass(frozen=True)
class EngineConfig:
    """Resolved settings of one engine (one data-parallel replica)."""

    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    block_size: int
    gpu_memory_utilization: float
    kv_cache_memory_bytes: int | None
    kv_bytes_per_elem: float
    weight_bytes_per_param: float
    compute_speedup: float  # fp8 tensor cores are faster; 4-bit dequantisation is slower
    prefix_caching: bool
    chunked_prefill: bool
    long_prefill_token_threshold: int
    compiled: bool  # torch.compile (fused kernels)
    piecewise_graphs: bool
    full_graphs: bool
    capture_sizes: tuple[int, ...]
    async_scheduling: bool
    tp: int
    pp: int
    dp: int
    stream_interval: int

    @property
    def max_capture_size(self) -> int:
        return max(self.capture_sizes, default=0)


def _compilation(args: ServeArgs) -> tuple[int | None, str | None, list[int] | None]:
    raw = args.get("compilation_config")
    cc: dict[str, object] = {}
    if isinstance(raw, dict):
        cc = raw
    elif isinstance(raw, str):
        cc = json.loads(raw)
    mode = cc.get("mode", cc.get("level"))
    graph_mode = cc.get("cudagraph_mode")
    sizes = cc.get("cudagraph_capture_sizes")
    return (
        int(mode) if isinstance(mode, int | str) and str(mode).isdigit() else None,
        str(graph_mode).upper() if graph_mode is not None else None,
        [int(s) for s in sizes] if isinstance(sizes, list) else None,
    )


def resolve(args: ServeArgs, profile: Profile) -> EngineConfig:
    """Resolve flags into engine settings the way vLLM 0.33 does on this profile's GPU."""
    gpu, model = profile.gpu, profile.model
    perf_mode = str(args.get("performance_mode"))
    defaults = batch_defaults(
        device_memory_gib=gpu.memory_gib, device_name=gpu.name, performance_mode=perf_mode
    )
    max_model_len = args.get("max_model_len")
    mml = model.max_position if max_model_len in (None, -1) else int(str(max_model_len))
    chunked = args.get("enable_chunked_prefill")
    chunked = True if chunked is None else bool(chunked)
    mnbt_arg = args.get("max_num_batched_tokens")
    mnbt = defaults.max_num_batched_tokens if mnbt_arg is None else int(str(mnbt_arg))
    if not chunked and mnbt_arg is None:
        mnbt = max(mnbt, mml)
    seqs_arg = args.get("max_num_seqs")
    seqs = min(defaults.max_num_seqs, mnbt) if seqs_arg is None else int(str(seqs_arg))

    eager = bool(args.get("enforce_eager"))
    level = int(str(args.get("optimization_level")))
    mode, graph_mode, cc_sizes = _compilation(args)
    compiled = not eager and level >= 1 and mode != 0
    if graph_mode is None:
        graph_mode = (
            "NONE" if eager or level == 0 else ("PIECEWISE" if level == 1 else "FULL_AND_PIECEWISE")
        )
    if eager:
        graph_mode = "NONE"
    piecewise = compiled and graph_mode in ("PIECEWISE", "FULL_AND_PIECEWISE")
    full = graph_mode in ("FULL", "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE")
    sizes_arg = args.get("cudagraph_capture_sizes") or cc_sizes
    cap_arg = args.get("max_cudagraph_capture_size")
    cap = int(str(cap_arg)) if cap_arg is not None else 512
    cap = min(cap, seqs if not piecewise else mnbt)
    sizes: tuple[int, ...] = ()
    if piecewise or full:
        chosen = [int(s) for s in sizes_arg] if isinstance(sizes_arg, list) else None
        sizes = tuple(sorted(chosen)) if chosen else tuple(default_cudagraph_capture_sizes(cap))

    kv_dtype = str(args.get("kv_cache_dtype"))
    kv_bytes = _KV_BYTES.get(kv_dtype, 1.0)
    dtype = str(args.get("dtype"))
    quant = args.get("quantization")
    weight_bytes = (
        4.0
        if dtype in ("float", "float32")
        else _WEIGHT_BYTES.get(quant if isinstance(quant, str) else None, 0.56)
    )
    speedup = {1.0: 1.6, 4.0: 0.5}.get(weight_bytes, 1.0 if weight_bytes >= 2 else 0.85)
    if kv_dtype == "auto" and dtype in ("float", "float32"):
        kv_bytes = 4.0
    block = args.get("block_size")
    async_arg = args.get("async_scheduling")
    prefix = args.get("enable_prefix_caching")
    kv_mem = args.get("kv_cache_memory_bytes")
    return EngineConfig(
        max_num_seqs=seqs,
        max_num_batched_tokens=mnbt,
        max_model_len=mml,
        block_size=gpu.default_block_size if block is None else int(str(block)),
        gpu_memory_utilization=float(str(args.get("gpu_memory_utilization"))),
        kv_cache_memory_bytes=None if kv_mem is None else int(str(kv_mem)),
        kv_bytes_per_elem=kv_bytes,
        weight_bytes_per_param=weight_bytes,
        compute_speedup=speedup,
        prefix_caching=True if prefix is None else bool(prefix),
        chunked_prefill=chunked,
        long_prefill_token_threshold=int(str(args.get("long_prefill_token_threshold"))),
        compiled=compiled,
        piecewise_graphs=piecewise,
        full_graphs=full,
        capture_sizes=sizes,
        async_scheduling=True if async_arg is None else bool(async_arg),
        tp=int(str(args.get("tensor_parallel_size"))),
        pp=int(str(args.get("pipeline_parallel_size"))),
        dp=int(str(args.get("data_parallel_size"))),
        stream_interval=int(str(args.get("stream_interval"))),
    )


@dataclass(frozen=True)
class MemoryPlan:
    """Per-GPU memory, in GiB, as vLLM's start-up would measure it."""

    total_gib: float
    free_at_start_gib: float
    requested_gib: float
    weights_gib: float
    activation_peak_gib: float
    graph_pool_gib: float
    kv_cache_gib: float
    kv_bytes_per_token: float
    num_blocks: int
    kv_tokens: int
    startup_headroom_gib: float  # memory left on the card after vLLM takes its share
    startup_transient_gib: float  # what capture and sampler warm-up allocate on top
    load_transient_gib: float  # what a full batch under load allocates on top


def plan_memory(cfg: EngineConfig, profile: Profile, busy_gib: float = 0.0) -> MemoryPlan:
    gpu, model = profile.gpu, profile.model
    weights = model.params_b * 1e9 * cfg.weight_bytes_per_param / (cfg.tp * cfg.pp) / GIB
    act = cfg.max_num_batched_tokens * model.hidden * 2 * 18 / cfg.tp / GIB
    sampler = cfg.max_num_seqs * model.vocab * 4 * 2 / GIB
    non_torch = 0.2 + (0.35 if cfg.tp * cfg.pp > 1 else 0.0)
    activation = act + sampler + non_torch
    n_graph_sets = int(cfg.piecewise_graphs) + int(cfg.full_graphs)
    graph_pool = 0.004 * len(cfg.capture_sizes) * n_graph_sets * model.layers / 32
    requested = cfg.gpu_memory_utilization * gpu.memory_gib
    kv_heads = max(1, model.kv_heads // cfg.tp)
    kv_elems = 2 * math.ceil(model.layers / cfg.pp) * kv_heads * model.head_dim
    kv_per_token = kv_elems * cfg.kv_bytes_per_elem
    if cfg.kv_cache_memory_bytes is not None:
        kv_gib = cfg.kv_cache_memory_bytes / GIB
        requested = weights + activation + graph_pool + kv_gib
    else:
        kv_gib = requested - weights - activation - graph_pool
    blocks = max(0, int(kv_gib * GIB / kv_per_token) // cfg.block_size)
    free = gpu.memory_gib - gpu.context_gib - busy_gib
    return MemoryPlan(
        total_gib=gpu.memory_gib,
        free_at_start_gib=free,
        requested_gib=requested,
        weights_gib=weights,
        activation_peak_gib=activation,
        graph_pool_gib=graph_pool,
        kv_cache_gib=kv_gib,
        kv_bytes_per_token=kv_per_token,
        num_blocks=blocks,
        kv_tokens=blocks * cfg.block_size,
        startup_headroom_gib=free - requested,
        startup_transient_gib=0.12 + (0.18 if n_graph_sets else 0.0),
        load_transient_gib=gpu.load_transient_gib,
    )


def step_seconds(
    cfg: EngineConfig,
    profile: Profile,
    *,
    tokens: int,
    num_seqs: int,
    attended: float,
    context_sum: int,
    pure_decode: bool,
) -> float:
    """Duration of one scheduler step on one replica, in simulated seconds.

    tokens: tokens computed this step (decodes + prefill chunks); attended: sum over sequences of
    new tokens x context (attention FLOPs); context_sum: KV tokens read (attention bytes).
    """
    gpu, model, eff = profile.gpu, profile.model, profile.efficiency
    shards = cfg.tp * cfg.pp
    weight_bytes = model.params_b * 1e9 * cfg.weight_bytes_per_param / shards
    kv_per_token = 2 * model.layers * max(1, model.kv_heads // cfg.tp) * model.head_dim
    kv_bytes = (context_sum + tokens) * kv_per_token * cfg.kv_bytes_per_elem / cfg.pp
    mem_t = (weight_bytes + kv_bytes) / (gpu.bandwidth_gb_s * 1e9 * eff.memory)
    flops = 2 * model.params_b * 1e9 * tokens / shards
    flops += 4 * model.layers * (model.heads / cfg.tp) * model.head_dim * attended / cfg.pp
    mfu = eff.compute * tokens / (tokens + eff.gemm_half_tokens)  # small GEMMs run below peak
    comp_t = flops / (gpu.bf16_tflops * 1e12 * mfu * cfg.compute_speedup)
    gpu_t = max(mem_t, comp_t) + 0.15 * min(mem_t, comp_t)
    if not cfg.compiled:
        gpu_t *= 1 + eff.unfused_penalty
    layers = model.layers / cfg.pp
    fits = tokens <= cfg.max_capture_size
    if cfg.full_graphs and fits and (pure_decode or cfg.piecewise_graphs is False):
        launch = eff.graph_launch_us * 1e-6
    elif cfg.piecewise_graphs and fits:
        launch = eff.piecewise_us_per_layer * layers * 1e-6 + eff.graph_launch_us * 1e-6
    else:
        per_layer = eff.eager_launch_us_per_layer * (0.55 if cfg.compiled else 1.0)
        launch = per_layer * layers * 1e-6
    comm = 0.0
    if cfg.tp > 1:
        link = (gpu.interconnect_gb_s or 25.0) * 1e9
        msg = tokens * model.hidden * 2
        comm = (
            2 * layers * (gpu.allreduce_latency_us * 1e-6 + 2 * (cfg.tp - 1) / cfg.tp * msg / link)
        )
    stage = (gpu_t + launch + comm) * cfg.pp
    if cfg.pp > 1:
        stage += (cfg.pp - 1) * (
            20e-6 + tokens * model.hidden * 2 / ((gpu.interconnect_gb_s or 25) * 1e9)
        )
    cpu = (eff.cpu_step_us + (eff.cpu_us_per_seq + eff.sampler_us_per_seq) * num_seqs) * 1e-6
    return max(stage, cpu) if cfg.async_scheduling else stage + cpu


def startup_seconds(
    cfg: EngineConfig,
    profile: Profile,
    plan: MemoryPlan,
    *,
    dummy_weights: bool = False,
    compile_cached: bool = False,
) -> dict[str, float]:
    """Simulated seconds of each start-up phase, in the order vLLM runs them.

    Weights stream from disk at the GPU's ``disk_gb_s``, or with ``dummy_weights``
    (``--load-format dummy``) are filled in place at ``dummy_init_gb_s``. torch.compile costs
    ``compile_s`` on a cache miss and ``compile_warm_fraction`` of it when ``compile_cached``
    (its graphs are loaded from the cache, not built)."""
    st = profile.startup
    scale = math.sqrt(profile.model.layers / 32)
    graphs = int(cfg.piecewise_graphs) + int(cfg.full_graphs)
    rate_gb_s = st.dummy_init_gb_s if dummy_weights else profile.gpu.disk_gb_s
    compile_s = st.compile_s * scale * (st.compile_warm_fraction if compile_cached else 1.0)
    return {
        "process": st.process_s,
        "load_weights": plan.weights_gib * GIB / 1e9 / max(rate_gb_s, 1e-9),
        "profile": st.profile_s,
        "compile": compile_s if cfg.compiled else 0.0,
        "capture": st.capture_s_per_size * len(cfg.capture_sizes) * graphs * scale,
    }


def compile_family(cfg: EngineConfig, model: str, profile: Profile) -> str:
    """The key of the compiled graphs, as vLLM's ``VllmConfig.compute_hash`` picks it: what
    shapes the graphs (batch limits, lengths, block size, dtypes, compilation and parallel
    settings), not what only sizes the KV cache (``gpu_memory_utilization``,
    ``kv_cache_memory_bytes``) or schedules (prefix caching, chunked prefill, async
    scheduling). Ten hex digits, like vLLM's directory names."""
    shaped = dataclasses.asdict(cfg)
    for runtime_only in (
        "gpu_memory_utilization",
        "kv_cache_memory_bytes",
        "prefix_caching",
        "chunked_prefill",
        "long_prefill_token_threshold",
        "async_scheduling",
        "stream_interval",
    ):
        shaped.pop(runtime_only)
    key = json.dumps({"model": model, "gpu": profile.gpu.name, **shaped}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:10]
