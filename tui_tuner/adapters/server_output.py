"""A server's output, kept bounded however much it prints.

A server can print far more than anyone reads (vLLM with request logging at debug level, a loop
that repeats one warning). Reading it must stay cheap, because a server whose output pipe is full
stalls on its next write, which would distort the measurement. So output is handled in chunks
and split into lines only where lines are needed:

- the log file keeps the first ``HEAD_BYTES`` as they arrive, then only the last ``TAIL_BYTES``,
  written when the server stops after a line that says how much was dropped in between;
- the last lines are kept in memory for the failure classifier;
- at most ``EVENT_LINES_PER_S`` lines a second (after a burst of ``EVENT_BURST``) become log
  events. A line says how many were not shown, at most once a second, and when the output
  ends the last lines not shown follow it, so a log panel ends as the log does.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "EVENT_BURST",
    "EVENT_LINES_PER_S",
    "HEAD_BYTES",
    "TAIL_BYTES",
    "CappedLog",
    "LineBudget",
    "ServerOutput",
]

MiB = 1 << 20
HEAD_BYTES = 32 * MiB
TAIL_BYTES = 1 * MiB
EVENT_LINES_PER_S = 200.0
EVENT_BURST = 2000
#: A line longer than this is passed on in pieces (a server printing without newlines).
MAX_LINE_BYTES = 64 * 1024
#: When the output ends, this many of the last lines not shown are shown after all.
LAST_LINES_SHOWN = 20
TAG = "[tui-tuner]"


class CappedLog:
    """A binary log file with its first `head_bytes`, then (on close) its last `tail_bytes`."""

    def __init__(self, path: Path, head_bytes: int = HEAD_BYTES, tail_bytes: int = TAIL_BYTES):
        self.path = path
        self._file = path.open("ab")
        self._room, self._tail_bytes = head_bytes, tail_bytes
        self._ring: deque[bytes] = deque()
        self._ring_size = 0
        self._ends_line = True
        self.dropped_bytes = 0
        self.dropped_lines = 0
        #: The first write that failed (a full disk): from then on nothing more is written.
        self.error: OSError | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._room > 0:
            if len(data) <= self._room:
                self._put(data)
                self._room -= len(data)
                self._flush()
                return
            cut = data.rfind(b"\n", 0, self._room) + 1 or self._room  # whole lines if it can
            self._put(data[:cut])
            self._room, data = 0, data[cut:]
            self.note(
                f"{TAG} server.log is at its cap of {self._file.tell() / MiB:.0f} MiB: from "
                f"here only the last {self._tail_bytes / MiB:g} MiB of the output are kept, "
                "written when the server stops"
            )
            self._flush()
        self._ring.append(data)
        self._ring_size += len(data)
        while self._ring_size - len(self._ring[0]) >= self._tail_bytes:
            old = self._ring.popleft()
            self._ring_size -= len(old)
            self.dropped_bytes += len(old)
            self.dropped_lines += old.count(b"\n")

    def note(self, text: str) -> None:
        """A line of the tuner's own, on a line of its own (also after `close`)."""
        line = ("" if self._ends_line else "\n").encode() + text.encode() + b"\n"
        if self._file.closed:
            if self.error is None:
                try:
                    with self.path.open("ab") as file:
                        file.write(line)
                except OSError as err:
                    self.error = err
            self._ends_line = True
        else:
            self._put(line)
            self._flush()

    def close(self) -> None:
        """Write the kept tail (after a line on what was dropped) and close; idempotent."""
        if self._file.closed:
            return
        tail = b"".join(self._ring)
        self._ring.clear()
        if len(tail) > self._tail_bytes:
            cut = len(tail) - self._tail_bytes
            self.dropped_bytes += cut
            self.dropped_lines += tail.count(b"\n", 0, cut)
            tail = tail[cut:]
        if self.dropped_bytes and (start := tail.find(b"\n") + 1) and start < len(tail):
            self.dropped_bytes += start  # start the tail at a line's start
            self.dropped_lines += 1
            tail = tail[start:]
        if self.dropped_bytes:
            self.note(
                f"{TAG} {self.dropped_bytes:,} bytes ({self.dropped_lines:,} lines) of server "
                f"output dropped here; the last {len(tail):,} bytes follow"
            )
        self._put(tail)
        if not self._ends_line:
            self._put(b"\n")
        try:
            self._file.close()
        except OSError as err:  # the last buffered bytes did not fit
            self.error = self.error or err

    def _put(self, data: bytes) -> None:
        if data and self.error is None:
            try:
                self._file.write(data)
            except OSError as err:
                self.error = err
            self._ends_line = data.endswith(b"\n")

    def _flush(self) -> None:
        if self.error is None:
            try:
                self._file.flush()
            except OSError as err:
                self.error = err


