"""The search-space editor, driven through Textual's pilot, and the space's YAML round trip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import yaml
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Button, Checkbox, Input, Static

import tui_tuner.ui as ui_package
from tui_tuner.core.config_load import load_space
from tui_tuner.core.space import Param, SearchSpace
from tui_tuner.core.space_dump import space_to_mapping
from tui_tuner.core.space_load import parse_space
from tui_tuner.ui.screens.editor import ParamRow, SpaceEditor, new_param

SPACE = parse_space(
    {
        "max_num_seqs": {"type": "int", "low": 16, "high": 512, "step": 16},
        "max_num_batched_tokens": {"options": [2048, 4096, 8192]},
        "enable_prefix_caching": {"type": "bool"},
        "kv_cache_dtype": {"options": ["auto", "fp8"], "enabled": False},
        "workload.streams": {"type": "int", "low": 1, "high": 64, "log": True},
    }
)


class Host(App[None]):
    """Pushes the editor at start and keeps what it dismisses with; with the app's stylesheet,
    whose rules the editor's own (screens/editor.tcss) must outrank."""

    CSS_PATH = Path(ui_package.__file__).with_name("tuner.tcss")

    def __init__(self, space: SearchSpace, fixed: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.space = space
        self.fixed = fixed
        self.results: list[SearchSpace | None] = []

    def on_mount(self) -> None:
        self.push_screen(SpaceEditor(self.space, self.fixed), self.results.append)


def _editor(app: Host) -> SpaceEditor:
    screen = app.screen
    assert isinstance(screen, SpaceEditor)
    return screen


async def _type(pilot: Pilot[None], field: Input, text: str) -> None:
    """Replace the field's text by typing, as a user would."""
    field.focus()
    await pilot.pause()
    field.clear()
    await pilot.press(*text)
    await pilot.pause()


def _status(row: ParamRow) -> str:
    return str(row.query_one(".status", Static).render())


def _apply_disabled(editor: SpaceEditor) -> bool:
    return editor.query_one("#apply", Button).disabled


def _summary(editor: SpaceEditor) -> str:
    return str(editor.query_one("#summary", Static).render())


async def test_unchanged_space_applies_as_equal() -> None:
    app = Host(SPACE)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        editor = _editor(app)
        assert [row.key for row in editor.rows()] == [p.key for p in SPACE]
        assert not _apply_disabled(editor)
        assert "16..512 step 16" in _status(editor.row("max_num_seqs"))
        assert "not searched" in _status(editor.row("kv_cache_dtype"))
        # 32 x 3 x 2 x 64 configurations; kv_cache_dtype is disabled
        assert "4 of 5 searched" in _summary(editor)
        assert "12,288 configurations" in _summary(editor)
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert app.results == [SPACE]


async def test_invalid_step_blocks_apply_until_fixed() -> None:
    app = Host(SPACE)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        editor = _editor(app)
        row = editor.row("max_num_seqs")
        step = row.query_one(".step", Input)
        await _type(pilot, step, "0")
        assert row.param is None
        assert "step: " in _status(row) and "positive" in _status(row)
        assert step.has_class("-invalid")
        assert _apply_disabled(editor)
        assert "1 parameter to fix" in _summary(editor)

        await pilot.press("ctrl+s")  # refused while a row is invalid
        await pilot.pause()
        assert app.results == [] and app.screen is editor

        await _type(pilot, step, "8")
        assert row.param is not None and row.param.step == 8
        assert not step.has_class("-invalid")
        assert not _apply_disabled(editor)
        assert "16..512 step 8" in _status(row)
        await pilot.press("ctrl+s")
        await pilot.pause()
    result = app.results[0]
    assert result is not None and result.get("max_num_seqs") == replace(SPACE.params[0], step=8.0)


async def test_blank_step_means_none_and_text_is_an_error() -> None:
    app = Host(SPACE)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        row = _editor(app).row("max_num_seqs")
        await _type(pilot, row.query_one(".step", Input), "")
        assert row.param is not None and row.param.step is None
        await _type(pilot, row.query_one(".low", Input), "abc")
        assert row.param is None
        assert "low: expected an integer, got the text 'abc'" in _status(row)


async def test_toggle_enabled_with_the_keyboard() -> None:
    app = Host(SPACE)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        editor = _editor(app)
        box = editor.row("enable_prefix_caching").query_one(".enabled", Checkbox)
        box.focus()
        await pilot.press("space")
        await pilot.pause()
        assert "not searched" in _status(editor.row("enable_prefix_caching"))
        assert "3 of 5 searched" in _summary(editor)
        await pilot.press("ctrl+s")
        await pilot.pause()
    result = app.results[0]
    assert result is not None
    assert result == SPACE.set_enabled("enable_prefix_caching", False)


async def test_escape_cancels_even_from_a_field() -> None:
    app = Host(SPACE)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        row = _editor(app).row("max_num_seqs")
        await _type(pilot, row.query_one(".high", Input), "1024")
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, SpaceEditor)
    assert app.results == [None]


