"""The Pareto panel in a real (headless) Textual app: it draws the model's trials, redraws only
when the model or its size changed, and shows the objective."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.geometry import Region

import tui_tuner.ui as ui_package
import tui_tuner.ui.widgets.pareto as pareto_module
from tests.fakes.engine import measurement
from tui_tuner.core.config import ObjectiveSettings, ServerSettings, StudyConfig, StudySettings
from tui_tuner.core.events import Notice, TrialFinished
from tui_tuner.core.trial import TrialRecord
from tui_tuner.report.plot import PlotPoint, render_pareto
from tui_tuner.ui.model import StudyModel
from tui_tuner.ui.widgets.pareto import ParetoPlot


def record(
    number: int, tok_s: float, p95_ms: float, *, baseline: bool = False, infeasible: bool = False
) -> TrialRecord:
    return TrialRecord(
        number=number,
        state="complete",
        # Each its own configuration: trials of one configuration are one group, ranked by
        # their mean (core.confidence), and would share one point's place as the best.
        params={} if baseline else {"max_num_seqs": number},
        baseline=baseline,
        measurement=measurement(tok_s, p95_ms),
        constraints={"sla_p95": 1.0 if infeasible else -1.0},
    )


def study_model(kind: str = "throughput") -> StudyModel:
    config = StudyConfig(
        study=StudySettings(name="t", n_trials=5),
        server=ServerSettings(model="m"),
        objective=ObjectiveSettings(kind=kind),  # type: ignore[arg-type]
    )
    model = StudyModel(config)
    model.load(
        [
            record(0, 400, 800, baseline=True),
            record(1, 380, 600),
            record(2, 450, 1200),
            record(3, 700, 1100),
            record(4, 900, 900, infeasible=True),
            TrialRecord(number=5, state="failed", failure={"class": "oom_startup"}),
        ]
    )
    return model


class PlotApp(App[None]):
    """The panel alone, styled by the app's stylesheet (no ``#pareto`` id: that rule places the
    panel in the dashboard)."""

    CSS_PATH = Path(ui_package.__file__).with_name("tuner.tcss")

    def compose(self) -> ComposeResult:
        yield ParetoPlot()


def screen_text(plot: ParetoPlot) -> str:
    """What the panel shows, border included."""
    strips = plot.render_lines(Region(0, 0, *plot.outer_size))
    return "\n".join(strip.text for strip in strips)


async def test_draws_the_models_trials_with_title_and_objective() -> None:
    app = PlotApp()
    async with app.run_test(size=(100, 30)) as pilot:
        plot = app.query_one(ParetoPlot)
        plot.update_from(study_model())
        await pilot.pause()
        shown = screen_text(plot)
    for marker in ("★", "B", "◆", "●", "×", "·"):
        assert marker in shown, marker
    assert "Pareto: throughput vs p95 latency" in shown
    assert "objective: throughput" in shown
    assert "output tok/s" in shown and "p95 latency ms" in shown
    assert "5 plotted, 3 on front" in shown  # "measured" is the header's count
    assert {p.number for p in plot.points} == {0, 1, 2, 3, 4}


async def test_redraws_only_on_a_new_version_or_a_new_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, int]] = []

    def counting(points: list[PlotPoint], width: int, height: int, *, title: str = "") -> object:
        calls.append((width, height))
        return render_pareto(points, width, height, title=title)

    monkeypatch.setattr(pareto_module, "render_pareto", counting)
    model = study_model("pareto")
    app = PlotApp()
    async with app.run_test(size=(100, 30)) as pilot:
        plot = app.query_one(ParetoPlot)
        plot.update_from(model)
        await pilot.pause()
        drawn = len(calls)
        for _ in range(5):
            plot.update_from(model)
            await pilot.pause()
        assert len(calls) == drawn  # nothing changed: nothing drawn

        model.apply(Notice("info", "a running trial's progress moves the version too"))
        plot.update_from(model)
        await pilot.pause()
        assert len(calls) == drawn  # but no result changed

        model.apply(TrialFinished(record(6, 1000, 700)))
        plot.update_from(model)
        await pilot.pause()
        assert len(calls) == drawn + 1
        assert "★" not in screen_text(plot)  # a Pareto study marks its best as the front
        assert "objective: pareto" in screen_text(plot)

        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert calls[-1] == (plot.size.width, plot.size.height) == (78, 22)
