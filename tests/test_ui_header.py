"""The header and the numbers behind it: counts that add up, a smoothed time left, gains where
better is always a plus, and a line laid out for 80 columns (issue 14)."""

from __future__ import annotations

import itertools
from pathlib import Path

from tests.fakes.engine import make_config, measurement
from tui_tuner.core.events import (
    BenchProgress,
    ServerFiguresRead,
    StudyStarted,
    TrialPhaseChanged,
    TrialStarted,
)
from tui_tuner.core.telemetry import ServerFigures
from tui_tuner.core.trial import TrialRecord
from tui_tuner.ui.header import gain_words, header_text
from tui_tuner.ui.model import RunningTrial, StudyModel
from tui_tuner.ui.screens.detail import detail_text
from tui_tuner.ui.widgets.live import live_text


def done(n: int, tok_s: float, total: float = 60.0, **kw: object) -> TrialRecord:
    m = measurement(tok_s, p95_ms=kw.pop("p95", 1000.0))  # type: ignore[arg-type]
    return TrialRecord(n, "complete", {} if n == 0 else {"max_num_seqs": n}, n == 0, m,
                       values=(tok_s,), timings={"total": total}, **kw)  # type: ignore[arg-type]  # fmt: skip


def resumed_model(tmp_path: Path) -> StudyModel:
    """A resumed study as the issue saw it (rows #0-#10 with an interrupted trial and a
    duplicate among them, a budget of 12), plus every other kind that does not spend the
    budget: a trial queued to run again, a repeat of the baseline, a rejected one."""
    model = StudyModel(make_config(tmp_path, [8, 16], n_trials=12))
    records = [done(n, 1000.0 + n) for n in range(7)]
    records.append(TrialRecord(7, "failed", {"max_num_seqs": 7}, failure={"class": "oom"}))
    records.append(TrialRecord(8, "failed", {"max_num_seqs": 8}, interrupted=True))
    records.append(TrialRecord(9, "complete", {"max_num_seqs": 1}, measurement=measurement(1001.0),
                               duplicate_of=1))  # fmt: skip
    records.append(TrialRecord(10, "pruned", {"max_num_seqs": 16}))
    records.append(TrialRecord(11, "failed", {"max_num_seqs": 9}, rejected=True,
                               failure={"class": "invalid_args"}))  # fmt: skip
    records.append(TrialRecord(12, "complete", {}, True, measurement(1000.0), repeat=True))
    records.append(TrialRecord(13, "failed", {"max_num_seqs": 5}, rerun=True,
                               failure={"class": "benchmark_failed"}))  # fmt: skip
    model.apply(StudyStarted("t", "throughput", "s", "d", 12, None, False, 10,
                             trials=tuple(records)))  # fmt: skip
    return model


def test_every_count_adds_up_and_says_what_it_counts(tmp_path: Path) -> None:
    model = resumed_model(tmp_path)
    c = model.counts()
    assert (c.measured, c.failed, c.pruned) == (7, 1, 1)
    assert (c.again, c.repeats, c.rejected, c.duplicates) == (2, 1, 1, 1)
    assert c.counted + c.uncounted == len(model.records)
    assert c.counted == model.counted == 9
    plain = header_text(model).plain
    assert "measured 7 · failed 1 · pruned 1 · of 12" in plain
    assert "(+2 to run again + 1 repeat + 1 rejected + 1 duplicate, not counted)" in plain
    assert "trials 9/12" not in plain


def test_the_80_column_header_keeps_what_matters(tmp_path: Path) -> None:
    model = resumed_model(tmp_path)
    model.state = "running"
    model.simulated = True
    plain = header_text(model, 80).plain
    assert len(plain) <= 80
    for part in ("running", "7 measured", "/12", "best", "1,006 tok/s"):
        assert part in plain, plain
    assert "throughput" not in plain  # the objective is the first to go
    wide = header_text(model, 260).plain
    assert "throughput" in wide and "SIMULATED" in wide and "p95" in wide


def test_gains_read_better_as_a_plus() -> None:
    assert gain_words(2.3, lower_is_better=True, name="p95") == ("p95 2% worse", "red")
    assert gain_words(-12.0, lower_is_better=True, name="p95") == ("p95 12% better", "green")
    assert gain_words(12.0, lower_is_better=False, name="tok/s") == ("tok/s +12%", "green")
    assert gain_words(-36.0, lower_is_better=False, name="tok/s") == ("tok/s -36%", "red")


