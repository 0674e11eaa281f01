"""The TUI's keys and flows, driven with Textual's Pilot against the real engine and fake servers.

The orchestrator, the study store (SQLite) and the trial runner are the real ones; only the
server, the load generator and NVML are fakes (tests/fakes/engine.py), so every flow here is
the one a user drives, minus the minutes a real trial takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from tests.fakes.engine import Fakes, make_config
from tui_tuner.core.config import StudyConfig
from tui_tuner.core.events import Event
from tui_tuner.engine.orchestrator import Orchestrator, StudyOutcome
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.engine.trial_runner import TrialRunner
from tui_tuner.study_dir import StudySetup
from tui_tuner.ui.app import TunerApp
from tui_tuner.ui.screens.detail import TrialDetail
from tui_tuner.ui.screens.dialogs import ConfirmPrune, HelpScreen
from tui_tuner.ui.screens.editor import SpaceEditor
from tui_tuner.ui.widgets.logs import LogPanel
from tui_tuner.ui.widgets.trial_table import TrialTable

SLOW = 7  # Fakes: a --max-num-seqs 7 trial measures for 60 s (long enough to act on)


def make_app(tmp_path: Path, config: StudyConfig, fakes: Fakes) -> TunerApp:
    store = StudyStore(config, default_storage_url(tmp_path))
    setup = StudySetup(config, tmp_path, store)

    async def engine(
        setup: StudySetup, emit: Callable[[Event], None], attach: Callable[[Orchestrator], None]
    ) -> StudyOutcome:
        runner = TrialRunner(setup.config, setup.study_dir, fakes, fakes, fakes, emit)
        orch = Orchestrator(setup.config, setup.store, runner, emit, study_dir=setup.study_dir)
        attach(orch)
        return await orch.run()

    return TunerApp(setup, engine)


async def until(pilot: Pilot[int], check: Callable[[], bool], timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not reached"
        await pilot.pause(0.05)


def slow_trial_measuring(app: TunerApp) -> Callable[[], bool]:
    def check() -> bool:
        run = app.model.running
        return (
            run is not None
            and run.params.get("max_num_seqs") == SLOW
            and run.phase
            in (
                "warmup",
                "measuring",
            )
        )

    return check


def slow_config(tmp_path: Path, n_trials: int = 3) -> StudyConfig:
    return make_config(tmp_path, [SLOW, 16], n_trials=n_trials)


async def test_a_study_runs_to_the_end_and_the_screen_follows(tmp_path: Path) -> None:
    app = make_app(tmp_path, make_config(tmp_path, [8, 16, 32]), Fakes())
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.outcome is not None)
        await pilot.pause(0.3)  # one more tick of the 10 Hz redraw
        table = app.query_one(TrialTable)
        assert table.row_count == 4
        header = str(app.query_one("#header").render())
        assert "finished" in header and "measured 4 · of 4" in header and "3,200 tok/s" in header
        await pilot.press("q")
    assert app.return_value == 0


async def test_a_reopened_study_shows_its_trials_before_the_engine_has_opened_it(
    tmp_path: Path,
) -> None:
    """The first look (engine/preview.py) fills the table while the engine is held back; the
    engine's own list then takes over without adding or losing a row."""
    config = make_config(tmp_path, [8, 16, 32])
    first = make_app(tmp_path, config, Fakes())
    async with first.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: first.outcome is not None)
        await pilot.press("q")
    again = make_app(tmp_path, config, Fakes())
    gate, engine = asyncio.Event(), again.run_engine

    async def held_engine(
        setup: StudySetup, emit: Callable[[Event], None], attach: Callable[[Orchestrator], None]
    ) -> StudyOutcome:
        await gate.wait()
        return await engine(setup, emit, attach)

    again.run_engine = held_engine
    async with again.run_test(size=(120, 36)) as pilot:
        table = again.query_one(TrialTable)
        await until(pilot, lambda: table.row_count == 4)
        header = str(again.query_one("#header").render())
        assert again.orchestrator is None and "starting" in header
        assert "measured 4 · of 4" in header and "3,200 tok/s" in header
        gate.set()
        await until(pilot, lambda: again.outcome is not None)
        await pilot.pause(0.3)
        assert table.row_count == 4
        assert "finished" in str(again.query_one("#header").render())
        await pilot.press("q")