async def test_cancel_button() -> None:
    app = Host(SPACE)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.click("#cancel")
        await pilot.pause()
    assert app.results == [None]


async def test_options_list_with_a_bad_item() -> None:
    app = Host(SPACE)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        editor = _editor(app)
        row = editor.row("max_num_batched_tokens")
        field = row.query_one(".options", Input)
        await _type(pilot, field, "8, 16, x")
        assert row.param is None
        assert "options: " in _status(row) and "'x'" in _status(row)
        assert field.has_class("-invalid")
        assert _apply_disabled(editor)

        await _type(pilot, field, "")  # messages show brackets literally, not as markup
        assert "such as [8, 16, 32]; got []" in _status(row)

        await _type(pilot, field, "8, 16, 8k")  # vLLM reads 8k as 8000 here
        assert row.param is not None and row.param.options == (8, 16, 8000)
        assert not _apply_disabled(editor)


async def test_tab_moves_through_a_row() -> None:
    app = Host(SPACE)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        row = _editor(app).row("max_num_seqs")
        assert app.focused is row.query_one(".enabled", Checkbox)
        order = []
        for _ in range(4):
            await pilot.press("tab")
            order.append(app.focused)
        assert order == [
            row.query_one(".low"),
            row.query_one(".high"),
            row.query_one(".step"),
            row.query_one(".log"),
        ]


async def test_summary_for_an_unbounded_space() -> None:
    space = parse_space({"gpu_memory_utilization": {"type": "float", "low": 0.8, "high": 0.95}})
    app = Host(space)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        editor = _editor(app)
        assert "unbounded" in _summary(editor)
        row = editor.row("gpu_memory_utilization")
        await _type(pilot, row.query_one(".step", Input), "0.05")
        assert "4 configurations" in _summary(editor)


async def test_add_a_flag_then_fill_it_in() -> None:
    app = Host(SPACE, frozenset({"max_model_len"}))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        editor = _editor(app)
        name = editor.query_one("#add-name", Input)
        await _type(pilot, name, "--max-num-partial-prefills")
        await pilot.press("enter")
        await pilot.pause()
        error = str(editor.query_one("#add-error", Static).render())
        assert "removed in vLLM 0.11" in error

        await _type(pilot, name, "long-prefill-token-threshold")
        await pilot.press("enter")
        await pilot.pause()
        row = editor.row("long_prefill_token_threshold")
        assert row.param is None and _apply_disabled(editor)  # no range yet
        assert app.focused is row.query_one(".low")
        await pilot.press("0")
        await _type(pilot, row.query_one(".high", Input), "2048")
        assert row.param is not None
        await pilot.press("ctrl+s")
        await pilot.pause()
    result = app.results[0]
    assert result is not None
    assert result.params[:-1] == SPACE.params
    assert result.params[-1] == Param(
        "long_prefill_token_threshold", "long_prefill_token_threshold", "int", low=0, high=2048
    )


