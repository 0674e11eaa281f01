"""NVIDIA GPU telemetry through NVML, and a clear "no NVIDIA GPU" state when there is none.

The tuner needs NVML for two things: the GPU panel (utilisation, memory, power, temperature) and
the teardown check that a stopped server's processes no longer hold GPU memory, so the next
trial does not start on a half-occupied card and fail as `gpu_busy`. Neither may break a study:
without NVML (no driver, no library, a laptop running the simulator) sampling reports why, and
the memory check passes at once. One failing NVML call blanks its field, not the whole sample.

NVML calls block briefly (a few ms; longer on a busy driver), so async callers run them in a
thread, as `wait_memory_released` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from tui_tuner.core.errors import UserError
from tui_tuner.core.telemetry import GpuSample, GpuState

__all__ = ["NvmlGpus", "wait_memory_released"]

_MIB = 1024 * 1024


class NvmlGpus:
    """NVML, initialised once. Never raises: without NVML every call answers "no GPU".

    `nvml` is the module to use (tests pass a fake); by default `pynvml` from nvidia-ml-py.
    """

    def __init__(self, nvml: Any | None = None) -> None:
        self._nvml: Any = nvml
        self._handles: list[Any] = []
        self._names: list[str] = []
        self._lock = threading.Lock()
        self._initialised = False
        self.reason = ""
        try:
            if self._nvml is None:
                import pynvml

                self._nvml = pynvml
            self._nvml.nvmlInit()
            self._initialised = True
            count = int(self._nvml.nvmlDeviceGetCount())
            self._handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._names = [_text(self._nvml.nvmlDeviceGetName(h)) for h in self._handles]
        except ImportError:
            self.reason = "no GPU telemetry: the NVML bindings (nvidia-ml-py) are not installed"
        except Exception as err:  # NVMLError and its subclasses, or ctypes failing to load
            self.reason = f"no NVIDIA GPU found (NVML: {err})"
        if not self.reason and not self._handles:
            self.reason = "no NVIDIA GPU found (NVML lists no devices)"
        if self.reason:
            self.close()

    @property
    def available(self) -> bool:
        return not self.reason

    @property
    def count(self) -> int:
        """GPUs NVML lists (0 without NVML)."""
        return len(self._handles)

    def sample(self) -> GpuState:
        """Read every GPU now. Blocking but cheap; call it from a thread in async code."""
        with self._lock:
            if not self.available:
                return GpuState(False, self.reason, ())
            samples = tuple(self._sample(i, h) for i, h in enumerate(self._handles))
        return GpuState(True, "", samples)

    def _sample(self, index: int, handle: Any) -> GpuSample:
        nvml = self._nvml
        rates = _read(nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = _read(nvml.nvmlDeviceGetMemoryInfo, handle)
        power_mw = _read(nvml.nvmlDeviceGetPowerUsage, handle)
        return GpuSample(
            index=index,
            name=self._names[index],
            util_pct=math.nan if rates is None else float(rates.gpu),
            mem_used_mib=math.nan if memory is None else memory.used / _MIB,
            mem_total_mib=math.nan if memory is None else memory.total / _MIB,
            power_w=None if power_mw is None else float(power_mw) / 1000.0,
            temp_c=self._temperature(handle),
        )

    def _temperature(self, handle: Any) -> float | None:
        """nvmlDeviceGetTemperatureV replaces the deprecated call but needs a newer driver (and
        a newer nvidia-ml-py), so fall back to nvmlDeviceGetTemperature."""
        nvml = self._nvml
        sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
        get_v = getattr(nvml, "nvmlDeviceGetTemperatureV", None)
        value = None if get_v is None else _read(get_v, handle, sensor)
        if value is None:
            value = _read(nvml.nvmlDeviceGetTemperature, handle, sensor)
        return None if value is None else float(value)

    def memory_held_by(self, pids: Collection[int]) -> int:
        """Bytes of GPU memory that NVML attributes to `pids`, over all GPUs; 0 without NVML.

        Pass every process of the server (vLLM's memory is held by its engine and worker
        children, not the API server). NVML reports host pids, so inside a container without
        the host's pid namespace nothing matches and this returns 0.
        """
        return self._held(pids)[0]

    def _held(self, pids: Collection[int]) -> tuple[int, bool]:
        """(bytes, whether any of `pids` is still listed): a listed process whose usage NVML
        cannot read (None, e.g. under WDDM or MIG) still holds the GPU."""
        wanted = set(pids)
        if not wanted:
            return 0, False
        with self._lock:
            if not self.available:
                return 0, False
            per_process: dict[tuple[int, int], int] = {}
            for index, handle in enumerate(self._handles):
                for getter in (
                    "nvmlDeviceGetComputeRunningProcesses",
                    "nvmlDeviceGetGraphicsRunningProcesses",
                ):
                    call = getattr(self._nvml, getter, None)
                    procs = None if call is None else _read(call, handle)
                    for proc in procs or ():
                        if proc.pid in wanted:  # a process may be in both lists: count once
                            used = int(getattr(proc, "usedGpuMemory", None) or 0)
                            key = (index, int(proc.pid))
                            per_process[key] = max(per_process.get(key, 0), used)
        return sum(per_process.values()), bool(per_process)

    def close(self) -> None:
        """Shut NVML down; later calls answer "no GPU". Safe to call twice."""
        with self._lock:
            if self._initialised:
                self._initialised = False
                with contextlib.suppress(Exception):
                    self._nvml.nvmlShutdown()
            self._handles = []
            if not self.reason:
                self.reason = "NVML was closed"


async def wait_memory_released(
    gpus: NvmlGpus,
    pids: Collection[int],
    timeout_s: float,
    poll_s: float = 0.5,
    first_poll_s: float = 0.02,
) -> tuple[bool, float]:
    """Poll until no GPU memory is held by `pids`: (released, seconds waited).

    The driver frees a killed process's memory a moment after the process is gone, and a trial
    started before that can fail as `gpu_busy`. Usually that moment is a few milliseconds, so
    the first look comes after `first_poll_s` and the interval doubles up to `poll_s`: a quick
    release costs no fixed half second per trial, a slow one is not polled hundreds of times.
    Without NVML there is nothing to check, so this returns (True, 0.0) at once.
    """
    if not gpus.available or not pids:
        return True, 0.0
    start = time.monotonic()
    interval = min(first_poll_s, poll_s)
    while True:
        _, listed = await asyncio.to_thread(gpus._held, pids)
        waited = time.monotonic() - start
        if not listed:
            return True, waited
        if waited >= timeout_s:
            return False, waited
        await asyncio.sleep(max(0.0, min(interval, timeout_s - waited)))
        interval = min(interval * 2, poll_s)


def _read(call: Callable[..., Any], *args: Any) -> Any | None:
    """One NVML call; an error (not supported, GPU lost, ...) means "unknown", never a crash."""
    try:
        return call(*args)
    except Exception:  # pynvml raises NVMLError subclasses; fakes and ctypes may raise others
        return None


def _text(value: object) -> str:
    """nvmlDeviceGetName returns str in current bindings, bytes in old ones."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def visible_gpus(count: int, environ: Mapping[str, str] | None = None) -> tuple[int, ...]:
    """The GPUs (NVML indices) this process may hand out: those of its own
    ``CUDA_VISIBLE_DEVICES`` when set (indices only; GPUs named by UUID cannot be matched to
    NVML's indices here: a UserError says to list them in ``server.gpus``), else all ``count``."""
    text = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if text is None:
        return tuple(range(count))
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not all(item.isdigit() for item in items):
        raise UserError(
            f"the tuner's CUDA_VISIBLE_DEVICES ({text}) names GPUs other than by index; "
            "list the indices to hand out in server.gpus"
        )
    return tuple(int(item) for item in items if int(item) < count)
