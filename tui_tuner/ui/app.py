"""The terminal UI: one screen that shows a study live and steers it.

Events come up from the engine as messages (``EngineEvents``, at most 20 a second however
many events they carry) into ``StudyModel`` (cheap: no widget work per event); a 10 Hz
timer hands the model down to the widgets, which redraw only what changed, so a server logging
1,000 lines/s costs a few list appends and ten small repaints a second. Commands go down as
plain method calls on a `Steering` (one tuner's orchestrator, the lanes that run several trials
at once, or a study attached from afar), which only set flags. With several trials running,
the live panels and `x` act on the one the table's cursor is on, else the one started last
(`StudyModel.focus`); pause and stop act on them all. The GPUs' and the server's own
figures arrive as events too (the assembly samples them); the app touches no adapter. Storage
and files are touched from worker threads, never from this loop.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Iterable

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.theme import Theme
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from tui_tuner.core.events import Event, GpuSampled, Notice, ServerFiguresRead, StudyFinished
from tui_tuner.core.space import SearchSpace
from tui_tuner.core.stop import StopKind, exit_code
from tui_tuner.core.telemetry import GpuState
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.orchestrator import StudyOutcome
from tui_tuner.engine.preview import preview_records, sqlite_path
from tui_tuner.engine.steering import Steering
from tui_tuner.study_dir import StudySetup
from tui_tuner.ui.header import header_text
from tui_tuner.ui.model import StudyModel
from tui_tuner.ui.screens.detail import TrialDetail
from tui_tuner.ui.screens.dialogs import ConfirmPrune, HelpScreen
from tui_tuner.ui.screens.editor import SpaceEditor
from tui_tuner.ui.themes import load_theme, theme_names
from tui_tuner.ui.widgets.gpu import GpuPanel
from tui_tuner.ui.widgets.live import TrialLive
from tui_tuner.ui.widgets.logs import LogPanel
from tui_tuner.ui.widgets.pareto import ParetoPlot
from tui_tuner.ui.widgets.trial_table import TrialTable

__all__ = ["EngineEvents", "EngineRunner", "TunerApp"]

EngineRunner = Callable[
    [StudySetup, Callable[[Event], None], Callable[[Steering], None]], Awaitable[StudyOutcome]
]
"""Runs the study: (setup, emit, attach) -> outcome; ``attach`` receives what steers it (the
orchestrator, or the lanes that run several trials at once, or an attached study)."""

NARROW = 110  # below this many columns the Pareto plot gives its room to the table
GATHER_S = 0.05  # engine events gather this long before they go up as one message


class EngineEvents(Message):
    """The engine's events since the last such message, in the order it emitted them."""

    def __init__(self, events: list[Event]) -> None:
        super().__init__()
        self.events = events