async def test_dropping_an_added_row() -> None:
    app = Host(SPACE)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        editor = _editor(app)
        await _type(pilot, editor.query_one("#add-name", Input), "block_size")
        await pilot.press("enter")
        await pilot.pause()
        assert _apply_disabled(editor)
        editor.row("block_size").query_one(".remove", Button).press()
        await pilot.pause()
        assert [row.key for row in editor.rows()] == [p.key for p in SPACE]
        assert not _apply_disabled(editor)


def test_new_param_refusals() -> None:
    present = {"max_num_seqs"}
    fixed = frozenset({"max_model_len"})
    assert "already" in str(new_param("max-num-seqs", present, fixed))
    assert "fixed in server.flags" in str(new_param("max_model_len", present, fixed))
    assert "not a `vllm serve` flag" in str(new_param("max_num_sqes", present, fixed))
    assert "did you mean" in str(new_param("max_num_sqes", present, fixed))
    assert "JSON" in str(new_param("compilation_config", present, fixed))
    assert "not a performance setting" in str(new_param("port", present, fixed))
    assert "allowed" in str(new_param("workload.duration", present, fixed))
    assert new_param("workload.rate", present, fixed) == Param(
        "workload.rate", "workload.rate", "float", "workload"
    )
    assert new_param("--enforce-eager", present, fixed) == Param(
        "enforce_eager", "enforce_eager", "bool"
    )


MANY_NAMES = [
    "max_num_seqs", "max_num_batched_tokens", "long_prefill_token_threshold",
    "stream_interval", "block_size", "kv_cache_memory_bytes", "max_model_len",
    "tensor_parallel_size", "max_cudagraph_capture_size", "data_parallel_size",
]  # fmt: skip
MANY = parse_space({n: {"type": "int", "low": 1, "high": 4} for n in MANY_NAMES})


async def test_many_parameters_fit_a_small_terminal() -> None:
    app = Host(MANY)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        editor = _editor(app)
        rows = editor.query_one("#rows")
        assert rows.max_scroll_y > 0  # the rows scroll ...
        for selector in ("#apply", "#cancel", "#add-name"):  # ... the buttons stay in view
            assert editor.query_one(selector).region.bottom <= 24
        last = editor.row("data_parallel_size").query_one(".high", Input)
        await _type(pilot, last, "3")
        assert rows.scroll_y > 0
        assert last.region.bottom <= editor.query_one("#bottom").region.y
        await pilot.press("ctrl+s")
        await pilot.pause()
    result = app.results[0]
    assert result is not None and result.get("data_parallel_size") == Param(
        "data_parallel_size", "data_parallel_size", "int", low=1, high=3
    )


async def test_shrinking_the_terminal_keeps_the_buttons_in_view() -> None:
    app = Host(MANY)
    async with app.run_test(size=(200, 60)) as pilot:
        await pilot.pause()
        editor = _editor(app)
        assert editor.query_one("#rows").max_scroll_y == 0
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        await pilot.pause()
        assert editor.query_one("#rows").max_scroll_y > 0
        assert editor.query_one("#apply").region.bottom <= 24
        # a long message under the add field wraps; the buttons still fit
        await _type(pilot, editor.query_one("#add-name", Input), "max-num-partial-prefills")
        await pilot.press("enter")
        await pilot.pause()
        await pilot.pause()
        error = editor.query_one("#add-error")
        assert error.region.height == 2
        assert editor.query_one("#apply").region.bottom <= 24


async def test_large_terminal_sizes_the_dialog_to_its_rows() -> None:
    app = Host(SPACE)
    async with app.run_test(size=(200, 60)) as pilot:
        await pilot.pause()
        editor = _editor(app)
        assert editor.query_one("#rows").max_scroll_y == 0
        dialog = editor.query_one("#dialog")
        assert dialog.region.height < 30 and dialog.region.width <= 120


# -- the space as YAML -----------------------------------------------------------------------


