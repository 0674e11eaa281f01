"""Does GuideLLM's long-lived worker measure what the CLI measures, and what does it save?

Starts `tui-tuner sim-serve` with the tiny model (GuideLLM needs its tokenizer), then runs the
same workload alternately through the two load generators the tuner has (CLI first, then the
worker: A B A B ...), each through its real `Benchmarker` adapter with the watchdog reaper, as a
study would. Prints per run: output tok/s, p50/p95 request latency, p50 TTFT, achieved
concurrency, whether the load generator rather than the server was the limit
(`core.measurement.client_limited`), and the load generator's wall time for the run; then per
load generator the means and spreads (cv), the worker/CLI ratios, and whether the difference of
each figure is within the noise (Welch's t, its 95% interval of the difference of the means).
The worker's first run includes starting it, so its wall time is quoted apart.

    .venv/bin/python bench/load_generator_equivalence.py --pairs 5 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tui_tuner.adapters.guidellm import (
    GuidellmBenchmarker,
    find_guidellm,
    pick_benchmarker,
)
from tui_tuner.adapters.reaper import Reaper
from tui_tuner.adapters.vllm_server import free_port
from tui_tuner.core.config import WorkloadSettings
from tui_tuner.core.measurement import (
    CLIENT_LIMIT_RATIO,
    CLIENT_LIMIT_WARNING_CODES,
    Measurement,
    client_limited,
    warning_code,
)
from tui_tuner.engine.ports import BenchRequest
from tui_tuner.sim.tiny_model import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sim_fidelity import wait_ready  # noqa: E402

PROFILE = ROOT / "sample_configs" / "sim-profiles" / "sim-profile-fast-start.yaml"
FIGURES = (
    ("output tok/s", lambda m: m.output_tok_s),
    ("p50 latency ms", lambda m: m.request_latency_p50_ms),
    ("p95 latency ms", lambda m: m.request_latency_p95_ms),
    ("p50 TTFT ms", lambda m: m.ttft_p50_ms),
)
# Student's t, two-sided 95% (0.975 quantile), by degrees of freedom; the normal beyond 30.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """(t, df, half-width of the 95% interval of mean(a) - mean(b))."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return 0.0, float("inf"), 0.0
    t = (statistics.fmean(a) - statistics.fmean(b)) / se
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    q = _T975[min(int(df), 30) - 1] if df < 31 else 1.960
    return t, df, q * se


async def run(ns: argparse.Namespace, work: Path) -> int:
    model = Path.home() / ".cache" / "tui-tuner" / "tiny-llama"
    ensure_tiny_model(model)
    port = free_port()
    cmd = [sys.executable, "-m", "tui_tuner", "sim-serve", str(model), "--port", str(port),
           "--max-num-seqs", str(ns.max_num_seqs), "--enforce-eager", "--disable-log-stats",
           "--sim-profile-file", str(PROFILE)]  # fmt: skip
    server = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    reaper = await Reaper.start()
    exe = find_guidellm(ns.guidellm)
    worker, note = pick_benchmarker("worker", exe, reaper)
    if note is not None:
        print(note)
        return 1
    cli = GuidellmBenchmarker(exe, reaper)
    url = f"http://127.0.0.1:{port}"
    workload = WorkloadSettings(
        prompt_tokens=ns.prompt_tokens, output_tokens=ns.output_tokens, streams=ns.streams,
        duration_s=ns.duration, warmup_s=ns.warmup, seed=0,
    )  # fmt: skip
    runs: dict[str, list[tuple[Measurement, float]]] = {"cli": [], "worker": []}
    try:
        await wait_ready(url, 60)
        print(f"sim-serve, tiny model, --max-num-seqs {ns.max_num_seqs}; {ns.streams} streams, "
              f"{ns.prompt_tokens} in / {ns.output_tokens} out, {ns.warmup:g} s warmup + "
              f"{ns.duration:g} s window; GuideLLM {exe}")  # fmt: skip
        print(f"{'run':>3} {'load gen':<7} {'tok/s':>7} {'p50 ms':>7} {'p95 ms':>7} "
              f"{'TTFT ms':>7} {'conc':>5} {'client-limited':>20} {'wall s':>7}")  # fmt: skip
        n = 0
        for _pair in range(ns.pairs):
            for kind, bench in (("cli", cli), ("worker", worker)):
                n += 1
                out = work / f"{n:02d}-{kind}"
                request = BenchRequest(url, str(model), None, workload, ns.streams, None,
                                       str(model), out / "report.json", out / "guidellm.log",
                                       ns.duration + ns.warmup + 300)  # fmt: skip
                started = time.monotonic()
                m = await bench.run(request, lambda _: None, lambda *a: None)
                wall = time.monotonic() - started
                runs[kind].append((m, wall))
                limited = _why(m, ns.streams) if client_limited(m, ns.streams) else "no"
                print(f"{n:>3} {kind:<7} {m.output_tok_s:7.1f} {m.request_latency_p50_ms:7.1f} "
                      f"{m.request_latency_p95_ms:7.1f} {m.ttft_p50_ms:7.1f} "
                      f"{m.achieved_concurrency:5.2f} {limited:>20} "
                      f"{wall:7.1f}", flush=True)  # fmt: skip
    finally:
        await worker.close()
        await reaper.close()
        server.terminate()
        server.wait(10)
    _summary(runs, ns.streams)
    return 0


