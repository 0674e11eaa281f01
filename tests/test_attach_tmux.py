"""`tui-tuner attach` in a real terminal (tmux), on a `tui-tuner tune` run by another process.

The tuner runs headless (as a worker on another machine would); the attached TUI pauses it,
prunes its running trial, resumes it, and quits, which leaves the tuner running to its end.
What the tuner obeyed is read from its own event stream, what the user sees from the screen.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fakes.studies import records, sim_study, start, tuner
from tests.test_attach import open_when_there
from tests.test_tui_tmux import Tmux

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(400),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    name = f"tui-tuner-attach-{tmp_path.name}"
    session = Tmux(name)
    yield session
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True)


def events_of(jsonl: Path) -> list[dict[str, object]]:
    if not jsonl.exists():
        return []
    return [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]


def wait_event(jsonl: Path, check: object, timeout: float, what: str) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in events_of(jsonl):
            if check(event):  # type: ignore[operator]
                return event
        time.sleep(0.1)
    raise AssertionError(f"the tuner never emitted {what}")


def test_an_attached_tui_pauses_and_prunes_a_running_tune_and_quits_without_stopping_it(
    tmux: Tmux, tmp_path: Path, tiny_model: Path
) -> None:
    config = sim_study(tmp_path, tiny_model, name="remote", study="n_trials: 4",
                       options=[8, 16, 32], duration_s=8)  # fmt: skip
    study_dir, jsonl, done = tmp_path / "study", tmp_path / "events.jsonl", tmp_path / "exit"
    proc = start(tuner("tune", config, "--study-dir", str(study_dir), "--events-jsonl", str(jsonl)))
    try:
        open_when_there(study_dir, proc)
        command = (f"cd {ROOT} && {sys.executable} -m tui_tuner attach {study_dir}/study.db; "
                   f"echo $? > {done}; sleep 30")  # fmt: skip
        tmux.start(command, 120, 32)
        screen = tmux.wait_for(lambda s: "remote" in s and "q Quit" in s, 30, "the attached TUI")
        footer = next(line for line in reversed(screen.splitlines()) if "q Quit" in line)
        # The footer offers what an attached display does, and only that.
        assert "S Stop all" in footer and "q Quit" in footer and "Edit" not in footer, footer
        running = wait_event(jsonl, lambda e: e["kind"] == "trial_phase"
                             and e["phase"] == "warmup", 90, "a trial's warmup")  # fmt: skip
        number = running["number"]
        # The attached screen shows it running, with its server's shared log.
        tmux.wait_for(lambda s: f"vLLM log · trial {number} (running)" in s and "INFO" in s
                      and ("warmup" in s or "measuring" in s), 20,
                      "the shared server log and phase")  # fmt: skip
        pressed = time.monotonic()
        tmux.keys("p")
        wait_event(jsonl, lambda e: e["kind"] == "study_state" and e["state"] == "paused",
                   5, "a pause")  # fmt: skip
        assert time.monotonic() - pressed < 2.5  # the key, the request, the worker's read
        tmux.keys("x")
        tmux.wait_for(lambda s: f"Prune trial {number}" in s, 10, "the prune confirmation")
        tmux.keys("y")
        wait_event(jsonl, lambda e: e["kind"] == "trial_finished"
                   and e["record"]["number"] == number, 30, "the pruned trial")  # fmt: skip
        tmux.wait_for(lambda s: "pruned" in s and "paused" in s, 10, "the row pruned, paused")
        tmux.keys("p")
        wait_event(jsonl, lambda e: e["kind"] == "study_state" and e["state"] == "running",
                   5, "a resume")  # fmt: skip
        tmux.keys("q")
        tmux.wait_for(lambda _: done.exists(), 30, "the attached TUI to exit")
        assert done.read_text().strip() == "0"
        assert "its workers go on" in tmux.screen()
        out = proc.communicate(timeout=200)[0]  # the tuner goes on to its budget
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    assert records(study_dir)[number].state == "pruned"
    assert not any(e["kind"] == "study_state" and e["state"] == "stopping"
                   for e in events_of(jsonl))  # fmt: skip
