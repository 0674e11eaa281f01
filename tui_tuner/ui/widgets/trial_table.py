"""The trial table: one row per trial, updated in place as trials start, move and finish.

Only rows the model reports as changed are touched (``update_cell``/``add_row``), so a study of
1,000 trials costs nothing per frame and rows never flicker. Sorting is by trial number unless
the user picks a column (``o`` cycles the sort column, clicking a header sorts by it); the
sorted column has an arrow, and a trial without a value (failed, pruned, running) always
sorts last, whichever way the column sorts.

The tok/s cell carries what the figure is worth: ``!`` a client-limited measurement (the load
generator could not drive the load, so the figure may be low), ``±n%`` the spread of a trial's
repeats, and a pruned trial's partial figure dimmed with ``~``. The border's subtitle says
what the marks on screen mean.

Every running trial has its row (several run at once under ``study.workers``): its phase, how
long it has run, and its newest throughput reading; when trials run side by side the row also
says where (``@0,1`` its GPUs, ``@host:0,1`` on an attached display's other machines). The
phase's clock and the reading are redrawn cell by cell, once a second at most.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from tui_tuner.core.space import WORKLOAD_PREFIX
from tui_tuner.core.trial import TrialRecord
from tui_tuner.ui.model import RunningTrial, StudyModel, spread_pct

__all__ = ["TrialTable"]

COLUMNS = ("#", "state", "tok/s", "p95 ms", "TTFT95 ms", "gain", "parameters")
#: Columns sorted best first (higher is better); the others sort ascending.
_DESCENDING = (2, 5)
#: What each mark in the tok/s column means (the border subtitle lists those on screen).
_LEGEND = {
    "!": "! client-limited",
    "~": "~ partial (pruned)",
    "±": "± repeat spread",
    "@": "@ GPUs (host:GPUs)",
}
_STATE_STYLE = {
    "running": "bold cyan",
    "complete": "green",
    "pruned": "yellow",
    "early": "yellow",
    "infeasible": "magenta",
    "interrupted": "dim",
}


def _num(value: float | None, fmt: str) -> Text:
    return Text("-" if value is None else format(value, fmt), justify="right")


def _params(params: dict[str, object] | object, baseline: bool) -> str:
    if baseline:
        return "baseline (vLLM defaults)"
    assert isinstance(params, dict)
    return " ".join(f"{_short_key(k)}={_value(v)}" for k, v in params.items()) or "-"


def _short_key(key: str) -> str:
    return key.removeprefix(WORKLOAD_PREFIX)


def _value(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return (
        f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"
        if s >= 3600
        else f"{s // 60}:{s % 60:02d}"
    )


def _running_state(run: RunningTrial, lanes: bool, now: float) -> Text:
    """``running: measuring 1:23`` (time since it started); side by side the row is narrower
    and says where it runs: ``measuring 1:23 @0,1``."""
    clock = _clock(now - run.started)
    if not lanes:
        return Text(f"running: {run.phase} {clock}", style=_STATE_STYLE["running"])
    where = run.where()
    return Text(f"{run.phase} {clock}" + (f" @{where}" if where else ""),
                style=_STATE_STYLE["running"])  # fmt: skip


def _running_tok_s(run: RunningTrial) -> Text:
    """A running trial's newest throughput reading, dimmed with ``~``: not a measurement."""
    tok = run.rates[-1] if run.rates else run.output_tok_s
    return Text("-" if not tok else f"~{tok:,.0f}", style="dim", justify="right")


def _tok_s(r: TrialRecord) -> Text:
    """The tok/s cell with its marks (see the module's docstring)."""
    m = r.measurement if r.state == "complete" else None
    if m is None:
        partial = r.partial.get("output_tok_s") if r.state == "pruned" else None
        if partial:
            return Text(f"~{partial:,.0f}", style="dim", justify="right")
        return Text("-", justify="right")
    cell = Text(f"{m.output_tok_s:,.0f}", justify="right")
    spread = spread_pct(r.repeats_output_tok_s)
    if spread is not None:
        cell.append(f"±{spread:.0f}%", style="dim")
    if r.client_limited:
        cell.append("!", style="bold yellow")
    return cell


