"""The engine's Benchmarker port, implemented with GuideLLM 0.8.1: a subprocess a trial, or one
long-lived worker a study.

Ties the other modules together for one trial: the engine's request becomes a workload and a
command (:mod:`.command`), which runs (:mod:`.process`, or in the worker, :mod:`.worker`) while
its log lines report progress (:mod:`.progress`), and whose report becomes the measurement
(:mod:`.report`). Both ways run the same command line and read the same report.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path

from tui_tuner.adapters.guidellm.command import (
    SCENARIO_NAME,
    GuidellmWorkload,
    backend_scenario,
    build_guidellm_command,
)
from tui_tuner.adapters.guidellm.process import GuidellmTimeout, run_guidellm
from tui_tuner.adapters.guidellm.progress import parse_progress_line
from tui_tuner.adapters.guidellm.report import GuidellmReportError
from tui_tuner.adapters.guidellm.settle import read_measurement
from tui_tuner.adapters.guidellm.worker import (
    DRIVER,
    MAX_WORKER_RSS_BYTES,
    GuidellmWorker,
    WorkerFailed,
    WorkerUnavailable,
    guidellm_python,
)
from tui_tuner.adapters.reaper import Reaper
from tui_tuner.core.measurement import Measurement
from tui_tuner.engine.ports import BenchmarkFailed, BenchRequest, ProgressCallback

__all__ = [
    "GuidellmBenchmarker",
    "GuidellmWorkerBenchmarker",
    "pick_benchmarker",
    "remove_leftover_keys",
    "workload_for",
]

#: Keep GuideLLM offline: the tokenizer is a local path, and a hub lookup would only hang.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def workload_for(request: BenchRequest) -> GuidellmWorkload:
    """GuideLLM's load for one run. The warmup is part of GuideLLM's duration and excluded
    from its metrics, so the run lasts ``warmup_s + duration_s`` and measures ``duration_s``."""
    w = request.workload
    total = w.duration_s + w.warmup_s
    # GuideLLM reads a warmup below 1 as a fraction of the duration, 1 or more as seconds.
    warmup = w.warmup_s if w.warmup_s >= 1 else w.warmup_s / total
    if w.warmup_auto:  # no warm-up of GuideLLM's: the tuner cuts it where it settled (settle.py)
        warmup = 0.0
    concurrent = w.profile == "concurrent"
    return GuidellmWorkload(
        prompt_tokens=w.prompt_tokens,
        output_tokens=w.output_tokens,
        profile=w.profile,
        streams=request.streams if concurrent else None,
        rate=None if concurrent else request.rate,
        max_duration_s=total,
        warmup=warmup,
        cooldown=0.0,
        max_errors=w.max_errors,
        prompt_tokens_stdev=w.prompt_tokens_stdev,
        output_tokens_stdev=w.output_tokens_stdev,
        prefix_tokens=w.prefix_tokens,
        prefix_count=w.prefix_count,
        seed=w.seed,
        request_format=w.request_format,
        dataset=w.dataset,
        goodput=request.goodput,
    )


class GuidellmBenchmarker:
    """GuideLLM's ``run`` command as a subprocess, one a trial (``load_generator: cli``)."""

    def __init__(self, executable: Path, reaper: Reaper | None = None) -> None:
        self.executable, self.reaper = executable, reaper

    async def run(
        self,
        request: BenchRequest,
        on_line: Callable[[str], None],
        on_progress: ProgressCallback,
    ) -> Measurement:
        workload = workload_for(request)
        scenario = None
        if request.api_key is not None:  # the key goes in an owner-only file, not the argv
            scenario = request.report_path.with_name(SCENARIO_NAME)
            text = backend_scenario(request.target, request.model, workload, request.api_key)
            _write_private(scenario, text)
        cmd = build_guidellm_command(
            self.executable,
            request.target,
            request.model,
            request.tokenizer,
            workload,
            request.report_path,
            scenario_path=scenario,
        )
        try:
            return await self._run(cmd, request, on_line, on_progress)
        finally:
            if scenario is not None:
                scenario.unlink(missing_ok=True)

    async def close(self) -> None:
        """Nothing outlives a run here; the worker's variant stops its worker."""

    async def _run(
        self,
        cmd: list[str],
        request: BenchRequest,
        on_line: Callable[[str], None],
        on_progress: ProgressCallback,
    ) -> Measurement:
        tail: list[str] = []

        def line(text: str) -> None:
            tail.append(text)
            del tail[:-40]
            on_line(text)
            progress = parse_progress_line(text)
            if progress is not None:
                on_progress(
                    progress.status,
                    progress.elapsed_s,
                    progress.successful,
                    progress.errored,
                    progress.output_tok_s,
                    progress.requests_per_s,
                )

        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        with request.log_path.open("a", encoding="utf-8") as log:
            log.write("$ " + " ".join(cmd) + "\n")
        code = await self._execute(cmd, request, line, tail)
        if code != 0:
            raise BenchmarkFailed(f"GuideLLM exited with code {code}", tail)
        # A report holds every request (megabytes on a long window): read it off the event loop
        # the UI is drawn from.
        try:
            return await asyncio.to_thread(read_measurement, request.report_path, request.workload)
        except GuidellmReportError as err:
            counts = await asyncio.to_thread(_counts, request.report_path)
            raise BenchmarkFailed(str(err), tail, successful=counts[0], errored=counts[1]) from None

    async def _execute(
        self, cmd: list[str], request: BenchRequest, line: Callable[[str], None], tail: list[str]
    ) -> int:
        """Run ``cmd``, its lines to the trial's log and to ``line``; its exit status."""
        try:
            return await run_guidellm(
                cmd,
                env=OFFLINE_ENV,
                on_line=line,
                log_path=request.log_path,
                timeout_s=request.timeout_s,
                append=True,
                reaper=self.reaper,
            )
        except GuidellmTimeout as err:
            raise BenchmarkFailed(str(err), tail) from None


