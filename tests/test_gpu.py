"""NVML adapter: the real no-GPU path on this machine, and a fake `pynvml` for the rest."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from tui_tuner.adapters.gpu import NvmlGpus, wait_memory_released

GIB = 1024**3


class NVMLError(Exception):
    pass


@dataclass
class FakeNvml:
    """Enough of pynvml's surface: two GPUs, processes per GPU, failures on demand."""

    names: tuple[object, ...] = ("NVIDIA H100 80GB HBM3", b"NVIDIA A10")
    compute: dict[int, list[SimpleNamespace]] = field(default_factory=dict)
    graphics: dict[int, list[SimpleNamespace]] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)
    init_error: Exception | None = None
    shutdowns: int = 0
    NVML_TEMPERATURE_GPU: int = 0
    NVMLError: type[Exception] = NVMLError

    def _check(self, name: str) -> None:
        if name in self.broken:
            raise NVMLError(f"{name}: Not Supported")

    def nvmlInit(self) -> None:
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.names)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> object:
        return self.names[h]

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        self._check("util")
        return SimpleNamespace(gpu=37 + h, memory=12)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        self._check("memory")
        return SimpleNamespace(total=80 * GIB, used=2 * GIB + h * GIB, free=78 * GIB)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        self._check("power")
        return 251_500  # milliwatts

    def nvmlDeviceGetTemperatureV(self, h: int, sensor: int) -> int:
        self._check("temperature_v")
        return 61

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        self._check("temperature")
        return 59

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        self._check("compute")
        return self.compute.get(h, [])

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        return self.graphics.get(h, [])


def _proc(pid: int, gib: float | None) -> SimpleNamespace:
    return SimpleNamespace(pid=pid, usedGpuMemory=None if gib is None else int(gib * GIB))


def test_no_gpu_on_this_machine() -> None:
    gpus = NvmlGpus()
    state = gpus.sample()
    if state.available:
        pytest.skip("this machine has an NVIDIA GPU")
    assert state.samples == ()
    assert state.reason.startswith("no NVIDIA GPU found (NVML: ")
    assert gpus.memory_held_by([1, 2]) == 0
    gpus.close()
    gpus.close()


def test_no_gpu_reason_names_nvml_library() -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("NVML is present here")
    reason = NvmlGpus().sample().reason
    assert reason == "no NVIDIA GPU found (NVML: NVML Shared Library Not Found)"


async def test_wait_without_nvml_returns_at_once() -> None:
    start = time.monotonic()
    assert await wait_memory_released(NvmlGpus(FakeNvml(init_error=NVMLError("x"))), [1], 5) == (
        True,
        0.0,
    )
    assert time.monotonic() - start < 0.5


def test_missing_bindings_and_no_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    assert "nvidia-ml-py" in NvmlGpus().reason
    fake = FakeNvml(names=())
    gpus = NvmlGpus(fake)
    assert not gpus.available
    assert gpus.reason == "no NVIDIA GPU found (NVML lists no devices)"
    assert fake.shutdowns == 1


def test_init_failure_is_remembered_not_raised() -> None:
    gpus = NvmlGpus(FakeNvml(init_error=NVMLError("Driver Not Loaded")))
    assert gpus.sample().reason == "no NVIDIA GPU found (NVML: Driver Not Loaded)"
    assert gpus.memory_held_by([1]) == 0


def test_sampling_converts_units(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)  # the default path imports pynvml
    state = NvmlGpus().sample()
    assert state.available and state.reason == ""
    first, second = state.samples
    assert (first.index, first.name, second.name) == (0, "NVIDIA H100 80GB HBM3", "NVIDIA A10")
    assert (first.util_pct, second.util_pct) == (37.0, 38.0)
    assert (first.mem_used_mib, first.mem_total_mib) == (2048.0, 81920.0)
    assert second.mem_used_mib == 3072.0
    assert first.power_w == pytest.approx(251.5)
    assert first.temp_c == 61.0


def test_temperature_falls_back_and_failed_fields_blank() -> None:
    fake = FakeNvml(broken={"temperature_v", "power"})
    gpus = NvmlGpus(fake)
    sample = gpus.sample().samples[0]
    assert sample.temp_c == 59.0
    assert sample.power_w is None
    fake.broken |= {"temperature", "util", "memory"}
    sample = gpus.sample().samples[0]
    assert sample.temp_c is None
    assert math.isnan(sample.util_pct) and math.isnan(sample.mem_used_mib)
    assert math.isnan(sample.mem_total_mib)


def test_temperature_without_the_v_call() -> None:
    class OldBindings(FakeNvml):
        nvmlDeviceGetTemperatureV = None  # type: ignore[assignment]  # older bindings lack it

    assert NvmlGpus(OldBindings()).sample().samples[0].temp_c == 59.0


def test_memory_held_by_sums_over_gpus_and_counts_each_process_once() -> None:
    fake = FakeNvml(
        compute={0: [_proc(10, 20), _proc(99, 5)], 1: [_proc(11, 1.5)]},
        graphics={0: [_proc(10, 20), _proc(12, None)]},
    )
    gpus = NvmlGpus(fake)
    assert gpus.memory_held_by([10, 11]) == int(21.5 * GIB)
    assert gpus.memory_held_by([12]) == 0  # listed, usage unknown
    assert gpus.memory_held_by([]) == 0
    fake.broken.add("compute")
    assert gpus.memory_held_by([10, 11]) == 20 * GIB  # graphics list still answers


async def test_wait_memory_released_after_the_fake_frees_it() -> None:
    fake = FakeNvml(compute={0: [_proc(10, 20)]}, graphics={1: [_proc(11, None)]})
    gpus = NvmlGpus(fake)
    calls = 0
    original = fake.nvmlDeviceGetComputeRunningProcesses

    def freeing(h: int) -> list[Any]:
        nonlocal calls
        calls += 1
        if calls == 5:  # the driver frees both processes a little later
            fake.compute.clear()
            fake.graphics.clear()
        return original(h)

    fake.nvmlDeviceGetComputeRunningProcesses = freeing  # type: ignore[method-assign]
    released, waited = await wait_memory_released(gpus, [10, 11], timeout_s=5, poll_s=0.01)
    assert released
    assert 0 < waited < 2
    assert gpus.memory_held_by([10]) == 0


async def test_wait_memory_released_times_out() -> None:
    gpus = NvmlGpus(FakeNvml(compute={0: [_proc(10, 20)]}))
    released, waited = await wait_memory_released(gpus, [10], timeout_s=0.1, poll_s=0.02)
    assert not released
    assert 0.1 <= waited < 1


def test_close_shuts_nvml_down_once() -> None:
    fake = FakeNvml()
    gpus = NvmlGpus(fake)
    gpus.close()
    gpus.close()
    assert fake.shutdowns == 1
    assert not gpus.sample().available
    assert gpus.memory_held_by([1]) == 0
