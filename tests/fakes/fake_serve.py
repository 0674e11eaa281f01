"""A serve command that fails on purpose, chosen by its --max-num-seqs value.

  1  argparse error, exit 2 at once               -> invalid_args
  2  CUDA out of memory while loading, exit 1     -> oom_startup
  3  never answers /health (sleeps)               -> startup_timeout
  5  the port is already taken (real EADDRINUSE)  -> port_in_use
  6  GPU memory already in use, exit 1            -> gpu_busy
  7  healthy, then out of memory under load       -> server_crashed
  8  serves, but ignores SIGTERM (blocked, so the simulator's own handler never runs)
  9  serves, and forks a child into a new session (os.setsid) that would live forever
 10  serves while a child in its process group floods the shared stdout (64 MB/s by default)
 11  answers /health 200, but every completion request gets HTTP 500
 12  serves, but is slow to die: on SIGTERM it takes 5 s to exit
anything else: the simulated server with the same arguments (it serves and is measured).

Cases 1-6 print the messages vLLM 0.33 prints; 7 is the simulator's own out-of-memory under
load (an 8B model at 0.987 memory utilisation), so the crash happens in the middle of the load.
Cases 8-12 are the server-side faults of tests/test_server_faults.py. Environment:
  FAKE_SERVE_FLOOD_MB_S  the rate case 10 aims at (MB/s, default 64; 0: as fast as it can)
  FAKE_SERVE_STATS       case 10 writes "BYTES SECONDS" so far to this file, 4 times a second
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

#: How long case 12 takes from SIGTERM to its exit.
SLOW_STOP_S = 5.0
#: One line of case 10's flood: vLLM-like, and no word a failure classifier looks for.
FLOOD_LINE = (
    "DEBUG 01-01 00:00:00.000 [scheduler.py:1] flood: running 256 reqs, waiting 0 reqs, "
    "KV cache usage 41.0%, prefix cache hit rate 0.0% (fake_serve case 10)\n"
)


def _value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def main() -> int:
    args = sys.argv[1:]
    case = _value(args, "--max-num-seqs")
    if case == "1":
        print("usage: vllm serve [model_tag] [options]", file=sys.stderr)
        print(
            "vllm serve: error: argument --max-num-seqs: invalid int value: '1x'", file=sys.stderr
        )
        return 2
    if case == "2":
        print("(EngineCore pid=1) ERROR Failed to load model - not enough GPU memory.", flush=True)
        print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.")
        return 1
    if case == "3":
        print("INFO Starting vLLM API server (this fake never becomes healthy)", flush=True)
        time.sleep(3600)
        return 0
    if case == "5":
        port = int(_value(args, "--port") or 0)
        holder = socket.socket()
        holder.bind(("127.0.0.1", port))
        holder.listen()
        server = socket.socket()
        try:
            server.bind(("127.0.0.1", port))
        except OSError as err:
            print(f"ERROR: [Errno {err.errno}] error while attempting to bind on address "
                  f"('127.0.0.1', {port}): address already in use", flush=True)  # fmt: skip
            print(f"OSError: [Errno {err.errno}] Address already in use")
            return 1
        return 0
    if case == "6":
        print(
            "ValueError: Free memory on device cuda:0 (20.1/79.2 GiB) on startup is less than "
            "desired GPU memory utilization (0.92, 72.9 GiB). Decrease GPU memory utilization "
            "or reduce GPU memory used by other processes."
        )
        return 1
    sim = [sys.executable, "-m", "tui_tuner", "sim-serve", *args]
    if case == "7":
        sim += ["--gpu-memory-utilization", "0.987", "--max-num-batched-tokens", "512"]
    if case == "8":
        # A blocked signal stays blocked across exec: the simulator's handler is never called.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    if case == "9":
        _fork(_live_forever)
    if case == "10":
        _fork(_flood)
    if case == "11":
        return _serve_errors(args)
    if case == "12":
        return _slow_to_die(sim)
    os.execv(sys.executable, sim)
    return 0  # not reached


def _fork(child: Callable[[int], None]) -> None:
    """Run `child(parent_pid)` in a forked process that never returns into main()."""
    parent = os.getpid()
    if os.fork() == 0:
        try:
            child(parent)
        finally:
            os._exit(0)


def _live_forever(parent: int) -> None:
    """A worker that leaves the server's session (as some engine workers do) and never exits.
    It keeps the server's stdout open, as a real worker would."""
    os.setsid()
    print(f"INFO worker {os.getpid()} started in its own session", flush=True)
    while True:
        time.sleep(3600)


def _flood(parent: int) -> None:
    """Write log lines to the shared stdout at the chosen rate until the server is gone."""
    rate = float(os.environ.get("FAKE_SERVE_FLOOD_MB_S", "64")) * 1e6
    stats = os.environ.get("FAKE_SERVE_STATS")
    block = (FLOOD_LINE * ((1 << 20) // len(FLOOD_LINE))).encode()
    written, start, reported = 0, time.monotonic(), 0.0
    while os.getppid() == parent:
        os.write(1, block)  # blocks while the reader is behind: a real server would stall too
        written += len(block)
        now = time.monotonic()
        if rate and written > rate * (now - start):
            time.sleep(written / rate - (now - start))
        if stats and now - reported >= 0.25:
            reported = now
            Path(stats).write_text(f"{written} {now - start:.3f}\n")


def _serve_errors(args: list[str]) -> int:
    """Healthy to /health and /v1/models; every POST is an internal server error."""
    host, port = _value(args, "--host") or "127.0.0.1", int(_value(args, "--port") or 8000)
    model = _value(args, "--served-model-name") or (args[0] if args else "model")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._answer(200, {"object": "list", "data": [{"id": model, "object": "model"}]})
            else:
                self._answer(200 if self.path == "/health" else 404, {})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            print("ERROR [serving_completion.py:1] Error in the engine: EngineGenerateError",
                  flush=True)  # fmt: skip
            self._answer(500, {"error": {"message": "EngineGenerateError", "code": 500,
                                         "type": "InternalServerError"}})  # fmt: skip

        def log_message(self, format: str, *fields: object) -> None:
            print(f"INFO:     {self.address_string()} - {format % fields}", flush=True)

    server = ThreadingHTTPServer((host, port), Handler)
    print("INFO:     Application startup complete.", flush=True)
    server.serve_forever()
    return 0


def _slow_to_die(sim: list[str]) -> int:
    """The simulator as a child that ignores SIGTERM; this parent takes SLOW_STOP_S to stop."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by the child
    child = subprocess.Popen(sim)
    while signal.sigtimedwait({signal.SIGTERM}, 0.2) is None:
        if child.poll() is not None:
            return child.returncode
    print(f"INFO Shutting down: draining the engine ({SLOW_STOP_S:g} s)", flush=True)
    time.sleep(SLOW_STOP_S)
    child.kill()
    child.wait()
    print("INFO Shutdown complete.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
