"""The early stop of a hopeless trial: the rule over crafted GuideLLM series (core/early_stop.py),
its verdict, and a study whose trial is stopped mid-load by it (fake adapters, no process)."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from tests.conftest import FAST_PROFILE, SimProcess
from tests.fakes.engine import Fakes, make_config, measurement, seqs_of
from tests.test_guidellm_worker import FAKE_DRIVER, _bench, _children, _pid_gone, _request
from tui_tuner.adapters.guidellm import GuidellmBenchmarker
from tui_tuner.core.config import ObjectiveSettings, StudyConfig, StudySettings, WorkloadSettings
from tui_tuner.core.config_load import ConfigError, load_config
from tui_tuner.core.config_problems import Invalid
from tui_tuner.core.early_stop import (
    ASSUMED_CV,
    MIN_CV,
    Decision,
    Incumbent,
    Incumbents,
    Reading,
    Watch,
    applies,
    decide,
    incumbent_of,
    setting,
)
from tui_tuner.core.events import Event, StudyStarted, TrialFinished
from tui_tuner.core.trial import TrialPlan, TrialRecord
from tui_tuner.engine.orchestrator import Orchestrator
from tui_tuner.engine.ports import BenchRequest, ProgressCallback
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.engine.trial_runner import TrialProgress, TrialRunner
from tui_tuner.engine.verdict import judge

BEST = Incumbent(1000.0, number=2, cv=0.03)
WINDOW = {"warmup_s": 10.0, "duration_s": 60.0, "max_error_rate": 0.05}


def series(
    rate: float,
    *,
    until: float = 50.0,
    every: float = 10.0,
    requests_s: float = 15.0,
    errors_s: float = 0.0,
    ramp_s: float = 4.0,
) -> list[Reading]:
    """GuideLLM's progress records for a load that runs at ``rate`` output tok/s once its first
    requests finish (``ramp_s``): cumulative counts, and the cumulative rate since the start."""
    out = []
    t = 0.0
    while t <= until:
        busy = max(0.0, t - ramp_s)
        cumulative = rate * busy / t if t > 0 else 0.0
        out.append(Reading(t, int(requests_s * busy), int(errors_s * busy), cumulative))
        t += every
    return out


def first_stop(readings: Sequence[Reading], best: Incumbent | None = BEST, **kw: Any) -> float:
    """The elapsed seconds of the reading at which the rule says stop (inf: never)."""
    window = {**WINDOW, **kw}
    for n in range(1, len(readings) + 1):
        if decide(readings[:n], best, **window) is not Decision.CONTINUE:
            return readings[n - 1].elapsed_s
    return float("inf")


# -- the rule ---------------------------------------------------------------------------------


def test_a_clearly_hopeless_trial_stops_one_interval_past_its_warmup() -> None:
    readings = series(500.0)
    assert decide(readings[:3], BEST, **WINDOW) is Decision.HOPELESS  # base at 10 s, now 20 s
    assert first_stop(readings) == 20.0


def test_a_trial_at_seventy_then_eighty_percent_stops_later() -> None:
    assert first_stop(series(700.0)) == 20.0
    assert first_stop(series(800.0)) == 40.0
    assert first_stop(series(850.0)) == float("inf")  # it could still come near the noise


def test_a_close_call_runs_to_its_end() -> None:
    # 93% of the best with 3% noise: it could tie within the noise at the end.
    assert first_stop(series(930.0)) == float("inf")
    assert first_stop(series(1100.0)) == float("inf")  # better: never stopped


def test_the_ramp_and_the_warmup_never_stop_a_trial() -> None:
    # Nothing finished for the first 9 s (a long ramp): the cumulative rate is near 0 then.
    slow_start = series(1000.0, ramp_s=9.0, every=1.0, until=19.0)
    assert first_stop(slow_start) == float("inf")
    # Without a warm-up, the base is still taken RAMP_S after the start.
    assert first_stop(series(0.0, requests_s=0.0, until=15.0), warmup_s=0.0) == float("inf")
    # A warm-up of 30 s: the first 30 s decide nothing, even for a hopeless trial.
    assert first_stop(series(300.0), warmup_s=30.0) == 40.0


def test_the_load_is_timed_on_guidellms_clock_from_its_first_request() -> None:
    # GuideLLM's scheduler took 24 s to start (records "pending" until then); its cumulative
    # rates count from its first request. On the benchmark's clock the window's last fifth
    # (past 32 s of 40) would come before any judgement.
    def at(elapsed: float, rate: float, requests_s: float = 15.0) -> Reading:
        load = elapsed - 24.0
        return Reading(elapsed, int(requests_s * load), 0, rate, requests_s)

    readings = [Reading(0.0, 0, 0, 0.0, 0.0), Reading(24.0, 0, 0, 0.0, 0.0)]
    readings += [at(34.0, 500.0), at(44.0, 500.0), at(54.0, 500.0)]
    assert [r.load_s for r in readings[2:]] == [10.0, 20.0, 30.0]
    assert first_stop(readings, duration_s=40.0, warmup_s=0.0) == 44.0
    watch = Watch(BEST, replace(_config(), workload=WorkloadSettings(duration_s=40, warmup_s=0)))
    said = [watch.add("active", r.elapsed_s, r.successful, r.errored, r.output_tok_s,
                      r.requests_s) for r in readings]  # fmt: skip
    assert said == [False, False, False, True, False]
    assert watch.partial()["output_tok_s"] == 500.0 and watch.partial()["observed_s"] == 10.0


def test_too_few_requests_or_the_last_fifth_of_the_window_never_stop() -> None:
    few = series(300.0, requests_s=0.5)  # 5 requests in 10 s: not enough to judge
    assert first_stop(few[:3]) == float("inf")
    # Past 80% of the window (10 + 48 s) the rest costs little: it runs to its end.
    late = [Reading(10.0, 100, 0, 500.0), Reading(59.0, 800, 0, 500.0)]
    assert decide(late, BEST, **WINDOW) is Decision.CONTINUE


def test_without_an_incumbent_only_errors_stop() -> None:
    assert first_stop(series(10.0), best=None) == float("inf")
    assert first_stop(series(500.0, errors_s=5.0), best=None) == 20.0


def test_an_error_rate_clearly_past_its_limit_stops_and_one_near_it_does_not() -> None:
    erring = series(1200.0, requests_s=15.0, errors_s=5.0)  # 25% errored
    assert decide(erring[:3], BEST, **WINDOW) is Decision.ERRORS
    near = series(1200.0, requests_s=15.0, errors_s=1.0)  # 6% errored, limit 5%
    assert first_stop(near) == float("inf")


def test_the_noise_is_assumed_when_not_measured_and_floored_when_measured() -> None:
    assert Incumbent(1000.0, 1).noise == ASSUMED_CV
    assert Incumbent(1000.0, 1, cv=0.001).noise == MIN_CV
    # 80% of the best: stopped under a measured 3% noise, not under the assumed 10%.
    assert first_stop(series(800.0)) < float("inf")
    assert first_stop(series(800.0), best=Incumbent(1000.0, 1)) == float("inf")


def test_a_trial_as_good_as_the_threshold_is_rarely_stopped() -> None:
    """A trial truly at the best less the noise, with per-interval noise as the rule assumes
    (the run-to-run spread scaled to 10 s, and request counting), over 2000 seeded runs."""
    rng = random.Random(7)
    true = BEST.output_tok_s * (1 - BEST.noise)
    stops = 0
    for _ in range(2000):
        tokens, requests, readings = 0.0, 0, [Reading(0.0, 0, 0, 0.0)]
        for t in (10.0, 20.0, 30.0, 40.0, 50.0):
            rate = true * (1 + rng.gauss(0, BEST.noise * (60 / 10) ** 0.5))
            tokens, requests = tokens + rate * 10, requests + 150
            readings.append(Reading(t, requests, 0, tokens / t))
        stops += first_stop(readings) < float("inf")
    assert stops / 2000 < 0.01


# -- where it applies, the setting, the incumbent ----------------------------------------------


def _config(sampler: str = "tpe", early_stop: bool | None = None, kind: str = "throughput") -> Any:
    study = StudySettings(name="t", n_trials=3, sampler=sampler, early_stop=early_stop)  # type: ignore[arg-type]
    base = make_config(Path("."), [8])
    return replace(base, study=study, objective=ObjectiveSettings(kind=kind))  # type: ignore[arg-type]


def test_the_baseline_and_repeats_are_never_stopped_and_grid_and_gp_not_by_default() -> None:
    trial = TrialPlan(3, {"max_num_seqs": 8}, baseline=False)
    assert applies(_config(), trial)
    assert not applies(_config(), TrialPlan(0, {}, baseline=True))
    assert not applies(_config(), replace(trial, repeat=True))
    assert not applies(_config(early_stop=True), TrialPlan(0, {}, baseline=True))
    assert not any(applies(_config(name), trial) for name in ("grid", "gp", "cmaes"))
    assert applies(_config("random"), trial) and applies(_config("nsga2"), trial)
    assert applies(_config("grid", early_stop=True), trial)
    assert not applies(_config(early_stop=False), trial)
    for kind in ("latency", "pareto", "goodput"):  # the live figure is output tok/s alone
        assert not applies(_config(early_stop=True, kind=kind), trial)


def test_the_setting_reads_true_false_and_auto_and_refuses_the_rest() -> None:
    assert setting(True, "early_stop") is True and setting(False, "early_stop") is False
    assert setting("auto", "early_stop") is None
    with pytest.raises(Invalid, match="expected true, false or auto, got 'yes'"):
        setting("yes", "early_stop")


def test_a_bad_setting_in_a_file_is_one_line_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(
        "study: {name: t, n_trials: 3, early_stop: sometimes}\nserver: {model: m}\n"
        "search_space: {max_num_seqs: {options: [8, 16]}}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "study.early_stop" in str(err.value) and "true, false or auto" in str(err.value)
    path.write_text(path.read_text().replace("sometimes", "false"))
    assert load_config(path).study.early_stop is False


def _record(number: int, tok_s: float, **kw: Any) -> TrialRecord:
    params = {"max_num_seqs": number}
    return TrialRecord(number, "complete", params=params, measurement=measurement(tok_s), **kw)


def test_the_incumbent_is_the_best_mean_with_the_measured_noise() -> None:
    records = [
        replace(_record(0, 900.0), baseline=True, params={}),
        replace(_record(1, 1000.0), baseline=True, params={}, repeat=True),
        _record(2, 1200.0),
        TrialRecord(3, "pruned", params={"max_num_seqs": 3}),
    ]
    best = incumbent_of(records)
    assert best is not None and best.output_tok_s == 1200.0 and best.number == 2
    assert not best.baseline and best.who == "trial 2's"
    only_base = incumbent_of(records[:2])
    assert only_base is not None and only_base.baseline and only_base.who == "the baseline's"
    assert best.cv is not None and 0.07 < best.cv < 0.08  # the baseline's two runs
    assert incumbent_of([]) is None


def test_the_incumbent_follows_the_study_events() -> None:
    seen = Incumbents()
    assert seen() is None
    resumed = (_record(1, 800.0),)
    seen.observe(StudyStarted("t", "throughput", "s", "d", 3, None, False, 1, trials=resumed))
    seen.observe(TrialFinished(_record(2, 900.0)))
    best = seen()
    assert best is not None and best.output_tok_s == 900.0 and best.cv is None


def test_the_watch_takes_only_load_readings_and_says_stop_once() -> None:
    config = replace(_config(), workload=WorkloadSettings(duration_s=60, warmup_s=10))
    watch = Watch(BEST, config)
    said = [watch.add("active", r.elapsed_s, r.successful, r.errored, r.output_tok_s)
            for r in series(500.0)]  # fmt: skip
    assert said == [False, False, True, False, False, False]
    assert not watch.add("completed", 60.0, 900, 0, 500.0) and len(watch.readings) == 3
    partial, failure, note = watch.outcome(["tail"])
    assert failure is None and note is not None and note.startswith("early stopped after 10 s")
    assert "below trial 2's 1000 less the 3% noise" in note
    assert 490 < partial["output_tok_s"] < 510 and partial["observed_s"] == 10.0
    assert partial["upper_tok_s"] < 970.0 and partial["successful"] == 240


def test_a_watch_stopped_for_errors_gives_too_many_errors() -> None:
    config = replace(_config(), workload=WorkloadSettings(duration_s=60, warmup_s=10))
    watch = Watch(BEST, config)
    for r in series(1200.0, errors_s=5.0)[:3]:
        watch.add("active", r.elapsed_s, r.successful, r.errored, r.output_tok_s)
    _, failure, note = watch.outcome(["ERROR bad request"])
    assert note is None and failure is not None and failure.cls == "too_many_errors"
    assert failure.message.endswith("the load was stopped early")


# -- the verdict ------------------------------------------------------------------------------


def _judge(p: TrialProgress, **given: Any) -> Any:
    plan = TrialPlan(3, {"max_num_seqs": 16}, baseline=False)
    return judge(plan, p, objective=ObjectiveSettings(), command=("vllm",), files={},
                 finished_at=1.0, **given)  # fmt: skip


def test_an_early_stopped_trial_is_pruned_with_its_note_and_partial_figures() -> None:
    p = TrialProgress(3, phase="teardown", early_stopped="early stopped after 20 s: ...")
    p.partial = {"elapsed_s": 30.0, "successful": 300, "errored": 0, "output_tok_s": 512.0}
    v = _judge(p)
    assert v.state == TrialState.PRUNED and v.values is None
    r = v.record
    assert r.state == "pruned" and r.note.startswith("early stopped") and r.measurement is None
    assert r.partial["output_tok_s"] == 512.0
    # The user's prune at the same moment is said as the user's; an interruption wins over both.
    assert _judge(p, pruned=True).record.note.startswith("pruned by the user")
    assert _judge(p, interrupted="interrupted: x").state is None


# -- a study: the trial's load is cancelled mid-run ----------------------------------------------


@dataclass
class SeriesFakes(Fakes):
    """GuideLLM as the fakes, but a configuration in ``series`` reports those readings (at
    once), then keeps loading for ``rest_s`` before it measures; ``cancelled`` counts the runs
    cut short."""

    series: dict[int | None, list[Reading]] = field(default_factory=dict)
    rest_s: float = 60.0
    cancelled: int = 0

    async def run(
        self, request: BenchRequest, on_line: Callable[[str], None], on_progress: ProgressCallback
    ) -> Any:
        seqs = seqs_of(self.launched[-1])
        readings = self.series.get(seqs)
        if readings is None:
            return await super().run(request, on_line, on_progress)
        on_progress("started", 0.0, 0, 0, 0.0)
        try:
            for r in readings:
                status = "warmup" if r.elapsed_s < request.workload.warmup_s else "active"
                on_progress(status, r.elapsed_s, r.successful, r.errored, r.output_tok_s)
                await asyncio.sleep(0)
            await asyncio.sleep(self.rest_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return measurement(readings[-1].output_tok_s)


def _study(tmp_path: Path, fakes: Fakes, **study: Any) -> tuple[Orchestrator, StudyConfig]:
    config = make_config(tmp_path, [2], n_trials=2)
    settings = {"name": "t", "n_trials": 2, "seed": 1, "sampler": "random", "noise_repeats": 1,
                "remeasure_top": 0, **study}  # fmt: skip
    config = replace(config, study=StudySettings(**settings),
                     workload=WorkloadSettings(duration_s=60, warmup_s=10))  # fmt: skip
    store = StudyStore(config, default_storage_url(tmp_path))
    incumbents = Incumbents()  # as compose.run_study wires it

    def emit(event: Event) -> None:
        incumbents.observe(event)

    runner = TrialRunner(config, tmp_path, fakes, fakes, fakes, emit)
    runner.incumbent = incumbents
    return Orchestrator(config, store, runner, emit, study_dir=tmp_path), config


async def test_a_hopeless_trial_is_stopped_mid_load_pruned_with_its_partial_figures(
    tmp_path: Path,
) -> None:
    fakes = SeriesFakes(series={2: series(300.0)})  # the baseline measures 1000 tok/s
    orch, _ = _study(tmp_path, fakes)
    started = time.monotonic()
    outcome = await asyncio.wait_for(orch.run(), 30)
    assert time.monotonic() - started < 20  # not the 60 s the load had left
    base, trial = outcome.records
    assert base.state == "complete" and trial.state == "pruned"
    assert fakes.cancelled == 1 and fakes.stopped == 2  # GuideLLM's run cut, the server stopped
    assert trial.note.startswith("early stopped after 10 s of load past the warm-up: 300")
    assert "below the baseline's 1000" in trial.note and trial.measurement is None
    assert 295 < trial.partial["output_tok_s"] < 305 and trial.partial["incumbent_tok_s"] == 1000
    assert trial.timings["load_generator_s"] < 10
    assert orch.store.study.trials[1].state == TrialState.PRUNED


async def test_an_erring_trial_is_stopped_and_fails_as_too_many_errors(tmp_path: Path) -> None:
    fakes = SeriesFakes(series={2: series(1500.0, errors_s=6.0)})
    orch, _ = _study(tmp_path, fakes)
    outcome = await asyncio.wait_for(orch.run(), 30)
    trial = outcome.records[1]
    assert fakes.cancelled == 1 and trial.state == "failed"
    assert trial.failure_class == "too_many_errors" and trial.partial["errored"] > 0
    assert "stopped early" in str(trial.failure and trial.failure["message"])


async def test_the_baselines_noise_run_is_never_stopped(tmp_path: Path) -> None:
    # The baseline's first run measures 1000 tok/s; its noise run then reports a hopeless
    # series against it: a repeat runs to its end, its whole figure kept.
    fakes = SeriesFakes(series={2: series(1200.0)}, rest_s=0.05)
    runs = 0
    plain_run = fakes.run

    async def baseline_then_series(request: Any, on_line: Any, on_progress: Any) -> Any:
        nonlocal runs
        runs += 1
        fakes.series[None] = series(300.0) if runs == 2 else []
        if runs == 1:
            return measurement(1000.0)
        return await plain_run(request, on_line, on_progress)

    fakes.run = baseline_then_series  # type: ignore[method-assign]
    orch, _ = _study(tmp_path, fakes, noise_repeats=2, early_stop=True)
    outcome = await asyncio.wait_for(orch.run(), 30)
    assert fakes.cancelled == 0 and runs == 3
    assert [(r.baseline, r.repeat, r.state) for r in outcome.records] == [
        (True, False, "complete"),
        (True, True, "complete"),
        (False, False, "complete"),
    ]


# -- GuideLLM's worker after a load stopped early ----------------------------------------------


@pytest.fixture
def driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The worker tests' fake driver (the real one's protocol, one mode a run)."""
    monkeypatch.setenv("FAKE_RUNS", str(tmp_path / "runs"))
    path = tmp_path / "fake_driver.py"
    path.write_text(FAKE_DRIVER)
    return path


