"""Process-group helpers shared by the adapters that start programs (servers, GuideLLM).

Every program the tuner starts runs in its own session, so its process group holds it and the
workers it spawns; stopping means signalling that group and waiting until nothing in it is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from tui_tuner.adapters.reaper import Reaper

__all__ = [
    "group_alive",
    "pid_alive",
    "pump_lines",
    "signal_group",
    "spawn_in_session",
    "terminate_group",
    "wait_group_gone",
]


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in the group.

    Scans /proc on Linux because orphaned zombies (which an init without reaping keeps around)
    still make ``killpg(pgid, 0)`` succeed.
    """
    if not Path("/proc").is_dir():  # not Linux: fall back to the signal probe
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(pgid):
            return True
    return False


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host lives (a zombie does not). The study store uses it
    to tell a dead worker's trial, which it repairs, from a live one's."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rfind(")") + 2 :].startswith("Z"):
            return False
    return True


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def terminate_group(pgid: int, grace_s: float) -> bool:
    """SIGTERM the whole group (GuideLLM's spawn workers too), SIGKILL whatever is left.
    Returns whether the group was gone within `grace_s`, that is without SIGKILL."""
    try:
        signal_group(pgid, signal.SIGTERM)
        if await wait_group_gone(pgid, grace_s):
            return True
        signal_group(pgid, signal.SIGKILL)
        await wait_group_gone(pgid, 5.0)
        return False
    except BaseException:
        signal_group(pgid, signal.SIGKILL)  # cancelled while waiting: do not leave it running
        raise


async def pump_lines(
    stream: asyncio.StreamReader, log: TextIO, on_line: Callable[[str], None]
) -> None:
    """Copy output line by line. Reads chunks itself so a huge line cannot overrun a limit."""
    pending = b""
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            log.write(line + "\n")
            on_line(line)
        log.flush()
    if pending:
        line = pending.decode("utf-8", errors="replace").rstrip("\r")
        log.write(line + "\n")
        log.flush()
        on_line(line)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


async def spawn_in_session(
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    reaper: Reaper | None = None,
    *,
    stdin_pipe: bool = False,
) -> asyncio.subprocess.Process:
    """Start `cmd` (an argument list, never a shell) as the leader of a new session and process
    group, stdout and stderr merged into one pipe. `env` is layered over the current environment.
    Its stdin is /dev/null, or with `stdin_pipe` a pipe the caller writes to (a long-lived
    program that takes requests, such as GuideLLM's worker).

    With a `reaper` (the tuner's watchdog process) the program and everything it starts are
    stopped if the tuner dies, even by SIGKILL, and no preexec_fn runs (which is unsafe once the
    tuner has threads). Without one, on Linux only the direct child is tied to the tuner's life
    (PR_SET_PDEATHSIG), for short-lived uses such as the demo and tests.
    """
    if reaper is not None:
        from tui_tuner.adapters.reaper import spawn_watched

        return await spawn_watched(cmd, env, reaper, stdin_pipe=stdin_pipe)
    return await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.PIPE if stdin_pipe else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **(env or {})},
        preexec_fn=_die_with_parent,
    )
