"""A watchdog process that stops what the tuner started when the tuner dies without doing so.

Why: servers and load generators run in their own sessions. PR_SET_PDEATHSIG only covers the
direct child (vLLM's EngineCore and workers, some of which call setsid, survive and keep GPU
memory) and needs a preexec_fn, which is unsafe once the tuner has threads. Instead a small
separate process, in its own session so terminal signals do not reach it, reads commands from a
pipe. The kernel closes that pipe however the tuner dies (even SIGKILL), so end-of-file without a
prior `close` means "the tuner is gone": the reaper then terminates everything it has seen that
belongs to the watched programs. Protocol, one line each: `watch PID`, `unwatch PID`, `close`.

Identity is (pid, start time) and every decision uses a fresh scan, so a recycled pid is never
signalled. On Linux one pass over /proc/*/stat gives parent, group, session and start time in
clock ticks (immune to wall-clock jumps); elsewhere psutil and os.getpgid/os.getsid stand in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

__all__ = ["ProcInfo", "Reaper", "ReaperGone", "select_targets", "snapshot", "spawn_watched"]

_MODULE = "tui_tuner.adapters.reaper"
_KILL_WAIT_S = 5.0  # after SIGKILL, how long to wait before giving up on (D-state) leftovers


@dataclass(frozen=True)
class ProcInfo:
    ppid: int
    pgid: int
    sid: int
    start: float  # only ever compared with values from the same snapshot function
    zombie: bool


def snapshot() -> dict[int, ProcInfo]:
    """Every process on the machine, read in one pass."""
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc"):
        return _snapshot_psutil()
    procs: dict[int, ProcInfo] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                data = stat.read()
            f = data[data.rfind(b")") + 2 :].split()  # the command name may contain spaces
            procs[int(name)] = ProcInfo(int(f[1]), int(f[2]), int(f[3]), float(f[19]), f[0] == b"Z")
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return procs


def _snapshot_psutil() -> dict[int, ProcInfo]:
    procs: dict[int, ProcInfo] = {}
    for p in psutil.process_iter(["ppid", "create_time", "status"]):
        try:
            info = p.info
            zombie = info["status"] == psutil.STATUS_ZOMBIE
            pgid, sid = os.getpgid(p.pid), os.getsid(p.pid)
            procs[p.pid] = ProcInfo(info["ppid"], pgid, sid, float(info["create_time"]), zombie)
        except (OSError, TypeError):
            continue
    return procs


def select_targets(recorded: Mapping[int, float], snap: Mapping[int, ProcInfo]) -> list[int]:
    """The recorded pids that still are the same, living process (a zombie is already dead)."""
    return sorted(
        pid
        for pid, start in recorded.items()
        if (p := snap.get(pid)) is not None and p.start == start and not p.zombie
    )


@dataclass
class _Watched:
    seen: dict[int, float] = field(default_factory=dict)
    group_open: bool = True  # False once the group/session emptied: its id may be recycled


class Tracker:
    """What each watched program consists of: the leader, its group and session, descendants."""

    def __init__(self) -> None:
        self.roots: dict[int, _Watched] = {}

    def watch(self, root: int, snap: Mapping[int, ProcInfo]) -> None:
        # Just spawned by the tuner, so a pid present now is the program itself.
        self.roots[root] = _Watched({root: snap[root].start} if root in snap else {})
        self.update(snap)

    def unwatch(self, root: int) -> None:
        self.roots.pop(root, None)

    def update(self, snap: Mapping[int, ProcInfo]) -> None:
        children: dict[int, list[int]] = {}
        for pid, p in snap.items():
            children.setdefault(p.ppid, []).append(pid)
        for root, w in self.roots.items():
            keep = {pid: w.seen[pid] for pid in select_targets(w.seen, snap)}
            if w.group_open:
                members = {pid: p.start for pid, p in snap.items() if root in (p.pgid, p.sid)}
                # Linux never hands out a pid still used as a pgid/sid, so this is safe until
                # the group and session are empty (zombies included); after that, never again.
                w.group_open = bool(members) or root in keep
                keep.update(members)
            stack = list(keep)  # descendants, including those that left via setsid
            while stack:
                for child in children.get(stack.pop(), ()):
                    if child not in keep:
                        keep[child] = snap[child].start
                        stack.append(child)
            w.seen = keep

    def targets(self, snap: Mapping[int, ProcInfo]) -> list[int]:
        recorded = {pid: s for w in self.roots.values() for pid, s in w.seen.items()}
        recorded.pop(os.getpid(), None)
        return select_targets(recorded, snap)


def reap(tracker: Tracker, grace_s: float, tick_s: float = 0.05) -> list[int]:
    """SIGTERM every group and process, SIGKILL what is left after `grace_s`; newcomers found on
    each rescan are signalled too. Returns the pids that could not be killed."""
    kill_at = time.monotonic() + grace_s
    sig, sent, sent_groups = signal.SIGTERM, set[int](), set[int]()
    while True:
        snap = snapshot()
        tracker.update(snap)
        targets = tracker.targets(snap)
        now = time.monotonic()
        if not targets or (sig == signal.SIGKILL and now >= kill_at + _KILL_WAIT_S):
            return targets
        if sig == signal.SIGTERM and now >= kill_at:
            sig, sent, sent_groups = signal.SIGKILL, set(), set()
        open_groups = {r for r, w in tracker.roots.items() if w.group_open}
        for pgid in (open_groups & {snap[t].pgid for t in targets}) - sent_groups:
            with contextlib.suppress(OSError):
                os.killpg(pgid, sig)
            sent_groups.add(pgid)
        for pid in set(targets) - sent:
            print(f"reaper: {sig.name} {pid}", file=sys.stderr, flush=True)
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
            sent.add(pid)
        time.sleep(tick_s)


def run(grace_s: float, poll_s: float, fd: int = 0) -> int:
    """Serve commands from `fd`; rescan every `poll_s`; reap on EOF or SIGTERM, not on `close`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    stop = []  # whoever stops the reaper (SIGTERM) stops the programs too
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    print("ready", flush=True)
    tracker, pending, next_scan = Tracker(), b"", 0.0
    while not stop:
        timeout = max(0.0, next_scan - time.monotonic())
        if select.select([fd], [], [], timeout)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break  # the tuner is gone
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                match line.decode("ascii", "replace").split():
                    case ["close"]:
                        print(f"reaper: close, leaving {sorted(tracker.roots)}", file=sys.stderr)
                        return 0
                    case ["watch", pid] if pid.isdigit():
                        tracker.watch(int(pid), snapshot())
                    case ["unwatch", pid] if pid.isdigit():
                        tracker.unwatch(int(pid))
                    case _:
                        print(f"reaper: bad command {line!r}", file=sys.stderr, flush=True)
        if time.monotonic() >= next_scan:
            tracker.update(snapshot())
            next_scan = time.monotonic() + poll_s
    leftovers = reap(tracker, grace_s)
    if leftovers:
        print(f"reaper: could not kill {leftovers}", file=sys.stderr, flush=True)
    return 1 if leftovers else 0


