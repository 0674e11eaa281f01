"""The reaper: whatever a dead tuner started is killed, a clean shutdown kills nothing, and a
recycled pid is never touched."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tui_tuner.adapters.processes import pid_alive
from tui_tuner.adapters.reaper import (
    ProcInfo,
    Reaper,
    ReaperGone,
    Tracker,
    select_targets,
    spawn_watched,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX sessions")

SLEEPER = "import time; print('ready', flush=True); time.sleep(600)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)


def _spawner(child_code: str, setsid: bool = False) -> str:
    """Code that starts `child_code`, then prints its own pid followed by the child's line."""
    return textwrap.dedent(f"""
        import os, subprocess, sys, time
        {"os.setsid()" if setsid else ""}
        child = subprocess.Popen([sys.executable, "-c", {child_code!r}], stdout=subprocess.PIPE)
        print(os.getpid(), child.stdout.readline().decode().strip(), flush=True)
        time.sleep(600)
    """)


TUNER = """
import asyncio, sys
from tui_tuner.adapters.reaper import Reaper, spawn_watched

async def main() -> None:
    reaper = await Reaper.start(grace_s=1.0, poll_s=0.1, log_path=sys.argv[2])
    proc = await spawn_watched([sys.executable, "-c", sys.argv[1]], None, reaper)
    line = await proc.stdout.readline()
    print(reaper.pid, line.decode().strip(), flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def _gone(proc: psutil.Process) -> bool:
    """Exited, a zombie (PID 1 here may never reap orphans), or the pid now names another."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_all_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    while (left := [p for p in procs if not _gone(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.fixture
def tracked() -> Iterator[list[psutil.Process]]:
    """Processes a test started, killed afterwards whatever happened (psutil skips reused pids)."""
    procs: list[psutil.Process] = []
    yield procs
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _read_line(stream: object, timeout_s: float) -> str:
    fd = stream.fileno()  # type: ignore[attr-defined]
    data, deadline = b"", time.monotonic() + timeout_s
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no line within {timeout_s}s (got {data!r})"
        if select.select([fd], [], [], remaining)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"stream closed (got {data!r})"
            data += chunk
    return data.decode().strip()


def test_tuner_killed_by_sigkill_takes_everything_with_it(
    tmp_path: Path, tracked: list[psutil.Process]
) -> None:
    script = tmp_path / "tuner.py"
    script.write_text(TUNER)
    grandchild = "import os, time; os.setsid(); print(os.getpid(), flush=True); time.sleep(600)"
    program = _spawner(_spawner(grandchild))
    log = tmp_path / "reaper.log"
    tuner = subprocess.Popen(
        [sys.executable, str(script), program, str(log)], stdout=subprocess.PIPE
    )
    tracked.append(psutil.Process(tuner.pid))
    try:
        pids = [int(p) for p in _read_line(tuner.stdout, 20).split()]
        assert len(pids) == 4  # reaper, program, child, grandchild
        procs = [psutil.Process(pid) for pid in pids]
        tracked.extend(procs)
        assert procs[3].pid == os.getsid(procs[3].pid)  # the grandchild left the session
        tuner.kill()
        tuner.wait(5)
        assert _wait_all_gone(procs, 10) == [], log.read_text()
        assert f"SIGTERM {pids[3]}" in log.read_text()
    finally:
        tuner.kill()
        tuner.wait(5)
        assert tuner.stdout is not None
        tuner.stdout.close()


async def _stop(*procs: asyncio.subprocess.Process) -> None:
    """Kill and reap programs while the event loop still runs (else their transports leak)."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.wait_for(proc.wait(), 10)


async def _ready(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"ready\n"


async def test_close_leaves_a_running_program_alone(tracked: list[psutil.Process]) -> None:
    reaper = await Reaper.start(grace_s=1.0, poll_s=0.1)
    tracked.append(psutil.Process(reaper.pid))
    proc = await spawn_watched([sys.executable, "-c", SLEEPER], None, reaper)
    tracked.append(psutil.Process(proc.pid))
    try:
        await _ready(proc)
        reaper.unwatch(proc.pid)
        await reaper.close()
        assert not reaper.alive
        assert proc.returncode is None and not _gone(tracked[-1])
    finally:
        await reaper.close()
        await _stop(proc)


def _crash(reaper: Reaper) -> None:
    """What the tuner's death looks like to the reaper: its command pipe closes."""
    os.close(reaper._fd)
    reaper._fd = -1