class TrialTable(DataTable[Text | str]):
    """Rows keyed by trial number. ``Chosen`` is posted when the user opens a trial (enter)."""

    BINDINGS = [Binding("o", "cycle_sort", "Sort", show=False)]

    class Chosen(Message):
        def __init__(self, number: int) -> None:
            super().__init__()
            self.number = number

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self._sort_column = 0
        self._marks: set[str] = set()
        self._best: set[int] = set()
        self._last_row = -1  # the highest trial number with a row
        self._drawn_version = -1  # the model's version this table last drew

    def on_mount(self) -> None:
        for i, name in enumerate(COLUMNS):
            self.add_column(name, key=str(i))
        self._label_sorted()

    def update_from(self, model: StudyModel) -> None:
        changed = model.changed_since(self._drawn_version)
        self._drawn_version = model.version
        best = {r.number for r in model.best()}
        changed |= best ^ self._best  # the star moves
        self._best = best
        self._live_cells(model, changed)
        if not changed:
            return
        out_of_order = False
        for number in sorted(changed):
            run = model.runs.get(number)
            if run is not None and number not in model.records:
                cells = self._running_cells(run, model.lanes)
            elif number in model.records:
                cells = self._record_cells(model, model.records[number], number in best)
            else:  # a trial shown by the first look that the study does not have
                if str(number) in self.rows:
                    self.remove_row(str(number))
                continue
            key = str(number)
            if key in self.rows:
                for i, cell in enumerate(cells):
                    self.update_cell(key, str(i), cell, update_width=True)
            else:
                out_of_order = out_of_order or number < self._last_row
                self._last_row = max(self._last_row, number)
                self.add_row(*cells, key=key)
        self._legend(model)
        # Rows added in number order need no sort by number (sorting 1,000 rows takes 0.15 s).
        if self._sort_column != 0 or out_of_order:
            self._sort()

    def _live_cells(self, model: StudyModel, changed: set[int]) -> None:
        """Each running trial's clock and tok/s (its newest reading, the live line's) move
        between the row's other changes; a cell is touched only when its text changed."""
        now = time.monotonic()
        for run in model.runs.values():
            key = str(run.number)
            if run.number in changed or run.number in model.records or key not in self.rows:
                continue
            for column, cell in (("1", _running_state(run, model.lanes, now)),
                                 ("2", _running_tok_s(run))):  # fmt: skip
                if str(self.get_cell(key, column)) != cell.plain:
                    self.update_cell(key, column, cell, update_width=True)

    def _running_cells(self, run: RunningTrial, lanes: bool) -> list[Text | str]:
        return [
            Text(str(run.number), justify="right"),
            _running_state(run, lanes, time.monotonic()),
            _running_tok_s(run),
            _num(None, ""),
            _num(None, ""),
            Text(""),
            Text(_params(run.params, run.baseline)),
        ]

    def _record_cells(self, model: StudyModel, r: TrialRecord, best: bool) -> list[Text | str]:
        label = "interrupted" if r.interrupted else r.label
        if r.duplicate_of is not None:
            label = f"= #{r.duplicate_of}"
        elif r.rejected:  # the header counts these apart: the row says which they are
            label = f"rejected({r.failure_class})" if r.failure_class else "rejected"
        elif r.state == "pruned" and r.note.startswith("early stopped"):
            label = "early stopped"  # by the tuner: hopeless against the best (its note says)
        elif r.repeat:
            label += " (repeat)"
        elif r.rerun:
            label += " (runs again)"
        style = "red" if label.startswith("failed") else _STATE_STYLE.get(label.split()[0], "")
        m = r.measurement if r.state == "complete" else None
        gain = model.gain(r) if m is not None and not r.baseline else None
        marker = "★" if best else ("B" if r.baseline else "")
        return [
            Text(f"{marker}{r.number}", justify="right", style="bold" if best else ""),
            Text(label, style=style),
            _tok_s(r),
            _num(m.request_latency_p95_ms if m else None, ",.0f"),
            _num(m.ttft_p95_ms if m else None, ",.0f"),
            Text("-" if gain is None else f"{gain.output_tok_s_pct:+.0f}%", justify="right"),
            Text(_params(dict(r.params), r.baseline)),  # Text: a value is never markup
        ]

    def _legend(self, model: StudyModel) -> None:
        """The border's subtitle: what the marks on screen mean (nothing if there are none)."""
        marks: set[str] = set()
        if model.lanes and any(run.where() for run in model.runs.values()):
            marks.add("@")
        for r in model.records.values():
            if r.state == "complete" and r.measurement is not None:
                if r.client_limited:
                    marks.add("!")
                if len(r.repeats_output_tok_s) > 1:
                    marks.add("±")
            elif r.state == "pruned" and r.partial.get("output_tok_s"):
                marks.add("~")
        if marks != self._marks:
            self._marks = marks
            self.border_subtitle = "  ".join(v for k, v in _LEGEND.items() if k in marks)

    def _sort(self) -> None:
        descending = self._sort_column in _DESCENDING

        def key(cell: object) -> tuple[int, float, str]:
            """(missing, value, text): a trial without a figure goes last either way; a
            pruned trial's partial figure (~) is no measurement and counts as missing."""
            text = cell.plain if isinstance(cell, Text) else str(cell)
            digits = text.lstrip("★B ").split("±")[0].replace(",", "").rstrip("%!")
            try:
                value = float(digits)
            except ValueError:
                missing = text in ("-", "") or text.startswith("~")
                return (1 if missing else 0, 0.0, text)
            return (0, -value if descending else value, "")

        self.sort(str(self._sort_column), key=key)
        self._label_sorted()

    def _label_sorted(self) -> None:
        """An arrow on the sorted column's header (▼ best first, ▲ ascending)."""
        arrow = "▼" if self._sort_column in _DESCENDING else "▲"
        for i, name in enumerate(COLUMNS):
            column = self.columns.get(ColumnKey(str(i)))
            if column is None:
                continue
            label = Text(f"{name}{arrow}" if i == self._sort_column else name)
            if column.label != label:
                column.label = label
                column.content_width = max(column.content_width, label.cell_len)
                self._require_update_dimensions = True
        self.refresh()

    def action_cycle_sort(self) -> None:
        self._sort_column = (self._sort_column + 1) % (len(COLUMNS) - 1)
        self._sort()
        self.notify(f"sorted by {COLUMNS[self._sort_column]}", timeout=1.5, markup=False)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        self._sort_column = int(str(event.column_key.value))
        self._sort()

    def selected_number(self) -> int | None:
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return None if key is None else int(key)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.post_message(self.Chosen(int(event.row_key.value)))
