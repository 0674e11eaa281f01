"""The trial table on its own: rows in trial order however they arrive, and the sort keys."""

from __future__ import annotations

from pathlib import Path

from textual.app import App, ComposeResult

from tests.fakes.engine import make_config, measurement
from tui_tuner.core.events import TrialFinished
from tui_tuner.core.trial import TrialRecord
from tui_tuner.ui.model import StudyModel
from tui_tuner.ui.widgets.trial_table import TrialTable


def record(number: int, tok_s: float, baseline: bool = False) -> TrialRecord:
    params = {} if baseline else {"max_num_seqs": number}
    return TrialRecord(number, "complete", params, baseline, measurement(tok_s), values=(tok_s,))


class TableApp(App[None]):
    def __init__(self, model: StudyModel) -> None:
        super().__init__()
        self.model = model

    def compose(self) -> ComposeResult:
        yield TrialTable()


def numbers(table: TrialTable) -> list[int]:
    return [int(str(row.key.value)) for row in table.ordered_rows]


async def test_rows_keep_trial_order_and_o_sorts_by_each_column(tmp_path: Path) -> None:
    model = StudyModel(make_config(tmp_path, [8]))
    model.load([record(0, 100.0, baseline=True), record(2, 300.0), record(3, 150.0)])
    app = TableApp(model)
    async with app.run_test() as pilot:
        table = app.query_one(TrialTable)
        table.update_from(model)
        assert numbers(table) == [0, 2, 3]
        # A trial that finishes late (another worker's, or a repaired one) lands in its place.
        model.apply(TrialFinished(record(1, 200.0)))
        table.update_from(model)
        assert numbers(table) == [0, 1, 2, 3]
        # A later trial in order is simply appended, and the star moves to the new best.
        model.apply(TrialFinished(record(4, 400.0)))
        table.update_from(model)
        assert numbers(table) == [0, 1, 2, 3, 4]
        assert table.get_cell("4", "0").plain == "★4"
        assert table.get_cell("2", "0").plain == "2"
        table.focus()
        await pilot.press("o", "o")  # state, then throughput: best first
        assert numbers(table) == [4, 2, 1, 3, 0]
        await pilot.press("o", "o", "o", "o")  # p95, TTFT, gain, then back to the number
        assert numbers(table) == [0, 1, 2, 3, 4]
