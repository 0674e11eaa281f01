"""The text Pareto plot: where markers land, what wins a shared cell, axes, and odd inputs."""

from __future__ import annotations

import math
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.text import Text

from tests.fakes.engine import measurement
from tui_tuner.core.objectives import pareto_front
from tui_tuner.core.trial import TrialRecord
from tui_tuner.report.plot import PlotPoint, points_from, render_pareto


def record(
    number: int,
    tok_s: float,
    p95_ms: float,
    *,
    baseline: bool = False,
    infeasible: bool = False,
    duplicate_of: int | None = None,
) -> TrialRecord:
    return TrialRecord(
        number=number,
        state="complete",
        params={} if baseline else {"max_num_seqs": number},  # each its own configuration
        baseline=baseline,
        measurement=measurement(tok_s, p95_ms),
        constraints={"sla_p95": 1.0 if infeasible else -1.0},
        duplicate_of=duplicate_of,
    )


def lines(text: Text) -> list[str]:
    return text.plain.split("\n")


def find(text: Text, marker: str) -> list[tuple[int, int]]:
    """Where ``marker`` is in the plot area (lines with words, such as the legend, are not)."""
    return [
        (r, c)
        for r, line in enumerate(lines(text))
        if not re.search("[a-z]{3}", line)
        for c, ch in enumerate(line)
        if ch == marker
    ]


SAMPLE = [
    PlotPoint(0, 820.0, 410.0, "baseline", on_front=True),
    PlotPoint(1, 640.0, 380.0, "front", on_front=True),
    PlotPoint(2, 1150.0, 520.0, "feasible"),
    PlotPoint(3, 980.0, 560.0, "front", on_front=True),
    PlotPoint(4, 1720.0, 690.0, "best", on_front=True),
    PlotPoint(5, 2300.0, 610.0, "infeasible"),
    PlotPoint(6, 1400.0, 470.0, "feasible"),
    PlotPoint(7, 2600.0, 720.0, "infeasible"),
]


# -- points_from -------------------------------------------------------------------------------


def test_points_from_marks_each_kind_and_skips_unmeasured() -> None:
    records = [
        record(0, 400, 800, baseline=True),
        record(1, 380, 600),  # low latency: on the front
        record(2, 450, 1200),  # dominated by 3
        record(3, 700, 1100),  # best throughput
        record(4, 900, 900, infeasible=True),
        record(5, 700, 1100, duplicate_of=3),
        TrialRecord(number=6, state="failed", failure={"class": "oom_startup"}),
        TrialRecord(number=7, state="pruned", measurement=measurement(1000, 10)),
    ]
    kinds = {p.number: p.kind for p in points_from(records, "throughput")}
    assert kinds == {0: "baseline", 1: "front", 2: "feasible", 3: "best", 4: "infeasible"}
    on_front = {p.number for p in points_from(records, "throughput") if p.on_front}
    assert on_front == {0, 1, 3}


def test_points_from_pareto_best_is_the_front() -> None:
    records = [record(1, 380, 600), record(2, 450, 1200), record(3, 700, 1100)]
    kinds = {p.number: p.kind for p in points_from(records, "pareto")}
    assert kinds == {1: "front", 2: "feasible", 3: "front"}


def test_points_from_latency_best_is_the_quickest() -> None:
    records = [record(1, 380, 600), record(3, 700, 1100)]
    kinds = {p.number: p.kind for p in points_from(records, "latency")}
    assert kinds == {1: "best", 3: "front"}


def test_points_from_rejects_an_unknown_objective() -> None:
    with pytest.raises(ValueError, match="objective"):
        points_from([record(1, 1, 1)], "speed")


