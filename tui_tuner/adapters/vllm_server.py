"""Life cycle of one `vllm serve` (or any serve command) process.

Started from an argument list (never a shell) in its own session, so that the whole process group
can be stopped; its output goes line by line to a log file and to a callback. Ready means
`GET /health` answered 200 before the deadline while the process stayed alive. Stopping sends
SIGTERM to the group, waits, then SIGKILLs the group and any descendant that left it.
On Linux the direct child also gets PR_SET_PDEATHSIG, so it dies with the tuner even on SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil

from tui_tuner.adapters.processes import pump_lines, spawn_in_session, terminate_group
from tui_tuner.core.errors import UserError


class ServerStartError(Exception):
    """The server exited or never became healthy; `reason` is a short machine-readable class."""

    def __init__(self, reason: str, message: str, exit_code: int | None, tail: list[str]) -> None:
        super().__init__(message)
        self.reason, self.exit_code, self.tail = reason, exit_code, tail


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    process: asyncio.subprocess.Process
    base_url: str
    command: list[str]
    log_path: Path
    tail: list[str] = field(default_factory=list)
    _pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid


async def _pump_output(server: RunningServer, on_line: Callable[[str], None], keep: int) -> None:
    assert server.process.stdout is not None

    def remember(line: str) -> None:
        server.tail.append(line)
        if len(server.tail) > keep:
            del server.tail[: len(server.tail) - keep]
        on_line(line)

    with server.log_path.open("a", encoding="utf-8") as log:
        await pump_lines(server.process.stdout, log, remember)


async def wait_healthy(server: RunningServer, timeout_s: float, poll_s: float = 0.25) -> None:
    deadline = time.monotonic() + timeout_s
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            if server.process.returncode is not None:
                break
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                async with session.get(server.base_url + "/health") as response:
                    if response.status == 200:
                        return
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    "startup_timeout", f"not healthy after {timeout_s:g} s", None, server.tail[-40:]
                )
            await asyncio.sleep(poll_s)
    if server._pump is not None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(server._pump), 2)
    code = server.process.returncode
    raise ServerStartError(
        "exited", f"server exited with code {code} before it was healthy", code, server.tail[-40:]
    )


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


async def stop_server(server: RunningServer, grace_s: float = 10.0) -> None:
    """SIGTERM the process group, wait up to `grace_s`, SIGKILL what is left, then sweep any
    descendant that moved to another group or session."""
    pid = server.process.pid
    stragglers = _descendants(pid)
    await terminate_group(pid, grace_s)
    for child in stragglers + _descendants(pid):
        with contextlib.suppress(psutil.Error):
            child.kill()
    await asyncio.to_thread(psutil.wait_procs, stragglers, timeout=5)
    if server._pump is not None:
        done, _ = await asyncio.wait({server._pump}, timeout=5)
        if not done:
            server._pump.cancel()
    if server.process.returncode is None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.process.wait(), 5)


@contextlib.asynccontextmanager
async def launch_server(
    command: Sequence[str],
    *,
    host: str,
    port: int,
    log_path: Path,
    startup_timeout_s: float,
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] = lambda _: None,
    stop_grace_s: float = 10.0,
) -> AsyncIterator[RunningServer]:
    """Start the server, wait until healthy, yield it, and always stop it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = await spawn_in_session(command, env)
    except FileNotFoundError:
        raise UserError(f"server command not found: {command[0]!r}") from None
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server = RunningServer(proc, f"http://{netloc}", list(command), log_path)
    server._pump = asyncio.create_task(_pump_output(server, on_line, keep=200))
    try:
        await wait_healthy(server, startup_timeout_s)
        yield server
    finally:
        await stop_server(server, stop_grace_s)
