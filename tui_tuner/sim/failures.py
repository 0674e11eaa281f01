"""Where the simulated start-up fails, with vLLM 0.33's messages and exit codes.

Each check corresponds to one of vLLM's own: the config checks after parsing (exit 1 with a
pydantic or ValueError traceback), the engine's device checks, weight loading, KV cache sizing,
graph capture and sampler warm-up, and the out-of-memory a first full step can hit under load.
"""

from __future__ import annotations

import os

from tui_tuner.core.vllm_flags import ServeArgs
from tui_tuner.core.vllm_rules import (
    Violation,
    bound_violations,
    cross_field_violations,
    parallel_violations,
)
from tui_tuner.sim.hardware import EngineConfig, MemoryPlan
from tui_tuner.sim.live import LoadCrash
from tui_tuner.sim.logs import ENGINE, VllmLog
from tui_tuner.sim.profiles import Profile


class StartupFailure(Exception):
    """vLLM would exit here; `text` is what it prints, `code` its exit status."""

    def __init__(self, text: str, code: int = 1) -> None:
        super().__init__(text)
        self.text, self.code = text, code


def traceback_text(violation: Violation, where: str) -> str:
    return (
        "Traceback (most recent call last):\n"
        f'  File "{where}", line 1, in <module>\n'
        f"{violation.render()}"
    )


def engine_failure(message: str, where: str = "vllm/v1/engine/core.py") -> StartupFailure:
    return StartupFailure(
        f'Traceback (most recent call last):\n  File "{where}", line 1, in run_engine_core\n'
        f"{message}\nRuntimeError: Engine core initialization failed. See root cause above. "
        "Failed core proc(s): {}"
    )


def visible_gpu_count(node: int) -> int:
    """The GPUs this server may use: those its ``CUDA_VISIBLE_DEVICES`` lists (the tuner
    hands them out with ``study.workers``), else the simulated node's."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return node
    return len([item for item in visible.split(",") if item.strip()])


def check_args(args: ServeArgs, given: set[str], cfg: EngineConfig, profile: Profile) -> None:
    """Pydantic bounds, parallel degrees and cross-field rules, as vLLM checks its config."""
    found = bound_violations(args.values)
    model = profile.model
    found += parallel_violations(
        tensor_parallel=cfg.tp,
        pipeline_parallel=cfg.pp,
        data_parallel=cfg.dp,
        num_gpus=visible_gpu_count(profile.gpu.count),
        num_attention_heads=model.heads,
        num_layers=model.layers,
    )
    found += cross_field_violations(
        max_num_seqs=cfg.max_num_seqs,
        max_num_batched_tokens=cfg.max_num_batched_tokens,
        max_model_len=cfg.max_model_len,
        chunked_prefill=cfg.chunked_prefill,
        long_prefill_token_threshold=cfg.long_prefill_token_threshold,
        derived_max_model_len=model.max_position,
        user_set_max_model_len="max_model_len" in given,
        user_set_batched_tokens="max_num_batched_tokens" in given,
        allow_long_max_model_len=os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN") == "1",
    )
    if found:
        raise StartupFailure(traceback_text(found[0], "vllm/config/vllm.py"))


def check_device(cfg: EngineConfig, plan: MemoryPlan, profile: Profile) -> None:
    """What the engine checks before loading weights: block size, free memory."""
    gpu = profile.gpu
    if cfg.block_size % gpu.block_size_multiple:
        raise engine_failure(f"ValueError: No common block size for {cfg.block_size}. ")
    if plan.requested_gib > plan.free_at_start_gib:
        raise engine_failure(
            f"ValueError: Free memory on device cuda:0 ({plan.free_at_start_gib:.2f}/"
            f"{gpu.memory_gib:.2f} GiB) on startup is less than desired GPU memory "
            f"utilization ({cfg.gpu_memory_utilization}, {plan.requested_gib:.2f} GiB). "
            "Decrease GPU memory utilization or reduce GPU memory used by other processes.",
            "vllm/v1/worker/utils.py",
        )


def load_failure(plan: MemoryPlan, log: VllmLog) -> StartupFailure:
    """The weights do not fit in the free memory."""
    log.error(
        "gpu_model_runner.py:5079",
        (
            "Failed to load model - not enough GPU memory. Try lowering "
            "--gpu-memory-utilization to free memory for weights, increasing "
            "--tensor-parallel-size, or using --quantization."
        ),
        ENGINE.format(dp=0),
    )
    return engine_failure(
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.96 GiB. GPU 0 has a "
        f"total capacity of {plan.total_gib:.2f} GiB of which "
        f"{plan.free_at_start_gib % 1.96:.2f} GiB is free."
    )


def check_kv_memory(plan: MemoryPlan) -> None:
    """Nothing left for KV blocks after weights, activations and graphs."""
    if plan.kv_cache_gib <= 0 or plan.num_blocks == 0:
        raise engine_failure(
            "ValueError: No available memory for the cache blocks. Try increasing "
            "`gpu_memory_utilization` when initializing the engine.",
            "vllm/v1/core/kv_cache_planning.py",
        )


def check_kv_capacity(cfg: EngineConfig, plan: MemoryPlan) -> None:
    """The KV cache cannot hold even one request of max-model-len tokens."""
    if cfg.max_model_len > plan.kv_tokens:
        need = cfg.max_model_len * plan.kv_bytes_per_token / 2**30
        raise engine_failure(
            f"ValueError: To serve at least one request with the model's max seq len "
            f"({cfg.max_model_len}), ({need:.2f} GiB KV cache is needed, which is larger than "
            f"the available KV cache memory ({plan.kv_cache_gib:.2f} GiB). Based on the "
            f"available memory, the estimated maximum model length is {plan.kv_tokens}. Try "
            "increasing `gpu_memory_utilization` or decreasing `max_model_len` when "
            "initializing the engine.",
            "vllm/v1/core/kv_cache_planning.py",
        )


def check_warmup_memory(cfg: EngineConfig, plan: MemoryPlan) -> None:
    """Graph capture and sampler warm-up allocate beyond the budget: CUDA OOM at start-up."""
    if plan.startup_headroom_gib < plan.startup_transient_gib:
        free_mib = max(0.0, plan.startup_headroom_gib) * 1024
        raise engine_failure(
            f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
            f"{plan.startup_transient_gib * 1024:.2f} MiB. GPU 0 has a total capacity of "
            f"{plan.total_gib:.2f} GiB of which {free_mib:.2f} MiB is free. Of the allocated "
            "memory, most is reserved by PyTorch. CUDA out of memory occurred when warming up "
            f"sampler with {cfg.max_num_seqs} dummy requests. Please try lowering "
            "`max_num_seqs` or `gpu_memory_utilization` when initializing the engine.",
            "vllm/v1/worker/gpu_model_runner.py",
        )


def load_crash(cfg: EngineConfig, plan: MemoryPlan) -> LoadCrash | None:
    """Out of memory under load: what a full step needs beyond what start-up left."""
    spare = plan.startup_headroom_gib - plan.startup_transient_gib
    if spare >= plan.load_transient_gib:
        return None
    return LoadCrash(
        min_tokens=max(1, cfg.max_num_batched_tokens // 2),
        message=(
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
            f"{plan.load_transient_gib * 1024:.2f} MiB. GPU 0 has a total capacity of "
            f"{plan.total_gib:.2f} GiB of which {max(0.0, spare) * 1024:.2f} MiB is free."
        ),
    )