class GuidellmWorkerBenchmarker(GuidellmBenchmarker):
    """The same ``run`` command, arguments and report, in one long-lived GuideLLM process
    (:mod:`.worker`, ``load_generator: worker``): GuideLLM's imports and tokenizer are paid once
    a study. Stop it with :meth:`close` when the study ends.

    A worker that crashes, hangs or grows too big during a run is killed and the trial fails
    as ``benchmark_failed`` (:class:`BenchmarkFailed`), which the verdict runs once more on a
    fresh worker, its server started afresh: the same path as a crashed CLI run, inside the
    trial's own time budget, and a worker that keeps failing shows up in the study instead of
    being retried out of sight. When ``python`` cannot import GuideLLM the CLI is used instead,
    for this run and the rest of the study, with a note in the trial's log.
    """

    def __init__(
        self,
        executable: Path,
        python: Path,
        reaper: Reaper | None = None,
        *,
        max_rss_bytes: int = MAX_WORKER_RSS_BYTES,
        driver: Path = DRIVER,
    ) -> None:
        super().__init__(executable, reaper)
        self.worker: GuidellmWorker | None = GuidellmWorker(
            python, OFFLINE_ENV, reaper, max_rss_bytes=max_rss_bytes, driver=driver
        )

    async def close(self) -> None:
        if self.worker is not None:
            await self.worker.stop()

    async def _execute(
        self, cmd: list[str], request: BenchRequest, line: Callable[[str], None], tail: list[str]
    ) -> int:
        worker = self.worker
        if worker is None:  # fell back to the CLI
            return await super()._execute(cmd, request, line, tail)
        with request.log_path.open("a", encoding="utf-8") as log:

            def logged(text: str) -> None:
                log.write(text + "\n")
                log.flush()
                line(text)

            try:
                logged(f"# in GuideLLM's worker (pid {worker.pid or 'starting'})")
                code, _ = await worker.run(cmd[1:], logged, request.timeout_s)
                return code
            except WorkerUnavailable as err:
                self.worker = None
                logged(f"# {err}; running the guidellm CLI instead for the rest of the study")
            except WorkerFailed as err:
                for text in (*err.tail[-3:], str(err)):
                    tail.append(text)
                raise BenchmarkFailed(str(err), tail) from None
        return await super()._execute(cmd, request, line, tail)


def pick_benchmarker(
    kind: str, executable: Path, reaper: Reaper | None
) -> tuple[GuidellmBenchmarker, str | None]:
    """The benchmarker for ``workload.load_generator`` (``worker`` or ``cli``), and a note when
    the worker cannot be used: ``executable`` is not the script of a GuideLLM install whose
    interpreter holds the package (a stand-in, a wrapper), so each trial runs the CLI."""
    if kind == "cli":
        return GuidellmBenchmarker(executable, reaper), None
    python = guidellm_python(executable)
    if python is None:
        note = (
            f"load generator: no interpreter with GuideLLM found for {executable} (its shebang "
            "or a python beside it); each trial runs the guidellm CLI instead of the worker"
        )
        return GuidellmBenchmarker(executable, reaper), note
    return GuidellmWorkerBenchmarker(executable, python, reaper), None


def remove_leftover_keys(study_dir: Path) -> None:
    """Delete the backend files (:data:`SCENARIO_NAME`, API key inside) that a tuner killed
    while GuideLLM ran left in the study's trial directories. Their key died with its server,
    but no key stays written down."""
    for leftover in study_dir.glob(f"trials/*/{SCENARIO_NAME}"):
        leftover.unlink(missing_ok=True)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file only its owner can read (created so, never widened)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _counts(report: Path) -> tuple[int, int]:
    """(successful, errored) of a report that holds no usable measurement, when it says."""
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
        totals = data["benchmarks"][-1]["metrics"]["request_totals"]
        return int(totals["successful"]), int(totals["errored"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return 0, 0