async def test_a_load_stopped_from_its_own_output_leaves_the_worker_usable(
    tmp_path: Path, driver: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The runner cancels the run from GuideLLM's progress callback, i.e. from the task that
    # reads the worker's output. The first run loads (a child in its group) until it is
    # cancelled so; the next run gets a fresh worker and measures.
    monkeypatch.setenv("FAKE_MODES", "hang,ok")
    bench = _bench(driver)
    progress: list[str] = []

    def line(text: str) -> None:
        if text.startswith("child "):  # loading now: stop it as the early stop does
            run.cancel()

    run = asyncio.ensure_future(
        bench.run(_request(tmp_path, 0), line, lambda status, *_: progress.append(status))
    )
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, 30)
    assert progress == ["started"]
    child = _children(tmp_path / "trial-0" / "guidellm.log")[0]
    deadline = time.monotonic() + 10
    while not _pid_gone(child) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _pid_gone(child)  # GuideLLM's processes went with the run
    try:
        measured = await bench.run(_request(tmp_path, 1), lambda _: None, lambda *_: None)
        assert measured.output_tok_s > 0
        assert bench.worker is not None and bench.worker.starts == 2
    finally:
        await bench.close()


# -- real GuideLLM on the simulated server (slow) -----------------------------------------------


@pytest.mark.slow
async def test_real_guidellm_is_stopped_from_its_progress_with_a_sensible_rate(
    start_sim: Callable[..., SimProcess], tiny_model: Path, guidellm_exe: Path, tmp_path: Path
) -> None:
    """GuideLLM 0.8.1's own progress records (cumulative counts and rate) drive the rule: a
    40 s load against a best far above the server's is stopped at the first judged record,
    20-30 s into the load, and the rate judged agrees with GuideLLM's own."""
    sim = start_sim("--max-num-seqs", "8", "--sim-profile-file", str(FAST_PROFILE),
                    model=str(tiny_model))  # fmt: skip
    workload = WorkloadSettings(prompt_tokens=64, output_tokens=32, streams=8, duration_s=40,
                                warmup_s=0)  # fmt: skip
    config = replace(_config(), workload=workload)
    fakes = Fakes()  # no launch here: the server runs already
    runner = TrialRunner(config, tmp_path, fakes, GuidellmBenchmarker(guidellm_exe), fakes,
                         lambda _: None)  # fmt: skip
    request = BenchRequest(sim.url, str(tiny_model), None, workload, 8, None, str(tiny_model),
                           tmp_path / "report.json", tmp_path / "guidellm.log", 120.0)  # fmt: skip
    progress = TrialProgress(1, phase="ready")
    last: list[float] = []
    watch = Watch(Incumbent(1e9, number=0, cv=0.03), config)
    plain_add = watch.add

    def add(
        status: str,
        elapsed: float,
        ok: int,
        err: int,
        tok_s: float,
        requests_s: float | None = None,
    ) -> bool:
        last[:] = [elapsed, tok_s, ok / (requests_s or 1.0)]
        return plain_add(status, elapsed, ok, err, tok_s, requests_s)

    watch.add = add  # type: ignore[method-assign]
    measured = await runner._one_run(0, _Server(sim.url), request, progress, watch)
    assert measured is None and progress.failure is None, progress.failure
    assert progress.early_stopped is not None, progress.partial
    stopped = progress.early_stopped
    assert re.match(r"early stopped after (10|20) s of load past the warm-up", stopped), stopped
    assert 18 <= last[2] <= 32, last  # the load's seconds when it was stopped, of 40
    # The span's rate against GuideLLM's cumulative one at the same record: the same load.
    assert 0.7 < progress.partial["output_tok_s"] / last[1] < 1.6, (progress.partial, last)
    assert "compile" not in (tmp_path / "guidellm.log").read_text()  # cut before its end


@dataclass
class _Server:
    """A server handle for a running simulated server: it never exits while measured."""

    base_url: str
    returncode: int | None = None
    tail: list[str] = field(default_factory=list)
    pids_seen: set[int] = field(default_factory=set)

    async def wait_exit(self) -> int:
        await asyncio.Event().wait()
        return 0
