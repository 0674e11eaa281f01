"""A whole study's wall time to a near-best configuration, tui-tuner against the predecessor's way.

Runs whole headless studies (``tui-tuner tune``) on the simulated server, time-scaled, on the
same space and seeds (the long-prompt space of ``bench/search-long-24gb.yaml``: a 7B model on a
24 GB card, where the defaults are far from the best and few configurations come near it), one
way after the other for each seed (so that drift on the machine hits all ways alike):

- ``predecessor``: the predecessor's way inside this tuner: ``sampler: tpe``, a cold
  ``guidellm run`` CLI per trial (``workload.load_generator: cli``), no fast start. Its fixed
  sleep after start-up is left out, so this way is if anything faster than the predecessor was;
- ``tui-tuner``: the defaults (``sampler: auto``, the warm GuideLLM worker);
- ``tui-tuner-fast``: the defaults and ``server.fast_start: true``;
- ``tui-tuner-fast-no-early-stop``: the same with ``study.early_stop: false`` (the predecessor's
  way has none either).

The early stop (``core/early_stop.py``) judges GuideLLM's progress records, which come every
10 s of real time whatever the time scale, past 10 s of load: it can only fire on a load window
of about 25 s or more. ``--window-s`` sets the window apart from the time scale (default
``60 / --time-scale``, on which it never fires); compare it on and off with, say,
``--window-s 60 --noise-repeats 2 --ways tui-tuner-fast,tui-tuner-fast-no-early-stop`` (the
measured noise is what lets it judge early; it assumes 10% without).

A configuration's worth is the mean of every measurement of it in this run (all ways, all
seeds); the best is the highest worth. Per study: the trials and the wall time (from the first
trial's start) until it finished a trial of a configuration worth 98% of the best, and its total
wall time. The simulated server's figures are simulated: they rank configurations the way its
performance model does, not a real GPU.

    .venv/bin/python bench/study_time.py --trials 10 --seeds 0,1 [--window-s 40] [--json]
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

from bench.trial_overhead import SIM_PROFILE, TINY  # noqa: E402
from tui_tuner.adapters.guidellm import find_guidellm  # noqa: E402
from tui_tuner.core.config_load import load_config  # noqa: E402
from tui_tuner.core.space import params_key  # noqa: E402
from tui_tuner.core.trial import TrialRecord  # noqa: E402
from tui_tuner.engine.study import StudyStore, default_storage_url  # noqa: E402
from tui_tuner.study_dir import StudyDir, saved_overrides  # noqa: E402

WAYS = {
    "predecessor": {"sampler": "tpe", "load": "load_generator: cli, ", "server": "",
                    "study": ", early_stop: false"},
    "tui-tuner": {"sampler": "auto", "load": "", "server": "", "study": ""},
    "tui-tuner-fast": {"sampler": "auto", "load": "", "server": "fast_start: true", "study": ""},
    "tui-tuner-fast-no-early-stop": {"sampler": "auto", "load": "", "server": "fast_start: true",
                                     "study": ", early_stop: false"},
}  # fmt: skip


def config_for(
    work: Path,
    way: str,
    seed: int,
    trials: int,
    scale: float,
    window_s: float | None = None,
    noise_repeats: int | None = None,
) -> Path:
    profile = work / "profile.yaml"
    profile.write_text(SIM_PROFILE.replace("llama-8b-h100", "llama-7b-24gb"))
    w = WAYS[way]
    extra = w["study"] + ("" if noise_repeats is None else f", noise_repeats: {noise_repeats}")
    args = ["--sim-profile-file", str(profile), "--sim-time-scale", str(scale),
            "--sim-startup-scale", str(scale)]  # fmt: skip
    path = work / f"{way}-{seed}.yaml"
    path.write_text(f"""
study: {{name: {way}-{seed}, sampler: {w["sampler"]}, seed: {seed}, n_trials: {trials}{extra}}}
server:
  command: ["{sys.executable}", "-m", "tui_tuner", "sim-serve"]
  model: {TINY}
  extra_args: {json.dumps(args)}
  flags: {{max_model_len: 4096}}
  startup_timeout_s: 300
  {w["server"]}
workload: {{{w["load"]}prompt_tokens: 3072, output_tokens: 128, streams: 16,
           duration_s: {window_s or 60 / scale:g}, warmup_s: 0}}
