"""What the tuner sees of the hardware and of the serving process while a study runs.

Two sources, kept apart because they answer different questions. NVML says what the cards are
doing (``GpuState``: utilisation, memory, power, temperature); the server's own ``/metrics`` say
what vLLM is doing with them (``ServerFigures``: KV-cache usage, running and waiting requests,
generation tok/s). On the simulated server the second source is all there is, and it says so
(``simulated``), so nobody reads a simulated figure as a measurement.

Plain data: the samplers that fill these live in ``adapters/`` behind ``engine/ports.py``, and
the composition turns their readings into events (``core/events.py``) that any display reads.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GpuSample", "GpuState", "ServerFigures"]


@dataclass(frozen=True)
class GpuSample:
    """One GPU at one moment. A float field NVML could not read is NaN; power and temperature
    are None when the device does not report them (common on consumer cards and in VMs)."""

    index: int
    name: str
    util_pct: float
    mem_used_mib: float
    mem_total_mib: float
    power_w: float | None
    temp_c: float | None


@dataclass(frozen=True)
class GpuState:
    """All GPUs, or ``available=False`` with the reason a user reads in the GPU panel."""

    available: bool
    reason: str
    samples: tuple[GpuSample, ...]


@dataclass(frozen=True)
class ServerFigures:
    """What a server says about itself through ``/metrics``: a real vLLM's figures
    (``simulated=False``) or the simulated server's stand-in for the GPU it simulates. None in a
    field means the server does not report that figure."""

    simulated: bool
    #: The simulated GPU, or the simulator profile when the server does not name the GPU.
    gpu_name: str
    kv_cache_usage_pct: float | None
    running: int | None
    waiting: int | None
    #: Generated tokens per second since the previous scrape (None on the first one).
    generation_tok_s: float | None
    #: The raw counter and when it was read, so the next scrape can take the difference.
    generation_tokens_total: float | None
    at: float
    engines: int = 1
    #: Seconds the simulator lags its schedule; above ~0 its figures are distorted.
    sim_lag_s: float | None = None