async def test_pause_resume_and_pause_now(tmp_path: Path) -> None:
    fakes = Fakes()
    app = make_app(tmp_path, slow_config(tmp_path), fakes)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, slow_trial_measuring(app))
        slow = app.model.running
        assert slow is not None
        await pilot.press("p")
        assert app.orchestrator is not None and app.orchestrator.paused
        await pilot.pause(0.2)
        assert "paused" in str(app.query_one("#header").render())
        await pilot.press("p")
        assert not app.orchestrator.paused
        await pilot.press("P")  # stop the running trial now; it is queued again
        await until(pilot, lambda: slow.number in app.model.records)
        assert app.model.records[slow.number].note.startswith("interrupted")
        assert app.orchestrator.paused
        await pilot.press("q")


async def test_prune_asks_first_and_cancel_keeps_the_trial(tmp_path: Path) -> None:
    fakes = Fakes()
    app = make_app(tmp_path, make_config(tmp_path, [SLOW], n_trials=2), fakes)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, slow_trial_measuring(app))
        slow = app.model.running
        assert slow is not None
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmPrune)
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmPrune)
        await pilot.pause(0.3)
        assert app.model.running is not None  # still running
        await pilot.press("x")
        await pilot.press("y")
        await until(pilot, lambda: slow.number in app.model.records)
        assert app.model.records[slow.number].state == "pruned"
        assert fakes.stopped == 2  # the baseline's server and the pruned one
        await until(pilot, lambda: app.outcome is not None)
        await pilot.press("q")


async def test_editor_applies_from_the_next_trial_and_is_saved(tmp_path: Path) -> None:
    fakes = Fakes()
    app = make_app(tmp_path, slow_config(tmp_path), fakes)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.orchestrator is not None)
        await pilot.press("e")
        assert isinstance(app.screen, SpaceEditor)
        await pilot.press("escape")
        assert not isinstance(app.screen, SpaceEditor)
        orch = app.orchestrator
        assert orch is not None
        before = orch.space
        await pilot.press("e")
        editor = app.screen
        assert isinstance(editor, SpaceEditor)
        param = before.params[0]
        from dataclasses import replace

        from tui_tuner.core.space import SearchSpace

        editor.dismiss(SearchSpace((replace(param, options=(16, 32)),)))
        await until(pilot, lambda: orch.space != before)
        await until(pilot, lambda: (tmp_path / "search_space.yaml").exists())
        assert "32" in (tmp_path / "search_space.yaml").read_text()
        await pilot.press("q")


async def test_export_detail_logs_help_and_palette(tmp_path: Path) -> None:
    app = make_app(tmp_path, make_config(tmp_path, [8, 16]), Fakes())
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.outcome is not None)
        await pilot.pause(0.3)
        await pilot.press("s")
        await until(pilot, lambda: (tmp_path / "best-serve.sh").exists())
        assert "--max-num-seqs 16" in (tmp_path / "best-serve.sh").read_text()
        assert (tmp_path / "best-vllm-config.yaml").exists()
        await pilot.press("enter")
        assert isinstance(app.screen, TrialDetail)
        await pilot.press("escape")
        await pilot.press("down", "l")
        assert not app.query_one(LogPanel).following
        await pilot.press("l")
        assert app.query_one(LogPanel).following
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"Export", "enter")  # the palette reaches the actions too
        await pilot.pause(0.2)
        await pilot.press("q")


async def test_quit_stops_cleanly_then_resume_finishes(tmp_path: Path) -> None:
    fakes = Fakes()
    config = slow_config(tmp_path, n_trials=3)
    app = make_app(tmp_path, config, fakes)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, slow_trial_measuring(app))
        await pilot.press("q")
        await until(pilot, lambda: app.outcome is not None, timeout=15)
    assert app.return_value == 0 or app.return_value is None
    assert fakes.stopped == fakes.started_servers
    records = StudyStore(config, default_storage_url(tmp_path)).records()
    assert any(r.note.startswith("interrupted") for r in records)
    # Resume: a new app on the same study, with fast servers this time.
    fast = Fakes(slow=False)
    again = make_app(tmp_path, config, fast)
    async with again.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: again.outcome is not None, timeout=15)
        await pilot.press("q")
    done = StudyStore(config, default_storage_url(tmp_path)).records()
    assert sum(r.state == "complete" for r in done) == 3


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
async def test_fits_small_and_large_terminals(tmp_path: Path, size: tuple[int, int]) -> None:
    app = make_app(tmp_path, make_config(tmp_path, [8, 16]), Fakes())
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.outcome is not None)
        await pilot.pause(0.3)
        narrow = size[0] < 110
        assert app.screen.has_class("narrow") == narrow
        assert app.query_one(TrialTable).size.height >= 4
        await pilot.press("q")