class TunerApp(App[int]):
    CSS_PATH = "tuner.tcss"
    TITLE = "tui-tuner"
    # Short words: the footer must show every key, `? Help` included, at 80 columns.
    BINDINGS = [
        Binding("p", "toggle_pause", "Pause"),
        Binding("P", "pause_now", "Pause now", show=False),
        Binding("x", "prune", "Prune"),
        Binding("e", "edit_space", "Edit"),
        Binding("s", "export", "Export"),
        Binding("enter", "detail", "Detail", show=False),
        Binding("l", "switch_logs", "Logs"),
        Binding("g", "guidellm_log", "GuideLLM"),
        Binding("q", "quit_study", "Quit"),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(
        self,
        setup: StudySetup,
        run_engine: EngineRunner,
        *,
        theme: Theme | None = None,
        before_engine: Callable[[], None] = lambda: None,
    ) -> None:
        """``before_engine`` runs in the opening thread before the engine starts (the real
        adapters' imports, which would otherwise stall this loop for a quarter second)."""
        super().__init__()
        for name in theme_names():
            self.register_theme(load_theme(name))
        if theme is not None:
            self.register_theme(theme)
        self._theme_name = theme.name if theme is not None else "tui-tuner-dark"
        self.setup = setup
        self.run_engine = run_engine
        self.before_engine = before_engine
        self.model = StudyModel(setup.config)
        self.orchestrator: Steering | None = None
        #: The search space the study uses now (the editor starts from it).
        self.space: SearchSpace = setup.config.space
        #: The followed trial's server figures last handed to the GPU panel: (number, version).
        self._figures_drawn: tuple[int, int] | None = None
        self.outcome: StudyOutcome | None = None
        self.error: str | None = None
        self._quitting = False
        self._header_plain = ""
        self._inbox: list[Event] = []
        #: The newest GPU sample and server figures (wrapped: None is a value) not drawn yet.
        self._gpu_news: GpuState | None = None

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="header")
        with Horizontal(id="top"):
            yield TrialTable(id="trials")
            yield ParetoPlot(id="pareto")
        with Vertical(id="bottom"):
            yield TrialLive(id="live")
            with Horizontal(id="below"):
                yield LogPanel(id="logs")
                with Vertical(id="side"):
                    yield GpuPanel(id="gpu")
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        self.theme = self._theme_name
        self._panels = (
            self.query_one(TrialTable),
            self.query_one(ParetoPlot),
            self.query_one(LogPanel),
        )
        self._gpu = self.query_one(GpuPanel)
        self._live = self.query_one(TrialLive)
        self._panels[0].focus()
        self.set_interval(0.1, self._tick)
        self._open_study()  # a first look at the stored trials, then the engine starts

    def on_resize(self) -> None:
        self.screen.set_class(self.size.width < NARROW, "narrow")

    # -- engine ----------------------------------------------------------------------------

    @work(thread=True, group="open", exit_on_error=False)
    def _open_study(self) -> None:
        """What comes before the engine, off the event loop. A first look at a SQLite study's
        finished trials, read straight from its file and shown at once (0.1 s for 1,000 trials,
        where opening the study through Optuna takes over a second); the engine's own list
        replaces it. Then the real adapters' imports (a quarter of a second), which the engine
        would otherwise do on this loop. Then the engine starts, whatever happened before."""
        try:
            db = sqlite_path(self.setup.storage_url)
            records = None if db is None else preview_records(db, self.setup.config.study.name)
            if records:
                self.call_from_thread(self._show_first_look, records)
            self.before_engine()
        finally:
            self.call_from_thread(self._start_engine)

    def _show_first_look(self, records: list[TrialRecord]) -> None:
        if self.model.state == "starting":
            self.model.load(records)
            self._tick()

    def _start_engine(self) -> None:
        if not self._quitting:
            self._drive_engine()

    @work(group="engine", exclusive=True, exit_on_error=False)
    async def _drive_engine(self) -> None:
        self.outcome = await self.run_engine(self.setup, self._emit, self._attach_orchestrator)

    def _attach_orchestrator(self, orchestrator: Steering) -> None:
        self.orchestrator = orchestrator

    def _emit(self, event: Event) -> None:
        """The engine's sink, called on this loop: events gather for ``GATHER_S``, then go up
        as one message (a server logging 1,000 lines/s is 20 messages a second, not 1,000; the
        screen is redrawn at 10 Hz anyway)."""
        self._inbox.append(event)
        if len(self._inbox) == 1:
            asyncio.get_running_loop().call_later(GATHER_S, self._post_inbox)

    def _post_inbox(self) -> None:
        events, self._inbox = self._inbox, []
        self.post_message(EngineEvents(events))

    @on(EngineEvents)
    def _apply_events(self, message: EngineEvents) -> None:
        for event in message.events:
            if isinstance(event, GpuSampled):
                self._gpu_news = event.state  # drawn by the next tick
                continue
            if isinstance(event, ServerFiguresRead):
                self.model.apply(event)  # its trial's; the followed one's are drawn
                continue
            self.model.apply(event)
            if isinstance(event, Notice):
                severity = {"info": "information", "warning": "warning", "error": "error"}
                level = severity[event.level]
                self.notify(event.text, severity=level, timeout=8,  # type: ignore[arg-type]
                            markup=False)  # fmt: skip
            elif isinstance(event, StudyFinished):
                self.notify(f"study finished: {event.reason}", timeout=15, markup=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "engine":
            if event.state == WorkerState.ERROR:  # an export or a save that failed says so
                what = {"files": "saving a file", "open": "opening the study"}
                title = f"{what.get(event.worker.group, event.worker.group)} failed"
                self.notify(str(event.worker.error), title=title, severity="error", timeout=15,
                            markup=False)  # fmt: skip
            return
        if event.state == WorkerState.ERROR:
            self.error = str(event.worker.error)
            self.model.state, self.model.reason = "error", self.error
            self.notify(self.error, title="the study stopped", severity="error", timeout=60,
                        markup=False)  # fmt: skip
        if event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            self.model.finished_at = self.model.finished_at or time.monotonic()
            if self._quitting:
                self.exit(self._exit_code())

    def _exit_code(self) -> int:
        stop = None if self.outcome is None else self.outcome.stop
        return exit_code(stop, error=self.error is not None)

    # -- drawing ---------------------------------------------------------------------------

    def _tick(self) -> None:
        if len(self.screen_stack) > 1:
            # A dialog covers the dashboard: drawing behind it only slowed the dialog (the
            # editor's keys took over a second to appear while a trial ran). Everything is
            # drawn from the model, which keeps up, so the first tick after it closes catches
            # up (the logs from their buffers).
            return
        if self._gpu_news is not None:
            self._gpu.update_state(self._gpu_news)
            self._gpu_news = None
        self.model.selected = self._panels[0].selected_number()
        focus = self.model.focus  # the server figures of the trial the live panels follow
        drawn = None if focus is None else (focus.number, focus.figures_version)
        if drawn != self._figures_drawn:
            self._figures_drawn = drawn
            self._gpu.update_figures(None if focus is None else focus.figures)
            # Side by side, the server figures are one trial's of several: say whose.
            whose = focus is not None and focus.figures is not None and self.model.lanes
            title = f"GPU · server of #{focus.number}" if focus is not None and whose else "GPU"
            self._gpu.border_title = title
        header = header_text(self.model, self.size.width)
        if header.plain != self._header_plain:  # the clock changes once a second, not ten times
            self._header_plain = header.plain
            self.query_one("#header", Static).update(header, layout=False)
        table, plot, logs = self._panels
        table.update_from(self.model)
        plot.update_from(self.model)
        logs.update_from(self.model)
        self._live.update_from(self.model)

    # -- commands --------------------------------------------------------------------------

    def _orch(self) -> Steering | None:
        if self.orchestrator is None or self.outcome is not None:
            self.notify("the study is not running", severity="warning", timeout=3)
            return None
        return self.orchestrator

    def action_toggle_pause(self) -> None:
        if (orch := self._orch()) is None:
            return
        if orch.paused:
            orch.resume()
            self.notify("resumed", timeout=2)
        else:
            orch.pause()
            self.notify("paused: the running trial(s) finish first (P stops them now)", timeout=4)

    def action_pause_now(self) -> None:
        if (orch := self._orch()) is not None:
            orch.pause(now=True)
            self.notify("paused; the running trial(s) were stopped and run again on resume")

    def action_prune(self) -> None:
        """Prune the selected running trial, or the one started last if the cursor is on none."""
        if (orch := self._orch()) is None:
            return
        self.model.selected = self.query_one(TrialTable).selected_number()
        running = self.model.focus
        if running is None:
            self.notify("no trial is running", severity="warning", timeout=3)
            return
        number = running.number
        what = "baseline" if running.baseline else _short(running.params)

        def answer(yes: bool | None) -> None:
            if yes and not orch.prune(number):
                self.notify(f"trial {number} is no longer running", severity="warning")
            elif yes:
                self.notify(f"pruning trial {number}", timeout=3)

        self.push_screen(ConfirmPrune(number, what), answer)

    def action_edit_space(self) -> None:
        if (orch := self._orch()) is None:
            return
        fixed = frozenset(self.setup.config.server.flags)

        def apply(space: SearchSpace | None) -> None:
            if space is None or space == self.space:
                return
            orch.set_space(space)
            self.space = space
            self._save_space(space)
            self.notify(space_applies_text(self.model), timeout=8)

        self.push_screen(SpaceEditor(self.space, fixed), apply)

    @work(thread=True, group="files", exit_on_error=False)
    def _save_space(self, space: SearchSpace) -> None:
        self.setup.directory.save_space(space)

    def action_export(self) -> None:
        self._export()

    @work(thread=True, group="files", exit_on_error=False)
    def _export(self) -> None:
        from tui_tuner.report.export import export_best

        done = export_best(self.setup.config, self.model.finished, self.setup.study_dir)
        if done is None:
            self.call_from_thread(self.notify, "no feasible measured trial to export yet",
                                  severity="warning")  # fmt: skip
            return
        text = f"trial {done.trial} exported:\n{done.command_path}\n{done.config_path}"
        self.call_from_thread(self.notify, text, title="export", timeout=12, markup=False)

    def action_detail(self) -> None:
        number = self.query_one(TrialTable).selected_number()
        if number is not None:
            self._open_detail(number)

    def on_trial_table_chosen(self, message: TrialTable.Chosen) -> None:
        self._open_detail(message.number)

    def _open_detail(self, number: int) -> None:
        record = self.model.records.get(number)
        run = self.model.runs.get(number)
        if record is None and run is not None:
            record = TrialRecord(
                number, "running", run.params, run.baseline, command=run.command,
                note=f"running: {run.phase}" + (f" @{run.where()}" if run.where() else ""),
            )  # fmt: skip
        if record is not None:
            self.push_screen(TrialDetail(record, self.model))

    def action_switch_logs(self) -> None:
        logs = self.query_one(LogPanel)
        selected = self.query_one(TrialTable).selected_number()
        # A running trial under the cursor is followed already; pin any other.
        other = selected is not None and selected not in self.model.runs
        if logs.following and other:
            logs.show_trial(selected, self.model)
        else:
            logs.show_trial(None, self.model)

    def action_guidellm_log(self) -> None:
        logs = self.query_one(LogPanel)
        logs.show_source("server" if logs.source == "guidellm" else "guidellm")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def on_signal(self, sig: signal.Signals) -> None:
        """SIGINT, SIGTERM or SIGHUP: stop cleanly and leave, as `q` does. (After SIGHUP the
        terminal is gone; `ui/run.py` ends the process once the study has stopped.)"""
        self._quit(StopKind.SIGNAL, f"stopped by {sig.name}")

    def action_quit_study(self) -> None:
        self._quit(StopKind.USER, "quit by the user")

    async def action_quit(self) -> None:
        """Textual's ctrl+q: the clean quit too (Textual's own leaves at once, and the running
        trial would stay RUNNING in the storage); pressed again, it leaves at once."""
        self.action_quit_study()

    def _quit(self, kind: StopKind, reason: str) -> None:
        engine_done = self.outcome is not None or self.error is not None
        if engine_done or self.orchestrator is None:
            self._quitting = True  # an engine not started yet is not started
            self.exit(self._exit_code())
            return
        if self._quitting:
            self.notify("leaving now; the running trials' processes are stopped on the way out")
            for worker in self.workers:
                if worker.group == "engine":
                    worker.cancel()
            return
        self._quitting = True
        self.orchestrator.stop(kind, reason)
        self.notify("stopping the running trial(s); the study stays resumable (q again: at once)")

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        # Textual's own "Quit" leaves at once: the running trial would stay RUNNING in the
        # storage. The palette has one Quit, the clean one below.
        for command in super().get_system_commands(screen):
            if command.callback != self.action_quit:
                yield command
        for title, help_text, action in (
            ("Pause or resume", "pause after the running trial(s), or resume", "toggle_pause"),
            ("Pause now", "stop the running trial(s); they run again on resume", "pause_now"),
            ("Prune the running trial", "the selected one (else the newest): pruned", "prune"),
            ("Edit the search space", "applies from the next trial", "edit_space"),
            ("Export the best configuration", "vllm serve command and vLLM YAML", "export"),
            ("Trial detail", "everything about the selected trial", "detail"),
            ("Switch logs", "follow the running trial(s) or pin the selected one", "switch_logs"),
            ("GuideLLM's raw log", "show it instead of the server's, or back", "guidellm_log"),
            ("Quit", "stop cleanly; the study stays resumable", "quit_study"),
        ):
            yield SystemCommand(title, help_text, getattr(self, f"action_{action}"))


def space_applies_text(model: StudyModel) -> str:
    """What an edited search space changes, said truly: with no trial left in this run's
    budget, nothing runs under it until the study is resumed with more trials."""
    left = model.trials_left()
    if left is None or left > 0:
        return "search space changed: it applies from the next trial"
    return (
        "search space saved; no trial is left in this run's budget, so it applies when the "
        "study is resumed with more trials (tui-tuner resume DIR --trials N)"
    )


def _short(params: dict[str, object]) -> str:
    text = " ".join(f"{k}={v}" for k, v in params.items())
    return text if len(text) < 60 else text[:57] + "..."
