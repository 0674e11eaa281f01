"""The trial table on its own: rows in trial order however they arrive, and the sort keys."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets.data_table import ColumnKey

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


async def test_missing_values_sort_last_and_the_sorted_column_has_an_arrow(
    tmp_path: Path,
) -> None:
    """Issue 14: `o` on tok/s (best first) put failed and pruned trials above the best."""
    model = StudyModel(make_config(tmp_path, [8]))
    failed = TrialRecord(2, "failed", {"max_num_seqs": 2}, failure={"class": "oom_startup"})
    pruned = TrialRecord(4, "pruned", {"max_num_seqs": 4}, partial={"output_tok_s": 900.0})
    model.load([record(0, 100.0, baseline=True), record(1, 300.0), failed, record(3, 200.0),
                pruned])  # fmt: skip
    app = TableApp(model)
    async with app.run_test() as pilot:
        table = app.query_one(TrialTable)
        table.update_from(model)
        assert table.columns[ColumnKey("0")].label.plain == "#▲"
        table.focus()
        await pilot.press("o", "o")  # tok/s, best first
        assert numbers(table)[:3] == [1, 3, 0]
        assert set(numbers(table)[3:]) == {2, 4}  # no figure (the partial one is no figure)
        assert table.columns[ColumnKey("2")].label.plain == "tok/s▼"
        assert table.columns[ColumnKey("0")].label.plain == "#"
        await pilot.press("o")  # p95, lowest first: still last
        assert set(numbers(table)[3:]) == {2, 4}
        assert table.columns[ColumnKey("3")].label.plain == "p95 ms▲"


async def test_marks_next_to_the_figure_and_their_legend(tmp_path: Path) -> None:
    """Issue 14: a client-limited figure, a pruned trial's partial figure and the spread of
    repeats were only on the detail screen; now next to tok/s, with a legend on the border."""
    model = StudyModel(make_config(tmp_path, [8]))
    limited = TrialRecord(1, "complete", {"max_num_seqs": 1}, False, measurement(300.0),
                          values=(300.0,), client_limited=True)  # fmt: skip
    repeated = TrialRecord(2, "complete", {"max_num_seqs": 2}, False, measurement(200.0),
                           values=(200.0,), repeats_output_tok_s=(190.0, 200.0, 210.0))  # fmt: skip
    pruned = TrialRecord(3, "pruned", {"max_num_seqs": 3}, partial={"output_tok_s": 1234.0})
    model.load([record(0, 100.0, baseline=True)])
    app = TableApp(model)
    async with app.run_test(size=(120, 20)):
        table = app.query_one(TrialTable)
        table.update_from(model)
        assert table.border_subtitle in ("", None)  # no marks on screen, no legend
        model.load([record(0, 100.0, baseline=True), limited, repeated, pruned])
        table.update_from(model)
        assert str(table.get_cell("1", "2")) == "300!"
        assert str(table.get_cell("2", "2")) == "200±5%"
        cell = table.get_cell("3", "2")
        assert isinstance(cell, Text) and cell.plain == "~1,234" and "dim" in str(cell.style)
        legend = str(table.border_subtitle)
        assert "! client-limited" in legend and "~ partial" in legend and "± repeat" in legend


async def test_brackets_in_values_are_shown_as_typed(tmp_path: Path) -> None:
    """Issue 14: a value with [brackets] reached Textual's markup (a str cell is markup)."""
    model = StudyModel(make_config(tmp_path, [8]))
    odd = TrialRecord(1, "complete", {"[b]x": "[red]y[/red]", "z": "[/]"}, False,
                      measurement(300.0), values=(300.0,))  # fmt: skip
    model.load([record(0, 100.0, baseline=True), odd])
    app = TableApp(model)
    async with app.run_test(size=(120, 20)) as pilot:
        table = app.query_one(TrialTable)
        table.update_from(model)
        await pilot.pause()
        assert str(table.get_cell("1", "6")) == "[b]x=[red]y[/red] z=[/]"
        shown = "\n".join(table.render_line(y).text for y in range(4))
        assert "[b]x=[red]y[/red] z=[/]" in shown


async def test_the_running_row_follows_the_newest_reading(tmp_path: Path) -> None:
    from tui_tuner.core.events import ServerFiguresRead, TrialPhaseChanged, TrialStarted
    from tui_tuner.core.telemetry import ServerFigures

    model = StudyModel(make_config(tmp_path, [8]))
    model.load([record(0, 100.0, baseline=True)])
    app = TableApp(model)
    async with app.run_test(size=(120, 20)) as pilot:
        table = app.query_one(TrialTable)
        model.apply(TrialStarted(1, {"max_num_seqs": 8}, False, ("vllm",), "d"))
        model.apply(TrialPhaseChanged(1, "measuring", 1.0))
        table.update_from(model)
        assert str(table.get_cell("1", "2")) == "-"
        for rate in (900.0, 1234.0):
            model.apply(
                ServerFiguresRead(1, ServerFigures(True, "x", 1.0, 1, 0, rate, 1.0, at=1.0))
            )
        table.update_from(model)  # no row change, only a new reading
        assert str(table.get_cell("1", "2")) == "~1,234"
        await pilot.pause()
        assert table.columns[ColumnKey("2")].content_width >= len("~1,234")  # not cut


async def test_rows_the_budget_does_not_count_say_so(tmp_path: Path) -> None:
    """The header counts rejected, repeated and queued-again trials apart; their rows say
    which they are, so the counts and the rows match (issue 14)."""
    model = StudyModel(make_config(tmp_path, [8]))
    rejected = TrialRecord(1, "failed", {"max_num_seqs": 1}, rejected=True,
                           failure={"class": "invalid_args"})  # fmt: skip
    again = TrialRecord(2, "failed", {"max_num_seqs": 2}, rerun=True,
                        failure={"class": "benchmark_failed"})  # fmt: skip
    repeat = TrialRecord(3, "complete", {}, True, measurement(100.0), repeat=True)
    model.load([record(0, 100.0, baseline=True), rejected, again, repeat])
    app = TableApp(model)
    async with app.run_test(size=(120, 20)):
        table = app.query_one(TrialTable)
        table.update_from(model)
        assert str(table.get_cell("1", "1")) == "rejected(invalid_args)"
        assert str(table.get_cell("2", "1")) == "failed(benchmark_failed) (runs again)"
        assert str(table.get_cell("3", "1")) == "complete (repeat)"


async def test_a_trial_the_tuner_stopped_early_says_so_with_its_partial_figure(
    tmp_path: Path,
) -> None:
    model = StudyModel(make_config(tmp_path, [8]))
    early = TrialRecord(
        1,
        "pruned",
        {"max_num_seqs": 8},
        note="early stopped after 20 s of load past the warm-up: 525 output tok/s",
        partial={"output_tok_s": 525.0},
    )
    by_hand = TrialRecord(2, "pruned", {"max_num_seqs": 16}, partial={"output_tok_s": 300.0})
    model.load([record(0, 900.0, baseline=True), early, by_hand])
    app = TableApp(model)
    async with app.run_test(size=(120, 20)):
        table = app.query_one(TrialTable)
        table.update_from(model)
        assert str(table.get_cell("1", "1")) == "early stopped"
        assert str(table.get_cell("1", "2")) == "~525"
        assert str(table.get_cell("2", "1")) == "pruned"  # pruned by the user
