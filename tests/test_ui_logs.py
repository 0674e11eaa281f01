"""LogPanel: following the running trial, gaps, finished trials read from files, bounds."""

from __future__ import annotations

from pathlib import Path

from textual.app import App, ComposeResult

import tui_tuner.ui as ui_package
from tui_tuner.core.config import ServerSettings, StudyConfig, StudySettings
from tui_tuner.core.events import LogLine, TrialFinished, TrialStarted
from tui_tuner.core.trial import TrialRecord
from tui_tuner.ui.log_files import read_tail
from tui_tuner.ui.model import LOG_LINES_KEPT, StudyModel
from tui_tuner.ui.widgets.logs import LogPanel


def _model() -> StudyModel:
    config = StudyConfig(
        study=StudySettings(name="t", n_trials=5), server=ServerSettings(model="m")
    )
    return StudyModel(config)


def _start(model: StudyModel, number: int, trial_dir: str = "/tmp/study/trial-0") -> None:
    command = ("vllm", "serve", "m", "--host", "127.0.0.1", "--port", "8123")
    model.apply(TrialStarted(number, {}, False, command, trial_dir))


def _lines(model: StudyModel, number: int, source: str, texts: list[str]) -> None:
    for text in texts:
        model.apply(LogLine(number, source, text))  # type: ignore[arg-type]


def _finish(model: StudyModel, number: int, files: dict[str, str]) -> None:
    model.apply(TrialFinished(TrialRecord(number, "complete", files=files)))


class PanelApp(App[None]):
    CSS_PATH = Path(ui_package.__file__).with_name("tuner.tcss")  # the panel's styles

    def __init__(self, panel: LogPanel) -> None:
        super().__init__()
        self.panel = panel

    def compose(self) -> ComposeResult:
        yield self.panel


async def test_following_appends_only_new_lines() -> None:
    model, panel = _model(), LogPanel(min_repaint_s=0)
    async with PanelApp(panel).run_test(size=(100, 30)) as pilot:
        _start(model, 0)
        _lines(model, 0, "server", ["one", "two"])
        panel.update_from(model)
        _lines(model, 0, "server", ["three"])
        _lines(model, 0, "guidellm", ["g1"])
        panel.update_from(model)
        panel.update_from(model)  # nothing new: nothing written twice
        await pilot.pause()
        assert list(panel.server_log.lines) == ["one", "two", "three"]
        assert list(panel.guidellm_log.lines) == ["g1"]
        assert panel.following and panel.shown_trial == 0
        assert panel.server_log.border_title == "vLLM log · trial 0 (running)"
        assert panel.guidellm_log.border_title == "GuideLLM · trial 0"


async def test_a_new_trial_clears_and_is_followed() -> None:
    model, panel = _model(), LogPanel(min_repaint_s=0)
    async with PanelApp(panel).run_test(size=(100, 30)) as pilot:
        _start(model, 0)
        _lines(model, 0, "server", ["old"])
        panel.update_from(model)
        _finish(model, 0, {})
        panel.update_from(model)
        assert panel.server_log.border_title == "vLLM log · trial 0"  # no longer "(running)"
        _start(model, 1)
        _lines(model, 1, "server", ["new"])
        panel.update_from(model)
        await pilot.pause()
        assert list(panel.server_log.lines) == ["new"]
        assert panel.shown_trial == 1


async def test_overflow_between_ticks_is_marked_as_a_gap() -> None:
    model, panel = _model(), LogPanel(min_repaint_s=0)
    async with PanelApp(panel).run_test(size=(100, 30)) as pilot:
        _start(model, 3, "/runs/s/trial-3")
        _lines(model, 3, "server", [f"line {i}" for i in range(LOG_LINES_KEPT + 500)])
        panel.update_from(model)
        await pilot.pause()
        lines = list(panel.server_log.lines)
        # the marker takes one line of the scroll-back, so one more line is skipped
        assert lines[0] == "… 501 lines skipped; full log in /runs/s/trial-3/server.log"
        assert lines[1] == "line 501"
        assert len(lines) == LOG_LINES_KEPT
        assert lines[-1] == f"line {LOG_LINES_KEPT + 499}"


async def test_scrollback_is_bounded() -> None:
    model, panel = _model(), LogPanel(scrollback=100, min_repaint_s=0)
    async with PanelApp(panel).run_test(size=(100, 30)) as pilot:
        _start(model, 0)
        for chunk in range(10):
            _lines(model, 0, "server", [f"{chunk}-{i}" for i in range(50)])
            panel.update_from(model)
        await pilot.pause()
        lines = list(panel.server_log.lines)
        assert len(lines) == 100
        assert lines[-1] == "9-49"


