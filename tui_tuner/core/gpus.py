"""Trials side by side on one node: how many GPUs a trial needs, and how many trials run at once.

A trial's server gets ``tensor x pipeline x data`` parallel GPUs (vLLM starts one worker per
GPU of that product, `vllm/config/parallel.py`: ``world_size = tensor_parallel_size *
pipeline_parallel_size``, times ``data_parallel_size`` replicas on this node), handed out by the
engine's `GpuPool` as its ``CUDA_VISIBLE_DEVICES``. ``study.workers`` says how many trials run at
once; ``auto`` is one a GPU. Pure: the GPUs themselves are counted by the adapters (NVML) or
given (``server.gpus``, ``--sim-gpus``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tui_tuner.core.config_problems import Invalid, show

__all__ = [
    "PARALLEL_DESTS",
    "gpus_needed",
    "lane_count",
    "read_gpus",
    "read_workers",
    "too_many_gpus",
]

#: The flags whose product is the number of GPUs one server uses.
PARALLEL_DESTS = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")


def read_workers(value: object, name: str) -> int | None:
    """``study.workers``: a whole number from 1, or ``auto`` (None: one trial a GPU)."""
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Invalid(f"{show(value)} is not allowed; {name} must be a whole number from 1 "
                      "(trials at once) or auto (one trial a GPU)")  # fmt: skip
    return value


def read_gpus(value: object, name: str) -> tuple[int, ...]:
    """``server.gpus``: distinct GPU indices, such as [0, 1, 2, 3]."""
    if not isinstance(value, list) or not value:
        raise Invalid(f"{show(value)} is not allowed; {name} must be a list of GPU indices, "
                      "such as [0, 1, 2, 3]")  # fmt: skip
    out: list[int] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise Invalid(f"{show(item)} is not allowed; {name} items are GPU indices (0, 1, ...)")
        if item in out:
            raise Invalid(f"GPU {item} is listed twice in {name}")
        out.append(item)
    return tuple(out)


def gpus_needed(fixed: Mapping[str, object], searched: Iterable[tuple[str, object]]) -> int:
    """GPUs one server uses: the product of its parallel degrees (the trial's searched values
    over the fixed ``server.flags``)."""
    degrees = {dest: fixed.get(dest, 1) for dest in PARALLEL_DESTS}
    for dest, value in searched:
        if dest in degrees:
            degrees[dest] = value
    n = 1
    for value in degrees.values():
        if isinstance(value, int | float) and not isinstance(value, bool):
            n *= max(1, int(value))
    return n


def too_many_gpus(values: Mapping[str, object], gpus_on_node: int) -> str | None:
    """vLLM's refusal of a server that needs more GPUs than it sees (``values``: the server's
    flags by dest), in its words (`ParallelConfig`'s check), or None."""
    need = gpus_needed(values, ())
    if need <= gpus_on_node:
        return None
    return (f"World size ({need}) is larger than the number of available GPUs "
            f"({gpus_on_node}) in this node")  # fmt: skip


def lane_count(workers: int | None, gpus: int) -> int:
    """Trials at once: ``study.workers``, or with ``auto`` one a GPU (at least one)."""
    if workers is None:
        return max(1, gpus)
    return workers