class LineBudget:
    """A token bucket: `per_s` lines a second, up to `burst` at once."""

    def __init__(
        self,
        per_s: float = EVENT_LINES_PER_S,
        burst: int = EVENT_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_s, self.burst, self.clock = per_s, burst, clock
        self._tokens, self._at = float(burst), clock()

    def take(self, n: int) -> int:
        """How many of `n` lines may be shown now."""
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.per_s)
        self._at = now
        k = min(n, int(self._tokens))
        self._tokens -= k
        return k


class ServerOutput:
    """Everything one server prints: the capped log, its last lines, and the lines shown."""

    def __init__(
        self,
        log: CappedLog,
        on_line: Callable[[str], None],
        *,
        keep: int = 200,
        budget: LineBudget | None = None,
    ) -> None:
        self.log, self._on_line = log, on_line
        self.budget = budget or LineBudget()
        self._tail: deque[bytes] = deque(maxlen=keep)
        self._pending = b""
        self.not_shown = 0  # lines not shown since the last line that said so
        self._trailing = 0  # lines not shown since the last one shown
        self._said_at = -1e9
        self._finished = False

    @property
    def tail(self) -> list[str]:
        return [_text(raw) for raw in self._tail]

    def feed(self, chunk: bytes) -> None:
        failed = self.log.error
        self.log.write(chunk)
        if failed is None and self.log.error is not None:
            self._on_line(f"{TAG} server.log cannot be written ({self.log.error.strerror}): "
                          "from here the server's lines are only shown")  # fmt: skip
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        if len(self._pending) > MAX_LINE_BYTES:
            lines.append(self._pending)
            self._pending = b""
        if lines:
            self._lines(lines)

    def note(self, text: str) -> None:
        """A line of the tuner's own about the server: in the log, the tail and the events."""
        self.log.note(f"{TAG} {text}")
        self._tail.append(f"{TAG} {text}".encode())
        self._on_line(f"{TAG} {text}")

    def finish(self) -> None:
        """The output ended: its last partial line, the last lines not shown, close the log."""
        if self._finished:
            return
        self._finished = True
        if self._pending:  # shown below, after the count of what was not
            self._tail.append(self._pending)
            self._pending = b""
            self.not_shown += 1
            self._trailing += 1
        last = min(self._trailing, LAST_LINES_SHOWN, len(self._tail))
        self.not_shown -= last
        if self.not_shown:
            self._say_not_shown(", the last lines follow" if last else "")
        for raw in list(self._tail)[len(self._tail) - last :]:
            self._on_line(_text(raw))
        self.log.close()

    def _lines(self, lines: list[bytes]) -> None:
        n = len(lines)
        self._tail.extend(lines[-(self._tail.maxlen or n) :])
        shown = self.budget.take(n)
        if shown:
            if self.not_shown and self.budget.clock() - self._said_at >= 1.0:
                self._say_not_shown("")
            for raw in lines[:shown]:
                self._on_line(_text(raw))
        self.not_shown += n - shown
        self._trailing = n - shown if shown else self._trailing + n

    def _say_not_shown(self, more: str) -> None:
        self._on_line(
            f"{TAG} {self.not_shown:,} lines not shown here (the server printed more than "
            f"{self.budget.per_s:g} a second); see server.log{more}"
        )
        self.not_shown, self._said_at = 0, self.budget.clock()


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")
