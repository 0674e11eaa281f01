"""The `worker` subcommand: a headless tuner for containers and clusters.

``tui-tuner worker CONFIG --storage URL`` joins the study CONFIG names in a shared storage and
runs its trials on this host until the study's budget is done (by all workers together) or it
is stopped. It is `tune --headless` made for a job scheduler: the storage comes from the
command line, the study directory defaults to one per host (so that workers on one shared
filesystem never meet), the output is log lines (`report/lines.py`), and a storage that cannot
be reached at start has an exit code of its own. `cli.py` registers it (`register`) and turns
its `UserError`s into one line and exit code 2, as for every command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui_tuner.core.stop import EXIT_ERROR, EXIT_FAILED, EXIT_OK, EXIT_SIGNAL

if TYPE_CHECKING:
    from tui_tuner.report.lines import Level, LineSink
    from tui_tuner.study_dir import StudySetup

__all__ = ["EXIT_UNREACHABLE", "WORKER_EXIT_CODES", "register", "worker_dir"]

Command = Callable[..., argparse.ArgumentParser]

#: The storage could not be reached or opened when the worker started; nothing was run.
EXIT_UNREACHABLE = 3

#: Each exit code of `tui-tuner worker` and what it means, as its --help shows it.
WORKER_EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "the study is done: its budget is spent (by all its workers together) or every "
              "configuration was tried; or it was stopped by a request in its storage"),
    (EXIT_FAILED, "the study stopped on a failure: the baseline failed, too many trials "
                  "failed in a row, the disk is full, or a server's GPU memory was not "
                  "released; fix the cause, then start the workers again"),
    (EXIT_ERROR, "an error: a bad configuration or argument, GuideLLM not found, the storage "
                 "lost during the study, a crash"),
    (EXIT_UNREACHABLE, "the storage could not be reached or opened at start (down, refused, "
                       "a wrong password or database); nothing was run"),
    (EXIT_SIGNAL, "stopped by a signal (SIGTERM from the container runtime, Ctrl-C, SIGHUP): "
                  "the running trial was interrupted and queued again for any worker"),
)  # fmt: skip


def worker_dir(study_name: str, host: str) -> Path:
    """The default study directory of a worker: one per study and host, so that workers
    sharing a filesystem (a cluster's home, a mounted volume) never share one."""
    return Path("tui-tuner-worker") / study_name / host


class _Stopped(BaseException):
    """A signal before the study runs (a BaseException, so that no library's ``except
    Exception`` around a blocking connect swallows it)."""

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(sig.name)
        self.sig = sig


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Until the study's own handlers take over (`compose.run_study`), SIGTERM, SIGINT and
    SIGHUP stop the worker's set-up (opening a storage can take ``storage_timeout_s``) with
    its last line and exit 130, instead of a kill without a word."""

    def stop(signum: int, frame: object) -> None:
        raise _Stopped(signal.Signals(signum))

    sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    before = {sig: signal.signal(sig, stop) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _worker(ns: argparse.Namespace) -> int:
    import traceback

    from tui_tuner import __version__
    from tui_tuner.core.errors import UserError
    from tui_tuner.report.lines import LineSink

    host = socket.gethostname()
    log = LineSink(sys.stdout, log_format=ns.log_format, host=host)
    log.say("info", f"worker started: host {host}, pid {os.getpid()}, tui-tuner {__version__}",
            kind="worker_started", fields={"pid": os.getpid(), "version": __version__})  # fmt: skip
    try:
        with _stop_on_signals():
            ready = _prepare(ns, log, host)
    except _Stopped as stopped:
        why = f"stopped by {stopped.sig.name} before the study started"
        _end(log, "warning", EXIT_SIGNAL, why, [], stop="signal", resumable=True)
        return EXIT_SIGNAL
    except UserError:
        raise  # one line and exit 2, from cli.py
    except Exception as err:  # a bug: its line in the log, its traceback on stderr
        _end(log, "error", EXIT_ERROR, f"crashed: {type(err).__name__}: {err}", [])
        traceback.print_exc()
        return EXIT_ERROR
    if isinstance(ready, int):
        return ready
    return _run(*ready, log)


def _prepare(ns: argparse.Namespace, log: LineSink, host: str) -> tuple[StudySetup, Path] | int:
    """The study set up in this worker's directory, its storage open, and GuideLLM found; or
    the exit code when the storage cannot be reached."""
    from tui_tuner.compose import find_load_generator
    from tui_tuner.core.config_load import load_config
    from tui_tuner.engine.storage import shown_url
    from tui_tuner.study_dir import tune_setup

    path = Path(ns.config)
    own = load_config(path).study  # the file's own storage and the study's name
    url = ns.storage
    if own.storage and own.storage != url:
        log.say("warning", f"{path}: study.storage is {shown_url(own.storage)}; this worker "
                f"uses --storage {shown_url(url)} instead")  # fmt: skip
    if url.startswith("sqlite"):
        log.say("warning", "a SQLite storage serves the workers of one host only; give "
                "--storage a PostgreSQL URL for workers on several hosts")  # fmt: skip
    study_dir = Path(ns.study_dir) if ns.study_dir else worker_dir(own.name, host)
    reused = (study_dir / "config.yaml").is_file()
    overrides: dict[str, object] = {"study.storage": url}
    if ns.workers is not None:
        overrides["study.workers"] = ns.workers
    setup = tune_setup(path, study_dir=study_dir, overrides=overrides)
    again = " (reused: a worker of this host ran here before)" if reused else ""
    log.say("info", f"study {own.name}, storage {shown_url(url)}, directory "
            f"{setup.study_dir}{again}", kind="worker_study",
            fields={"study": own.name, "storage": shown_url(url),
                    "study_dir": str(setup.study_dir)})  # fmt: skip
    guidellm = find_load_generator(setup, ns.guidellm)
    unreachable = _open_storage(setup)
    if unreachable is not None:
        print(f"tui-tuner: error: {unreachable}", file=sys.stderr, flush=True)
        return EXIT_UNREACHABLE
    if setup.config.study.warm_start:
        from tui_tuner.warm_start import apply_warm_start

        apply_warm_start(setup)
    for note in setup.config.notes:
        log.say("info", f"note: {note}")
    return setup, guidellm


def _open_storage(setup: StudySetup) -> str | None:
    """Open the study in its storage now; what to say if it cannot be reached (None: open). A
    URL the driver cannot use at all is a `UserError` (a bad argument)."""
    from tui_tuner.core.errors import UserError
    from tui_tuner.engine.storage import (
        StorageUnavailable,
        is_storage_error,
        shown_url,
        storage_cause,
    )

    try:
        setup.store  # noqa: B018  (opens the storage and creates or loads the study)
    except StorageUnavailable as err:
        return str(err)
    except UserError as err:
        cause = err.__context__
        if cause is None or not is_storage_error(cause):
            raise
        return (
            f"the study storage {shown_url(setup.storage_url)} cannot be reached: "
            f"{storage_cause(cause)}; nothing was run (exit code {EXIT_UNREACHABLE})"
        )
    return None


def _run(setup: StudySetup, guidellm: Path, log: LineSink) -> int:
    """Run the study to its end under the signals `compose.run_study` handles; say the end."""
    import asyncio
    import traceback

    from tui_tuner.compose import LateSignals, run_study
    from tui_tuner.core.errors import UserError
    from tui_tuner.core.events import Event, TrialStarted
    from tui_tuner.core.stop import exit_code

    started: list[int] = []

    def emit(event: Event) -> None:
        if isinstance(event, TrialStarted):
            started.append(event.number)
        log(event)

    with LateSignals() as late:
        try:
            outcome = asyncio.run(run_study(setup, emit, guidellm=guidellm, late=late))
        except asyncio.CancelledError:  # a second signal: the servers were still stopped
            _end(log, "warning", EXIT_SIGNAL, "interrupted by a second signal", started)
            return EXIT_SIGNAL
        except UserError as err:  # the storage lost during the study, most likely
            _end(log, "error", EXIT_ERROR, str(err), started)
            raise
        except Exception as err:  # a bug: its line in the log, its traceback on stderr
            _end(log, "error", EXIT_ERROR, f"crashed: {type(err).__name__}: {err}", started)
            traceback.print_exc()
            return EXIT_ERROR
    stop, code = outcome.stop, exit_code(outcome.stop)
    level: Level = "error" if stop.kind.failed else "warning" if code == EXIT_SIGNAL else "info"
    _end(log, level, code, stop.text, started, stop=stop.kind.value, resumable=stop.resumable)
    if late.received:
        names = ", ".join(sorted({s.name for s in late.received}))
        log.say("info", f"{names} arrived after the study had ended", kind="worker_note")
    return code


def _end(log: LineSink, level: Level, code: int, why: str, started: list[int], **more: Any) -> None:
    trials = ", ".join(str(n) for n in started) or "none"
    kind = f" ({more['stop']})" if "stop" in more else ""
    log.say(level, f"worker finished{kind}: {why}; trials run here: {trials}; exit code {code}",
            kind="worker_finished",
            fields={"exit_code": code, "stop_reason": why, "trials": started, **more})  # fmt: skip


def _storage_url(text: str) -> str:
    if "://" not in text:
        raise argparse.ArgumentTypeError(
            f"not a storage URL: {text!r} (e.g. postgresql://USER:PASSWORD@HOST:5432/DB)"
        )
    return text


def _workers(text: str) -> int | str:
    """``--workers``: a whole number from 1, or auto (as `tune`'s)."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1, nor auto")
    return int(text)


def _exit_codes_text() -> str:
    lines = ["exit codes:"]
    for code, meaning in WORKER_EXIT_CODES:
        wrapped = textwrap.wrap(meaning, 72)
        lines.append(f"  {code:<4} {wrapped[0]}")
        lines += [f"       {more}" for more in wrapped[1:]]
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction[Any], command: Command) -> None:
    """Add `worker` with `cli._command` (its help line and examples), its exit codes below."""
    parser = command(
        sub,
        "worker",
        "join the study a configuration names at a shared storage and run its trials on this "
        "host until its budget is done (for containers, SSH and clusters; log lines, no UI)",
        ["tui-tuner worker study.yaml --storage postgresql://tuner:PW@db:5432/tuner",
         "tui-tuner worker study.yaml --storage postgresql://tuner@db:5432/tuner --workers auto",
         "tui-tuner worker study.yaml --storage postgresql://tuner:PW@db:5432/tuner "
         "--log-format json --study-dir /scratch/tuner"],
        _worker,
    )  # fmt: skip
    parser.epilog = f"{parser.epilog}\n\n{_exit_codes_text()}"
    parser.add_argument("config", metavar="CONFIG", help="the study's YAML configuration")
    parser.add_argument(
        "--storage",
        required=True,
        type=_storage_url,
        metavar="URL",
        help="the shared study storage, a SQLAlchemy URL (postgresql://USER:PASSWORD@HOST/DB); "
        "it replaces CONFIG's study.storage",
    )
    parser.add_argument(
        "--study-dir",
        default=None,
        metavar="DIR",
        help="this worker's own directory (logs, trial files, lock); default: "
        "tui-tuner-worker/STUDY_NAME/HOSTNAME",
    )
    parser.add_argument(
        "--log-format",
        choices=("plain", "json"),  # report/lines.py's LOG_FORMATS, not imported for --help
        default="plain",
        help="plain: one line per event (time, level, trial, text); json: one JSON object "
        "per line (default: plain)",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=None,
        metavar="N",
        help="run N trials side by side on this host, each on GPUs of its own, or auto: one a "
        "GPU (overrides study.workers)",
    )
    parser.add_argument(
        "--guidellm",
        default=None,
        metavar="PATH",
        help="GuideLLM executable (default: workload.guidellm, $TUI_TUNER_GUIDELLM, the venv "
        "`make guidellm` builds, PATH)",
    )
