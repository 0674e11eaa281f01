"""The log panel: the vLLM server's log, or GuideLLM's raw log (`show_source`, `g` in the app).

One log at a time gets the whole panel: GuideLLM's log is mostly set-up dictionaries, and
what matters of it while a trial runs is one live line (widgets/live.py); the raw log is a key
away. Lines longer than the panel is wide are wrapped when they are written (continuation
lines indented two spaces), so a figure is never cut mid-number; lines written before a resize
keep their wrapping, and the full log is in the trial's files.

A server can log thousands of lines a second, so the panel never sees lines one by one: the
model keeps the newest lines of each log in a bounded buffer with a version counter, and the
app's 10 Hz timer calls `LogPanel.update_from`, which hands each log only the lines that
arrived since the last call, in one `write_lines`. An idle tick is two dict look-ups and two
integer comparisons, with no repaint. When more lines arrived between two ticks than the buffer
keeps, the panel says so ("… N lines skipped") and where the full log is, instead of silently
joining two distant parts of the log.

Each log is a `TailLog` (`Log` made fit for tailing, see tail_log.py). Each write scrolls,
and a scroll repaints every row of the log, so a flood is written at most every
`MIN_REPAINT_S`: that, not the line rate, is what the panel's CPU cost follows.

With several trials running, the panel follows the one the live panels follow
(``StudyModel.focus``: the trial the table's cursor is on when it runs, else the one started
last), and switches when that changes.

A finished trial whose lines the model no longer holds is read from its log file, last lines
only, in a thread (`log_files.read_tail`): a log of gigabytes must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
from dataclasses import dataclass
from itertools import islice

from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Log

from tui_tuner.ui.log_files import clean_lines, read_tail
from tui_tuner.ui.model import StudyModel
from tui_tuner.ui.widgets.tail_log import TailLog

__all__ = ["LOG_SCROLLBACK", "MIN_REPAINT_S", "LogPanel", "wrap_lines"]

#: Lines each `Log` keeps for scrolling back (the model's buffers keep as many).
LOG_SCROLLBACK = 2000
#: Shortest time between two writes to one log. Every write scrolls, so it repaints every row
#: of the log (~12 ms of CPU for an 83x27 log): at 10 Hz a busy log alone cost 12% of a core
#: (bench/ui_cost.py). Four repaints a second still look live, and nobody reads faster; a line
#: after a quiet spell is written at the next tick.
MIN_REPAINT_S = 0.25
#: Continuation lines of a wrapped log line start with this.
WRAP_INDENT = "  "


def wrap_lines(lines: list[str], width: int) -> list[str]:
    """Lines cut to ``width`` columns, continuations indented; unchanged when ``width`` is
    unknown (the panel not laid out yet). Most lines fit, and cost one ``len``."""
    if width < 20:
        return lines
    out: list[str] = []
    for line in lines:
        if len(line) <= width:
            out.append(line)
        else:
            out.extend(textwrap.wrap(line, width, subsequent_indent=WRAP_INDENT) or [line])
    return out


_SOURCES = (
    # source, file name, title, what an absent file means
    ("server", "server.log", "vLLM log", "(no server log: the trial did not start a server)"),
    (
        "guidellm",
        "guidellm.log",
        "GuideLLM",
        "(no GuideLLM log: the trial did not get as far as the benchmark)",
    ),
)


@dataclass
class _Tail:
    """Which lines of one source a `Log` already shows."""

    source: str
    file_name: str
    title: str
    missing: str
    log: Log
    #: The buffer's `version` when its lines were last copied.
    version: int = 0
    #: "buffer" (copy new lines from the model), "file" (read once), "" (nothing shown).
    mode: str = ""
    #: `time.monotonic()` of the last write to the `Log` (0: write the next lines at once).
    written_at: float = 0.0


class LogPanel(Widget):
    """Two log tails for one trial: a running one by default, or any one on request.

    `update_from(model)` (10 Hz) follows the model's `focus` (the selected running trial, else
    the one started last): it appends new lines and, when that changes (a new trial starts,
    the cursor moves to another running one), clears and follows that one.
    `show_trial(n, model)` pins trial `n`; `show_trial(None, model)` goes back to following.
    Each `Log` keeps scrolling to the newest line unless the user has scrolled up (Textual's
    `auto_scroll` checks for that). Styled in tuner.tcss (the class ``-guidellm`` shows
    GuideLLM's log instead of the server's).
    """

    def __init__(
        self,
        *,
        scrollback: int = LOG_SCROLLBACK,
        min_repaint_s: float = MIN_REPAINT_S,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._scrollback = scrollback
        self._min_repaint_s = min_repaint_s
        self._following = True
        self._trial: int | None = None
        self._running = False
        self._titles: tuple[int | None, bool, bool] | None = None
        #: The log on screen: "server" or "guidellm".
        self._source = "server"
        #: Bumped whenever the shown trial changes, so a late file read is dropped.
        self._generation = 0
        self._tails: list[_Tail] = [
            _Tail(
                source,
                file_name,
                title,
                missing,
                TailLog(max_lines=scrollback, id=f"{source}-log"),
            )
            for source, file_name, title, missing in _SOURCES
        ]

    def compose(self) -> ComposeResult:
        for tail in self._tails:
            yield tail.log

    def on_mount(self) -> None:
        self._set_titles()

    # -- public API -------------------------------------------------------------------------

    @property
    def following(self) -> bool:
        """Whether the panel follows the running trial(s) (the model's `focus`)."""
        return self._following

    @property
    def shown_trial(self) -> int | None:
        """The trial whose logs are on screen; None before the first trial starts."""
        return self._trial

    @property
    def source(self) -> str:
        """The log on screen: "server" or "guidellm"."""
        return self._source

    def show_source(self, source: str) -> None:
        """Put the server's log ("server") or GuideLLM's raw log ("guidellm") on screen."""
        self._source = source
        self.set_class(source == "guidellm", "-guidellm")

    @property
    def server_log(self) -> Log:
        return self._tails[0].log

    @property
    def guidellm_log(self) -> Log:
        return self._tails[1].log

    def update_from(self, model: StudyModel) -> None:
        """Copy the lines that arrived since the last call; cheap (no repaint) if none did."""
        focus = model.focus
        target = None if focus is None else focus.number
        if self._following and target is None and model.logs:
            # No trial runs now: show the latest that logged (one that ran and ended between
            # two draws, or behind a dialog, would otherwise never be shown).
            latest = max(number for number, _ in model.logs)
            if self._trial is None or latest > self._trial:
                target = latest
        if self._following and target is not None and target != self._trial:
            self._switch(target)
            for tail in self._tails:
                tail.mode = "buffer"
        self._running = self._trial in model.runs
        self._set_titles()
        if self._trial is None:
            return
        for tail in self._tails:
            if tail.mode == "buffer":
                self._pull(tail, model)

    def show_trial(self, number: int | None, model: StudyModel) -> None:
        """None: follow the running trial. A number: show that trial's logs and stay on it.

        Its lines come from the model's buffers while it has them (the running trial's keep
        arriving); otherwise the last `scrollback` lines are read from its files in a thread.
        """
        if number is None:
            self._following = True
            self._trial = None  # update_from starts the running trial afresh
            self._switch(None)
            self.update_from(model)
            return
        self._following = False
        self._switch(number)
        self._running = number in model.runs
        record = model.records.get(number)
        for tail in self._tails:
            if self._running or (number, tail.source) in model.logs:
                tail.mode = "buffer"
                continue
            tail.mode = "file"
            path = record.files.get(tail.file_name) if record is not None else None
            if path is None and record is None:
                tail.log.write_line(f"(trial {number} is not known yet)")
            elif path is None:
                tail.log.write_line(tail.missing)
            else:
                self._read_file(tail, path, self._generation)
        self._set_titles()
        self.update_from(model)

    # -- following ----------------------------------------------------------------------------

    def _switch(self, number: int | None) -> None:
        self._generation += 1
        self._trial = number
        for tail in self._tails:
            tail.log.clear()
            tail.version = 0
            tail.mode = ""
            tail.written_at = 0.0

    def _pull(self, tail: _Tail, model: StudyModel) -> None:
        assert self._trial is not None
        buffer = model.logs.get((self._trial, tail.source))
        if buffer is None or buffer.version == tail.version:
            return
        now = time.monotonic()
        if now - tail.written_at < self._min_repaint_s:
            return  # a flood: take these lines with the next ones (the buffer keeps them)
        tail.written_at = now
        if buffer.version < tail.version:  # the buffer was dropped and started again
            tail.log.clear()
            tail.version = 0
        arrived = buffer.version - tail.version
        kept = len(buffer.lines)
        lines: list[str] = []
        if arrived > kept:
            # Keep room for the marker, or the scroll-back limit would prune it at once.
            shown = min(kept, self._scrollback - 1)
            path = self._path(model, tail)
            lines.append(f"… {arrived - shown} lines skipped; full log in {path}")
            arrived = shown
        newest = list(islice(reversed(buffer.lines), arrived))
        newest.reverse()
        lines.extend(self._wrap(clean_lines(newest)))  # the marker is ours: never cut
        tail.version = buffer.version
        if lines:
            tail.log.write_lines(lines)

    def _wrap(self, lines: list[str]) -> list[str]:
        # The panel's width less the log's border (2) and its scrollbar (1).
        return wrap_lines(lines, self.size.width - 3)

    def _path(self, model: StudyModel, tail: _Tail) -> str:
        assert self._trial is not None
        record = model.records.get(self._trial)
        if record is not None and tail.file_name in record.files:
            return record.files[tail.file_name]
        running = model.runs.get(self._trial)
        if running is not None:
            return os.path.join(running.trial_dir, tail.file_name)
        return f"the trial's {tail.file_name}"

    def _set_titles(self) -> None:
        key = (self._trial, self._running, self._following)
        if key == self._titles:
            return
        self._titles = key
        for tail in self._tails:
            if self._trial is None:
                tail.log.border_title = f"{tail.title} · waiting for a trial"
                continue
            title = f"{tail.title} · trial {self._trial}"
            if tail.source == "server" and self._running:
                title += " (running)"
            if not self._following:
                title += " · pinned"
            tail.log.border_title = title

    # -- files --------------------------------------------------------------------------------

    def _read_file(self, tail: _Tail, path: str, generation: int) -> None:
        async def load() -> None:
            found = await asyncio.to_thread(read_tail, path, self._scrollback)
            if generation != self._generation:
                return  # the user moved on to another trial meanwhile
            if found is None:
                lines = [tail.missing]
            else:
                lines, truncated = found
                lines = self._wrap(clean_lines(lines[1:] if truncated else lines))
                if truncated:
                    lines = [f"… earlier lines not shown; full log in {path}", *lines]
            tail.log.write_lines(lines)

        self.run_worker(load(), group=f"log-file-{tail.source}", exclusive=True)