async def test_the_exit_code_says_how_the_study_ended(tmp_path: Path) -> None:
    """The same codes as headless (core/stop.py): a failed baseline exits 1 (it exited 0 under
    the TUI when the code was decided from the reason's text), a signal 130, `q` 0."""
    from dataclasses import replace
    from signal import SIGTERM

    from tui_tuner.core.config import ServerSettings

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    config = make_config(tmp_path / "a", [8, 16])
    broken = ServerSettings(model="m", command=("fake-serve",), flags={"max_num_seqs": 1})
    app = make_app(tmp_path / "a", replace(config, server=broken), Fakes())
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.outcome is not None)
        await pilot.press("q")
    assert app.outcome is not None and app.outcome.stop.kind.value == "baseline_failed"
    assert app.return_value == 1

    signalled = make_app(tmp_path / "b", slow_config(tmp_path / "b"), Fakes())
    async with signalled.run_test(size=(120, 36)) as pilot:
        await until(pilot, slow_trial_measuring(signalled))
        signalled.on_signal(SIGTERM)
        await until(pilot, lambda: signalled.outcome is not None, timeout=15)
    assert signalled.return_value == 130


async def test_a_failed_save_says_so(tmp_path: Path) -> None:
    """A worker outside the engine that fails (here: the edited space cannot be written, the
    study directory being a file) tells the user instead of failing silently."""
    app = make_app(tmp_path, make_config(tmp_path, [8, 16]), Fakes())
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.outcome is not None)
        app.setup.study_dir = tmp_path / "config-not-a-dir"
        app.setup.study_dir.write_text("")
        app._save_space(app.setup.config.space)
        await until(pilot, lambda: any("failed" in str(n.title) for n in app._notifications))
        titles = [str(n.title) for n in app._notifications]
        assert "saving a file failed" in titles
        await pilot.press("q")


async def test_an_edit_with_no_trial_left_says_when_it_applies(tmp_path: Path) -> None:
    """Issue 14: "applies from the next trial" was shown while the last trial ran."""
    from dataclasses import replace

    from tui_tuner.core.space import SearchSpace

    app = make_app(tmp_path, make_config(tmp_path, [SLOW], n_trials=2), Fakes())
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, slow_trial_measuring(app))  # the baseline ran: this is the last
        assert app.model.trials_left() == 0
        orch = app.orchestrator
        assert orch is not None
        await pilot.press("e")
        editor = app.screen
        assert isinstance(editor, SpaceEditor)
        param = orch.space.params[0]
        editor.dismiss(SearchSpace((replace(param, options=(SLOW, 32)),)))
        await until(pilot, lambda: any("search space" in str(n.message)
                                       for n in app._notifications))  # fmt: skip
        said = " ".join(str(n.message) for n in app._notifications)
        assert "applies from the next trial" not in said
        assert "no trial is left" in said and "--trials" in said
        await pilot.press("q")


async def test_the_palette_has_one_quit_and_it_is_the_clean_one(tmp_path: Path) -> None:
    """Issue 14: Textual's own Quit (leave at once) came first and left the trial RUNNING."""
    app = make_app(tmp_path, make_config(tmp_path, [SLOW], n_trials=2), Fakes())
    async with app.run_test(size=(120, 36)) as pilot:
        quits = [c for c in app.get_system_commands(app.screen) if "quit" in c.title.lower()]
        assert len(quits) == 1 and quits[0].callback == app.action_quit_study
        await until(pilot, slow_trial_measuring(app))
        # Textual's ctrl+q is the clean quit too: the study is asked to stop, not left.
        await pilot.press("ctrl+q")
        await until(pilot, lambda: app.outcome is not None)
        assert app.outcome is not None and app.outcome.stop.kind.value == "user"


