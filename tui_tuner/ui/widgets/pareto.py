"""The Pareto plot panel: measured trials as p95 latency against output tok/s.

Drawing is ``report.plot.render_pareto`` (pure, shared with the headless report); this widget
only decides when to draw. The app calls ``update_from`` ten times a second, so it redraws
only when the model's ``version`` moved or the panel changed size; an idle study costs an
integer comparison per tick. The version also moves with a running trial's progress, so the
points are recomputed only when a finished record was added or replaced (records are frozen:
a change is a new object).
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.geometry import Size
from textual.widget import Widget

from tui_tuner.core.trial import TrialRecord
from tui_tuner.report.plot import PlotPoint, points_from, render_pareto
from tui_tuner.ui.model import StudyModel

__all__ = ["ParetoPlot"]


class ParetoPlot(Widget):
    """Scatter of the finished trials with the feasible Pareto front; the objective in the
    plot's header, the counts in the border subtitle. Styled in tuner.tcss."""

    BORDER_TITLE = "Pareto: throughput vs p95 latency"

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._version: int | None = None
        self._records: list[TrialRecord] | None = None
        self._points: list[PlotPoint] = []
        self._title = ""
        self._text: Text | None = None
        self._text_size = Size(0, 0)

    @property
    def points(self) -> list[PlotPoint]:
        """What is plotted (for tests)."""
        return list(self._points)

    def update_from(self, model: StudyModel) -> None:
        """Take the model's trials if they changed since the last call."""
        if model.version == self._version:
            return
        self._version = model.version
        records = model.finished
        if _same(records, self._records):
            return  # the version moved for a running trial's progress, not for a result
        self._records = records
        kind = model.config.objective.kind
        self._points = points_from(records, kind)
        self._title = f"objective: {kind}"
        on_front = sum(1 for p in self._points if p.on_front)
        self.border_subtitle = f"{len(self._points)} plotted, {on_front} on front"
        self._text = None
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        self._text = None
        self.refresh()

    def render(self) -> Text:
        size = self.size
        if self._text is None or size != self._text_size:
            self._text = render_pareto(self._points, size.width, size.height, title=self._title)
            self._text_size = size
        return self._text


def _same(a: list[TrialRecord], b: list[TrialRecord] | None) -> bool:
    return b is not None and len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
