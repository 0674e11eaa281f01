"""A study's wall time with 1, 2 and 4 trials side by side (``--workers N`` on a simulated node).

Runs one headless 24-trial study (``tui-tuner tune``) per number of workers on the simulated
server, time-scaled, with the same space, sampler and seed, on a simulated node with as many
GPUs as workers (``--sim-gpus N``): a 7B model on 24 GB cards with long prompts (the space of
``bench/study_time.py``, where the defaults are far from the best), its start-up about 60 s and
its window 60 s, both divided by ``--time-scale``. With ``--rounds 2`` the order of the
worker counts is reversed in the second round, so that drift on the machine hits all alike.

Per number of workers: the wall time (from the tuner's start to its exit), the trials, and the
best the study found: its own figure (``best_output_tok_s``) and the worth of that
configuration, the mean of every measurement of it in this bench run (all studies), so that a
lucky run does not make a best. The speed-up is the 1-worker wall time over the N-worker one.

Each lane runs its own GuideLLM: on a machine with few cores, the load generators of 4 lanes
compete for them (the figures say so: GuideLLM's client-limited flag is counted), which a node
with GPUs does not see in the same way; the simulated servers use little CPU.

    .venv/bin/python bench/scale_out.py --trials 24 --time-scale 10 [--rounds 2] [--json]

``--json`` prints one JSON object as the last line:
``{"workers": {"1": {"wall_s": float, "best_output_tok_s": float, "trials": int}, ...}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.study_time import key, measured  # noqa: E402
from bench.trial_overhead import SIM_PROFILE, TINY  # noqa: E402
from tui_tuner.adapters.guidellm import find_guidellm  # noqa: E402
from tui_tuner.core.config_load import load_config  # noqa: E402
from tui_tuner.core.trial import TrialRecord  # noqa: E402
from tui_tuner.engine.study import StudyStore, default_storage_url  # noqa: E402
from tui_tuner.study_dir import StudyDir, saved_overrides  # noqa: E402


def config_for(work: Path, name: str, seed: int, scale: float) -> Path:
    profile = work / "profile.yaml"
    profile.write_text(SIM_PROFILE.replace("llama-8b-h100", "llama-7b-24gb"))
    args = ["--sim-profile-file", str(profile), "--sim-time-scale", str(scale),
            "--sim-startup-scale", str(scale)]  # fmt: skip
    path = work / f"{name}.yaml"
    path.write_text(f"""
study: {{name: {name}, sampler: auto, seed: {seed}, n_trials: 24, noise_repeats: 3,
        remeasure_top: 3}}
server:
  command: ["{sys.executable}", "-m", "tui_tuner", "sim-serve"]
  model: {TINY}
  extra_args: {json.dumps(args)}
  flags: {{max_model_len: 4096}}
  startup_timeout_s: 300
workload: {{prompt_tokens: 3072, output_tokens: 128, streams: 16, duration_s: {60 / scale:g},
           warmup_s: 0}}
search_space:
  max_num_batched_tokens: {{options: [256, 512, 768, 1024, 1536, 2048, 3072, 4096, 8192]}}
  enable_chunked_prefill: {{type: bool}}
  gpu_memory_utilization: {{type: float, low: 0.82, high: 0.97, step: 0.03}}
  kv_cache_dtype: {{options: [auto, fp8]}}
  max_num_seqs: {{type: int, low: 2, high: 16, step: 2}}
""")
    return path


def run_study(
    config: Path, study_dir: Path, workers: int, trials: int, guidellm: Path
) -> tuple[float, list[TrialRecord]]:
    cmd = [sys.executable, "-m", "tui_tuner", "tune", str(config), "--headless", "--study-dir",
           str(study_dir), "--trials", str(trials), "--workers", str(workers), "--sim-gpus",
           str(workers), "--guidellm", str(guidellm)]  # fmt: skip
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    if done.returncode != 0:
        sys.exit(f"{config.name} failed (exit {done.returncode}):\n{done.stdout[-3000:]}")
    cfg = load_config(study_dir / StudyDir.CONFIG, saved_overrides(study_dir))
    return wall, StudyStore(cfg, default_storage_url(study_dir)).records()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--workers", default="1,2,4", help="the numbers of workers to compare")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-scale", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--guidellm", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    guidellm = find_guidellm(str(args.guidellm) if args.guidellm else None)
    if not TINY.exists():
        from tui_tuner.sim.tiny_model import ensure_tiny_model

        ensure_tiny_model(TINY)
    work = Path(tempfile.mkdtemp(prefix="scale-out-"))
    counts = [int(w) for w in args.workers.split(",")]
    studies: dict[int, list[tuple[float, list[TrialRecord]]]] = defaultdict(list)
    for round_ in range(args.rounds):
        for workers in counts if round_ % 2 == 0 else counts[::-1]:
            name = f"w{workers}-r{round_}"
            config = config_for(work, name, args.seed, args.time_scale)
            wall, records = run_study(config, work / name, workers, args.trials, guidellm)
            studies[workers].append((wall, records))
            print(f"{workers} worker(s), round {round_ + 1}: {wall:.0f} s", file=sys.stderr)
    runs: dict[str, list[float]] = defaultdict(list)  # every measurement of a configuration
    for pairs in studies.values():
        for _, records in pairs:
            for r in records:
                if (v := measured(r)) is not None:
                    runs[key(r)].append(v)
    worth = {k: statistics.mean(v) for k, v in runs.items()}
    result: dict[str, dict[str, dict[str, float | int | None]]] = {"workers": {}}
    one = statistics.median(wall for wall, _ in studies[counts[0]])
    print(f"{'workers':>7} {'wall s':>8} {'speed-up':>8} {'trials':>6} {'best tok/s':>10} "
          f"{'its worth':>9} {'client-limited':>14}")  # fmt: skip
    for workers in counts:
        walls = [wall for wall, _ in studies[workers]]
        bests, worths, limited, trials = [], [], 0, 0
        for _, records in studies[workers]:
            done = [r for r in records if measured(r) is not None]
            top = max(done, key=lambda r: measured(r) or 0.0)
            bests.append(measured(top) or 0.0)
            worths.append(worth[key(top)])
            limited += sum(r.client_limited for r in done)
            trials = max(trials, sum(r.state in ("complete", "failed", "pruned") for r in records))
        wall = statistics.median(walls)
        row = {
            "wall_s": round(wall, 1),
            "wall_s_runs": [round(w, 1) for w in walls],  # type: ignore[dict-item]
            "speed_up": round(one / wall, 2),
            "best_output_tok_s": round(statistics.median(bests), 1),
            "best_worth_tok_s": round(statistics.median(worths), 1),
            "trials": trials,
            "client_limited": limited,
        }
        result["workers"][str(workers)] = row
        best, its_worth = row["best_output_tok_s"], row["best_worth_tok_s"]
        print(f"{workers:>7} {wall:>8.0f} {row['speed_up']:>8} {trials:>6} {best:>10} "
              f"{its_worth:>9} {limited:>14}")  # fmt: skip
    print("figures from the SIMULATED server (time scale "
          f"{args.time_scale:g}); the walls are the median of {args.rounds} round(s)")  # fmt: skip
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