search_space:
  max_num_batched_tokens: {{options: [256, 512, 768, 1024, 1536, 2048, 3072, 4096, 8192]}}
  enable_chunked_prefill: {{type: bool}}
  gpu_memory_utilization: {{type: float, low: 0.82, high: 0.97, step: 0.03}}
  kv_cache_dtype: {{options: [auto, fp8]}}
  max_num_seqs: {{type: int, low: 2, high: 16, step: 2}}
""")
    return path


def run_study(config: Path, study_dir: Path, trials: int, guidellm: Path) -> list[TrialRecord]:
    cmd = [sys.executable, "-m", "tui_tuner", "tune", str(config), "--headless", "--study-dir",
           str(study_dir), "--trials", str(trials), "--guidellm", str(guidellm)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{config.name} failed (exit {done.returncode}):\n{done.stdout[-3000:]}")
    cfg = load_config(study_dir / StudyDir.CONFIG, saved_overrides(study_dir))
    return StudyStore(cfg, default_storage_url(study_dir)).records()


def key(r: TrialRecord) -> str:
    return "baseline" if r.baseline else params_key(r.params)


def measured(r: TrialRecord) -> float | None:
    ok = r.state == "complete" and r.measurement is not None and r.failure is None
    return r.measurement.output_tok_s if ok and r.measurement is not None else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--time-scale", type=float, default=8.0)
    parser.add_argument("--window-s", type=float, default=None, help="load window (60/scale)")
    parser.add_argument("--noise-repeats", type=int, default=None, help="the baseline's runs")
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--guidellm", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    guidellm = find_guidellm(str(args.guidellm) if args.guidellm else None)
    if not TINY.exists():
        from tui_tuner.sim.tiny_model import ensure_tiny_model

        ensure_tiny_model(TINY)
    work = Path(tempfile.mkdtemp(prefix="study-time-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    ways = args.ways.split(",")
    studies: dict[tuple[str, int], list[TrialRecord]] = {}
    for seed in seeds:
        for way in ways:
            t0 = time.monotonic()
            config = config_for(work, way, seed, args.trials, args.time_scale, args.window_s,
                                args.noise_repeats)  # fmt: skip
            studies[way, seed] = run_study(config, work / f"{way}-{seed}", args.trials, guidellm)
            print(f"{way} seed {seed}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    runs: dict[str, list[float]] = defaultdict(list)
    for records in studies.values():
        for r in records:
            if (v := measured(r)) is not None:
                runs[key(r)].append(v)
    worth = {k: statistics.mean(v) for k, v in runs.items()}
    best = max(worth.values())
    rows: dict[str, list[dict[str, float | int | None]]] = defaultdict(list)
    print(f"best worth {best:.0f} output tok/s (simulated), 98% = {0.98 * best:.0f}")
    print(f"{'way':<28} {'seed':>4} {'trials to 98%':>13} {'wall to 98%':>11} {'wall':>7} "
          f"{'stopped early':>13}")  # fmt: skip
    for (way, seed), records in studies.items():
        ran = sorted((r for r in records if r.started_at and r.finished_at),
                     key=lambda r: r.finished_at or 0.0)  # fmt: skip
        start = min(r.started_at or 0.0 for r in ran)
        near = [
            i for i, r in enumerate(ran) if measured(r) is not None and worth[key(r)] >= 0.98 * best
        ]
        reach = (near[0] + 1, ran[near[0]]) if near else None
        row = {
            "seed": seed,
            "trials_to_98": reach[0] if reach else None,
            "wall_to_98_s": round((reach[1].finished_at or 0.0) - start, 1) if reach else None,
            "wall_s": round(max(r.finished_at or 0.0 for r in ran) - start, 1),
            "stopped_early": sum(r.note.startswith("early stopped") for r in ran),
        }
        rows[way].append(row)
        print(f"{way:<28} {seed:>4} {row['trials_to_98'] or 'never'!s:>13} "
              f"{row['wall_to_98_s'] or '-'!s:>11} {row['wall_s']:>7} "
              f"{row['stopped_early']:>13}")  # fmt: skip
    result = {"best_output_tok_s": round(best, 1), "time_scale": args.time_scale,
              "window_s": args.window_s or 60 / args.time_scale, "ways": rows}  # fmt: skip
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
