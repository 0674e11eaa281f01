"""A best that holds (issue 10): the baseline measured several times gives the study's noise;
the best configurations are measured again, interleaved, before the study ends; the answer
states its gain with an interval and whether it beats the runner-up by more than the noise.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.fakes.engine import Fakes, make_config, measurement
from tui_tuner.core.confidence import answer, groups, noise
from tui_tuner.core.objectives import best_trials
from tui_tuner.core.stop import StopKind
from tui_tuner.core.trial import TrialRecord, counts_against_budget
from tui_tuner.engine.orchestrator import Orchestrator
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.engine.trial_runner import TrialRunner


def run(number: int, tok_s: float, seqs: int | None = None) -> TrialRecord:
    return TrialRecord(
        number=number,
        state="complete",
        params={} if seqs is None else {"max_num_seqs": seqs},
        baseline=seqs is None,
        measurement=measurement(tok_s),
    )


def test_the_noise_is_the_pooled_spread_of_repeated_configurations() -> None:
    records = [run(0, 1000), run(1, 1100), run(2, 900), run(3, 1500, 8)]
    found = noise(records)
    assert found is not None and (found.runs, found.configurations, found.df) == (3, 1, 2)
    assert found.cv == pytest.approx(0.1)  # deviations of 10%, 10%, 0 over 2 degrees
    assert noise([run(0, 1000), run(3, 1500, 8)]) is None  # nothing ran twice


def test_a_clear_winner_has_its_gain_with_an_interval_and_beats_the_runner_up() -> None:
    records = [run(0, 1000), run(1, 1020), run(2, 980),  # baseline: noise 2%
               run(3, 1500, 8), run(4, 1200, 16), run(5, 1530, 8), run(6, 1190, 16)]  # fmt: skip
    a = answer("throughput", records)
    assert a is not None and a.best.key == groups(records)[1].key  # max_num_seqs 8, 2 runs
    assert a.gain_pct == pytest.approx(51.5)
    assert a.low_pct is not None and a.high_pct is not None
    assert 30 < a.low_pct < 51.5 < a.high_pct < 75
    assert a.beats_runner_up and a.tied == ()
    text = "\n".join(a.lines())
    assert "gain over the baseline: +51.5% output tok/s, 95% interval" in text
    assert "beats the runner-up (trial 4)" in text and "noise 1.6% (spread of 7 runs" in text
    # The best trial shown is the run closest to its configuration's mean.
    assert [r.number for r in best_trials("throughput", records)] in ([3], [5])


def test_a_winner_inside_the_noise_says_it_is_tied() -> None:
    records = [run(0, 1000), run(1, 1200), run(2, 800),  # baseline: noise 20%
               run(3, 1100, 8), run(4, 1080, 16)]  # fmt: skip
    a = answer("throughput", records)
    assert a is not None and not a.beats_runner_up
    assert {g.representative.number for g in a.tied} >= {4}
    text = "\n".join(a.lines())
    assert "tied within the noise with trial(s)" in text
    assert "the baseline is within the noise: this gain may not be real" in text


def test_without_repeats_the_answer_says_the_noise_is_not_measured() -> None:
    a = answer("throughput", [run(0, 1000), run(1, 1100, 8)])
    assert a is not None and a.noise is None and a.low_pct is None
    assert any("noise: not measured" in line for line in a.lines())


def test_latency_gains_are_better_as_a_plus() -> None:
    def fast(number: int, p95: float, seqs: int | None) -> TrialRecord:
        return replace(run(number, 1000, seqs), measurement=measurement(1000, p95_ms=p95))

    a = answer("latency", [fast(0, 1000, None), fast(1, 1000, None), fast(2, 500, 8)])
    assert a is not None and a.gain_pct == pytest.approx(100.0)  # twice as quick


async def test_a_study_measures_its_noise_first_and_its_best_again_interleaved(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, [8, 16, 32], n_trials=4)
    config = replace(config, study=replace(config.study, noise_repeats=3, remeasure_top=2))
    events: list[object] = []
    store = StudyStore(config, default_storage_url(tmp_path))
    fakes = Fakes()
    runner = TrialRunner(config, tmp_path, fakes, fakes, fakes, events.append)
    outcome = await Orchestrator(config, store, runner, events.append, study_dir=tmp_path).run()
    records = outcome.records
    assert [r.baseline for r in records[:3]] == [True, True, True]  # the noise, first
    assert [r.repeat for r in records[:3]] == [False, True, True]
    searched = [r.params["max_num_seqs"] for r in records[3:6]]
    assert sorted(searched) == [8, 16, 32]
    again = records[6:]
    assert [r.params["max_num_seqs"] for r in again] == [32, 16, 32, 16]  # A B A B
    assert all(r.repeat and r.measurement is not None for r in again)
    assert sum(counts_against_budget(r) for r in records) == 4  # repeats spend no budget
    assert outcome.stop.kind in (StopKind.BUDGET, StopKind.SPACE_DONE)
    a = answer("throughput", records)
    assert a is not None and a.best.n == 3 and a.baseline is not None and a.baseline.n == 3
    # A resume of the finished study measures nothing again.
    store = StudyStore(config, default_storage_url(tmp_path))
    fakes = Fakes()
    runner = TrialRunner(config, tmp_path, fakes, fakes, fakes, events.append)
    outcome = await Orchestrator(config, store, runner, events.append, study_dir=tmp_path).run()
    assert len(outcome.records) == len(records)


async def test_the_best_is_measured_again_once_even_when_that_reorders_it(tmp_path: Path) -> None:
    """The re-measurement may dethrone the best (its point); that does not queue another."""

    class Drifting(Fakes):
        async def run(self, request, on_line, on_progress):  # type: ignore[no-untyped-def]
            m = await super().run(request, on_line, on_progress)
            runs = self.runs.setdefault(m.output_tok_s, 0)
            self.runs[m.output_tok_s] = runs + 1
            return replace(m, output_tok_s=100.0) if m.output_tok_s == 3200 and runs else m

    fakes = Drifting()
    fakes.runs = {}  # type: ignore[attr-defined]
    config = make_config(tmp_path, [8, 16, 32], n_trials=4)
    config = replace(config, study=replace(config.study, remeasure_top=1))
    store = StudyStore(config, default_storage_url(tmp_path))
    runner = TrialRunner(config, tmp_path, fakes, fakes, fakes, lambda e: None)
    outcome = await Orchestrator(config, store, runner, lambda e: None, study_dir=tmp_path).run()
    again = [r.params["max_num_seqs"] for r in outcome.records if r.repeat]
    assert again == [32, 32]  # 32 was the best, and ran twice more; 16 now wins, unrepeated
    assert [r.params["max_num_seqs"] for r in best_trials("throughput", outcome.records)] == [16]


def test_a_client_limited_measurement_ranks_as_a_lower_bound_and_says_so() -> None:
    """GuideLLM could not keep its streams in flight: the server's throughput is at least the
    figure (it may rank), but its latency is flattered (for a latency objective it never wins
    on its own). The answer says which and what to change."""
    limited = replace(run(3, 5000, 8), client_limited=True)
    records = [run(0, 1000), run(1, 1010), limited, run(4, 1500, 16)]
    assert [r.number for r in best_trials("throughput", records)] == [3]
    a = answer("throughput", records)
    assert a is not None and a.best.representative.number == 3
    assert any("lower bound" in line and "fewer streams" in line for line in a.lines())

    def quick(number: int, p95: float, seqs: int | None, limited: bool = False) -> TrialRecord:
        r = replace(run(number, 1000, seqs), measurement=measurement(1000, p95_ms=p95))
        return replace(r, client_limited=limited)

    records = [quick(0, 900, None), quick(2, 300, 8, limited=True), quick(3, 600, 16)]
    assert [r.number for r in best_trials("latency", records)] == [3]