class ReaperGone(RuntimeError):
    """The reaper exited (or stopped reading): programs would outlive a crash of the tuner."""


class Reaper:
    """The tuner's handle. Commands are single small writes to a non-blocking pipe, so they are
    atomic and never stall the event loop; the write end is close-on-exec, so programs the
    tuner starts do not inherit it (which would keep the pipe open after the tuner died)."""

    def __init__(self, process: asyncio.subprocess.Process, fd: int) -> None:
        self._process, self._fd = process, fd

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.returncode is None

    @classmethod
    async def start(
        cls, grace_s: float = 5.0, poll_s: float = 0.5, log_path: Path | None = None
    ) -> Reaper:
        """Start the reaper in its own session (no preexec_fn) and wait until it is serving."""
        package_root = str(Path(__file__).resolve().parents[2])  # import this very tui_tuner
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        args = ["-m", _MODULE, "--grace", str(grace_s), "--poll", str(poll_s)]
        read_fd, write_fd = os.pipe()
        try:
            with open(log_path or os.devnull, "ab") as log:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    *args,
                    stdin=read_fd,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log,
                    start_new_session=True,
                    env={**os.environ, "PYTHONPATH": path},
                )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        os.set_blocking(write_fd, False)
        reaper = cls(process, write_fd)
        assert process.stdout is not None
        try:
            if await asyncio.wait_for(process.stdout.readline(), 30.0) != b"ready\n":
                raise ReaperGone(f"the reaper failed to start (log: {log_path or 'none'})")
        except BaseException:
            await reaper._kill()
            raise
        return reaper

    def _send(self, line: str) -> None:
        if self._fd < 0:
            raise ReaperGone("the reaper was closed")
        try:
            os.write(self._fd, line.encode("ascii"))
        except BrokenPipeError:
            raise ReaperGone(f"the reaper (pid {self.pid}) has exited") from None
        except BlockingIOError:
            raise ReaperGone(f"the reaper (pid {self.pid}) stopped reading") from None

    def watch(self, pid: int) -> None:
        """Register a program's session leader; raises ReaperGone if the reaper is not there."""
        self._send(f"watch {pid}\n")

    def unwatch(self, pid: int) -> None:
        """Forget a program the tuner stopped. A missing reaper cannot kill it anyway: ignored."""
        with contextlib.suppress(ReaperGone):
            self._send(f"unwatch {pid}\n")

    async def close(self, timeout_s: float = 5.0) -> None:
        """Let the reaper exit without killing anything (all watched programs were stopped)."""
        if self._fd >= 0:
            with contextlib.suppress(ReaperGone):
                self._send("close\n")
            os.close(self._fd)
            self._fd = -1
        try:
            await asyncio.wait_for(self._process.wait(), timeout_s)
        except asyncio.TimeoutError:
            await self._kill()

    async def _kill(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        await self._process.wait()


async def spawn_watched(
    cmd: Sequence[str], env: Mapping[str, str] | None, reaper: Reaper, *, stdin_pipe: bool = False
) -> asyncio.subprocess.Process:
    """Like processes.spawn_in_session, but thread-safe (no preexec_fn) and registered with the
    reaper at once. If the reaper is gone the program is killed and ReaperGone raised."""
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.PIPE if stdin_pipe else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    try:
        reaper.watch(proc.pid)
    except ReaperGone:
        with contextlib.suppress(OSError):  # not reaped yet, so the pid is still this group's
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    return proc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=_MODULE, description=__doc__)
    parser.add_argument("--grace", type=float, default=5.0, help="seconds from SIGTERM to SIGKILL")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between scans")
    args = parser.parse_args(argv)
    return run(args.grace, args.poll)


if __name__ == "__main__":
    sys.exit(main())
