"""A serve command that fails on purpose, chosen by its --max-num-seqs value.

  1  argparse error, exit 2 at once               -> invalid_args
  2  CUDA out of memory while loading, exit 1     -> oom_startup
  3  never answers /health (sleeps)               -> startup_timeout
  5  the port is already taken (real EADDRINUSE)  -> port_in_use
  6  GPU memory already in use, exit 1            -> gpu_busy
  7  healthy, then out of memory under load       -> server_crashed
anything else: the simulated server with the same arguments (it serves and is measured).

Cases 1-6 print the messages vLLM 0.33 prints; 7 is the simulator's own out-of-memory under
load (an 8B model at 0.987 memory utilisation), so the crash happens in the middle of the load.
"""

from __future__ import annotations

import os
import socket
import sys
import time


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
    os.execv(sys.executable, sim)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
