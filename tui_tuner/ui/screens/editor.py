"""The search-space editor: change what a running study searches without leaving the TUI.

One row per parameter (disabled ones too, so they can be switched back on): a checkbox with the
parameter's name for "searched or not", then the fields its kind has (low, high, step and log for
ranges; a comma-separated list for options; nothing for booleans). Every keystroke rebuilds the
row's YAML-shaped mapping and runs it through `space_load.param_from_mapping`, the same checks a
configuration file gets, so the editor can never produce a space the loader would refuse or a
flag value vLLM would reject. A row with a problem shows it in red and Apply stays disabled.

The screen dismisses with the new `SearchSpace` (ctrl+s or Apply) or None (escape or Cancel);
the app decides what to do with it (`Orchestrator.set_space`, saving ``search_space.yaml``).
Parameters are added by flag name; flags fixed in ``server.flags`` cannot be, because the loader
would reject a study that both fixes and searches a flag.
"""

from __future__ import annotations

import re
from typing import ClassVar

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Static

from tui_tuner.core.config_problems import ConfigError, Context, Problem
from tui_tuner.core.space import WORKLOAD_PARAMS, Param, ParamKind, Scalar, SearchSpace
from tui_tuner.core.space_load import param_from_mapping, resolve_flag

__all__ = ["Field", "ParamRow", "SpaceEditor", "new_param"]

RANGE_FIELDS = ("low", "high", "step")
#: Which kind of row each vLLM flag type gets when the user adds it.
ROW_KIND: dict[str, ParamKind] = {
    "bool": "bool",
    "enable_disable": "bool",
    "str": "options",
    "float": "float",
    "int": "int",
    "opt_level": "int",
}


