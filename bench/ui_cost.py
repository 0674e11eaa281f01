"""What the TUI costs while a server floods its log: CPU of the UI process and key latency.

Targets (the issue): the TUI process under 10% of one core while the server logs 1,000
lines/s, and under 100 ms from a key press to the screen showing its effect.

The UI renders to a real terminal, not a headless one, because the work that matters (Textual
turning widget updates into escape sequences and writing them) only happens there: the app runs
in a detached `tmux` session of its own (a private socket, `-L`), 200x60, laid out as the app's
main screen is (a one-line marker where the header goes, the other widgets in the top half, the
logs and a 34-column GPU panel in the bottom half). In that child a fake producer appends
vLLM-like server log lines (80 to 230 characters, ~150 on average) to a `StudyModel` at the
given rate, as the engine's events do, plus a GuideLLM line every 500; a 10 Hz timer calls
`update_from` on the `LogPanel` and on every other widget under `tui_tuner/ui/widgets/` that has
one; the `GpuPanel` gets a fake two-GPU sample and simulator figures once a second.

This script then measures
  * CPU: the child's user+system seconds over a `--seconds` window (after a warm-up), as % of
    one core; also the tmux server's, which is the terminal's cost, not the TUI's. The child
    includes the fake producer (what the engine's log pump costs in the real app's process):
    `--breakdown` measures it alone, and the app idle, for comparison;
  * key latency: `tmux send-keys m` makes the app bump a counter on screen (a `Static.update`,
    which lays the screen out); we poll `tmux capture-pane -p` until the new value appears.
    That includes starting tmux client processes (a few ms each), so it overstates the app's
    own latency slightly; on a busy machine, other processes' load shows up in the tail.

It prints one JSON line. Run it from the repository root:

    .venv/bin/python bench/ui_cost.py                    # 1,000 lines/s, 20 s, 20 presses
    .venv/bin/python bench/ui_cost.py --breakdown        # also idle and producer-only runs
    .venv/bin/python bench/ui_cost.py --profile          # cProfile the UI thread; top functions
    .venv/bin/python bench/ui_cost.py --app-header       # plus the app's header, as it redraws it
    .venv/bin/python bench/ui_cost.py --rate 5000 --seconds 10 --tick-hz 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import json
import math
import os
import pkgutil
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKER = "KEYS#"


# -- the child: the app under test ------------------------------------------------------------


def _line_pool(n: int = 1000) -> list[str]:
    """vLLM-like server log lines: stats lines (~230 chars), access lines (~80), others (~150)."""
    rnd = random.Random(7)
    out: list[str] = []
    for i in range(n):
        stamp = f"11-22 09:{i // 60 % 60:02d}:{i % 60:02d}"
        kind = i % 4
        if kind == 0:
            out.append(
                f"INFO {stamp} [loggers.py:123] Engine 000: Avg prompt throughput: "
                f"{rnd.uniform(0, 9000):.1f} tokens/s, Avg generation throughput: "
                f"{rnd.uniform(0, 4000):.1f} tokens/s, Running: {rnd.randint(0, 256)} reqs, "
                f"Waiting: {rnd.randint(0, 64)} reqs, GPU KV cache usage: "
                f"{rnd.uniform(0, 100):.1f}%, Prefix cache hit rate: {rnd.uniform(0, 100):.1f}%"
            )
        elif kind == 1:
            out.append(
                f"INFO:     127.0.0.1:{rnd.randint(30000, 60000)} - "
                f'"POST /v1/completions HTTP/1.1" 200 OK'
            )
        elif kind == 2:
            out.append(
                f"DEBUG {stamp} [core.py:{rnd.randint(100, 999)}] EngineCore step: scheduled "
                f"{rnd.randint(1, 256)} seqs, {rnd.randint(1, 8192)} tokens; preempted "
                f"{rnd.randint(0, 3)}; kv blocks free {rnd.randint(0, 40000)}; "
                f"step time {rnd.uniform(5, 80):.2f} ms"
            )
        else:
            out.append(
                f"INFO {stamp} [async_llm.py:{rnd.randint(100, 999)}] Added request "
                f"cmpl-{rnd.getrandbits(128):032x}-0 (prompt {rnd.randint(16, 4096)} tokens, "
                f"max_tokens {rnd.randint(16, 1024)}, temperature 0.0)"
            )
    return out


def _other_widgets() -> tuple[list[Any], list[str]]:
    """Every other widget under tui_tuner/ui/widgets/ that draws from the model, built with
    no arguments; (widgets, names skipped with the reason)."""
    from textual.widget import Widget

    import tui_tuner.ui.widgets as package

    found: list[Any] = []
    skipped: list[str] = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in ("logs", "gpu"):
            continue
        name = f"{package.__name__}.{info.name}"
        try:
            module = importlib.import_module(name)
        except Exception as err:  # someone else's module mid-edit: report, do not stop
            skipped.append(f"{name}: import failed: {err}")
            continue
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name or not issubclass(cls, Widget):
                continue
            if not callable(getattr(cls, "update_from", None)):
                continue
            try:
                found.append(cls())
            except Exception as err:
                skipped.append(f"{name}.{cls.__name__}: {err}")
    return found, skipped


def run_child(args: argparse.Namespace) -> None:
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.containers import Horizontal, Vertical
    from textual.widgets import Static

    import tui_tuner.ui as ui_package
    from tui_tuner.core.config import ServerSettings, StudyConfig, StudySettings
    from tui_tuner.core.events import LogLine, StudyStarted, TrialStarted
    from tui_tuner.core.telemetry import GpuSample, GpuState, ServerFigures
    from tui_tuner.ui.model import StudyModel
    from tui_tuner.ui.widgets.gpu import GpuPanel
    from tui_tuner.ui.widgets.logs import LogPanel

    config = StudyConfig(
        study=StudySettings(name="bench", n_trials=50), server=ServerSettings(model="m")
    )
    model = StudyModel(config)
    model.apply(
        StudyStarted("bench", "max_throughput", "sqlite://", "/tmp/bench", 50, None, True, 0)
    )
    command = ("vllm", "serve", "m", "--host", "127.0.0.1", "--port", "8000")
    model.apply(TrialStarted(0, {"max_num_seqs": 256}, False, command, "/tmp/bench/trial-0000"))
    pool = _line_pool()
    others, skipped = _other_widgets()
    stats: dict[str, Any] = {"produced": 0, "ticks": 0, "tick_s": [], "skipped_widgets": skipped}
    stats["other_widgets"] = [type(w).__name__ for w in others]

    class BenchApp(App[None]):
        # The app's stylesheet styles the widgets (LogPanel, ParetoPlot); CSS adds the layout.
        CSS_PATH = Path(ui_package.__file__).with_name("tuner.tcss")
        CSS = """
        #marker { height: 1; background: $panel; }
        #header { height: 1; }
        #top { height: 1fr; }
        #top > * { width: 1fr; }
        #bottom { height: 1fr; }
        #side { width: 34; }
        GpuPanel { border: round $accent; }
        """
        BINDINGS = [Binding("m", "mark", "mark"), Binding("q", "quit", "quit")]

        def __init__(self) -> None:
            super().__init__()
            self.presses = 0
            self.logs = LogPanel()
            self.gpu = GpuPanel()

        def compose(self) -> ComposeResult:
            yield Static(f"{MARKER}{self.presses:03d}", id="marker")
            if args.app_header:
                yield Static(id="header")
            if others:
                with Horizontal(id="top"):
                    yield from others
            with Horizontal(id="bottom"):
                yield self.logs
                with Vertical(id="side"):
                    yield self.gpu

        def on_mount(self) -> None:
            self.set_interval(1 / args.tick_hz, self.tick)
            self.set_interval(1.0, self.sample)
            self.sample()
            if args.rate > 0:
                self.run_worker(self.produce(), group="producer")
            self.call_after_refresh(self.ready)

        def ready(self) -> None:
            info = {"pid": os.getpid(), "size": list(self.size)}
            Path(args.ready_file).write_text(json.dumps(info))

        def tick(self) -> None:
            start = time.perf_counter()
            if args.app_header:  # as TunerApp._tick does it
                from tui_tuner.ui.header import header_text

                self.query_one("#header", Static).update(header_text(model))
            if not args.no_update:
                self.logs.update_from(model)
                for widget in others:
                    widget.update_from(model)
            stats["ticks"] += 1
            stats["tick_s"].append(time.perf_counter() - start)

        def sample(self) -> None:
            t = time.monotonic()
            wave = 50 + 45 * math.sin(t / 5)
            samples = tuple(
                GpuSample(i, "NVIDIA H100 80GB HBM3", wave, 40_000 + 1000 * i, 81_559, 300 + i, 60)
                for i in range(2)
            )
            self.gpu.update_state(GpuState(True, "", samples))
            rate = 2000 + 500 * math.sin(t)
            figures = ServerFigures(True, "NVIDIA H100 80GB HBM3", wave, 64, 3, rate, t, t)
            self.gpu.update_figures(figures)

        async def produce(self) -> None:
            start, sent = time.perf_counter(), 0
            while True:
                await asyncio.sleep(0.01)
                due = int((time.perf_counter() - start) * args.rate)
                for i in range(sent, due):
                    model.apply(LogLine(0, "server", pool[i % len(pool)]))
                if due // 500 != sent // 500:  # GuideLLM's progress: ~2 lines/s at 1,000/s
                    model.apply(LogLine(0, "guidellm", f"progress: {due} lines so far"))
                stats["produced"] += due - sent
                sent = due

        def action_mark(self) -> None:
            self.presses += 1
            self.query_one("#marker", Static).update(f"{MARKER}{self.presses:03d}")

    app = BenchApp()
    if args.profile_out:
        import cProfile

        profiler = cProfile.Profile()
        profiler.runcall(app.run)
        profiler.dump_stats(args.profile_out)
    else:
        app.run()
    ticks = stats.pop("tick_s")
    stats["tick_ms_mean"] = 1000 * statistics.fmean(ticks) if ticks else None
    stats["tick_ms_max"] = 1000 * max(ticks) if ticks else None
    stats["log_lines_shown"] = len(app.logs.server_log.lines)
    Path(args.stats_file).write_text(json.dumps(stats))


# -- the parent: tmux and the measurements ----------------------------------------------------


class Tmux:
    """One private tmux server (its own socket, no user config) holding one session."""

    _made = 0

    def __init__(self) -> None:
        # One socket per run: a server just killed may still hold the previous one.
        Tmux._made += 1
        self.socket = f"tui-tuner-bench-{os.getpid()}-{Tmux._made}"
        self.session = "bench"

    def run(self, *argv: str, check: bool = True) -> str:
        cmd = ["tmux", "-L", self.socket, "-f", "/dev/null", *argv]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise SystemExit(f"{shlex.join(cmd)} failed: {done.stderr.strip()}")
        return done.stdout

    def start(self, command: list[str], width: int, height: int) -> None:
        line = shlex.join(command)
        self.run("new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height), line)

    def server_pid(self) -> int:
        return int(self.run("display-message", "-p", "-t", self.session, "#{pid}").strip())

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session, check=False)

    def kill(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.run("kill-server", check=False)


def _cpu_s(proc: Any) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def measure(args: argparse.Namespace, rate: int, no_update: bool, presses: int) -> dict[str, Any]:
    """One run of the child in tmux: CPU over the window, then `presses` key presses."""
    import psutil

    work = Path(tempfile.mkdtemp(prefix="ui-cost-"))
    ready, stats_file = work / "ready.json", work / "stats.json"
    profile_out = work / "ui.prof" if args.profile and not no_update and rate > 0 else None
    child = [sys.executable, str(Path(__file__).resolve()), "--child", "--rate", str(rate),
             "--tick-hz", str(args.tick_hz),
             "--ready-file", str(ready), "--stats-file", str(stats_file)]  # fmt: skip
    if no_update:
        child.append("--no-update")
    if args.app_header:
        child.append("--app-header")
    if profile_out is not None:
        child += ["--profile-out", str(profile_out)]
    tmux = Tmux()
    tmux.start(["env", f"PYTHONPATH={ROOT}", *child], args.width, args.height)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"the app did not start; screen:\n{tmux.screen()}")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        proc, server = psutil.Process(info["pid"]), psutil.Process(tmux.server_pid())
        time.sleep(args.warmup)
        cpu0, srv0, wall0 = _cpu_s(proc), _cpu_s(server), time.monotonic()
        time.sleep(args.seconds)
        cpu1, srv1, wall1 = _cpu_s(proc), _cpu_s(server), time.monotonic()
        latencies = [_press(tmux, k + 1) for k in range(presses)]
        tmux.keys("q")
        deadline = time.monotonic() + 15
        while not stats_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    finally:
        tmux.kill()
    wall = wall1 - wall0
    result: dict[str, Any] = {
        "rate_lines_s": rate,
        "panels_updated": not no_update,
        "terminal": info["size"],
        "window_s": round(wall, 2),
        "tui_cpu_pct_of_one_core": round(100 * (cpu1 - cpu0) / wall, 2),
        "tmux_server_cpu_pct": round(100 * (srv1 - srv0) / wall, 2),
        **stats,
    }
    good = [x for x in latencies if x is not None]
    if presses:
        result["key_presses"] = presses
        result["key_missed"] = presses - len(good)
        if good:
            result["key_ms_median"] = round(statistics.median(good), 1)
            result["key_ms_p95"] = round(_percentile(good, 95), 1)
            result["key_ms_max"] = round(max(good), 1)
            result["key_ms_all"] = [round(x, 1) for x in good]
    if profile_out is not None and profile_out.exists():
        _print_profile(profile_out)
    shutil.rmtree(work, ignore_errors=True)
    return result


def _press(tmux: Tmux, expected: int, timeout_s: float = 2.0) -> float | None:
    """ms from sending `m` until the screen shows the counter at `expected` (None: never)."""
    time.sleep(random.uniform(0.2, 0.4))  # presses at human-ish, unsynchronised moments
    want = f"{MARKER}{expected:03d}"
    start = time.perf_counter()
    tmux.keys("m")
    while time.perf_counter() - start < timeout_s:
        if want in tmux.screen():
            return 1000 * (time.perf_counter() - start)
    return None


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _print_profile(path: Path) -> None:
    import pstats

    stats = pstats.Stats(str(path), stream=sys.stderr)
    for order in ("tottime", "cumulative"):
        print(f"--- cProfile of the UI thread, top 40 by {order} ---", file=sys.stderr)
        stats.sort_stats(order).print_stats(40)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="server log lines per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="CPU measuring window")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--presses", type=int, default=20)
    parser.add_argument("--width", type=int, default=200)
    parser.add_argument("--height", type=int, default=60)
    parser.add_argument("--tick-hz", type=float, default=10.0, help="the app's redraw timer")
    parser.add_argument("--breakdown", action="store_true", help="also idle and producer-only")
    parser.add_argument(
        "--app-header", action="store_true", help="also the app's header line, redrawn each tick"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the UI thread")
    # the child's own options
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-update", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", help=argparse.SUPPRESS)
    parser.add_argument("--stats-file", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return 0
    if shutil.which("tmux") is None:
        print("tmux is needed: the app must draw to a real terminal", file=sys.stderr)
        return 2
    result: dict[str, Any] = {
        "bench": "ui_cost",
        "targets": {"tui_cpu_pct_of_one_core": 10, "key_ms": 100},
        "run": measure(args, args.rate, no_update=False, presses=args.presses),
    }
    if args.breakdown:
        result["idle"] = measure(args, 0, no_update=False, presses=0)
        result["producer_only"] = measure(args, args.rate, no_update=True, presses=0)
    run = result["run"]
    result["meets_targets"] = (
        run["tui_cpu_pct_of_one_core"] < 10 and run.get("key_ms_p95", math.inf) < 100
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
