"""Where a trial's seconds go: server start-up, the load generator, teardown, and the tuner's own.

Runs a demo study on the simulated server (or reads a study that already ran) and prints, per
trial, the phase timings the engine recorded, and the seconds that are the tuner's own work:
everything that is not server start-up, the load generator's run or the teardown, including the
gap between one trial's end and the next one's start (storage writes, the sampler's ask).

    .venv/bin/python bench/trial_overhead.py --trials 4           # runs a demo study first
    .venv/bin/python bench/trial_overhead.py --study-dir studies/x  # reads an existing one
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tui_tuner.core.config_load import load_config
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.study_dir import StudyDir, saved_overrides


def run_demo(trials: int, work: Path) -> Path:
    study_dir = work / "study"
    cmd = [sys.executable, "-m", "tui_tuner", "demo", "--headless", "--trials", str(trials),
           "--study-dir", str(study_dir), "--events-jsonl", str(work / "events.jsonl")]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return study_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--study-dir", type=Path, default=None)
    args = parser.parse_args()
    study_dir = args.study_dir or run_demo(args.trials, Path(tempfile.mkdtemp()))
    config = load_config(study_dir / StudyDir.CONFIG, saved_overrides(study_dir))
    records = StudyStore(config, default_storage_url(study_dir)).records()
    ran = [r for r in records if r.timings and r.started_at and r.finished_at]
    rows = []
    print(f"{'trial':>5} {'state':<22} {'start-up':>8} {'smoke':>6} {'load gen':>8} "
          f"{'window':>6} {'teardown':>8} {'total':>6} {'tuner':>6} {'gap':>5}")  # fmt: skip
    for prev, r in zip([None, *ran], ran, strict=False):
        t = r.timings
        gap = r.started_at - prev.finished_at if prev and prev.finished_at and r.started_at else 0.0
        known = t.get("launching", 0) + t.get("load_generator_s", 0) + t.get("teardown", 0)
        own = t.get("total", 0) - known + gap
        rows.append((t, own, gap))
        print(
            f"{r.number:>5} {r.label:<22} {t.get('launching', 0):8.2f} {t.get('ready', 0):6.2f} "
            f"{t.get('load_generator_s', 0):8.2f} {t.get('load_window_s', 0):6.2f} "
            f"{t.get('teardown', 0):8.2f} {t.get('total', 0):6.2f} {own:6.2f} {gap:5.2f}"
        )
    if rows:
        own = [o for _, o, _ in rows]
        totals = [t.get("total", 0.0) for t, _, _ in rows]
        print(
            json.dumps(
                {
                    "trials": len(rows),
                    "tuner_own_s_mean": round(statistics.mean(own), 3),
                    "tuner_own_s_max": round(max(own), 3),
                    "total_s_mean": round(statistics.mean(totals), 3),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
