"""Trials side by side in one tuner (``study.workers``), each on GPUs of its own.

The GPU pool alone (who gets which GPU, who waits, a cancelled wait), the rules it rests on
(a server's GPUs, vLLM's refusal of more than the node has), and whole studies on a simulated
4-GPU node (``--sim-gpus 4``) with ``tensor_parallel_size`` 1 and 2 in the space: the live
servers' own environments are read while the study runs, and no GPU is ever in two of them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.conftest import FAST_PROFILE
from tests.fakes.studies import leftovers, records, start, tuner
from tui_tuner.adapters.gpu import visible_gpus
from tui_tuner.core.config_problems import Invalid
from tui_tuner.core.errors import UserError
from tui_tuner.core.gpus import gpus_needed, lane_count, read_gpus, read_workers, too_many_gpus
from tui_tuner.engine.gpu_pool import GpuPool

# -- the pool ------------------------------------------------------------------------------


async def test_the_pool_hands_out_the_lowest_free_gpus_and_takes_them_back() -> None:
    pool = GpuPool([0, 1, 2, 3])
    assert await pool.acquire(1) == (0,)
    assert await pool.acquire(2) == (1, 2)
    assert pool.busy == (0, 1, 2)
    pool.release((0,))
    assert await pool.acquire(2) == (0, 3)
    assert not pool.free_now(1)


async def test_a_trial_waits_for_its_gpus_first_come_first_served() -> None:
    pool = GpuPool([0, 1])
    first = await pool.acquire(1)
    two = asyncio.ensure_future(pool.acquire(2))  # waits: only one free
    await asyncio.sleep(0)
    one = asyncio.ensure_future(pool.acquire(1))  # behind it, though one GPU is free
    await asyncio.sleep(0)
    assert not two.done() and not one.done()
    pool.release(first)
    assert await two == (0, 1)
    assert not one.done()
    pool.release((0, 1))
    assert await one == (0,)


async def test_a_cancelled_wait_takes_nothing_and_lets_the_next_one_through() -> None:
    pool = GpuPool([0, 1])
    held = await pool.acquire(1)
    big = asyncio.ensure_future(pool.acquire(2))
    await asyncio.sleep(0)
    small = asyncio.ensure_future(pool.acquire(1))
    await asyncio.sleep(0)
    big.cancel()
    with pytest.raises(asyncio.CancelledError):
        await big
    assert await small == (1,)  # no longer behind the cancelled wait
    pool.release(held)
    assert pool.busy == (1,)


async def test_more_gpus_than_the_node_has_are_refused() -> None:
    with pytest.raises(ValueError):
        await GpuPool([0, 1]).acquire(3)


# -- the rules -----------------------------------------------------------------------------


def test_a_servers_gpus_are_its_parallel_degrees_multiplied() -> None:
    assert gpus_needed({}, ()) == 1
    assert gpus_needed({"tensor_parallel_size": 2}, [("pipeline_parallel_size", 2)]) == 4
    assert gpus_needed({"tensor_parallel_size": 4}, [("tensor_parallel_size", 2)]) == 2
    assert gpus_needed({}, [("data_parallel_size", 2), ("max_num_seqs", 64)]) == 2
    assert too_many_gpus({"tensor_parallel_size": 2}, 2) is None
    refusal = too_many_gpus({"tensor_parallel_size": 8}, 4)
    assert refusal is not None and "World size (8)" in refusal and "(4)" in refusal


def test_workers_and_gpus_settings_name_what_is_allowed() -> None:
    assert read_workers(4, "workers") == 4
    assert read_workers("auto", "workers") is None
    for bad in (0, -1, "many", 2.5, True):
        with pytest.raises(Invalid, match="whole number from 1"):
            read_workers(bad, "workers")
    assert read_gpus([0, 2], "gpus") == (0, 2)
    with pytest.raises(Invalid, match="listed twice"):
        read_gpus([1, 1], "gpus")
    with pytest.raises(Invalid, match="GPU indices"):
        read_gpus([-1], "gpus")
    with pytest.raises(Invalid, match="list of GPU indices"):
        read_gpus("0,1", "gpus")
    assert lane_count(None, 8) == 8 and lane_count(None, 0) == 1 and lane_count(3, 8) == 3


def test_the_tuners_own_visible_gpus_bound_what_it_hands_out() -> None:
    assert visible_gpus(4, {}) == (0, 1, 2, 3)
    assert visible_gpus(4, {"CUDA_VISIBLE_DEVICES": "2,3"}) == (2, 3)
    assert visible_gpus(2, {"CUDA_VISIBLE_DEVICES": "1,5"}) == (1,)
    with pytest.raises(UserError, match=r"server\.gpus"):
        visible_gpus(4, {"CUDA_VISIBLE_DEVICES": "GPU-3f2a"})


def test_a_bad_workers_setting_is_one_line_naming_the_field(tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_path, n_trials=2, extra="workers: 0")
    cmd = [sys.executable, "-m", "tui_tuner", "validate", str(config)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert out.returncode != 0
    assert "study.workers" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr


# -- whole studies on a simulated 4-GPU node ------------------------------------------------


def _config(tmp_path: Path, model: Path, *, n_trials: int, extra: str = "") -> Path:
    config = tmp_path / "lanes.yaml"
    profile = tmp_path / "profile.yaml"  # its path in a command line marks this test's servers
    profile.write_text(FAST_PROFILE.read_text())
    args = ["--sim-profile-file", str(profile), "--sim-time-scale", "4"]
    config.write_text(
        f"""