def test_the_detail_screen_says_worse_for_a_slower_p95(tmp_path: Path) -> None:
    model = StudyModel(make_config(tmp_path, [8]))
    model.load([done(0, 1000.0, p95=1000.0), done(1, 1100.0, p95=1023.0)])
    text = detail_text(model.records[1], model)
    assert "p95 latency 2% worse" in text and "output tok/s +10%" in text
    assert "+2.3%" not in text


def test_time_left_is_smoothed(tmp_path: Path) -> None:
    """Issue 14: the estimate jumped from 4:12 to 1:38 within 40 s when a short failed trial
    halved the mean. Fixed inputs, a fixed clock: it now moves a little per second."""
    model = StudyModel(make_config(tmp_path, [8], n_trials=8))
    model.state = "running"
    model.load([done(0, 1000.0, total=250.0)])
    model.runs = {1: RunningTrial(1, {}, False, (), "", started=1000.0)}
    first = model.eta_s(now=1000.0)
    assert first == 7 * 250.0
    shown = [first]
    for second in range(1, 41):
        if second == 5:  # a trial fails after 3 s: the raw estimate falls by half
            model.load([done(0, 1000.0, total=250.0),
                        TrialRecord(1, "failed", failure={"class": "oom"},
                                    timings={"total": 3.0})])  # fmt: skip
            model.runs = {2: RunningTrial(2, {}, False, (), "", started=1004.0)}
        value = model.eta_s(now=1000.0 + second)
        assert value is not None
        shown.append(value)
    raw = model.raw_eta_s(now=1040.0)
    assert raw is not None and raw < 0.6 * first
    steps = [a - b for a, b in itertools.pairwise(shown)]
    # The trial that ended 246 s early takes its 246 s off at once (that time is really
    # gone); the halved typical duration does not: a few seconds a second, at most.
    assert steps[4] <= 260.0
    assert max(steps[:4] + steps[5:]) < 0.01 * first
    assert shown[-1] > raw + 0.3 * (first - raw)  # still on its way after 40 s
    for second in range(41, 1000):  # and it gets there
        last = model.eta_s(now=1000.0 + second)
    assert last is not None and abs(last - model.raw_eta_s(now=1999.0)) < 5.0  # type: ignore[operator]


def test_the_live_line_and_its_readings(tmp_path: Path) -> None:
    model = StudyModel(make_config(tmp_path, [8]))
    model.apply(TrialStarted(3, {"max_num_seqs": 8}, False, ("vllm",), "d"))
    model.apply(TrialPhaseChanged(3, "warmup", 1.0))
    figures = ServerFigures(True, "x", 10.0, 4, 0, 500.0, 1e4, at=1.0)
    model.apply(ServerFiguresRead(3, figures))
    model.apply(ServerFiguresRead(2, figures))  # another trial's: not this one's plot
    model.apply(BenchProgress(3, 0, "active", 10.0, 394, 2, 480.0))
    run = model.running
    assert run is not None and list(run.rates) == [500.0]  # the server's rate wins
    line = live_text(model, now=run.bench_at + 2.0).plain
    window = model.config.workload.warmup_s + model.config.workload.duration_s
    assert line == f"#3 warmup {min(12, window):.0f}/{window:.0f}s · 500 tok/s · 394 req · 2 err"


def test_noise_is_shown_only_when_the_study_has_an_estimate(tmp_path: Path) -> None:
    model = StudyModel(make_config(tmp_path, [8]))
    model.load([done(0, 1000.0), done(1, 1200.0)])
    assert "noise" not in header_text(model).plain  # one run each: no estimate, none invented
    model.load([done(0, 1000.0, repeats_output_tok_s=(980.0, 1000.0, 1030.0)), done(1, 1200.0)])
    assert "noise ±2.5% (repeated runs)" in header_text(model).plain


def test_a_pruned_trials_partial_figure_is_in_its_detail(tmp_path: Path) -> None:
    model = StudyModel(make_config(tmp_path, [8]))
    pruned = TrialRecord(1, "pruned", {"max_num_seqs": 8}, note="pruned by the user",
                         partial={"elapsed_s": 21.0, "successful": 40, "errored": 1,
                                  "output_tok_s": 2900.0})  # fmt: skip
    model.load([done(0, 1000.0), pruned])
    text = detail_text(pruned, model)
    assert "2,900 output tok/s after 21 s, 40 requests, 1 errors" in text
