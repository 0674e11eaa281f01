"""How fast the TUI opens a study of 1,000 trials, and how smoothly its table scrolls.

Builds a real study database (SQLite, 1,000 finished trials with measurements, failures and
duplicates mixed in, the Pareto objective so the front is non-trivial), then:

1. opens `tui-tuner resume` on it in a real terminal (tmux, 200x60) and times from the start of
   the process until the first frame of the study is on screen (``first_frame_s``) and until
   the screen shows all 1,000 trials counted and the best one (``open_s``);
2. in the same terminal presses page-down 30 times and times each press until the screen
   changes (the table's cursor moves a page).

    .venv/bin/python bench/ui_open.py            # prints one JSON line of figures
Targets (issue 4): open in under 2 s; scrolling stays smooth (each page well under 100 ms).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.engine import measurement  # noqa: E402
from tui_tuner.core.config_load import load_config  # noqa: E402
from tui_tuner.core.trial import TrialRecord  # noqa: E402
from tui_tuner.engine.study import StudyStore, default_storage_url  # noqa: E402
from tui_tuner.study_dir import StudyDir  # noqa: E402

N = 1000
CONFIG = """
study: {name: big, n_trials: 1000, sampler: random, seed: 0}
server: {command: ["tui-tuner", "sim-serve"], model: tiny-llama}
workload: {duration_s: 5, warmup_s: 1}
objective: {kind: pareto, sla: {p95_ttft_ms: 400}}
search_space:
  max_num_seqs: {type: int, low: 1, high: 4096}
  gpu_memory_utilization: {type: float, low: 0.5, high: 0.99}
"""


def build_study(study_dir: Path) -> None:
    study_dir.mkdir(parents=True)
    (study_dir / StudyDir.CONFIG).write_text(CONFIG)
    config = load_config(study_dir / StudyDir.CONFIG)
    store = StudyStore(config, default_storage_url(study_dir))
    rng = random.Random(0)
    from optuna.trial import TrialState

    for _ in range(N):
        plan = store.ask(config.space)
        tok_s = rng.uniform(500, 5000)
        p95 = 20000 / (tok_s / 1000) * rng.uniform(0.5, 1.5)
        m = measurement(tok_s, p95_ms=p95, ttft_p95_ms=p95 / 20)
        constraints = {"p95_ttft_ms": m.ttft_p95_ms - 400, "server_failed": 0.0}
        record = TrialRecord(
            plan.number, "complete", plan.params, plan.baseline, m,
            values=(tok_s, p95), constraints=constraints,
            timings={"launching": 30.0, "total": 60.0}, command=("vllm", "serve", "m"),
        )  # fmt: skip
        store.tell(plan, record, values=[tok_s, p95], state=TrialState.COMPLETE)


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def main() -> int:
    if shutil.which("tmux") is None:
        print("tmux is needed", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="tui-open-"))
    study = work / "study"
    reuse = Path(sys.argv[1]) if len(sys.argv) > 1 else None  # a study this script built before
    t0 = time.perf_counter()
    if reuse is not None:
        shutil.copytree(reuse, study)
    else:
        build_study(study)
    build_s = time.perf_counter() - t0
    session = f"ui-open-{os.getpid()}"
    # A missing GuideLLM would stop the study before the UI; the study is finished anyway,
    # so point at any existing file: no trial will run.
    cmd = (f"cd {ROOT} && TUI_TUNER_GUIDELLM={sys.executable} {sys.executable} -m tui_tuner "
           f"resume {study}; sleep 60")  # fmt: skip
    start = time.perf_counter()
    tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "60", cmd)
    try:
        first_frame = opened = None
        while time.perf_counter() - start < 30:
            screen = tmux("capture-pane", "-p", "-t", session)
            if first_frame is None and " big " in screen and "Pause" in screen:
                first_frame = time.perf_counter() - start
            if f"trials {N}/{N}" in screen and "best #" in screen:
                opened = time.perf_counter() - start
                break
            time.sleep(0.02)
        presses = []
        for _ in range(30):
            before = tmux("capture-pane", "-p", "-t", session)
            t = time.perf_counter()
            tmux("send-keys", "-t", session, "PageDown")
            while time.perf_counter() - t < 2:
                if tmux("capture-pane", "-p", "-t", session) != before:
                    presses.append((time.perf_counter() - t) * 1000)
                    break
                time.sleep(0.005)
        tmux("send-keys", "-t", session, "q")
    finally:
        time.sleep(1)
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    figures = {
        "trials": N,
        "study_build_s": round(build_s, 2),
        "first_frame_s": None if first_frame is None else round(first_frame, 2),
        "open_s": None if opened is None else round(opened, 2),
        "page_down_ms_median": round(statistics.median(presses), 1) if presses else None,
        "page_down_ms_max": round(max(presses), 1) if presses else None,
        "pages_seen": len(presses),
    }
    print(json.dumps(figures))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
