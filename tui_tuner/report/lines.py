"""A study's events as log lines, for `tui-tuner worker` in a container or on a cluster.

One line per event that matters, written and flushed at once, so that ``docker logs`` and
``kubectl logs`` show it live: no progress bar, no colour, no cursor moves. Plain lines are
``TIME LEVEL TRIAL TEXT``::

    2026-12-03T19:40:01.512Z INFO    trial 3  started: max_num_seqs=16 on GPUs 0

``json`` lines are `core.events.to_json` with the time, the level and the host added. Log lines
of servers and the load generator, its progress and the GPU readings are left out: they are in
each trial's files, and they would drown the rest.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import IO, Any, Literal

from tui_tuner.core.events import (
    BenchProgress,
    Event,
    GpuSampled,
    LogLine,
    Notice,
    ServerFiguresRead,
    StudyFinished,
    StudyStarted,
    StudyStateChanged,
    TrialFinished,
    TrialPhaseChanged,
    TrialStarted,
    to_json,
)
from tui_tuner.core.stop import StopKind
from tui_tuner.core.trial import TrialRecord
from tui_tuner.report.summary import format_params

__all__ = ["LOG_FORMATS", "Level", "LineSink", "finished_words"]

LOG_FORMATS = ("plain", "json")
Level = Literal["info", "warning", "error"]

#: Events a log leaves out (each trial's files and ``--events-jsonl`` keep them).
_QUIET = (LogLine, BenchProgress, GpuSampled, ServerFiguresRead)
#: Escape sequences and control characters a server's text could carry into a log line.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")


def _one_line(text: str) -> str:
    """Text fit for one log line: line breaks as " / ", no colours or cursor moves."""
    lines = [part.strip() for part in text.replace("\r\n", "\n").split("\n")]
    return _CONTROL.sub("", " / ".join(part for part in lines if part))


def _stamp(now: float) -> str:
    millis = int(now * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{millis:03d}Z"


class LineSink:
    """An event sink writing one line per event to ``out`` (``plain`` or ``json``); `say` adds
    the caller's own lines (the worker's start and end) in the same format."""

    def __init__(
        self,
        out: IO[str],
        *,
        log_format: str = "plain",
        host: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if log_format not in LOG_FORMATS:
            raise ValueError(f"log format {log_format!r}: allowed {', '.join(LOG_FORMATS)}")
        self._out, self._json, self._host, self._clock = out, log_format == "json", host, clock

    def say(
        self,
        level: Level,
        text: str,
        *,
        kind: str = "worker",
        number: int | None = None,
        fields: Mapping[str, object] | None = None,
    ) -> None:
        """One line: plain, ``text``; JSON, ``kind`` with ``fields`` (and ``text``)."""
        if self._json:
            self._json_line(level, {"kind": kind, "number": number, **(fields or {}),
                                    "text": text})  # fmt: skip
        else:
            self._plain_line(level, number, text)

    def __call__(self, event: Event) -> None:
        if isinstance(event, _QUIET):
            return
        if isinstance(event, StudyStateChanged) and event.state == "finished":
            return  # StudyFinished, right after it, says why
        level, number, text = describe(event)
        if self._json:
            self._json_line(level, {**to_json(event), "text": text})
        else:
            self._plain_line(level, number, text)

    def _plain_line(self, level: Level, number: int | None, text: str) -> None:
        trial = f"trial {number}" if number is not None else "-"
        self._write(f"{_stamp(self._clock())} {level.upper():<7} {trial:<8} {_one_line(text)}")

    def _json_line(self, level: Level, data: Mapping[str, Any]) -> None:
        head = {"time": _stamp(self._clock()), "level": level, "host": self._host}
        row = {**head, **data}
        row["host"] = data.get("host") or self._host  # an event's own host (a trial's) is kept
        self._write(json.dumps(row, default=str, separators=(",", ":")))

    def _write(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()


def describe(event: Event) -> tuple[Level, int | None, str]:
    """The level, the trial's number (None: the study's) and the words of one event."""
    if isinstance(event, StudyStarted):
        budget = f"{event.n_trials} trials" if event.n_trials is not None else "no trial budget"
        if event.time_budget_s is not None:
            budget += f", {event.time_budget_s:g} s"
        sim = " on the SIMULATED server" if event.simulated else ""
        repaired = ""
        if event.repaired:
            numbers = ", ".join(str(n) for n in event.repaired)
            repaired = f"; failed and queued again the trials dead workers left: {numbers}"
        return (
            "info",
            None,
            (
                f"study {event.study_name} ({event.objective}){sim}: {budget}, "
                f"{event.finished_before} finished before; storage {event.storage}; "
                f"directory {event.study_dir}{repaired}"
            ),
        )
    if isinstance(event, TrialStarted):
        what = format_params(event.params, baseline=event.baseline)
        gpus = f" on GPUs {','.join(str(g) for g in event.gpus)}" if event.gpus else ""
        return "info", event.number, f"started: {what}{gpus}; files {event.trial_dir}"
    if isinstance(event, TrialPhaseChanged):
        return "info", event.number, f"{event.phase} ({event.elapsed_s:.0f} s in)"
    if isinstance(event, TrialFinished):
        r = event.record
        failed = r.state == "failed" and not r.interrupted and r.duplicate_of is None
        level: Level = "warning" if failed or r.interrupted else "info"
        return level, r.number, finished_words(r)
    if isinstance(event, Notice):
        return event.level, event.number, event.text
    if isinstance(event, StudyStateChanged):
        reason = f": {event.reason}" if event.reason else ""
        return "info", None, f"study {event.state}{reason}"
    if isinstance(event, StudyFinished):
        level = "error" if event.stop_kind.failed else "info"
        if event.stop_kind is StopKind.SIGNAL:
            level = "warning"
        again = "; resumable" if event.resumable else ""
        return level, None, f"study finished ({event.stop_kind.value}): {event.reason}{again}"
    return "info", None, event.kind  # a kind this module does not know yet: at least its name


def finished_words(r: TrialRecord) -> str:
    """A finished trial in words: its state, its figures or why it failed, and its note."""
    took = f" in {r.timings['total']:.0f} s" if "total" in r.timings else ""
    note = f"; {r.note}" if r.note else ""
    if r.interrupted:
        after = f" after {r.timings['total']:.0f} s" if "total" in r.timings else ""
        why = r.note.removeprefix("interrupted") if r.note.startswith("interrupted") else note
        again = "" if "runs again" in why else "; it runs again"
        return f"interrupted{after}{why}{again}"
    if r.duplicate_of is not None:
        return f"not run: {r.note or f'same configuration as trial {r.duplicate_of}'}"
    if r.measurement is not None and r.state == "complete":
        m = r.measurement
        figures = (
            f"{m.output_tok_s:,.1f} output tok/s, p95 {m.request_latency_p95_ms:,.0f} ms, "
            f"TTFT p95 {m.ttft_p95_ms:,.0f} ms"
        )
        extra = "" if r.feasible is not False else " (infeasible: misses a constraint)"
        if r.client_limited:
            extra += " (client-limited?)"
        if r.server_of is not None:
            extra += f" on trial {r.server_of}'s server"
        if m.load_curve is not None:
            extra += f"; {m.load_curve.words()}"
        return f"{r.label}{took}: {figures}{extra}{note}"
    failure = r.failure or {}
    message = str(failure.get("message", "")) or r.note
    again = "; its configuration runs again" if r.rerun else ""
    log = f"; log {r.files['server.log']}" if r.files.get("server.log") else ""
    return f"{r.label}{took}: {message or '-'}{again}{log}"