study: {{name: lanes, seed: 0, sampler: grid, n_trials: {n_trials}, noise_repeats: 1,
        remeasure_top: 0, {extra}}}
server:
  command: ["tui-tuner", "sim-serve"]
  model: {model}
  extra_args: {json.dumps(args)}
  startup_timeout_s: 60
workload: {{prompt_tokens: 64, output_tokens: 16, streams: 4, duration_s: 2, warmup_s: 1}}
search_space:
  max_num_seqs: {{options: [2, 4]}}
  tensor_parallel_size: {{options: [1, 2]}}
  enable_prefix_caching: {{options: [true, false]}}
"""
    )
    return config


def _live_servers(marker: str) -> dict[int, tuple[int, ...]]:
    """The simulated servers of this test alive now, by pid: the GPUs in their environment."""
    out = {}
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "sim-serve" not in cmd or marker not in cmd:
            continue
        try:
            visible = p.environ().get("CUDA_VISIBLE_DEVICES")
        except psutil.Error:
            continue
        if visible is not None:
            out[p.pid] = tuple(int(g) for g in visible.split(","))
    return out


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_four_lanes_never_share_a_gpu_and_wait_for_free_ones(
    tmp_path: Path, tiny_model: Path
) -> None:
    config = _config(tmp_path, tiny_model, n_trials=9)
    study_dir, events = tmp_path / "study", tmp_path / "events.jsonl"
    extra = ("--workers", "4", "--sim-gpus", "4", "--study-dir", str(study_dir),
             "--events-jsonl", str(events))  # fmt: skip
    proc = start(tuner("tune", config, *extra))
    most_at_once = 0
    while proc.poll() is None:
        live = _live_servers(str(tmp_path))
        gpus = [g for held in live.values() for g in held]
        assert len(gpus) == len(set(gpus)), f"a GPU in two servers at once: {live}"
        most_at_once = max(most_at_once, len(live))
        time.sleep(0.05)
    out = proc.communicate()[0]
    assert proc.returncode == 0, out[-3000:]
    assert most_at_once >= 2, "the lanes never ran side by side"
    seen = [json.loads(line) for line in events.read_text().splitlines()]
    started = [e for e in seen if e["kind"] == "trial_started"]
    assert all(e["gpus"] for e in started)
    assert {len(e["gpus"]) for e in started} == {1, 2}  # as tensor_parallel_size asked
    for e in started:
        assert len(e["gpus"]) == e["params"].get("tensor_parallel_size", 1)
    assert sum(e["kind"] == "study_started" for e in seen) == 1
    assert sum(e["kind"] == "study_finished" for e in seen) == 1
    assert any("waits for" in e.get("text", "") for e in seen), "no trial ever waited for GPUs"
    done = records(study_dir)
    assert sorted(r.state for r in done.values()) == ["complete"] * 9
    configs = Counter(json.dumps(r.params, sort_keys=True) for r in done.values())
    assert set(configs.values()) == {1}, configs  # the baseline and 8 configurations, once each
    for number, record in done.items():  # the server's own log says which GPUs it was given
        log = (study_dir / "trials" / f"{number:04d}" / "server.log").read_text()
        given = ",".join(map(str, next(e["gpus"] for e in started if e["number"] == number)))
        assert f"CUDA_VISIBLE_DEVICES={given}" in log, record


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_signal_stops_every_lane_and_resume_finishes_the_study(
    tmp_path: Path, tiny_model: Path
) -> None:
    config = _config(tmp_path, tiny_model, n_trials=9)
    study_dir, events = tmp_path / "study", tmp_path / "events.jsonl"
    extra = ("--workers", "4", "--sim-gpus", "4", "--study-dir", str(study_dir),
             "--events-jsonl", str(events))  # fmt: skip
    proc = start(tuner("tune", config, *extra))
    family = [psutil.Process(proc.pid)]
    deadline = time.monotonic() + 90
    while len(_live_servers(str(tmp_path))) < 3:  # several trials running
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-2000:]
        family += [psutil.Process(p) for p in _live_servers(str(tmp_path))]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0, out[-2000:]
    assert "Traceback" not in out
    time.sleep(0.5)
    assert leftovers(str(tmp_path), family) == []
    before = {n: r for n, r in records(study_dir).items() if r.state == "complete"}
    resumed = subprocess.run(
        tuner("resume", study_dir, "--workers", "4", "--sim-gpus", "4"),
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    after = records(study_dir)
    for number, record in before.items():  # a finished trial is never lost nor changed
        assert after[number] == record
    complete = [r for r in after.values() if r.state == "complete"]
    assert len({json.dumps(r.params, sort_keys=True) for r in complete}) == 9


def test_a_trial_needing_more_gpus_than_the_node_has_is_told_infeasible_unlaunched() -> None:
    from tui_tuner.core.config import ObjectiveSettings
    from tui_tuner.core.trial import TrialPlan
    from tui_tuner.engine.verdict import rejected

    plan = TrialPlan(3, {"tensor_parallel_size": 8}, False)
    verdict = rejected(plan, {}, ObjectiveSettings(), 0.0, gpus_on_node=4)
    assert verdict is not None and verdict.record.rejected
    assert verdict.record.failure is not None
    assert "World size (8)" in verdict.record.failure["message"]
    assert rejected(plan, {}, ObjectiveSettings(), 0.0, gpus_on_node=8) is None
    assert rejected(plan, {}, ObjectiveSettings(), 0.0) is None  # no GPUs handed out: vLLM says


def test_the_gpus_handed_out_are_named_never_assumed(tmp_path: Path) -> None:
    from dataclasses import replace

    from tui_tuner.compose import gpu_pool
    from tui_tuner.core.config_load import load_config

    config = load_config(_config(tmp_path, tmp_path, n_trials=2))
    assert gpu_pool(config, (), "no NVML") is None  # one at a time: the server sees what it has
    four = replace(config, study=replace(config.study, workers=4))
    pool = gpu_pool(four, (), "no NVML")
    assert pool is not None and pool.gpus == (0, 1, 2, 3)  # simulated: one GPU a lane
    real = replace(four, server=replace(four.server, command=("vllm", "serve")))
    with pytest.raises(UserError, match="no GPU was found"):
        gpu_pool(real, (), "no NVML")
    pool = gpu_pool(real, (2, 3), "")
    assert pool is not None and pool.gpus == (2, 3)
    named = replace(real, server=replace(real.server, gpus=(5,), env={"CUDA_VISIBLE_DEVICES": "1"}))
    with pytest.raises(UserError, match=r"server\.env sets CUDA_VISIBLE_DEVICES"):
        gpu_pool(named, (), "")
