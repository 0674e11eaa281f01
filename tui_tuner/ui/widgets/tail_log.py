"""`TailLog`: Textual's `Log`, forked (a subclass that overrides its internals) for tailing a
busy log.

`Log` rather than `RichLog`: the lines are plain text (no markup to parse or escape), and `Log`
renders only the visible lines, each on demand, so its cost does not grow with the scroll-back.
Why a fork rather than `Log` as it is: in Textual 8.2.8 a growing `Log` repaints the whole
screen on every write, a full one stops moving on screen, and every row it draws works out the
widget's style again (the class docstring has the measurements). The fixes reach into `Log`'s
and `ScrollView`'s internals (the `virtual_size` reactive, `_process_line`, the scrollbars'
window sizes), which Textual may change in any release: after upgrading Textual, run
tests/test_ui_logs.py and bench/ui_cost.py again, and drop what upstream has fixed.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region, Size
from textual.reactive import Reactive
from textual.strip import Strip
from textual.widgets import Log
from typing_extensions import Self

__all__ = ["TailLog"]

#: Rendered lines a TailLog keeps for reuse (a few screens' worth).
_STRIPS_KEPT = 1024


class TailLog(Log):
    """`Log` made fit for tailing a busy log in Textual 8.2.8; three changes, each measured
    with bench/ui_cost.py (200x60 tmux terminal, 1,000 lines/s):

    * Growth repaints only the log. `Widget.virtual_size` is a layout reactive, so every write
      while the log is shorter than its scroll-back laid out and repainted the whole screen:
      at 100 lines/s that cost more CPU than 1,000 lines/s into a full log (31% vs 14% of a
      core). The log's size on screen never depends on its line count, so here the virtual
      size only moves the scroll range and the scrollbars, as the layout pass would have.
    * A full log keeps moving (`write_lines`): see there.
    * Rows are drawn from a cache keyed by the line's text with the widget style looked up
      once per repaint (`render_lines`, `render_line`): about 2 points of a core less.
    """

    virtual_size: Reactive[Size] = Reactive(Size(0, 0), layout=False)

    def __init__(self, *, max_lines: int, id: str | None = None) -> None:
        super().__init__(max_lines=max_lines, auto_scroll=True, id=id)
        self._frame_style: Style | None = None
        self._strips: dict[str, Strip] = {}
        self._strips_style: Style | None = None

    def render_lines(self, crop: Region) -> list[Strip]:
        # The widget's style, once per repaint: `Log` asks for it on every line, and working it
        # out (a walk up the DOM for the background) cost more than drawing the line.
        style = self.rich_style
        if style != self._strips_style:  # focus tint, theme: the cached rows are stale
            self._strips.clear()
            self._strips_style = style
        self._frame_style = style
        try:
            return super().render_lines(crop)
        finally:
            self._frame_style = None

    def render_line(self, y: int) -> Strip:
        """One screen row. When the log scrolls, each row shows a line an earlier repaint drew
        one row lower, so the drawing is cached by the line's text and reused; selections and
        highlighting take `Log`'s own path."""
        style = self._frame_style
        if style is None or self.highlight or self.text_selection is not None:
            return super().render_line(y)
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        lines = self.lines
        if index >= len(lines):
            return Strip.blank(width, style)
        text = lines[index]
        strips = self._strips
        strip = strips.get(text)
        if strip is None:
            if len(strips) > _STRIPS_KEPT:
                strips.clear()
            clean = self._process_line(text)
            strip = strips[text] = Strip([Segment(clean, style)], cell_len(clean))
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_offsets(scroll_x, index)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()

    def clear(self) -> Self:
        self._strips.clear()
        return super().clear()

    def write_lines(self, lines: Iterable[str], scroll_end: bool | None = None) -> Self:
        """`Log.write_lines`, plus what it misses when the scroll-back limit drops old lines.

        Once `Log` holds `max_lines`, new lines push old ones out at the top while the scroll
        offset (already at the end) stays put, so `Log` neither scrolls nor refreshes the
        visible rows: the screen froze on stale lines (Textual 8.2.8). And a reader who has
        scrolled up would see the text slide under them; the offset follows it instead.
        """
        new = list(lines)
        limit = self.max_lines
        dropped = 0 if limit is None else max(0, len(self.lines) + len(new) - limit)
        reading = dropped and not self.is_vertical_scroll_end
        super().write_lines(new, scroll_end)
        if reading:
            y = max(0, round(self.scroll_y) - dropped)
            self.scroll_to(y=y, animate=False, immediate=True)
        if dropped:
            self.refresh()
        return self

    def watch_virtual_size(self, size: Size) -> None:
        width, height = self.container_size
        if self.show_vertical_scrollbar:
            bar = self.vertical_scrollbar
            bar.window_virtual_size = size.height
            bar.window_size = height - self.scrollbar_size_horizontal
        if self.show_horizontal_scrollbar:
            hbar = self.horizontal_scrollbar
            hbar.window_virtual_size = size.width
            hbar.window_size = width - self.scrollbar_size_vertical
