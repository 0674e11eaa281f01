"""The `attach` subcommand: the TUI on a study that workers elsewhere run (`attach.py`).
`cli.py` registers it (`register`) and turns its `UserError`s into one line and exit code 2."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["register"]

Command = Callable[..., argparse.ArgumentParser]


def register(sub: argparse._SubParsersAction[Any], command: Command) -> None:
    """Add `attach` with `cli._command` (its help line and examples)."""
    parser = command(
        sub,
        "attach",
        "open the TUI on a study that workers run elsewhere (a shared storage): watch it, pause, "
        "prune, stop; quitting leaves the workers running",
        ["tui-tuner attach postgresql://tuner:PW@db:5432/tuner --study my-study",
         "tui-tuner attach studies/my-study/study.db",
         "tui-tuner attach studies/my-study"],
        _attach,
    )  # fmt: skip
    parser.add_argument(
        "target",
        metavar="STORAGE_URL|STUDY_DB|STUDY_DIR",
        help="the study's storage (a SQLAlchemy URL), its SQLite file, or its directory",
    )
    parser.add_argument(
        "--study", metavar="NAME", default=None, help="the study (needed when it holds several)"
    )
    parser.add_argument(
        "--theme",
        default=None,
        help="UI colours: dark (default), light, high-contrast, or a theme .yaml file",
    )


def _attach(ns: argparse.Namespace) -> int:
    from tui_tuner.attach import run_attach

    return run_attach(ns.target, ns.study, theme=ns.theme)
