"""What the app's own event path costs: engine events at 1,000 log lines/s through `TunerApp`.

`bench/ui_cost.py` feeds the widgets from a model directly; this one runs the real `TunerApp`
(headless, 160x48) with a scripted engine that emits what a busy trial emits: a trial start,
then server log lines at ``--rate`` per second in bursts of ten, a GuideLLM progress line every
500, and a GPU sample a second. It reports the process's CPU over ``--seconds`` (after a
warm-up) as % of one core, and the events handled. Headless means no terminal output is
written, so this is the event handling, the model and the widgets' updates, not the drawing.

    .venv/bin/python bench/ui_events.py            # one JSON line: cpu_pct, events, ...

It runs on any commit of the app that takes ``TunerApp(setup, run_engine)``, for alternating
before/after comparisons (run it with that commit's tree first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("BENCH_ROOT", Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(ROOT))

from tui_tuner.core.config import ServerSettings, StudyConfig, StudySettings  # noqa: E402
from tui_tuner.core.events import LogLine, StudyStarted, TrialStarted  # noqa: E402
from tui_tuner.ui.app import TunerApp  # noqa: E402

try:
    from tui_tuner.study_dir import StudySetup
except ImportError:  # before issue 9
    from tui_tuner.compose import StudySetup  # type: ignore[no-redef,attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(measure(Path(tmp), args))))


async def measure(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    config = StudyConfig(
        study=StudySettings(name="bench", n_trials=50), server=ServerSettings(model="m")
    )
    setup = StudySetup(config, tmp, storage_url=f"sqlite:///{tmp / 'none.db'}")
    line = "(APIServer pid=1) INFO 12-03 10:00:00 [loggers.py:275] Engine 000: " + "x" * 90
    stats: dict[str, Any] = {"emitted": 0}
    done = asyncio.Event()

    async def engine(setup: Any, emit: Any, attach: Any) -> Any:
        emit(StudyStarted("bench", "throughput", "sqlite://", str(tmp), 50, None, True, 0))
        emit(TrialStarted(0, {"max_num_seqs": 64}, False, ("vllm", "serve", "m"), str(tmp)))
        start, sent = time.perf_counter(), 0
        cpu_at: tuple[float, float] | None = None
        while True:
            await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - start
            if cpu_at is None and elapsed >= args.warmup:
                cpu_at, stats["emitted"] = (time.process_time(), time.perf_counter()), 0
            if elapsed >= args.warmup + args.seconds:
                assert cpu_at is not None
                cpu = time.process_time() - cpu_at[0]
                stats["cpu_pct"] = round(100 * cpu / (time.perf_counter() - cpu_at[1]), 1)
                done.set()
                await asyncio.Event().wait()  # until the app leaves
            due = int(elapsed * args.rate)
            for i in range(sent, due):
                emit(LogLine(0, "server", f"{line} {i}"))
                if i % 500 == 0:
                    emit(LogLine(0, "guidellm", f"progress: {i} lines so far"))
            stats["emitted"] += due - sent
            sent = due

    app = TunerApp(setup, engine)
    async with app.run_test(size=(160, 48)) as pilot:
        await done.wait()
        await pilot.pause(0.2)
        stats["lines_in_model"] = len(app.model.log(0, "server").lines)
    stats["rate"], stats["seconds"] = args.rate, args.seconds
    return stats


if __name__ == "__main__":
    main()
