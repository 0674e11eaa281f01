"""Several trials running at once (issue 13): the model, the table, the header, the live panels
and the keys, fed the interleaved events of trials that run side by side on their own GPUs.

A scripted engine emits the events of a tuner with ``study.workers: 4`` on four GPUs (or of an
attached display, whose trials carry a host), then holds the study open until the app stops it;
a fake `Steering` records what the keys asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from textual.pilot import Pilot

import tui_tuner.ui.model as model_module
import tui_tuner.ui.widgets.live as live_module
import tui_tuner.ui.widgets.trial_table as table_module
from tests.fakes.engine import make_config, measurement
from tui_tuner.core.events import (
    BenchProgress,
    Event,
    GpuSampled,
    LogLine,
    ServerFiguresRead,
    StudyStarted,
    TrialFinished,
    TrialPhaseChanged,
    TrialStarted,
)
from tui_tuner.core.space import SearchSpace
from tui_tuner.core.stop import StopKind, StopReason
from tui_tuner.core.telemetry import GpuState, ServerFigures
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.orchestrator import StudyOutcome
from tui_tuner.engine.steering import Steering
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.study_dir import StudySetup
from tui_tuner.ui.app import TunerApp
from tui_tuner.ui.header import header_text
from tui_tuner.ui.model import RunningTrial, StudyModel
from tui_tuner.ui.screens.detail import TrialDetail
from tui_tuner.ui.screens.dialogs import ConfirmPrune
from tui_tuner.ui.widgets.gpu import GpuPanel
from tui_tuner.ui.widgets.live import live_text
from tui_tuner.ui.widgets.logs import LogPanel
from tui_tuner.ui.widgets.trial_table import TrialTable

TIMINGS = {"launching": 2.5, "measuring": 8.0, "total": 100.0}


class FakeSteering:
    """What the keys ask for, recorded; `stop` lets the scripted engine end."""

    def __init__(self) -> None:
        self.paused = False
        self.stopping = False
        self.pruned: list[int] = []
        self.pauses: list[bool] = []
        self.running: set[int] = set()
        self.done = asyncio.Event()

    def pause(self, *, now: bool = False) -> None:
        self.paused = True
        self.pauses.append(now)

    def resume(self) -> None:
        self.paused = False

    def stop(self, kind: StopKind, text: str, *, now: bool = True) -> None:
        self.stopping = True
        self.done.set()

    def prune(self, number: int) -> bool:
        self.pruned.append(number)
        return number in self.running

    def set_space(self, space: SearchSpace) -> None:
        raise AssertionError("not edited here")


def figures(tok_s: float, running: int) -> ServerFigures:
    return ServerFigures(True, "profile H100", 40.0, running, 0, tok_s, 1e4, at=1.0)


def lanes_events(host: str = "") -> list[Event]:
    """The baseline and trials 1-3 start on GPUs 0-3, their events interleaved; the baseline
    ends, so trials 1, 2, 3 run on three of the four GPUs."""
    params = {1: {"max_num_seqs": 16}, 2: {"max_num_seqs": 64}, 3: {"max_num_seqs": 128}}
    events: list[Event] = [
        StudyStarted(
            "lanes",
            "throughput",
            "sqlite:///s.db",
            "/s",
            8,
            None,
            True,
            0,
            gpus=(0, 1, 2, 3),
            workers=4,
        ),
        GpuSampled(
            GpuState(False, "no NVIDIA GPU found (NVML: NVML Shared Library Not Found)", ())
        ),
    ]
    for n in range(4):
        events.append(TrialStarted(n, params.get(n, {}), n == 0, ("vllm", "serve", "m"),
                                   f"/s/trial-{n}", gpus=(n,), host=host))  # fmt: skip
    for n in range(4):
        events.append(TrialPhaseChanged(n, "warmup" if n < 3 else "launching", 1.0))
    for i in range(3):
        for n in range(4):
            events.append(LogLine(n, "server", f"server of trial {n} line {i}"))
            events.append(LogLine(n, "guidellm", f"guidellm of trial {n} line {i}"))
    for n in (1, 2):
        events.append(TrialPhaseChanged(n, "measuring", 5.0))
        events.append(BenchProgress(n, 0, "active", 10.0, 100 * n, 0, 1000.0 * n))
        events.append(ServerFiguresRead(n, figures(1100.0 * n, 10 * n)))
    base = TrialRecord(0, "complete", {}, True, measurement(2000.0), timings=TIMINGS,
                       values=(2000.0,))  # fmt: skip
    events.append(TrialFinished(base))
    return events


def lanes_app(tmp_path: Path, steering: FakeSteering, host: str = "") -> TunerApp:
    config = make_config(tmp_path, [16, 64, 128, 256], n_trials=8)
    setup = StudySetup(config, tmp_path, StudyStore(config, default_storage_url(tmp_path)))

    async def engine(
        setup: StudySetup, emit: Callable[[Event], None], attach: Callable[[Steering], None]
    ) -> StudyOutcome:
        attach(steering)
        for event in lanes_events(host):
            emit(event)
        steering.running = {1, 2, 3}
        await steering.done.wait()
        return StudyOutcome(StopReason(StopKind.USER, "quit by the user"), [])

    return TunerApp(setup, engine)


async def until(pilot: Pilot[int], check: Callable[[], bool], timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not reached"
        await pilot.pause(0.05)


def screen_rows(app: TunerApp) -> list[str]:
    return ["".join(seg.text for seg in strip) for strip in app.screen._compositor.render_strips()]


async def settled(pilot: Pilot[int], app: TunerApp) -> TrialTable:
    table = app.query_one(TrialTable)
    await until(pilot, lambda: table.row_count == 4 and app.model.state == "running")
    await until(pilot, lambda: app.query_one(GpuPanel).state is not None)
    await pilot.pause(0.3)
    return table


async def select(pilot: Pilot[int], table: TrialTable, number: int) -> None:
    table.move_cursor(row=table.get_row_index(str(number)))
    await pilot.pause(0.3)  # a tick or two of the 10 Hz redraw


# -- the model ------------------------------------------------------------------------------


def test_the_model_keeps_every_running_trial(tmp_path: Path) -> None:
    model = StudyModel(make_config(tmp_path, [8], n_trials=8))
    for event in lanes_events():
        model.apply(event)
    assert list(model.runs) == [1, 2, 3]
    assert model.gpus == (0, 1, 2, 3) and model.workers == 4 and model.lanes
    assert model.gpus_busy() == 3
    assert [model.runs[n].phase for n in (1, 2, 3)] == ["measuring", "measuring", "launching"]
    assert list(model.runs[2].rates) == [2200.0]  # its server's reading, not trial 1's
    assert model.runs[1].figures == figures(1100.0, 10) and model.runs[3].figures is None
    assert model.runs[2].successful == 200 and model.runs[1].successful == 100
    # Three running trials take three of the budget: 8 - 1 finished - 3 running.
    assert model.trials_left() == 4
    assert model.running is model.runs[3]  # started last
    assert model.focus is model.runs[3]  # nothing selected
    model.selected = 1
    assert model.focus is model.runs[1]
    model.selected = 0  # a finished trial: the one started last again
    assert model.focus is model.runs[3]
    model.apply(TrialFinished(TrialRecord(2, "complete", {"max_num_seqs": 64}, False,
                                          measurement(2100.0), timings=TIMINGS)))  # fmt: skip
    assert list(model.runs) == [1, 3] and model.gpus_busy() == 2 and model.trials_left() == 4
    assert model.counts().measured == 2


def test_where_a_trial_runs_is_short() -> None:
    def run(gpus: tuple[int, ...], host: str) -> RunningTrial:
        return RunningTrial(1, {}, False, (), "", gpus, host)

    assert run((0, 1), "").where() == "0,1"
    assert run((2,), "b7").where() == "b7:2"
    assert run((), "b7").where() == "b7" and run((), "").where() == ""
    assert run((3,), "gpu-node-17.cluster.example").where() == "gpu-node-17:3"
    assert run((3,), "10.0.0.17").where() == "10.0.0.17:3"
    assert run((0,), "a-very-long-hostname").where() == "a-very-long…:0"


def test_time_left_shares_the_work_among_the_lanes(tmp_path: Path) -> None:
    model = StudyModel(make_config(tmp_path, [8], n_trials=9))
    model.apply(StudyStarted("s", "throughput", "", "", 9, None, True, 0, gpus=(0, 1, 2),
                             workers=3))  # fmt: skip
    model.apply(TrialFinished(TrialRecord(0, "complete", {}, True, measurement(1.0),
                                          timings={"total": 100.0})))  # fmt: skip
    for n in (1, 2, 3):
        model.apply(TrialStarted(n, {}, False, (), "", gpus=(n - 1,)))
        model.runs[n].started = 1000.0 - 10.0 * n  # 10, 20 and 30 s in
    # 8 trials left at 100 s, less the 60 s the three running ones have done, on 3 lanes.
    assert model.raw_eta_s(now=1000.0) == pytest.approx((800.0 - 60.0) / 3)
    model.n_trials = 3  # two trials left: two lanes at most, the two furthest on
    assert model.raw_eta_s(now=1000.0) == pytest.approx((200.0 - 50.0) / 2)


def test_one_lane_keeps_its_time_left(tmp_path: Path) -> None:
    """Without lanes nothing changes: the time left is what one trial after another takes."""
    model = StudyModel(make_config(tmp_path, [8], n_trials=4))
    model.apply(TrialFinished(TrialRecord(0, "complete", {}, True, measurement(1.0),
                                          timings={"total": 100.0})))  # fmt: skip
    model.apply(TrialStarted(1, {}, False, (), ""))
    model.runs[1].started = 970.0
    assert not model.lanes and model.gpus_busy() == 0
    assert model.raw_eta_s(now=1000.0) == pytest.approx(300.0 - 30.0)
    assert "GPU" not in header_text(model).plain  # the tuner hands out no GPUs: nothing new


# -- the screen -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
async def test_rows_header_logs_and_prune_follow_the_selection(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    steering = FakeSteering()
    app = lanes_app(tmp_path, steering)
    async with app.run_test(size=size) as pilot:
        table = await settled(pilot, app)
        rows = screen_rows(app)
        assert "GPUs 3/4" in rows[0], rows[0]  # "GPUs 3/4 busy" where there is room
        shown = "\n".join(rows)
        for n, phase in ((1, "measuring"), (2, "measuring"), (3, "launching")):
            row = next(r for r in rows if f"{phase} 0:0" in r and f"@{n}" in r)
            assert f" {n} " in row, row
        assert "~2,200" in shown  # trial 2's live figure, from its own server
        assert "@ GPUs" in shown  # the legend says what @ means
        # Nothing selected that runs (the cursor is on the finished baseline): the trial
        # started last is followed, as with one trial.
        logs = app.query_one(LogPanel)
        assert table.selected_number() == 0
        assert logs.shown_trial == 3 and list(logs.server_log.lines)[-1].endswith("trial 3 line 2")
        assert live_text(app.model).plain.startswith("#3 launching")
        # The cursor on trial 2: its logs, its live line, its server's figures.
        await select(pilot, table, 2)
        assert logs.shown_trial == 2 and logs.following
        assert list(logs.server_log.lines) == [f"server of trial 2 line {i}" for i in range(3)]
        assert "(running)" in str(logs.server_log.border_title)
        assert live_text(app.model).plain.startswith("#2 measuring")
        assert app.query_one(GpuPanel).figures == figures(2200.0, 20)
        assert app.query_one(GpuPanel).border_title == "GPU · server of #2"  # one of several
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmPrune) and app.screen.number == 2
        await pilot.press("y")
        await pilot.pause(0.1)
        assert steering.pruned == [2]  # the selected trial, not the one started last
        # The cursor back on a finished trial: x prunes the one started last.
        await select(pilot, table, 0)
        assert app.query_one(GpuPanel).figures is None  # trial 3's server reports nothing yet
        assert app.query_one(GpuPanel).border_title == "GPU"
        await pilot.press("x", "y")
        await pilot.pause(0.1)
        assert steering.pruned == [2, 3]
        # Pause and pause-now act on the whole study.
        await pilot.press("p")
        assert steering.paused and steering.pauses == [False]
        await pilot.press("P")
        assert steering.pauses == [False, True]
        await pilot.press("q")
        await until(pilot, lambda: app.outcome is not None)
    assert steering.stopping


async def test_an_attached_display_says_which_host_runs_each_trial(tmp_path: Path) -> None:
    steering = FakeSteering()
    app = lanes_app(tmp_path, steering, host="gpu-node-b")
    async with app.run_test(size=(80, 24)) as pilot:
        table = await settled(pilot, app)
        assert str(table.get_cell("2", "1")).endswith("@gpu-node-b:2")
        assert str(table.get_cell("0", "1")) == "complete"
        app._open_detail(2)
        await pilot.pause(0.2)
        assert isinstance(app.screen, TrialDetail)
        assert app.screen.record.note == "running: measuring @gpu-node-b:2"
        await pilot.press("escape")
        await pilot.press("q")


async def test_a_prune_that_comes_too_late_says_so(tmp_path: Path) -> None:
    steering = FakeSteering()
    app = lanes_app(tmp_path, steering)
    async with app.run_test(size=(120, 36)) as pilot:
        table = await settled(pilot, app)
        await select(pilot, table, 1)
        steering.running.discard(1)  # it ended between the key and the answer
        await pilot.press("x", "y")
        await pilot.pause(0.1)
        assert steering.pruned == [1]
        assert any("no longer running" in str(n.message) for n in app._notifications)
        await pilot.press("q")


# -- the picture ----------------------------------------------------------------------------


def test_several_running_at_80x24(
    snap_compare: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three trials running on three of four GPUs, the cursor on trial 2, at 80x24. The UI's
    clock is held still, so the clocks on screen are the same on every run."""
    clock = SimpleNamespace(monotonic=lambda: 5000.0)
    for module in (model_module, table_module, live_module):
        monkeypatch.setattr(module, "time", clock)

    async def select_trial_2(pilot: Any) -> None:
        app = pilot.app
        table = await settled(pilot, app)
        model = app.model
        model.started = 5000.0 - 125.0
        for n, run in model.runs.items():
            run.started = run.phase_since = run.bench_at = 5000.0 - 20.0 * n
        await select(pilot, table, 2)
        table._clear_caches()  # as test_ui_snapshots: draw every row anew
        table.refresh()
        await pilot.pause(0.3)

    app = lanes_app(tmp_path, FakeSteering())
    assert snap_compare(app, terminal_size=(80, 24), run_before=select_trial_2)
