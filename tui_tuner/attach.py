"""``tui-tuner attach``: the TUI on a study that workers elsewhere run, with no engine of its own.

The study is found as ``show`` finds it (`results.open_study`: a storage URL with ``--study``,
a ``study.db``, a study directory), then opened for writing its control requests
(`StudyStore`). `engine.observer.Observer` turns what the storage says into the app's events
and is its `Steering`; `ui.attached.AttachedApp` is the app. Quitting leaves the workers
running.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.text import Text

from tui_tuner.core.errors import UserError
from tui_tuner.core.events import Event
from tui_tuner.core.stop import StopKind
from tui_tuner.engine.observer import Observer
from tui_tuner.engine.orchestrator import StudyOutcome
from tui_tuner.engine.steering import Steering
from tui_tuner.engine.storage import shown_url
from tui_tuner.engine.study import StudyStore
from tui_tuner.results import open_study
from tui_tuner.study_dir import StudySetup
from tui_tuner.ui.attached import AttachedApp
from tui_tuner.ui.themes import load_theme

__all__ = ["attached_app", "open_attached", "run_attach"]

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def open_attached(target: str, study: str | None) -> tuple[StudySetup, int | None]:
    """The study to attach to, opened for its control requests, and its budget when its
    configuration is known (a study directory); refused with one line if it is not there."""
    import optuna

    try:
        view = open_study(target, study)
    except optuna.exceptions.OptunaError as err:  # a database without Optuna's tables yet
        raise UserError(f"cannot read the study storage {_shown(target)}: {err}") from None
    url = view.storage_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise UserError(f"{target}: the study has no storage yet ({url.removeprefix('sqlite:///')});"
                        " attach once a worker runs it")  # fmt: skip
    store = StudyStore(view.config, view.storage_url)
    setup = StudySetup(view.config, view.study_dir or Path.cwd(), store)
    return setup, view.config.study.n_trials if view.config_known else None


def attached_app(target: str, study: str | None, *, theme: str | None) -> AttachedApp:
    """The app attached to the study, its observer started once it opens."""
    chosen = load_theme(theme) if theme else None
    setup, budget = open_attached(target, study)
    app: AttachedApp | None = None

    async def engine(
        setup: StudySetup, emit: Callable[[Event], None], attach: Callable[[Steering], None]
    ) -> StudyOutcome:
        assert app is not None
        shown_dir = "" if setup.study_dir == Path.cwd() else str(setup.study_dir)
        observer = Observer(setup.store, emit, study_dir=shown_dir, n_trials=budget)
        steering: Steering = observer  # the app's commands go to it
        attach(steering)
        app.attach_observer(observer)
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, app.on_signal, sig)
        try:
            stop = await observer.run()
        finally:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)
        return StudyOutcome(stop, observer.records)

    app = AttachedApp(setup, engine, theme=chosen)
    app.export_hint = f"{_shown(target)} --study {setup.config.study.name} --format command"
    return app


def _shown(target: str) -> str:
    return shown_url(target) if "://" in target else target  # no password on the screen


def run_attach(target: str, study: str | None, *, theme: str | None) -> int:
    """Watch and steer the study until the user leaves or it finishes; the workers go on."""
    app = attached_app(target, study, theme=theme)
    name, where = app.setup.config.study.name, _shown(target)
    code = app.run()
    console = Console(highlight=False)
    outcome = app.outcome
    if outcome is None or outcome.stop.kind == StopKind.USER:
        text = f"left the study {name}; its workers go on (tui-tuner show {where} --study {name})"
    else:
        text = f"the study {name} ended: {outcome.reason}"
    if app.error:
        text += f"\nthe attached TUI stopped with an error: {app.error}"
    console.print(Text(text), soft_wrap=True)
    return code if code is not None else 0
