"""Run a server command and note, from outside, when it was spawned and when it first answered.

    python bench/stamp_serve.py STAMPS_FILE PROGRAM [ARGS...]

`bench/trial_overhead.py` puts this in front of the server command of both ways of running a
trial, so that each trial is timed by the same clock from outside the tuner: the spawn, the first
200 from ``/health`` (polled every 20 ms from a thread), and the exit. One JSON line per event is
appended to STAMPS_FILE. SIGTERM, SIGINT and SIGHUP are passed on to the server, and this
process exits with its code. No shell: the program runs with the arguments as given.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

POLL_S = 0.02


def note(stamps: Path, pid: int, event: str, at: float | None = None) -> None:
    with stamps.open("a", encoding="utf-8") as f:
        line = {"pid": pid, "event": event, "t": time.time() if at is None else at}
        f.write(json.dumps(line) + "\n")


def health_url(argv: list[str]) -> str:
    def value(flag: str, default: str) -> str:
        return argv[argv.index(flag) + 1] if flag in argv else default

    return f"http://{value('--host', '127.0.0.1')}:{value('--port', '8000')}/health"


def watch_health(url: str, child: subprocess.Popen[bytes], stamps: Path) -> None:
    while child.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    note(stamps, child.pid, "healthy")
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(POLL_S)


def main() -> int:
    stamps, argv = Path(sys.argv[1]), sys.argv[2:]
    spawned = time.time()
    child = subprocess.Popen(argv)
    note(stamps, child.pid, "spawn", spawned)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    threading.Thread(
        target=watch_health, args=(health_url(argv), child, stamps), daemon=True
    ).start()
    code = child.wait()
    note(stamps, child.pid, "exit")
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
