"""Run GuideLLM as a subprocess in its own session, stream its lines, and always reap it.

Apart from the command (:mod:`.command`) and the report (:mod:`.report`) because process handling
is its own concern: a timeout or a cancellation must take GuideLLM's spawned worker processes
down with it. Its failures are here too: the executable is missing (:class:`GuidellmNotFound`,
a user error, found before any server starts) or the run overran (:class:`GuidellmTimeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tui_tuner.adapters.processes import (
    group_alive,
    pump_lines,
    spawn_in_session,
    terminate_group,
)
from tui_tuner.adapters.reaper import Reaper
from tui_tuner.core.errors import UserError

__all__ = [
    "DEFAULT_GUIDELLM",
    "GUIDELLM_VERSION",
    "GuidellmNotFound",
    "GuidellmTimeout",
    "find_guidellm",
    "run_guidellm",
]

#: The GuideLLM release this adapter is written and checked against.
GUIDELLM_VERSION = "0.8.1"

# Where `make guidellm` installs it: its own venv, shared by every checkout on the machine.
DEFAULT_GUIDELLM = Path.home() / ".cache/tui-tuner/venvs/guidellm-0.8.1/bin/guidellm"


class GuidellmNotFound(UserError, FileNotFoundError):
    """The configured GuideLLM executable does not exist or cannot be run."""


class GuidellmTimeout(TimeoutError):
    """GuideLLM overran its time budget and its process group was killed.

    A separate type (rather than a plain exit code) because a hung load generator is a different
    failure from a crashed one, and a signal exit code alone cannot tell them apart.
    """

    def __init__(self, timeout_s: float, returncode: int | None) -> None:
        super().__init__(f"GuideLLM did not finish within {timeout_s:g} s and was killed")
        self.timeout_s = timeout_s
        self.returncode = returncode


_INSTALL_HINT = (
    "Install GuideLLM {v} into its own virtual environment, e.g. "
    "`python3 -m venv VENV && VENV/bin/pip install guidellm=={v} torch==2.13.0` "
    "(pinning torch avoids a multi-GB CUDA build), then point the tuner at VENV/bin/guidellm."
)


def _not_found(executable: str, why: str) -> GuidellmNotFound:
    return GuidellmNotFound(
        f"GuideLLM executable {executable!r} {why}. " + _INSTALL_HINT.format(v=GUIDELLM_VERSION)
    )


def find_guidellm(explicit: str | None) -> Path:
    """The GuideLLM executable: `explicit` if given (it must exist), else $TUI_TUNER_GUIDELLM,
    else the venv `make guidellm` installs, else `guidellm` on PATH."""
    if explicit:
        candidates: tuple[str | None, ...] = (explicit,)
    else:
        env = os.environ.get("TUI_TUNER_GUIDELLM")
        candidates = (env,) if env else (str(DEFAULT_GUIDELLM), shutil.which("guidellm"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            if not os.access(candidate, os.X_OK):
                # Found now rather than when the first trial's server is already up.
                raise _not_found(candidate, "is not executable")
            return Path(candidate)
    where = " or ".join(c for c in candidates if c)
    raise GuidellmNotFound(
        f"GuideLLM 0.8.1 not found (looked for {where or '`guidellm` on PATH'}). Install it into "
        "its own environment with `make guidellm`, or pass --guidellm PATH."
    )


async def run_guidellm(
    cmd: list[str],
    *,
    env: dict[str, str] | None,
    on_line: Callable[[str], None],
    log_path: Path,
    timeout_s: float,
    term_grace_s: float = 5.0,
    drain_s: float = 2.0,
    append: bool = False,
    reaper: Reaper | None = None,
) -> int:
    """Run GuideLLM in its own session and return its exit code.

    ``env`` is layered over the current environment (GuideLLM needs HOME, PATH and the HF
    cache variables). stderr is merged into stdout so progress and errors keep their order;
    every line goes to ``log_path`` (appended to with ``append``) and to ``on_line``. On
    timeout the process group is terminated and :class:`GuidellmTimeout` raised; on
    cancellation or any error (including one from ``on_line``) the group is killed before the
    exception propagates, because stray
    GuideLLM workers would keep loading the server and skew the next trial.
    """
    if not cmd:
        raise ValueError("empty command")
    exe = cmd[0]
    if os.sep in exe and not Path(exe).exists():
        raise _not_found(exe, "does not exist")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a" if append else "w", encoding="utf-8") as log:
        try:
            proc = await spawn_in_session(cmd, {"PYTHONUNBUFFERED": "1", **(env or {})}, reaper)
        except FileNotFoundError:
            raise _not_found(exe, "was not found") from None
        except PermissionError:
            raise _not_found(exe, "is not executable") from None
        assert proc.stdout is not None
        pgid = proc.pid  # start_new_session makes the child a session and group leader
        reader = asyncio.ensure_future(pump_lines(proc.stdout, log, on_line))
        try:
            # Poll returncode rather than await proc.wait(): asyncio's wait() also waits for
            # the pipe to close, which never happens while a leftover worker holds it.
            deadline = time.monotonic() + timeout_s
            while proc.returncode is None and time.monotonic() < deadline:
                step = min(0.1, max(0.0, deadline - time.monotonic()))
                if reader.done():
                    reader.result()  # on_line or the log failed: raise it (except kills)
                    await asyncio.sleep(step)
                else:
                    await asyncio.wait({reader}, timeout=step)
            if proc.returncode is None:
                await terminate_group(pgid, term_grace_s)
                await asyncio.wait({reader}, timeout=drain_s)
                raise GuidellmTimeout(timeout_s, proc.returncode)
            # Leader gone; workers it left behind may still hold the pipe open.
            await asyncio.wait({reader}, timeout=drain_s)
            if group_alive(pgid):
                await terminate_group(pgid, term_grace_s)
                await asyncio.wait({reader}, timeout=drain_s)
            if reader.done():
                reader.result()
            if reaper is not None:
                reaper.unwatch(pgid)
            return proc.returncode
        except BaseException:
            # Cancelled (user quit, trial aborted) or failed: stop the whole group, politely
            # first so GuideLLM's multiprocessing can clean up; a second cancel means SIGKILL.
            if proc.returncode is None or group_alive(pgid):
                with contextlib.suppress(BaseException):
                    await terminate_group(pgid, term_grace_s)
            raise
        finally:
            if not reader.done():
                reader.cancel()
            elif not reader.cancelled():
                reader.exception()  # retrieved, so asyncio does not log it as lost
