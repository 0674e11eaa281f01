"""GuideLLM's long-lived worker seen from the tuner: :mod:`.driver` under GuideLLM's interpreter.

Apart from :mod:`.process` (one ``guidellm run`` a trial) because its life is the study's, not a
run's: it is found (:func:`guidellm_python`), started once, sent one request per trial, watched
while it runs and replaced when it fails. Like every program the tuner starts, it runs in its own
session under the watchdog reaper, so it and the processes GuideLLM spawns die with the tuner.

A worker that is no longer trustworthy is killed (its whole process group) and the caller told
why with :class:`WorkerFailed`; the next run starts a fresh one. That is: it exited mid-run
(:class:`WorkerCrashed`), gave no result by the run's deadline (:class:`WorkerHung`), or grew past
:data:`MAX_WORKER_RSS_BYTES` during a run (:class:`WorkerTooBig`). Grown past it between runs,
it is replaced without failing anything (the run it finished is whole).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil

from tui_tuner.adapters.guidellm.driver import MARK, UNAVAILABLE_EXIT
from tui_tuner.adapters.processes import group_alive, spawn_in_session, terminate_group
from tui_tuner.adapters.reaper import Reaper

__all__ = [
    "DRIVER",
    "MAX_WORKER_RSS_BYTES",
    "GuidellmWorker",
    "WorkerCrashed",
    "WorkerFailed",
    "WorkerHung",
    "WorkerTooBig",
    "WorkerUnavailable",
    "guidellm_python",
]

DRIVER = Path(__file__).with_name("driver.py")

#: The worker's resident memory above which it is replaced. A fresh GuideLLM 0.8.1 worker
#: holds about 0.3-0.5 GB after a run with the tiny model (the CLI's process peaks near 0.5 GB);
#: four times that is a leak across runs, not a load, and a fresh worker costs only seconds.
MAX_WORKER_RSS_BYTES = 2 * 1024**3

#: Lines kept for the message of a failure.
_TAIL = 40


class WorkerFailed(Exception):
    """The worker failed and was killed; ``tail`` holds its last lines."""

    def __init__(self, message: str, tail: list[str]) -> None:
        super().__init__(message)
        self.tail = tail


class WorkerUnavailable(WorkerFailed):
    """The interpreter cannot import GuideLLM (not GuideLLM's venv, or a broken install)."""


class WorkerCrashed(WorkerFailed):
    """The worker exited before it gave the run's result."""


class WorkerHung(WorkerFailed):
    """The worker gave no result by the run's deadline."""


class WorkerTooBig(WorkerFailed):
    """The worker's resident memory passed its bound during a run."""


def guidellm_python(executable: Path) -> Path | None:
    """The interpreter of the GuideLLM install that ``executable`` (its ``guidellm`` script)
    belongs to, when that interpreter's environment holds the ``guidellm`` package: the script's
    shebang (pip writes the venv's python there), else a ``python``/``python3`` beside it. None
    for anything else (a stand-in script, ``#!/usr/bin/env python3``): the CLI is used then.

    Decided from files alone (no process is started) by finding ``guidellm/__init__.py`` in the
    interpreter's ``lib/python3.*/site-packages``; the driver itself says so again if the import
    fails (:class:`WorkerUnavailable`).
    """
    candidates: list[Path] = []
    with contextlib.suppress(OSError), executable.open("rb") as f:
        first = f.readline(512)
        if first.startswith(b"#!"):
            words = first[2:].decode("utf-8", "replace").split()
            if words and Path(words[0]).name.startswith("python"):
                candidates.append(Path(words[0]))
    candidates += [executable.parent / "python", executable.parent / "python3"]
    for python in candidates:
        if python.is_file() and _has_guidellm(python):
            return python
    return None


def _has_guidellm(python: Path) -> bool:
    prefix = python.parent.parent  # a venv's (or a prefix's) bin/python
    return any(prefix.glob("lib/python3*/site-packages/guidellm/__init__.py"))


class GuidellmWorker:
    """One driver process. Not safe for two runs at once (a study runs one trial at a time)."""

    def __init__(
        self,
        python: Path,
        env: Mapping[str, str],
        reaper: Reaper | None = None,
        *,
        max_rss_bytes: int = MAX_WORKER_RSS_BYTES,
        driver: Path = DRIVER,
        term_grace_s: float = 5.0,
    ) -> None:
        self.python, self.env, self.reaper = python, dict(env), reaper
        self.max_rss_bytes, self.driver, self.term_grace_s = max_rss_bytes, driver, term_grace_s
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Future[None] | None = None
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._results: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._sink: Callable[[str], None] | None = None
        self._tail: deque[str] = deque(maxlen=_TAIL)
        self._runs = 0
        #: How many driver processes this handle started (the first, and each replacement).
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def rss_bytes(self) -> int:
        """The driver's resident memory now (0 if it is gone)."""
        if self._proc is None:
            return 0
        try:
            return int(psutil.Process(self._proc.pid).memory_info().rss)
        except psutil.Error:
            return 0

    async def run(
        self, argv: list[str], on_line: Callable[[str], None], timeout_s: float
    ) -> tuple[int, str | None]:
        """Run ``guidellm ARGV`` in the worker (started first if there is none; that counts
        against ``timeout_s``): its lines go to ``on_line``; returns (exit status, error text).
        Raises :class:`WorkerFailed` (the worker killed) or whatever ``on_line`` raised."""
        deadline = time.monotonic() + timeout_s
        self._sink = on_line
        try:
            if not self.alive:
                await self._start(deadline)
            self._runs += 1
            number = self._runs
            result = self._results[number] = asyncio.get_running_loop().create_future()
            proc = self._proc
            assert proc is not None and proc.stdin is not None
            with contextlib.suppress(ConnectionError):  # it died: _wait says how
                proc.stdin.write((json.dumps({"id": number, "argv": argv}) + "\n").encode())
                await proc.stdin.drain()
            await self._wait(result, deadline, timeout_s)
            answer = result.result()
            code, error = int(answer["exit"]), answer.get("error")
            if code != 0:  # GuideLLM failed inside: its spawned workers may be left; start afresh
                await self.stop()
            elif (rss := self.rss_bytes()) > self.max_rss_bytes:
                bound = self.max_rss_bytes / 2**20
                self._line(
                    f"# GuideLLM's worker holds {rss / 2**20:.0f} MiB after the run, over "
                    f"{bound:.0f} MiB: replaced for the next run"
                )
                await self.stop()
            return code, error
        except BaseException:
            # Failed, timed out or cancelled (a prune, the server died): GuideLLM may be
            # loading a server; stop its whole group before anything else runs.
            with contextlib.suppress(BaseException):
                await self._kill()
            raise
        finally:
            self._sink = None

    async def _start(self, deadline: float) -> None:
        await self._kill()  # one that died while idle: what it left, and the reaper's record
        self._tail.clear()
        self._results.clear()
        self._ready = asyncio.get_running_loop().create_future()
        cmd = [str(self.python), str(self.driver)]
        env = {"PYTHONUNBUFFERED": "1", **self.env}
        try:
            self._proc = await spawn_in_session(cmd, env, self.reaper, stdin_pipe=True)
        except OSError as err:  # gone or not executable since the study started: the CLI says
            raise WorkerUnavailable(f"{self.python} cannot be started: {err}", []) from None
        self.starts += 1
        self._reader = asyncio.ensure_future(self._read(self._proc))
        await self._wait(self._ready, deadline, None)
        hello = self._ready.result()
        if "unavailable" in hello:
            await self._kill()
            raise WorkerUnavailable(
                f"{self.python} cannot run GuideLLM: {hello['unavailable']}", list(self._tail)
            )

    async def _wait(
        self, future: asyncio.Future[dict[str, Any]], deadline: float, timeout_s: float | None
    ) -> None:
        """Until ``future`` has the driver's answer; raise WorkerFailed (the worker killed) if
        the driver exits, the deadline passes or (during a run) its memory passes the bound."""
        proc, reader = self._proc, self._reader
        assert proc is not None and reader is not None
        either: set[asyncio.Future[Any]] = {future, reader}
        while not future.done():
            if reader.done() or proc.returncode is not None:
                # Let the last lines (a traceback) arrive, then see whether the answer did.
                await asyncio.wait(either, timeout=2.0)
                if future.done():
                    break
                await self._kill()
                raise self._death(proc, reader)
            left = deadline - time.monotonic()
            if left <= 0:
                await self._kill()
                what = "its run" if timeout_s is not None else "start-up"
                budget = f" within {timeout_s:g} s" if timeout_s is not None else ""
                raise WorkerHung(
                    f"GuideLLM's worker did not finish {what}{budget} and was killed",
                    list(self._tail),
                )
            if timeout_s is not None and (rss := self.rss_bytes()) > self.max_rss_bytes:
                await self._kill()
                raise WorkerTooBig(
                    f"GuideLLM's worker grew to {rss / 2**20:.0f} MiB during the run, past "
                    f"{self.max_rss_bytes / 2**20:.0f} MiB, and was killed",
                    list(self._tail),
                )
            await asyncio.wait(either, timeout=min(0.5, left))

    def _death(
        self, proc: asyncio.subprocess.Process, reader: asyncio.Future[None]
    ) -> BaseException:
        """Why the driver went away before answering."""
        tail = list(self._tail)
        hello = self._ready.result() if self._ready is not None and self._ready.done() else {}
        if "unavailable" in hello or proc.returncode == UNAVAILABLE_EXIT:
            why = hello.get("unavailable", f"the driver exited with code {UNAVAILABLE_EXIT}")
            return WorkerUnavailable(f"{self.python} cannot run GuideLLM: {why}", tail)
        if reader.done() and not reader.cancelled() and (err := reader.exception()) is not None:
            return err  # on_line failed: the caller's own error
        code = "a signal" if proc.returncode is None else f"code {proc.returncode}"
        return WorkerCrashed(f"GuideLLM's worker exited with {code} before its result", tail)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        """Route the driver's output: protocol lines to their futures, the rest to the run."""
        assert proc.stdout is not None
        pending = b""
        while chunk := await proc.stdout.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                self._route(raw.decode("utf-8", errors="replace").rstrip("\r"))
        if pending:
            self._route(pending.decode("utf-8", errors="replace").rstrip("\r"))

    def _route(self, line: str) -> None:
        if not line.startswith(MARK):
            self._line(line)
            return
        try:
            message = json.loads(line[len(MARK) :])
        except ValueError:
            self._line(line)
            return
        if "ready" in message or "unavailable" in message:
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(message)
        elif (future := self._results.pop(message.get("id"), None)) and not future.done():
            future.set_result(message)

    def _line(self, line: str) -> None:
        self._tail.append(line)
        if self._sink is not None:
            self._sink(line)

    async def stop(self) -> None:
        """End the worker: end of its input asks it to exit; what is left is terminated."""
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        deadline = time.monotonic() + self.term_grace_s
        while proc.returncode is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self._kill()

    async def _kill(self) -> None:
        """Stop the driver's whole process group (GuideLLM's spawned workers too)."""
        proc, reader = self._proc, self._reader
        if proc is None:
            return
        self._proc = None
        try:
            if proc.returncode is None or group_alive(proc.pid):
                await terminate_group(proc.pid, self.term_grace_s)
            if reader is not None:
                await asyncio.wait({reader}, timeout=2.0)
        finally:
            if reader is not None and not reader.done():
                reader.cancel()
            if self.reaper is not None:
                self.reaper.unwatch(proc.pid)
            for future in self._results.values():
                future.cancel()
            self._results.clear()