async def test_show_trial_reads_a_finished_trials_files(tmp_path: Path) -> None:
    model, panel = _model(), LogPanel(scrollback=50, min_repaint_s=0)
    server_log = tmp_path / "server.log"
    server_log.write_text("".join(f"server line {i}\n" for i in range(300)))
    guidellm_log = tmp_path / "guidellm.log"
    guidellm_log.write_text("bench 1\nbench 2\n")
    files = {"server.log": str(server_log), "guidellm.log": str(guidellm_log)}
    _finish(model, 4, files)  # its lines are not in the model (an earlier run of the study)
    async with PanelApp(panel).run_test(size=(100, 30)) as pilot:
        panel.show_trial(4, model)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert not panel.following and panel.shown_trial == 4
        lines = list(panel.server_log.lines)
        assert lines[0] == f"… earlier lines not shown; full log in {server_log}"
        assert lines[-1] == "server line 299"
        assert len(lines) == 50
        assert list(panel.guidellm_log.lines) == ["bench 1", "bench 2"]
        # back to following: the running trial's lines replace the file's
        _start(model, 5)
        _lines(model, 5, "server", ["live"])
        panel.show_trial(None, model)
        await pilot.pause()
        assert panel.following and list(panel.server_log.lines) == ["live"]


async def test_show_trial_prefers_the_models_buffers() -> None:
    model, panel = _model(), LogPanel(min_repaint_s=0)
    async with PanelApp(panel).run_test(size=(100, 30)) as pilot:
        _start(model, 0)
        _lines(model, 0, "server", ["kept in memory"])
        _finish(model, 0, {"server.log": "/nonexistent/server.log"})
        _start(model, 1)
        panel.show_trial(0, model)
        panel.update_from(model)  # a new trial does not take a pinned panel away
        await pilot.pause()
        assert panel.shown_trial == 0
        assert list(panel.server_log.lines) == ["kept in memory"]


async def test_missing_log_file_says_why(tmp_path: Path) -> None:
    model, panel = _model(), LogPanel(min_repaint_s=0)
    _finish(model, 2, {"guidellm.log": str(tmp_path / "deleted.log")})
    async with PanelApp(panel).run_test(size=(100, 30)) as pilot:
        panel.show_trial(2, model)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert list(panel.server_log.lines) == ["(no server log: the trial did not start a server)"]
        assert list(panel.guidellm_log.lines) == [
            "(no GuideLLM log: the trial did not get as far as the benchmark)"
        ]


async def test_escape_sequences_are_removed() -> None:
    model, panel = _model(), LogPanel(min_repaint_s=0)
    async with PanelApp(panel).run_test(size=(100, 30)) as pilot:
        _start(model, 0)
        _lines(model, 0, "server", ["\x1b[32mINFO\x1b[0m ready", "a\tb\x7f"])
        panel.update_from(model)
        await pilot.pause()
        assert list(panel.server_log.lines) == ["INFO ready", "a       b"]


async def test_user_scrolled_up_is_not_pulled_down() -> None:
    model, panel = _model(), LogPanel(min_repaint_s=0)
    async with PanelApp(panel).run_test(size=(100, 30)) as pilot:
        _start(model, 0)
        _lines(model, 0, "server", [f"l{i}" for i in range(200)])
        panel.update_from(model)
        await pilot.pause()
        log = panel.server_log
        assert log.is_vertical_scroll_end
        log.scroll_to(y=10, animate=False, immediate=True)
        await pilot.pause()
        _lines(model, 0, "server", ["more"])
        panel.update_from(model)
        await pilot.pause()
        assert log.scroll_y == 10


async def test_a_flood_is_written_at_most_every_min_repaint_s() -> None:
    model, panel = _model(), LogPanel(min_repaint_s=60)
    async with PanelApp(panel).run_test(size=(100, 30)) as pilot:
        _start(model, 0)
        _lines(model, 0, "server", ["first"])
        panel.update_from(model)  # the first lines after a quiet spell: at once
        _lines(model, 0, "server", ["second"])
        panel.update_from(model)  # within min_repaint_s: held back, not lost
        await pilot.pause()
        assert list(panel.server_log.lines) == ["first"]
        _start(model, 1)  # a new trial is shown at once
        _lines(model, 1, "server", ["next trial"])
        panel.update_from(model)
        await pilot.pause()
        assert list(panel.server_log.lines) == ["next trial"]


