"""Load sweeps: a server configuration measured at several loads on one running server.

Against the fake adapters (no process): the levels of a new configuration are queued right
behind it, each is a trial and a measurement of its own, the server is launched once per
configuration and always stopped (the study's end, a stop in the middle of a sweep).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

from tests.fakes.engine import Fakes, make_config
from tui_tuner.core.config import StudyConfig
from tui_tuner.core.events import Event, TrialFinished
from tui_tuner.core.space import Param, SearchSpace
from tui_tuner.core.stop import StopKind
from tui_tuner.engine.load_sweep import sweep_levels
from tui_tuner.engine.orchestrator import Orchestrator
from tui_tuner.engine.study import StudyStore, default_storage_url
from tui_tuner.engine.trial_runner import TrialRunner
from tui_tuner.report.formats import json_text


def _config(tmp_path: Path, seqs: list[int], streams: list[int], n_trials: int) -> StudyConfig:
    config = make_config(tmp_path, seqs, n_trials=n_trials)
    space = SearchSpace(
        (
            *config.space.params,
            Param(
                "workload.streams", "streams", "options", target="workload", options=tuple(streams)
            ),
        )
    )
    study = replace(config.study, baseline=False, sampler="random")
    return replace(config, space=space, study=study)


def _build(tmp_path: Path, config: StudyConfig, fakes: Fakes) -> tuple[Orchestrator, list[Event]]:
    events: list[Event] = []
    store = StudyStore(config, default_storage_url(tmp_path))
    runner = TrialRunner(config, tmp_path, fakes, fakes, fakes, events.append)
    return Orchestrator(config, store, runner, events.append, study_dir=tmp_path), events


def test_sweep_levels_are_values_the_parameter_takes() -> None:
    few = Param("workload.streams", "s", "options", target="workload", options=(4, 8, 16))
    assert sweep_levels(few) == [4, 8, 16]
    wide = Param("workload.streams", "s", "int", target="workload", low=1, high=256, log=True)
    levels = sweep_levels(wide)
    assert levels == [1, 6, 40, 256] and all(wide.contains(v) for v in levels)
    rate = Param("workload.rate", "r", "float", target="workload", low=1.0, high=10.0, step=0.5)
    assert sweep_levels(rate) == [1.0, 4.0, 7.0, 10.0]


async def test_each_configuration_is_launched_once_and_measured_at_every_load(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    config = _config(tmp_path, [8, 16], [1, 2, 4], n_trials=6)
    orch, events = _build(tmp_path, config, fakes)
    outcome = await orch.run()
    records = [r for r in outcome.records if r.state == "complete" and r.duplicate_of is None]
    assert len(records) == 6  # two configurations x three loads, each its own trial
    by_seqs: dict[object, set[object]] = {}
    for r in records:
        by_seqs.setdefault(r.params["max_num_seqs"], set()).add(r.params["workload.streams"])
    assert by_seqs == {8: {1, 2, 4}, 16: {1, 2, 4}}
    assert len(fakes.launched) == 2  # one server per configuration
    assert fakes.stopped == fakes.started_servers == 2  # the last one too, at the study's end
    reused = [r for r in records if r.server_of is not None]
    assert len(reused) == 4
    for r in reused:
        assert r.timings["launching"] < 0.05
        assert "ready" not in r.timings  # no smoke test on a server that served already
        assert r.files["server.log"].endswith(f"{r.server_of:04d}/server.log")
    exported = json.loads(json_text(config, outcome.records, {}))["trials"]
    assert sum(t["server_of"] is not None for t in exported) == 4
    # Each level is measured with its own load, back to back after the first.
    numbers = [e.record.number for e in events if isinstance(e, TrialFinished)]
    assert numbers == sorted(numbers)


async def test_a_stop_during_a_sweep_stops_the_kept_server(tmp_path: Path) -> None:
    fakes = Fakes(quiet_s=0.3)
    config = _config(tmp_path, [8], [1, 2, 4], n_trials=3)
    orch, events = _build(tmp_path, config, fakes)
    task = asyncio.ensure_future(orch.run())
    for _ in range(200):  # the second level runs on the first level's server
        done = [e for e in events if isinstance(e, TrialFinished)]
        if len(done) == 1 and orch._running is not None:
            break
        await asyncio.sleep(0.02)
    orch.stop(StopKind.SIGNAL, "stopped by SIGINT")
    outcome = await task
    assert fakes.started_servers == 1
    assert fakes.stopped == 1
    assert orch.runner.kept is None
    assert any(r.interrupted for r in outcome.records)


async def test_a_repeat_or_a_study_without_a_load_parameter_never_keeps_a_server(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    config = make_config(tmp_path, [8, 16], n_trials=3)
    orch, _ = _build(tmp_path, config, fakes)
    await orch.run()
    assert fakes.started_servers == fakes.stopped == 3


async def test_repeats_run_each_on_a_server_of_their_own(tmp_path: Path) -> None:
    """The best measured again before the end (study.remeasure_top): those runs are the
    noise, so none of them reuses a server, even back to back with the same flags."""
    fakes = Fakes()
    config = _config(tmp_path, [8], [1, 2], n_trials=2)
    config = replace(config, study=replace(config.study, remeasure_top=1))
    orch, _ = _build(tmp_path, config, fakes)
    outcome = await orch.run()
    repeats = [r for r in outcome.records if r.repeat]
    assert repeats and all(r.server_of is None for r in repeats)
    assert fakes.started_servers == 1 + len(repeats) == fakes.stopped