small = st.integers(1, 6).map(float)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(small, small, st.booleans()), max_size=25))
def test_front_matches_pareto_front(trials: list[tuple[float, float, bool]]) -> None:
    """The sweep that spares ``pareto_front`` most pairs must not change its answer (ties!)."""
    records = [record(i, tok, lat, infeasible=bad) for i, (tok, lat, bad) in enumerate(trials)]
    feasible = [(i, (tok, lat)) for i, (tok, lat, bad) in enumerate(trials) if not bad]
    expected = {feasible[j][0] for j in pareto_front([xy for _, xy in feasible])}
    assert {p.number for p in points_from(records, "throughput") if p.on_front} == expected


# -- placement ---------------------------------------------------------------------------------


def test_markers_land_in_the_right_quadrant() -> None:
    fast = PlotPoint(1, latency_ms=100.0, tok_s=1000.0, kind="best")  # top left
    slow = PlotPoint(2, latency_ms=900.0, tok_s=100.0, kind="infeasible")  # bottom right
    text = render_pareto([fast, slow], 60, 16)
    ((r_best, c_best),) = find(text, "★")
    ((r_bad, c_bad),) = find(text, "×")
    assert r_best < r_bad and c_best < c_bad
    assert r_best <= 3 and c_best <= 10
    assert r_bad >= 9 and c_bad >= 50


def test_sample_shows_every_marker_the_front_and_the_units() -> None:
    text = render_pareto(SAMPLE, 60, 16, title="objective: throughput")
    out = lines(text)
    assert len(out) == 16 and all(len(line) == 60 for line in out)
    for marker in "★B◆●×·":
        assert find(text, marker), marker
    assert out[0].startswith("output tok/s") and out[0].endswith("objective: throughput")
    assert any("p95 latency ms" in line for line in out)
    assert any(line.startswith("★ best  B baseline  ◆ front") for line in out)


def test_front_is_a_staircase_between_front_points() -> None:
    low = PlotPoint(1, 100.0, 100.0, "front", on_front=True)
    high = PlotPoint(2, 900.0, 900.0, "best", on_front=True)
    text = render_pareto([low, high], 60, 16)
    ((r0, c0),) = find(text, "◆")
    ((r1, c1),) = find(text, "★")
    out = lines(text)
    assert set(out[r0][c0 + 1 : c1 + 1]) == {"·"}  # right at the low point's height
    assert {out[r][c1] for r in range(r1 + 1, r0 + 1)} == {"·"}  # then up to the next one


def test_no_front_line_without_two_front_points() -> None:
    text = render_pareto([PlotPoint(1, 100, 100, "best", on_front=True)], 60, 16)
    assert not find(text, "·")


def test_best_and_baseline_win_a_shared_cell() -> None:
    same = dict(latency_ms=500.0, tok_s=500.0)
    crowd = [
        PlotPoint(1, kind="infeasible", **same),  # type: ignore[arg-type]
        PlotPoint(2, kind="best", **same),  # type: ignore[arg-type]
        PlotPoint(3, kind="baseline", **same),  # type: ignore[arg-type]
        PlotPoint(4, kind="feasible", **same),  # type: ignore[arg-type]
        PlotPoint(5, 100.0, 100.0, "feasible"),
    ]
    text = render_pareto(crowd, 60, 16)
    assert len(find(text, "★")) == 1
    assert not find(text, "B") and not find(text, "×")
    text = render_pareto([p for p in crowd if p.kind != "best"], 60, 16)
    assert len(find(text, "B")) == 1
    assert not find(text, "×")
    assert "× infeasible" in text.plain  # still in the legend


def test_ticks_are_round_and_within_the_axis() -> None:
    text = render_pareto(SAMPLE, 60, 16)
    out = lines(text)
    y_labels = [int(m.group(1)) for line in out[1:12] if (m := re.match(r"\s*(\d+)┤", line))]
    assert y_labels == sorted(y_labels, reverse=True) and len(y_labels) >= 3
    assert all(v % 100 == 0 for v in y_labels)
    assert y_labels[0] >= 720 and y_labels[-1] <= 380
    x_labels = [int(v) for v in out[13].split()]
    assert all(v % 250 == 0 for v in x_labels) and len(x_labels) >= 4
    assert x_labels[0] <= 640 and x_labels[-1] >= 2600