async def test_rows_on_screen_follow_the_lines_after_scroll_back_is_full() -> None:
    model, panel = _model(), LogPanel(scrollback=50, min_repaint_s=0)
    async with PanelApp(panel).run_test(size=(100, 30)) as pilot:
        _start(model, 0)
        log = panel.server_log
        refreshes: list[object] = []
        original = log.refresh

        def spy(*regions: object, **kwargs: object) -> object:
            refreshes.append(regions)
            return original(*regions, **kwargs)  # type: ignore[arg-type]

        log.refresh = spy  # type: ignore[method-assign,assignment]
        for chunk in range(3):
            _lines(model, 0, "server", [f"{chunk}:{i}" for i in range(40)])
            panel.update_from(model)
            await pilot.pause()
        # Full: new lines push old ones out and the scroll offset stays; the rows must repaint.
        assert () in refreshes[-2:]
        rows = [
            "".join(seg.text for seg in log.render_line(y)).rstrip()
            for y in range(log.scrollable_content_region.height)
        ]
        assert rows[-1] == "2:39"
        assert rows[0] == log.lines[int(log.scroll_y)]


async def test_a_growing_log_does_not_lay_out_the_screen() -> None:
    model, panel = _model(), LogPanel(min_repaint_s=0)
    async with PanelApp(panel).run_test(size=(100, 30)) as pilot:
        _start(model, 0)
        await pilot.pause()
        screen = pilot.app.screen
        layouts = 0
        original = screen._refresh_layout

        def counting(*args: object, **kwargs: object) -> None:
            nonlocal layouts
            layouts += 1
            original(*args, **kwargs)  # type: ignore[arg-type]

        screen._refresh_layout = counting  # type: ignore[method-assign]
        for tick in range(10):
            _lines(model, 0, "server", [f"line {tick}"])
            panel.update_from(model)
            await pilot.pause()
        assert layouts == 0
        assert panel.server_log.virtual_size.height == 10
        assert panel.server_log.vertical_scrollbar.window_virtual_size == 10


async def test_a_reader_scrolled_up_keeps_their_lines_when_old_ones_are_dropped() -> None:
    model, panel = _model(), LogPanel(scrollback=100, min_repaint_s=0)
    async with PanelApp(panel).run_test(size=(100, 30)) as pilot:
        _start(model, 0)
        _lines(model, 0, "server", [f"l{i}" for i in range(100)])
        panel.update_from(model)
        await pilot.pause()
        log = panel.server_log
        log.scroll_to(y=30, animate=False, immediate=True)
        await pilot.pause()
        assert log.lines[30] == "l30"
        _lines(model, 0, "server", [f"m{i}" for i in range(10)])  # drops l0..l9
        panel.update_from(model)
        await pilot.pause()
        assert log.scroll_y == 20 and log.lines[20] == "l30"


def test_read_tail(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_text("".join(f"{i:06d} " + "x" * 200 + "\n" for i in range(5000)))
    found = read_tail(str(path), 10)
    assert found is not None
    lines, truncated = found
    assert truncated and len(lines) == 10 and lines[-1].startswith("004999 ")
    assert read_tail(str(tmp_path / "nope.log"), 10) is None
    small = tmp_path / "small.log"
    small.write_text("a\nb")
    assert read_tail(str(small), 10) == (["a", "b"], False)


async def test_long_lines_wrap_instead_of_being_cut_mid_figure() -> None:
    """Issue 14: `Avg prompt throughput: 4888.3 tokens/s, Avg generatio` was all one saw."""
    model = _model()
    panel = LogPanel()
    async with PanelApp(panel).run_test(size=(60, 20)) as pilot:
        _start(model, 0)
        line = (
            "(APIServer pid=5288) INFO 12-03 12:58:44 [loggers.py:275] Engine 000: Avg "
            "prompt throughput: 4888.3 tokens/s, Avg generation throughput: 2443.1 tokens/s"
        )
        _lines(model, 0, "server", [line, "short"])
        panel.update_from(model)
        await pilot.pause()
        lines = list(panel.server_log.lines)
        width = panel.server_log.scrollable_content_region.width
        assert all(len(text) <= width for text in lines)
        assert lines[-1] == "short" and len(lines) > 2
        assert lines[1].startswith("  ")  # a continuation is indented
        joined = " ".join(text.strip() for text in lines)
        assert "4888.3 tokens/s" in joined and "2443.1 tokens/s" in joined


async def test_one_log_at_a_time_and_guidellm_is_a_key_away() -> None:
    model = _model()
    panel = LogPanel()
    async with PanelApp(panel).run_test(size=(100, 30)) as pilot:
        _start(model, 0)
        _lines(model, 0, "server", ["s1"])
        _lines(model, 0, "guidellm", ["g1"])
        panel.update_from(model)
        await pilot.pause()
        assert panel.server_log.display and not panel.guidellm_log.display
        assert panel.server_log.outer_size.height == 30  # the whole panel
        panel.show_source("guidellm")
        await pilot.pause()
        assert panel.guidellm_log.display and not panel.server_log.display
        assert list(panel.guidellm_log.lines) == ["g1"]
        panel.show_source("server")
        await pilot.pause()
        assert panel.server_log.display and not panel.guidellm_log.display
