"""A long-lived GuideLLM: runs ``guidellm run`` in-process, once per request, in GuideLLM's venv.

Why: each ``guidellm run`` subprocess pays GuideLLM's imports, its tokenizer load and its
shutdown again (15-25 s a trial on 2 cores). This script is started once a study by GuideLLM's
own interpreter (``GUIDELLM_VENV/bin/python driver.py``; the tuner is not installed there, so
nothing here imports ``tui_tuner``) and runs GuideLLM's own click ``run`` command for every
request, with the very argument list the CLI path builds (:mod:`.command`). The measurement,
the log lines, the report and the scenario file (API key inside) are therefore those of the CLI.
GuideLLM 0.8.1's ``run`` is re-entrant: each call builds its own backend, scheduler, worker
processes and asyncio loop (``asyncio.run``); loguru's sinks are set up once at import. The
worker processes are forked from a forkserver that imported GuideLLM once
(:func:`_fork_from_a_warm_server`), so they too start warm.

Protocol, one JSON object a line. stdin: ``{"id": N, "argv": [...]}`` (the arguments after the
executable: ``run --backend ...``). Output: GuideLLM's own lines as they come, and the driver's,
each starting with :data:`MARK`: ``{"ready": true, "pid": P}`` once GuideLLM is imported,
``{"unavailable": "why"}`` if it cannot be (then exit 3), and ``{"id": N, "exit": CODE,
"error": TEXT|null, "seconds": S}`` after each run. End of stdin ends the driver. The adapter
merges stderr into stdout, so a result line is written in one ``os.write`` after GuideLLM's
output is flushed, and its lines always come before the result of their run.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import sys
import time
import traceback
from typing import Any

#: Starts every line the driver itself writes (an ASCII record separator GuideLLM never prints).
MARK = "\x1etui-tuner-driver "

#: Exit status when GuideLLM cannot be imported by this interpreter.
UNAVAILABLE_EXIT = 3


def _say(payload: dict[str, Any]) -> None:
    """One protocol line, after whatever GuideLLM wrote (an atomic write to the shared pipe)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os.write(1, (MARK + json.dumps(payload) + "\n").encode("utf-8"))


def _exit_code(cli: Any, click: Any, argv: list[str]) -> tuple[int, str | None]:
    """Run one ``guidellm ...`` as its console script would, and the exit status it would give
    (click's standalone mode, reproduced: usage errors 2, aborts 1, a traceback 1)."""
    try:
        returned = cli.main(args=argv, prog_name="guidellm", standalone_mode=False)
        return (returned if isinstance(returned, int) else 0), None
    except click.exceptions.ClickException as err:
        err.show()
        return int(err.exit_code), err.format_message()
    except click.exceptions.Abort:
        print("Aborted!", file=sys.stderr)
        return 1, "aborted"
    except SystemExit as err:
        code = err.code
        return (code if isinstance(code, int) else (0 if code is None else 1)), None
    except Exception as err:
        traceback.print_exc()
        return 1, f"{type(err).__name__}: {err}"


def _flush_logs(logger: Any) -> None:
    """Wait until loguru's queue (GuideLLM logs with ``enqueue=True``) has written every line."""
    try:
        logger.complete()
    except Exception:  # a log sink that failed must not lose the run's result
        traceback.print_exc()


#: What GuideLLM's scheduler processes import, loaded once into the forkserver (see main).
PRELOAD = (
    "guidellm.scheduler.worker_group",
    "guidellm.scheduler.worker",
    "guidellm.backends",
    "guidellm.benchmark",
)


def _fork_from_a_warm_server() -> None:
    """Start GuideLLM's worker processes from a forkserver that imported GuideLLM once.

    Every benchmark starts its own scheduler processes (up to ``max_worker_processes``, 10,
    and a manager). Spawned, each imports GuideLLM afresh: on 2 busy cores that was 14-25 s of
    "pending" before the first request, every trial, in the driver as in the CLI. GuideLLM
    supports ``forkserver`` as its context (``settings.mp_context_type``); with its modules
    preloaded, the forkserver pays the imports at the first benchmark and forks ready workers
    for every later one (measured: 25 s a run for a 4 s window spawned, 11 s forkserved). The
    workers run the same code either way; only how their process starts differs. A value the
    user set in the environment wins.
    """
    os.environ.setdefault("GUIDELLM__MP_CONTEXT_TYPE", "forkserver")
    if os.environ["GUIDELLM__MP_CONTEXT_TYPE"] == "forkserver":
        import multiprocessing

        multiprocessing.set_forkserver_preload(list(PRELOAD))


def main() -> int:
    _fork_from_a_warm_server()  # before GuideLLM's settings are read, at its import
    try:
        click = importlib.import_module("click")
        cli = importlib.import_module("guidellm.cli").cli
        logger = importlib.import_module("loguru").logger
    except Exception as err:  # not GuideLLM's interpreter, or a broken install
        _say({"unavailable": f"{type(err).__name__}: {err}"})
        return UNAVAILABLE_EXIT
    _say({"ready": True, "pid": os.getpid()})
    for raw in sys.stdin.buffer:
        try:
            request = json.loads(raw)
            number, argv = int(request["id"]), [str(a) for a in request["argv"]]
        except (ValueError, KeyError, TypeError) as err:
            _say({"id": None, "exit": 2, "error": f"bad request: {err}", "seconds": 0.0})
            continue
        started = time.monotonic()
        code, error = _exit_code(cli, click, argv)
        _flush_logs(logger)
        # A CLI run starts with an empty heap; here the last run's report, requests and
        # scheduler state are garbage now. Collected between runs, not by a full collection
        # that would pause request dispatch inside the next run's measured window.
        gc.collect()
        _say({"id": number, "exit": code, "error": error, "seconds": time.monotonic() - started})
    return 0


if __name__ == "__main__":  # GuideLLM's spawned workers import this file again as __mp_main__
    sys.exit(main())