def _summary(runs: dict[str, list[tuple[Measurement, float]]], streams: int) -> None:
    print()
    print(f"{'figure':<15} {'cli mean':>9} {'cv':>6} {'worker mean':>11} {'cv':>6} "
          f"{'ratio w/c':>9} {'Welch t':>7} {'95% CI of diff':>16}  verdict")  # fmt: skip
    for name, get in FIGURES:
        c = [get(m) for m, _ in runs["cli"]]
        w = [get(m) for m, _ in runs["worker"]]
        t, _df, half = welch(w, c)
        diff = statistics.fmean(w) - statistics.fmean(c)
        inside = abs(diff) <= half
        print(f"{name:<15} {statistics.fmean(c):9.1f} {_cv(c):6.1%} {statistics.fmean(w):11.1f} "
              f"{_cv(w):6.1%} {statistics.fmean(w) / statistics.fmean(c):9.3f} {t:7.2f} "
              f"{diff - half:+7.1f}..{diff + half:+.1f}  "
              f"{'within the noise' if inside else 'DIFFERENT'}")  # fmt: skip
    cw = [wall for _, wall in runs["cli"]]
    ww = [wall for _, wall in runs["worker"]]
    steady = ww[1:] or ww
    ratio = statistics.fmean(steady) / statistics.fmean(cw)
    print()
    print(f"wall time per run: cli {statistics.fmean(cw):.1f} s (cv {_cv(cw):.0%}); worker "
          f"first run {ww[0]:.1f} s (starts it), then {statistics.fmean(steady):.1f} s "
          f"(cv {_cv(steady):.0%}); ratio worker/cli {ratio:.2f}, "
          f"{statistics.fmean(cw) - statistics.fmean(steady):.1f} s saved a trial")  # fmt: skip
    limited = {k: sum(client_limited(m, streams) for m, _ in v) for k, v in runs.items()}
    print(f"client-limited runs (the load generator, not the server, was the limit): "
          f"cli {limited['cli']}/{len(cw)}, worker {limited['worker']}/{len(ww)}")  # fmt: skip


def _why(m: Measurement, streams: int) -> str:
    """Why the run counts as client-limited: low concurrency, or GuideLLM's own warning."""
    codes = sorted({warning_code(w) for w in m.warnings} & CLIENT_LIMIT_WARNING_CODES)
    return ",".join(codes) or f"conc<{CLIENT_LIMIT_RATIO * streams:g}"


def _cv(xs: list[float]) -> float:
    return (
        statistics.stdev(xs) / statistics.fmean(xs) if len(xs) > 1 and statistics.fmean(xs) else 0.0
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5, help="CLI/worker pairs (A B A B ...)")
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds a run")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--max-num-seqs", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--output-tokens", type=int, default=32)
    ap.add_argument("--guidellm", default=None, help="GuideLLM executable (default: found)")
    ns = ap.parse_args()
    if ns.pairs < 2:
        ap.error("--pairs must be at least 2 (a spread needs two runs)")
    with tempfile.TemporaryDirectory() as work:
        return asyncio.run(run(ns, Path(work)))


if __name__ == "__main__":
    sys.exit(main())