ROUND_TRIP = {
    "max-num-seqs": {"type": "int", "low": 16, "high": 512, "log": True},
    "max_num_batched_tokens": {"type": "int", "low": 1024, "high": 8192, "step": 1024},
    "gpu_memory_utilization": {"type": "float", "low": 0.8, "high": 0.95, "step": 0.05},
    "workload.rate": {"type": "float", "low": 0.5, "high": 8.0, "enabled": False},
    "guidellm_concurrency": {"options": [8, 16, 32]},
    "kv_cache_dtype": {"options": ["auto", "fp8"]},
    "enable_chunked_prefill": {"options": [True, False]},
    "enforce_eager": {"type": "bool", "enabled": False},
    "compilation_config": {"options": [0, 3]},
}


def test_space_to_mapping_round_trips(tmp_path: Path) -> None:
    space = parse_space(ROUND_TRIP)
    mapping = space_to_mapping(space)
    assert parse_space(mapping) == space
    assert mapping["max-num-seqs"] == {"type": "int", "low": 16, "high": 512, "log": True}
    assert mapping["enforce_eager"] == {"enabled": False, "type": "bool"}
    # as the app saves it, and as `resume` reads it back
    path = tmp_path / "search_space.yaml"
    path.write_text("# edited\n" + yaml.safe_dump(mapping, sort_keys=False))
    assert load_space(path) == space


def test_round_trip_after_editing() -> None:
    space = parse_space(ROUND_TRIP).set_enabled("workload.rate", True)
    edited = space.with_param(replace(space.params[0], low=32.0, log=False, step=32.0))
    assert parse_space(space_to_mapping(edited)) == edited


def _post_keys(app: Host, keys: Sequence[tuple[str, str | None]]) -> None:
    """Keys as a fast typist (or a terminal paste without bracketed paste) sends them: all
    queued at the app before the first is handled."""
    from textual import events

    for key, character in keys:
        app.post_message(events.Key(key, character))


async def test_fast_typing_keeps_every_key_in_order() -> None:
    """Issue 14: "1", backspace, "0.9" typed quickly gave "10." (the backspace ran last)."""
    app = Host(SPACE)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        row = _editor(app).row("max_num_seqs")
        low, high = row.query_one(".low", Input), row.query_one(".high", Input)
        high.focus()
        high.value = ""
        await pilot.pause()
        _post_keys(app, [("1", "1"), ("backspace", "\x7f"), ("2", "2"), ("5", "5"),
                         ("6", "6"), ("left", None), ("delete", None), ("home", None),
                         ("3", "3")])  # fmt: skip
        await pilot.pause(0.3)
        assert high.value == "325"
        # Keys typed after a tab land in the next field, not in this one.
        low.focus()
        low.value = ""
        await pilot.pause()
        _post_keys(app, [("3", "3"), ("2", "2"), ("tab", None), ("backspace", "\x7f"),
                         ("backspace", "\x7f"), ("backspace", "\x7f"), ("6", "6"),
                         ("4", "4")])  # fmt: skip
        await pilot.pause(0.3)
        assert (low.value, high.value) == ("32", "64")
        assert high.has_focus
        assert row.param is not None and row.param.low == 32 and row.param.high == 64


async def test_a_paste_takes_its_first_line_with_text() -> None:
    from textual import events

    app = Host(SPACE)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        row = _editor(app).row("max_num_seqs")
        high = row.query_one(".high", Input)
        high.focus()
        high.value = ""
        await pilot.pause()
        app.post_message(events.Paste("\n  256 \nrm -rf /\n"))
        await pilot.pause(0.3)
        assert high.value == "256"
        assert row.param is not None and row.param.high == 256


async def test_a_huge_range_costs_nothing_per_key() -> None:
    """Issue 14: a key took over a second to appear. Typing a high of 10^12 listed every
    value of the range on each keystroke (the row's "(N values)")."""
    import time

    app = Host(SPACE)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        row = _editor(app).row("max_num_seqs")
        high = row.query_one(".high", Input)
        high.focus()
        high.value = ""
        await pilot.pause()
        started = time.perf_counter()
        _post_keys(app, [("1", "1")] + [("0", "0")] * 12)
        await pilot.pause(0.3)
        assert high.value == "1" + "0" * 12
        assert time.perf_counter() - started < 3.0
        assert "62,500,000,000 values" in _status(row)
