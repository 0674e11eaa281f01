"""GpuPanel: the no-GPU state, two fake GPUs, the simulator's figures, and small boxes."""

from __future__ import annotations

import math

import pytest
from rich.text import Text
from textual.app import App, ComposeResult

from tui_tuner.core.telemetry import GpuSample, GpuState, ServerFigures
from tui_tuner.ui.widgets.gpu import GpuPanel, render_gpu_lines

NO_GPU = GpuState(False, "no NVIDIA GPU found (NVML: NVML Shared Library Not Found)", ())
TWO = GpuState(
    True,
    "",
    (
        GpuSample(0, "NVIDIA H100 80GB HBM3", 62.0, 31_000.0, 81_559.0, 350.4, 65.0),
        GpuSample(1, "NVIDIA GeForce RTX 4090", 95.0, 20_000.0, 24_564.0, None, math.nan),
    ),
)
SIM = ServerFigures(
    simulated=True,
    gpu_name="NVIDIA H100 80GB HBM3",
    kv_cache_usage_pct=43.2,
    running=12,
    waiting=3,
    generation_tok_s=1234.5,
    generation_tokens_total=1e5,
    at=10.0,
)


def _plain(lines: list[Text]) -> str:
    return "\n".join(line.plain for line in lines)


def test_no_gpu_state_says_why_once_and_short() -> None:
    """Issue 14: three lines of "NVML Shared Library Not Found" became one short line, so
    the room goes to the figures."""
    lines = render_gpu_lines(NO_GPU, None, 24, 10)
    assert [line.plain for line in lines] == ["no GPU: NVML missing"]
    closed = _plain(render_gpu_lines(GpuState(False, "NVML was closed", ()), None, 80, 10))
    assert closed == "no GPU: NVML was closed"
    # With the simulator's figures below it, the section still takes a single line.
    both = render_gpu_lines(NO_GPU, SIM, 24, 10)
    assert both[0].plain == "no GPU: NVML missing" and both[1].plain == ""
    assert both[2].plain.startswith("SIMULATED H100")


def test_two_gpus_in_detail() -> None:
    text = _plain(render_gpu_lines(TWO, None, 60, 20))
    assert "GPU0 NVIDIA H100 80GB HBM3" in text
    assert "GPU1 NVIDIA GeForce RTX 4090" in text
    assert "62%" in text and "95%" in text
    assert "30.3/79.6 GiB" in text
    assert "350 W" in text and "65 °C" in text
    assert "? W" in text and "? °C" in text  # GPU1 reports neither


def test_wide_box_puts_each_gpu_on_one_line() -> None:
    lines = render_gpu_lines(TWO, None, 140, 20)
    assert len(lines) == 2
    assert "util" in lines[0].plain and "mem" in lines[0].plain and "65 °C" in lines[0].plain


def test_sim_figures_are_labelled_simulated() -> None:
    text = _plain(render_gpu_lines(NO_GPU, SIM, 60, 20))
    assert "SIMULATED H100 80GB HBM3" in text
    assert "KV cache" in text and "43%" in text
    assert "run 12 · wait 3" in text
    assert "gen 1,234 tok/s" in text


def test_real_vllm_figures_are_not_called_simulated() -> None:
    real = ServerFigures(False, "", 50.0, 1, 0, None, 10.0, 1.0)
    text = _plain(render_gpu_lines(TWO, real, 60, 20))
    assert "SIMULATED" not in text and "vLLM reports" in text and "gen … tok/s" in text


def test_simulator_lag_is_flagged() -> None:
    lagging = ServerFigures(True, "", 10.0, 1, 0, 5.0, 10.0, 1.0, sim_lag_s=2.5)
    assert "sim lags 2.5 s" in _plain(render_gpu_lines(NO_GPU, lagging, 60, 20))


@pytest.mark.parametrize(
    ("state", "figures"), [(NO_GPU, None), (TWO, None), (NO_GPU, SIM), (TWO, SIM)]
)
@pytest.mark.parametrize(("width", "height"), [(30, 6), (28, 4), (20, 3), (200, 40)])
def test_fits_the_box(
    state: GpuState, figures: ServerFigures | None, width: int, height: int
) -> None:
    lines = render_gpu_lines(state, figures, width, height)
    assert 0 < len(lines) <= height
    assert all(line.cell_len <= width for line in lines)
    text = _plain(lines)
    if figures is not None:
        assert "SIM" in text  # a simulated figure is never shown unlabelled
    if state is TWO and height >= 4:
        assert "62%" in text and "95%" in text


def test_30x6_keeps_the_essentials() -> None:
    text = _plain(render_gpu_lines(TWO, SIM, 30, 6))
    for figure in ("62%", "95%", "SIMULATED", "43%", "1,234 tok/s"):
        assert figure in text


class PanelApp(App[None]):
    CSS = "GpuPanel { width: 30; height: 6; padding: 0; }"

    def compose(self) -> ComposeResult:
        yield GpuPanel()


async def test_panel_widget_in_a_30x6_box() -> None:
    async with PanelApp().run_test(size=(80, 24)) as pilot:
        panel = pilot.app.query_one(GpuPanel)
        panel.update_state(NO_GPU)
        panel.update_figures(SIM)
        await pilot.pause()
        shown = "\n".join(
            "".join(seg.text for seg in panel.render_line(y)) for y in range(panel.size.height)
        )
        assert "no GPU" in shown
        assert "SIMULATED" in shown
        assert panel.border_title == "GPU"
        assert "1,234 tok/s" in shown
        before = panel.content
        panel.update_figures(SIM)  # the same figures: nothing is redrawn
        assert panel.content is before
        panel.update_figures(None)
        await pilot.pause()
        assert "SIMULATED" not in str(panel.content)