def test_ascii_only_uses_ascii() -> None:
    text = render_pareto(SAMPLE, 60, 16, ascii_only=True)
    assert text.plain.isascii()
    for marker in "*B#ox.":
        assert find(text, marker), marker


# -- odd inputs --------------------------------------------------------------------------------


def test_no_points() -> None:
    assert render_pareto([], 60, 16).plain == "no measured trials yet"


def test_one_point_and_identical_points_get_a_padded_range() -> None:
    one = render_pareto([PlotPoint(1, 5.0, 5.0, "best")], 40, 10)
    assert len(find(one, "★")) == 1
    assert "4.5" in one.plain and "5.5" in one.plain
    same = [PlotPoint(i, 300.0, 300.0, "feasible") for i in range(50)]
    text = render_pareto(same, 40, 10)
    assert len(find(text, "●")) == 1
    zero = render_pareto([PlotPoint(1, 0.0, 0.0, "best")], 40, 10)
    assert "-" not in zero.plain.replace("─", "")  # no negative ticks for non-negative data


def test_nan_and_inf_are_left_out() -> None:
    pts = [
        PlotPoint(1, math.nan, 1.0, "feasible"),
        PlotPoint(2, 1.0, math.inf, "feasible"),
        PlotPoint(3, 100.0, 200.0, "best"),
    ]
    text = render_pareto(pts, 40, 10)
    assert len(find(text, "★")) == 1 and not find(text, "●")
    assert render_pareto(pts[:2], 40, 10).plain == "no measured trials yet"


def test_huge_ranges_get_short_labels() -> None:
    pts = [PlotPoint(1, 1e-3, 1.0, "best"), PlotPoint(2, 1e9, 5e7, "feasible")]
    text = render_pareto(pts, 50, 10)
    assert "50M" in text.plain and "1G" in text.plain
    overflow = [PlotPoint(1, -1e308, 1.0, "best"), PlotPoint(2, 1e308, 5e7, "feasible")]
    assert "\n" not in render_pareto(overflow, 50, 10).plain  # a summary, not a crash


def test_tiny_boxes_degrade_to_one_line() -> None:
    smallest = render_pareto(SAMPLE, 20, 6)
    assert len(lines(smallest)) == 6 and "tok/s" in smallest.plain
    for width, height in ((19, 6), (20, 5), (60, 2), (5, 30), (1, 1)):
        text = render_pareto(SAMPLE, width, height)
        assert "\n" not in text.plain and len(text.plain) <= width
        assert text.plain.startswith("#4" if width >= 5 else "…")
    assert render_pareto(SAMPLE, 0, 0).plain == ""


finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
odd = st.one_of(finite, st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e300]))
kinds = st.sampled_from(["feasible", "infeasible", "baseline", "best", "front"])
point = st.builds(PlotPoint, st.integers(0, 999), odd, odd, kinds, st.booleans())


@settings(max_examples=200, deadline=None)
@given(st.lists(point, max_size=30), st.integers(0, 130), st.integers(0, 45))
def test_any_input_fits_the_box(pts: list[PlotPoint], width: int, height: int) -> None:
    out = lines(render_pareto(pts, width, height))
    assert len(out) in (1, height)
    assert all(len(line) <= width for line in out)
    if len(out) == height > 1:
        assert all(len(line) == width for line in out)


def test_a_thousand_points_render_quickly() -> None:
    pts = [
        PlotPoint(i, 100.0 + (i * 37) % 4900, 10.0 + (i * 53) % 2990, "feasible", i % 50 == 0)
        for i in range(1000)
    ]
    start = time.perf_counter()
    text = render_pareto(pts, 100, 30)
    elapsed = time.perf_counter() - start
    assert len(lines(text)) == 30
    assert elapsed < 0.5  # loose: about 2 ms on a laptop, but CI machines are noisy