async def test_brackets_in_names_values_logs_and_messages_are_shown_as_they_are(
    tmp_path: Path,
) -> None:
    """Issue 14: every user value that reaches Textual's markup is escaped (or is Text)."""
    from tui_tuner.core.events import (
        LogLine,
        Notice,
        StudyStarted,
        TrialFinished,
        TrialStarted,
    )
    from tui_tuner.core.trial import TrialRecord
    from tui_tuner.ui.screens.dialogs import ConfirmPrune

    config = make_config(tmp_path, [8])
    from dataclasses import replace

    config = replace(config, study=replace(config.study, name="[b]study[/b]"))
    store = StudyStore(config, default_storage_url(tmp_path))
    params = {"max_num_seqs": "[red]8[/red]", "[i]x": "[/]"}
    failed = TrialRecord(1, "failed", params, failure={"class": "oom", "message": "bad [/] [x]",
                                                       "tail": ["[link=x]t[/link]"]})  # fmt: skip

    async def engine(setup: StudySetup, emit: Callable[[Event], None],
                     attach: Callable[[Orchestrator], None]) -> StudyOutcome:  # fmt: skip
        emit(StudyStarted("[b]study[/b]", "throughput", "s", str(tmp_path), 3, None, False, 0))
        emit(TrialStarted(1, params, False, ("vllm", "[x]"), "d"))
        emit(LogLine(1, "server", "INFO [bold]not bold[/bold] [/]"))
        emit(Notice("warning", "a warning with [/] and [red]"))
        await asyncio.sleep(0.5)
        emit(TrialFinished(failed))
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    app = TunerApp(StudySetup(config, tmp_path, store), engine)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: app.model.running is not None)
        await pilot.pause(0.4)
        app._open_detail(1)  # the running trial's detail
        await pilot.pause(0.2)
        app.screen.dismiss(None)
        app.push_screen(ConfirmPrune(1, "max_num_seqs=[red]8[/red] [/]"))
        await pilot.pause(0.2)
        shown = "\n".join("".join(seg.text for seg in strip)
                          for strip in app.screen._compositor.render_strips())  # fmt: skip
        assert "max_num_seqs=[red]8[/red] [/]" in shown
        await pilot.press("n")
        await until(pilot, lambda: 1 in app.model.records)
        await pilot.pause(0.3)
        shown = "\n".join("".join(seg.text for seg in strip)
                          for strip in app.screen._compositor.render_strips())  # fmt: skip
        assert "[b]study[/b]" in shown
        assert "max_num_seqs=[red]8[/red] [i]x=[/]" in shown
        assert "INFO [bold]not bold[/bold] [/]" in shown
        assert any("a warning with [/] and [red]" in str(n.message) for n in app._notifications)
        app._open_detail(1)
        await pilot.pause(0.3)
        shown = "\n".join("".join(seg.text for seg in strip)
                          for strip in app.screen._compositor.render_strips())  # fmt: skip
        assert "bad [/] [x]" in shown and "[link=x]t[/link]" in shown
        for worker in app.workers:
            worker.cancel()
        app.exit(0)


async def test_a_dialog_is_not_slowed_by_the_dashboard_behind_it(tmp_path: Path) -> None:
    """Issue 14: while a trial ran, a key in the editor took over a second to appear; the
    dashboard kept redrawing behind the dialog. It now waits, and catches up on close."""
    from tests.fakes.engine import measurement
    from tui_tuner.core.events import LogLine, StudyStarted, TrialFinished, TrialStarted
    from tui_tuner.core.trial import TrialRecord

    config = make_config(tmp_path, [8])
    store = StudyStore(config, default_storage_url(tmp_path))
    go = asyncio.Event()

    async def engine(setup: StudySetup, emit: Callable[[Event], None],
                     attach: Callable[[Orchestrator], None]) -> StudyOutcome:  # fmt: skip
        emit(StudyStarted("t", "throughput", "s", str(tmp_path), 3, None, False, 0))
        await go.wait()
        emit(TrialStarted(0, {}, True, ("vllm",), "d"))
        emit(LogLine(0, "server", "behind the dialog"))
        emit(TrialFinished(TrialRecord(0, "complete", {}, True, measurement(100.0))))
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    app = TunerApp(StudySetup(config, tmp_path, store), engine)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.model.state == "running")
        table = app.query_one(TrialTable)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        go.set()
        await until(pilot, lambda: 0 in app.model.records)
        await pilot.pause(0.3)
        assert table.row_count == 0  # not drawn behind the dialog
        await pilot.press("escape")
        await pilot.pause(0.3)
        assert table.row_count == 1
        assert list(app.query_one(LogPanel).server_log.lines) == ["behind the dialog"]
        for worker in app.workers:
            worker.cancel()
        app.exit(0)