async def test_unwatched_program_survives_a_crash(tracked: list[psutil.Process]) -> None:
    reaper = await Reaper.start(grace_s=5.0, poll_s=0.1)
    tracked.append(psutil.Process(reaper.pid))
    kept = await spawn_watched([sys.executable, "-c", SLEEPER], None, reaper)
    killed = await spawn_watched([sys.executable, "-c", SLEEPER], None, reaper)
    tracked.extend(psutil.Process(p.pid) for p in (kept, killed))
    try:
        await asyncio.gather(_ready(kept), _ready(killed))
        reaper.unwatch(kept.pid)
        _crash(reaper)
        assert await asyncio.wait_for(killed.wait(), 10) == -signal.SIGTERM
        await asyncio.wait_for(reaper._process.wait(), 10)
        assert kept.returncode is None
    finally:
        await reaper.close()
        await _stop(kept, killed)


async def test_sigterm_ignored_means_sigkill_after_grace(
    tmp_path: Path, tracked: list[psutil.Process]
) -> None:
    log = tmp_path / "reaper.log"
    reaper = await Reaper.start(grace_s=0.5, poll_s=0.1, log_path=log)
    tracked.append(psutil.Process(reaper.pid))
    proc = await spawn_watched([sys.executable, "-c", STUBBORN], None, reaper)
    tracked.append(psutil.Process(proc.pid))
    try:
        await _ready(proc)
        started = time.monotonic()
        os.kill(reaper.pid, signal.SIGTERM)  # stopping the reaper stops what it watches
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
        assert time.monotonic() - started >= 0.5
        await asyncio.wait_for(reaper._process.wait(), 10)
        assert f"SIGTERM {proc.pid}" in log.read_text()
        assert f"SIGKILL {proc.pid}" in log.read_text()
    finally:
        await reaper.close()
        await _stop(proc)


async def test_dead_reaper_is_reported_and_nothing_is_left_unwatched(
    tracked: list[psutil.Process],
) -> None:
    reaper = await Reaper.start()
    tracked.append(psutil.Process(reaper.pid))
    try:
        os.kill(reaper.pid, signal.SIGKILL)
        await asyncio.wait_for(reaper._process.wait(), 10)
        with pytest.raises(ReaperGone):
            await spawn_watched([sys.executable, "-c", SLEEPER], None, reaper)
        reaper.unwatch(12345)  # harmless: a dead reaper cannot kill anything
    finally:
        await reaper.close()


def _info(ppid: int, pgid: int, start: float, zombie: bool = False) -> ProcInfo:
    return ProcInfo(ppid=ppid, pgid=pgid, sid=pgid, start=start, zombie=zombie)


def test_a_recycled_pid_is_never_a_target() -> None:
    recorded = {100: 5.0, 101: 6.0, 102: 7.0, 103: 8.0}
    snap = {
        100: _info(1, 100, 5.0),  # still the same process
        101: _info(1, 101, 9.5),  # pid reused by a newer process
        102: _info(1, 100, 7.0, zombie=True),  # already dead
    }  # 103 has exited
    assert select_targets(recorded, snap) == [100]


def test_tracker_follows_escapees_and_forgets_emptied_groups() -> None:
    tracker = Tracker()
    tracker.watch(100, {100: _info(1, 100, 1.0), 101: _info(100, 100, 2.0)})
    # 102 was started by 101 and called setsid: only parentage links it to the program.
    tracker.update({100: _info(1, 100, 1.0), 101: _info(100, 100, 2.0), 102: _info(101, 102, 3.0)})
    # Its parents died; the orphan now belongs to PID 1 but is remembered.
    assert tracker.targets({102: _info(1, 102, 3.0)}) == [102]
    tracker.update({})  # everything exited: group 100 is empty and its id may be recycled
    stranger = {100: _info(1, 100, 50.0), 200: _info(100, 100, 51.0)}
    tracker.update(stranger)
    assert tracker.targets(stranger) == []
    tracker.unwatch(100)
    assert tracker.roots == {}


def test_pid_alive_sees_a_zombie_as_dead() -> None:
    assert pid_alive(os.getpid()) and not pid_alive(0) and not pid_alive(-1)
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while pid_alive(child.pid) and time.monotonic() < deadline:  # exited, not yet reaped
        time.sleep(0.02)
    assert not pid_alive(child.pid)
    child.wait()