def _text(value: object) -> str:
    """A value as the user would type it (``16`` rather than ``16.0``, ``true``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _value(text: str) -> Scalar:
    """What the user typed, read as YAML would read it: a bool, an int, a float, else text.

    Text is passed on as text so that the loader's message ("expected an integer, got the text
    'x'") tells the user what is wrong.
    """
    word = text.strip()
    if word.lower() in ("true", "false"):
        return word.lower() == "true"
    for convert in (int, float):
        try:
            return convert(word)
        except ValueError:
            pass
    return word


def _ident(key: str) -> str:
    return "param-" + re.sub(r"[^A-Za-z0-9_-]", "-", key)


class Field(Input):
    """An `Input` that keeps fast typing in order.

    Textual runs a focused `Input`'s own key bindings (backspace, delete, the arrows...) only
    once the key has bubbled back up to the app, while the app has already handed the keys
    typed after it to the field: "1", backspace, "0.9" typed quickly came out as "10." (the
    backspace ran last and took the "9"). Here the field runs its bindings itself, in the order
    the keys came, and moves the focus on tab itself; a key that was already on its way to this
    field when the focus moved goes on to the field that has it now. A paste takes its first
    line that has text, trimmed (a paste of several lines used to keep only the first, even
    if it was empty).
    """

    async def _on_key(self, event: events.Key) -> None:
        focused = self.screen.focused
        if focused is not None and focused is not self:  # tab moved on: this key follows
            event.stop()
            event.prevent_default()
            focused.post_message(events.Key(event.key, event.character))
            return
        if event.key in ("tab", "shift+tab"):
            event.stop()
            event.prevent_default()
            if event.key == "tab":
                self.screen.focus_next()
            else:
                self.screen.focus_previous()
            return
        bindings = self._bindings.key_to_bindings.get(event.key)
        if bindings:
            event.stop()
            event.prevent_default()
            await self.run_action(bindings[0].action)
        # else Input's own handler inserts a printable character

    def _on_paste(self, event: events.Paste) -> None:
        event.stop()
        event.prevent_default()
        lines = [line.strip() for line in event.text.splitlines()]
        text = next((line for line in lines if line), "")
        if text:
            selection = self.selection
            if selection.is_empty:
                self.insert_text_at_cursor(text)
            else:
                self.replace(text, *selection)


class ParamRow(Vertical):
    """One parameter: its fields on one line, its description or problem on the next.

    ``param`` is the last valid parameter the fields describe (None while they have a problem).
    """

    class Checked(Message):
        """The row was checked again (after an edit, or on mount)."""

        def __init__(self, row: ParamRow) -> None:
            super().__init__()
            self.row = row

    def __init__(self, param: Param, *, added: bool = False) -> None:
        super().__init__(id=_ident(param.key))
        self.draft = param
        self.added = added
        self.param: Param | None = None
        self.problems: tuple[Problem, ...] = ()

    @property
    def key(self) -> str:
        return self.draft.key

    def compose(self) -> ComposeResult:
        p = self.draft
        flag = p.flag
        with Horizontal(classes="line"):
            box = Checkbox(p.name, p.enabled, compact=True, classes="enabled")
            box.tooltip = flag.help if flag is not None else "load setting for the load generator"
            yield box
            if p.kind in ("int", "float"):
                yield Field(_text(p.low), "low", compact=True, classes="low")
                yield Field(_text(p.high), "high", compact=True, classes="high")
                yield Field(_text(p.step), "step", compact=True, classes="step")
                yield Checkbox("log", p.log, compact=True, classes="log")
            elif p.kind == "options":
                hint = "comma-separated values"
                if flag is not None and flag.choices:
                    hint = "some of: " + ", ".join(flag.choices)
                text = ", ".join(_text(o) for o in p.options)
                yield Field(text, hint, compact=True, classes="options")
            else:
                yield Static("true and false are both tried", classes="fixed-kind")
            if self.added:
                yield Button("drop", compact=True, classes="remove")
        yield Static("", markup=False, classes="status")

    def on_mount(self) -> None:
        self.check()

    @on(Input.Changed)
    @on(Checkbox.Changed)
    def _edited(self, event: Input.Changed | Checkbox.Changed) -> None:
        event.stop()
        self.check()

    def mapping(self) -> dict[str, object]:
        """The fields as the YAML mapping a configuration file would hold for this parameter."""
        out: dict[str, object] = {"enabled": self.query_one(".enabled", Checkbox).value}
        kind = self.draft.kind
        if kind == "bool":
            out["type"] = "bool"
        elif kind == "options":
            text = self.query_one(".options", Input).value
            out["options"] = [_value(item) for item in text.split(",")] if text.strip() else []
        else:
            out["type"] = kind
            for name in RANGE_FIELDS:
                text = self.query_one(f".{name}", Input).value
                if text.strip() or name != "step":
                    out[name] = _value(text) if text.strip() else None
            out["log"] = self.query_one(".log", Checkbox).value
        return out

    def check(self) -> None:
        """Validate the fields, show the result and tell the screen."""
        try:
            self.param = param_from_mapping(self.draft.name, self.mapping())
            self.problems = ()
        except ConfigError as err:
            self.param = None
            self.problems = err.problems
        self.set_class(self.param is None, "-invalid")
        self.set_class(not self.query_one(".enabled", Checkbox).value, "-off")
        bad = {self._field(p) for p in self.problems}
        for field in self.query(Input):
            field.set_class(any(field.has_class(name) for name in bad), "-invalid")
        self.query_one(".status", Static).update(self._status())
        self.post_message(self.Checked(self))

    def _field(self, problem: Problem) -> str:
        """The field a problem is about (``max_num_seqs.options[2]`` -> ``options``)."""
        rest = problem.key.removeprefix(self.draft.name).lstrip(".")
        return re.split(r"[.\[]", rest, maxsplit=1)[0]

    def _status(self) -> str:
        if self.param is None:
            lines = []
            for p in self.problems:
                field = self._field(p)
                lines.append(f"{field}: {p.message}" if field else p.message)
            return "\n".join(lines)
        text = self.param.describe()
        # count(), not len(choices()): typing a high of 1000000000 listed a billion values
        # on every keystroke, and the screen froze for seconds.
        count = self.param.count()
        if count is not None and self.param.kind != "bool":
            text += f"  ({count:,} values)"
        return text if self.param.enabled else text + "  (not searched)"


def new_param(text: str, present: set[str], fixed: frozenset[str]) -> Param | str:
    """A blank parameter for the flag or workload setting ``text`` names, or why there is none."""
    name = text.strip()
    if not name:
        return "type a flag name, such as max_num_batched_tokens or workload.streams"
    norm = name.lstrip("-").replace("-", "_")
    if norm.startswith("workload."):
        field = norm.removeprefix("workload.")
        if field not in WORKLOAD_PARAMS:
            return f"{name!r} cannot be searched; allowed: workload.streams, workload.rate"
        param = Param(norm, norm, WORKLOAD_PARAMS[field], "workload")
    else:
        ctx = Context()
        flag = resolve_flag(ctx, name, name)
        if flag is None:
            return ctx.problems[0].message if ctx.problems else f"{name!r} is not a flag"
        if not flag.tunable:
            return f"{flag.name} cannot be searched: it is not a performance setting"
        if flag.kind not in ROW_KIND:
            what = "JSON" if flag.kind == "json" else "a list"
            return f"{flag.name} takes {what} and cannot be searched; set it in server.flags"
        param = Param(flag.dest, flag.dest, ROW_KIND[flag.kind])
    if param.key in present:
        return f"{param.key} is already in the search space"
    if param.key in fixed:
        return f"{param.key} is fixed in server.flags; remove it there to search it"
    return param


class SpaceEditor(ModalScreen[SearchSpace | None]):
    """Edit the search space; dismisses with the new space, or None when cancelled."""

    CSS_PATH = "editor.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "apply", "Apply", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, space: SearchSpace, fixed: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.space = space
        self.fixed = fixed
        self._rows_limit = 0

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as dialog:
            dialog.border_title = "Search space"
            yield Static(
                "tab/shift+tab: move · space: toggle · ctrl+s: apply · esc: cancel", id="hint"
            )
            with VerticalScroll(id="rows", can_focus=False):
                yield from (ParamRow(p) for p in self.space)
            with Vertical(id="bottom"):
                with Horizontal(id="add"):
                    yield Field(
                        placeholder="add a parameter by flag name (max_num_batched_tokens)",
                        compact=True,
                        id="add-name",
                    )
                    yield Button("Add", compact=True, id="add-button")
                yield Static("", markup=False, id="add-error")
                with Horizontal(id="footer"):
                    yield Static("", markup=False, id="summary")
                    yield Button("Apply", "primary", compact=True, id="apply")
                    yield Button("Cancel", compact=True, id="cancel")

    def on_mount(self) -> None:
        self.screen_layout_refresh_signal.subscribe(self, lambda _: self._fit())

    def _fit(self) -> None:
        """Give the rows what the terminal has left, so they scroll and the buttons stay.

        CSS cannot say "the screen's height minus the other parts" for an auto-height dialog,
        so after every layout (a resize, an error under the add field) the rows' maximum height
        is set here; only a change triggers another layout.
        """
        used = sum(self.query_one(s).outer_size.height for s in ("#hint", "#bottom"))
        limit = max(3, self.size.height - used - 2)  # 2: the dialog's border
        if limit != self._rows_limit:
            self._rows_limit = limit
            self.query_one("#rows", VerticalScroll).styles.max_height = limit

    def rows(self) -> list[ParamRow]:
        return list(self.query(ParamRow))

    def row(self, key: str) -> ParamRow:
        return self.query_one(f"#{_ident(key)}", ParamRow)

    def edited_space(self) -> SearchSpace | None:
        """The space the rows describe, or None while any row has a problem."""
        params = [row.param for row in self.rows()]
        if any(p is None for p in params):
            return None
        return SearchSpace(tuple(p for p in params if p is not None))

    def on_param_row_checked(self, message: ParamRow.Checked) -> None:
        self._refresh_summary()

    def _refresh_summary(self) -> None:
        space = self.edited_space()
        summary = self.query_one("#summary", Static)
        self.query_one("#apply", Button).disabled = space is None
        summary.set_class(space is None, "-invalid")
        if space is None:
            bad = sum(row.param is None for row in self.rows())
            summary.update(f"{bad} parameter{'s' if bad != 1 else ''} to fix before applying")
            return
        searched = len(space.enabled())
        text = f"{searched} of {len(space.params)} searched · "
        size = space.size()
        if not searched:
            text += "nothing searched: every trial repeats vLLM's defaults"
        elif size is None:
            text += "unbounded (a float range without a step)"
        else:
            text += f"{size:,} configuration{'s' if size != 1 else ''}"
        summary.update(text)

    @on(Input.Submitted, "#add-name")
    @on(Button.Pressed, "#add-button")
    async def _add(self) -> None:
        box = self.query_one("#add-name", Input)
        present = {row.key for row in self.rows()}
        param = new_param(box.value, present, self.fixed)
        error = self.query_one("#add-error", Static)
        error.update(param if isinstance(param, str) else "")
        error.set_class(isinstance(param, str), "-shown")
        if isinstance(param, str):
            return
        box.value = ""
        row = ParamRow(param, added=True)
        await self.query_one("#rows", VerticalScroll).mount(row)
        fields = row.query(".low, .options")
        (fields.first() if fields else row.query_one(".enabled", Checkbox)).focus()
        row.scroll_visible()

    @on(Button.Pressed, ".remove")
    async def _drop(self, event: Button.Pressed) -> None:
        await event.button.query_ancestor(ParamRow).remove()
        self.query_one("#add-name", Input).focus()
        self._refresh_summary()

    @on(Button.Pressed, "#apply")
    def _apply_pressed(self) -> None:
        self.action_apply()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def action_apply(self) -> None:
        space = self.edited_space()
        if space is None:
            self.app.bell()
            bad = next(row for row in self.rows() if row.param is None)
            fields = bad.query("Input.-invalid")
            (fields.first() if fields else bad.query_one(".enabled", Checkbox)).focus()
            bad.scroll_visible()
            return
        self.dismiss(space)

    def action_cancel(self) -> None:
        self.dismiss(None)
