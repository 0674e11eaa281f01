"""One trial, start to finish: launch, check readiness, measure, always tear down.

``LAUNCHING -> READY -> WARMUP -> MEASURING -> teardown``. Whatever happens (a failure, a prune,
a stop, a cancelled task), the server is stopped through its launcher's context and the GPU memory
its processes held is awaited before the trial returns; the one exception is a load sweep
(`engine/load_sweep.py`): a healthy server whose next trial has the same server flags is kept
running for it (`KeptServer`), and stopped as usual when it is not reused. Failures come back
as results (``TrialOutcome.failure``), never as exceptions; cancellation is the one exception
that passes through, after the teardown, and the outcome gathered so far stays readable in
``progress``.
The trial's directory is written and read in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tui_tuner.core.commands import API_KEY_ENV, load_for, server_argv, server_env
from tui_tuner.core.config import StudyConfig
from tui_tuner.core.early_stop import Incumbent, Watch, applies
from tui_tuner.core.events import BenchProgress, Event, LogLine, TrialPhaseChanged
from tui_tuner.core.failures import (
    Failure,
    benchmark_failure,
    classify_startup,
    classify_under_load,
    too_many_errors,
)
from tui_tuner.core.gpus import gpus_needed
from tui_tuner.core.load_curve import GoodputSearch, goodput_slo
from tui_tuner.core.measurement import Measurement, client_limited
from tui_tuner.core.trial import Phase, TrialPlan
from tui_tuner.engine.gpu_pool import GpuPool
from tui_tuner.engine.kept_server import KeepAfter, KeptServer, server_flags
from tui_tuner.engine.ports import (
    Benchmarker,
    BenchmarkFailed,
    BenchRequest,
    GpuWatcher,
    LaunchRequest,
    ServerHandle,
    ServerLauncher,
    ServerStartFailed,
)

__all__ = ["TrialProgress", "TrialRunner"]


@dataclass
class TrialProgress:
    """What is known about a trial so far; readable after it was cancelled."""

    number: int
    argv: list[str] = field(default_factory=list)
    phase: Phase | None = None
    timings: dict[str, float] = field(default_factory=dict)
    partial: dict[str, float] = field(default_factory=dict)
    measurement: Measurement | None = None
    repeats_output_tok_s: list[float] = field(default_factory=list)
    failure: Failure | None = None
    client_limited: bool = False
    gpu_released: bool = True
    #: The phase a prune or stop cut short (None if the trial ran to its end).
    stopped_in: Phase | None = None
    #: Measured on the server this earlier trial started (a load sweep): no launch of its own.
    server_of: int | None = None
    early_stopped: str | None = None  # why the early stop ended a hopeless load (the note)
    started_at: float = field(default_factory=time.time)
    _t0: float = field(default_factory=time.monotonic)
    _phase_t: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self._t0


class TrialRunner:
    """Runs trials of one study with the adapters it is given."""

    def __init__(
        self,
        config: StudyConfig,
        study_dir: Path,
        launcher: ServerLauncher,
        bench: Benchmarker,
        gpu: GpuWatcher,
        emit: Callable[[Event], None],
    ) -> None:
        self.config, self.study_dir = config, study_dir
        self.launcher, self.bench, self.gpu, self.emit = launcher, bench, gpu, emit
        #: A healthy server a load sweep keeps for its next trial (same server flags).
        self.kept: KeptServer | None = None
        #: Asked after a good measurement whether to keep the server (None: never keep).
        self.keep_after: KeepAfter | None = None
        self._logs: dict[int, Path] = {}  # trials measured on a kept server: its log
        #: The node's GPUs, shared by the lanes that run trials side by side
        #: (``study.workers``); None: every server sees the GPUs the tuner was given.
        self.pool: GpuPool | None = None
        self._lease: tuple[int, ...] = ()  # the GPUs of this lane's server (running or kept)
        #: The best so far, for the early stop (`core/early_stop.py`); None: never stopped early.
        self.incumbent: Callable[[], Incumbent | None] | None = None

    def trial_dir(self, number: int) -> Path:
        return self.study_dir / "trials" / f"{number:04d}"

    async def prepare(self, plan: TrialPlan) -> tuple[TrialProgress, str | None, int]:
        """Pick the port and the API key and build the command; writes command.txt."""
        server = self.config.server
        # Hex: a urlsafe token may start with "-", which argparse reads as another option.
        kept = self.kept if self.kept is not None and self.kept.serves(plan) else None
        key = secrets.token_hex(24) if server.api_key else None
        port = self.launcher.free_port(server.host)
        if kept is not None:  # the same server, as it was started: its port and its key
            key, port = kept.key, kept.port
        progress = TrialProgress(plan.number)
        progress.argv = server_argv(server, plan.settings, host=server.host, port=port)
        note = f"# {API_KEY_ENV}: this trial's random API key (not kept)\n" if key else ""
        text = note + _quote(progress.argv) + "\n"
        await asyncio.to_thread(_write_command, self.trial_dir(plan.number), text)
        return progress, key, port

    def gpus_needed(self, plan: TrialPlan) -> int:
        """GPUs the trial's server uses: its parallel degrees multiplied."""
        searched = [(flag.dest, value) for flag, value in plan.settings.server]
        return gpus_needed(self.config.server.flags, searched)

    async def claim_gpus(self, plan: TrialPlan) -> tuple[int, ...]:
        """The GPUs the trial's server gets, waiting until they are free: the kept server's
        when the trial runs on it. Empty without a pool. Cancelling the wait claims nothing."""
        if self.pool is None:
            return ()
        kept = self.kept
        if kept is not None and kept.serves(plan) and kept.alive and self._lease:
            return self._lease
        self._lease = await self.pool.acquire(self.gpus_needed(plan))
        return self._lease

    def give_back(self) -> None:
        """Return this lane's GPUs to the pool, unless a kept server still holds them (its
        `release` gives them back once it is stopped)."""
        if self.pool is not None and self._lease and self.kept is None:
            self.pool.release(self._lease)
            self._lease = ()

    async def files(self, number: int) -> dict[str, str]:
        """The trial's files that exist: its logs, command.txt and GuideLLM's reports (a
        trial measured on a kept server: the log of the trial that started it)."""
        out = await asyncio.to_thread(_files, self.trial_dir(number))
        if number in self._logs and "server.log" not in out:
            out["server.log"] = str(self._logs[number])
        return out

    async def release(self, plan: TrialPlan | None = None) -> bool:
        """Stop the kept server unless ``plan`` runs on it (same server flags): through its
        launcher's context, then the GPU check. False if its GPU memory was not released."""
        kept = self.kept
        if kept is None or (plan is not None and kept.serves(plan) and kept.alive):
            return True
        self.kept = None
        pids = list(kept.server.pids_seen)
        await kept.stack.aclose()
        released = True
        if pids:
            timeout = self.config.server.gpu_release_timeout_s
            released, _ = await self.gpu.wait_released(pids, timeout)
        self.give_back()
        return released

    def _enter(self, progress: TrialProgress, phase: Phase) -> None:
        now = time.monotonic()
        if progress.phase is not None:
            progress.timings[progress.phase] = (
                progress.timings.get(progress.phase, 0.0) + now - progress._phase_t
            )
        progress.phase, progress._phase_t = phase, now
        self.emit(TrialPhaseChanged(progress.number, phase, progress.elapsed()))

    async def run(
        self, plan: TrialPlan, progress: TrialProgress, key: str | None, port: int
    ) -> None:
        """Run the trial; the outcome is left in ``progress``."""
        cfg = self.config.server
        env = server_env(cfg, key, study_dir=self.study_dir)
        if self.pool is not None:  # NVML's order, which the pool's indices are
            env.update(CUDA_DEVICE_ORDER="PCI_BUS_ID",
                       CUDA_VISIBLE_DEVICES=",".join(map(str, self._lease)))  # fmt: skip
        request = LaunchRequest(
            argv=progress.argv,
            env=env,
            host=cfg.host,
            port=port,
            log_path=self.trial_dir(plan.number) / "server.log",
            startup_timeout_s=cfg.startup_timeout_s,
            stop_grace_s=cfg.stop_grace_s,
        )
        number = plan.number

        # A kept server's lines go to the trial measuring on it now.
        owner = [number]

        def server_line(text: str) -> None:
            self.emit(LogLine(owner[0], "server", text))

        stack = contextlib.AsyncExitStack()
        server: ServerHandle | None = None
        await self.release(plan)  # one kept for other flags, or dead, is stopped first
        kept, self.kept = self.kept, None
        keep = False
        self._enter(progress, "launching")
        try:
            if kept is not None and kept.serves(plan) and kept.alive:
                # The load sweep's next level on the running server: no launch, no smoke test.
                stack, server, owner = kept.stack, kept.server, kept.owner
                owner[0] = number
                progress.server_of = kept.started_by
            else:
                try:
                    launch = self.launcher.launch(request, server_line)
                    server = await stack.enter_async_context(launch)
                except ServerStartFailed as err:
                    timed_out = err.reason == "startup_timeout"
                    progress.failure = classify_startup(err.exit_code, err.tail,
                                                        timed_out=timed_out)  # fmt: skip
                    return
                self._enter(progress, "ready")
                if not await self._smoke(server, progress, key):
                    return
            await self._measure(plan, server, progress, key)
            keep = (
                progress.failure is None
                and progress.measurement is not None
                and server.returncode is None
                and self.keep_after is not None
                and await self.keep_after(plan)
            )
        finally:
            self._enter(progress, "teardown")
            if keep and server is not None:
                log = request.log_path if kept is None else kept.log_path
                self.kept = KeptServer(
                    stack, server, server_flags(plan), key, port, owner,
                    started_by=number if kept is None else kept.started_by, log_path=log,
                )  # fmt: skip
                progress.timings["teardown"] = 0.0
            else:
                pids = list(server.pids_seen) if server is not None else []
                await stack.aclose()
                if pids:
                    timeout = cfg.gpu_release_timeout_s
                    progress.gpu_released, _ = await self.gpu.wait_released(pids, timeout)
                progress.timings["teardown"] = time.monotonic() - progress._phase_t
                self.give_back()
            if kept is not None:
                self._logs[number] = kept.log_path
            # The logs and reports the processes wrote.
            await asyncio.to_thread(_owner_only, self.trial_dir(plan.number))
            progress.timings["total"] = progress.elapsed()

    def _model_name(self) -> str:
        served = self.config.server.flags.get("served_model_name")
        return str(served) if served else self.config.server.model

    async def _smoke(self, server: ServerHandle, progress: TrialProgress, key: str | None) -> bool:
        """One real completion before measuring: /health alone does not prove the engine works."""
        try:
            await self.launcher.smoke_test(server, self._model_name(), key)
        except BenchmarkFailed as err:
            await _settle(server)
            if server.returncode is not None:
                failure = classify_under_load(server.returncode, server.tail)
            else:
                failure = too_many_errors(1, 1, 0.0, [*server.tail, str(err)])
            progress.failure = _in_phase(failure, "ready")
            return False
        return True

    async def _measure(
        self, plan: TrialPlan, server: ServerHandle, progress: TrialProgress, key: str | None
    ) -> None:
        workload = self.config.workload
        streams, rate = load_for(workload, plan.settings)
        directory = self.trial_dir(plan.number)
        goodput = self._goodput(streams)
        window = workload.duration_s + workload.warmup_s
        probes = 1 if goodput is None else goodput.max_probes  # each probe is one window
        find = self.incumbent if applies(self.config, plan) else None
        best, runs = None if find is None else find(), list[Measurement]()
        for repeat in range(workload.repeats):
            name = "report.json" if workload.repeats == 1 else f"report-{repeat + 1}.json"
            request = BenchRequest(
                target=server.base_url,
                model=self._model_name(),
                api_key=key,
                workload=workload,
                streams=streams,
                rate=rate,
                tokenizer=workload.tokenizer or _local_tokenizer(self.config.server.model),
                report_path=directory / name,
                log_path=directory / "guidellm.log",
                timeout_s=window * probes + workload.benchmark_grace_s,
                goodput=goodput,
            )
            watch = None if find is None else Watch(best, self.config)
            measured = await self._one_run(repeat, server, request, progress, watch)
            if measured is None:
                return
            runs.append(measured)
            progress.repeats_output_tok_s.append(measured.output_tok_s)
        # The median run (the lower middle for an even count).
        progress.measurement = m = sorted(runs, key=lambda r: r.output_tok_s)[(len(runs) - 1) // 2]
        target = streams if workload.profile == "concurrent" and goodput is None else None
        progress.client_limited = any(client_limited(r, target) for r in runs)
        if m.error_rate > workload.max_error_rate:
            progress.failure = too_many_errors(
                m.errored_requests, m.finished_requests, workload.max_error_rate, server.tail
            )

    def _goodput(self, streams: int | None) -> GoodputSearch | None:
        """GuideLLM's goodput search for ``objective.kind: goodput`` (its first level the
        trial's streams), else None: one level measured."""
        objective = self.config.objective
        if objective.kind != "goodput" or streams is None:
            return None
        slo, target = goodput_slo([(t.metric, t.limit) for t in objective.sla])
        return GoodputSearch(slo, target, streams, objective.max_streams, objective.max_probes)

    async def _one_run(
        self,
        repeat: int,
        server: ServerHandle,
        request: BenchRequest,
        progress: TrialProgress,
        watch: Watch | None,
    ) -> Measurement | None:
        def line(text: str) -> None:
            self.emit(LogLine(progress.number, "guidellm", text))

        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def measuring() -> None:
            if progress.phase == "warmup":
                self._enter(progress, "measuring")

        def on_progress(status: str, elapsed: float, ok: int, err: int, tok_s: float,
                        requests_s: float | None = None) -> None:  # fmt: skip
            nonlocal timer
            if status == "active":
                measuring()
            elif status == "started" and timer is None:
                # GuideLLM logs "active" only at its next 10 s record: the window is known to
                # start when its warmup, which starts now, is over.
                timer = loop.call_later(self.config.workload.warmup_s, measuring)
            progress.partial = {"elapsed_s": elapsed, "successful": ok, "errored": err,
                                "output_tok_s": tok_s}  # fmt: skip
            self.emit(BenchProgress(progress.number, repeat, status, elapsed, ok, err, tok_s))
            if watch is not None and watch.add(status, elapsed, ok, err, tok_s, requests_s):
                bench.cancel()  # hopeless or erring: the adapter stops GuideLLM's processes

        # "warmup" covers the load generator's own start-up and its warmup window; "measuring"
        # starts when the warmup after GuideLLM's "started" record has passed (its progress
        # records come only every 10 s). The measured window itself is taken from the report.
        if progress.phase != "warmup":
            self._enter(progress, "warmup")
        started = time.monotonic()
        bench = asyncio.ensure_future(self.bench.run(request, line, on_progress))
        death = asyncio.ensure_future(server.wait_exit())
        try:
            await asyncio.wait({bench, death}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if timer is not None:
                timer.cancel()
            for task in (bench, death):
                if not task.done():
                    task.cancel()
            await asyncio.gather(bench, death, return_exceptions=True)
        t = progress.timings
        t["load_generator_s"] = t.get("load_generator_s", 0.0) + time.monotonic() - started
        if death.done() and not death.cancelled():
            progress.failure = classify_under_load(server.returncode, server.tail)
            return None
        if watch is not None and watch.stopped and bench.cancelled():  # stopped early
            progress.partial, progress.failure, progress.early_stopped = watch.outcome(server.tail)
            return None
        try:
            measured = bench.result()
            t["load_window_s"] = t.get("load_window_s", 0.0) + measured.duration_s
            return measured
        except BenchmarkFailed as err:
            await _settle(server)
            if server.returncode is not None:
                progress.failure = classify_under_load(server.returncode, server.tail)
            elif err.errored and not err.successful:
                limit = self.config.workload.max_error_rate
                progress.failure = too_many_errors(err.errored, err.errored, limit, err.tail)
            else:
                progress.failure = benchmark_failure(str(err), err.tail)
            return None


async def _settle(server: ServerHandle, wait_s: float = 2.0) -> None:
    """Give a server that is going down a moment to exit, so its death is seen as the cause."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(server.wait_exit(), wait_s)


def _in_phase(failure: Failure, phase: str) -> Failure:
    return replace(failure, phase=phase)


def _local_tokenizer(model: str) -> str | None:
    """A model given as a local directory is also GuideLLM's tokenizer (no hub lookups)."""
    return model if Path(model).is_dir() else None


def _write_command(directory: Path, text: str) -> None:
    """Create the trial's directory (owner-only, like the study directory) and its command.txt."""
    for d in (directory.parent, directory):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        d.chmod(0o700)
    (directory / "command.txt").write_text(text)
    _owner_only(directory)


def _files(d: Path) -> dict[str, str]:
    names = ("server.log", "guidellm.log", "command.txt")
    out = {name: str(d / name) for name in names if (d / name).exists()}
    out.update({p.name: str(p) for p in sorted(d.glob("report*.json"))})
    return out


def _owner_only(directory: Path) -> None:
    """Files of a trial readable by their owner alone (0600). The directory is 0700 from the
    start; this keeps copies (``cp -p``, ``tar``) private too, whatever the umask was."""
    with contextlib.suppress(OSError):  # never a reason to fail the trial
        for path in directory.iterdir():
            if path.is_file():
                path.chmod(0o600)


def _quote(argv: list[str]) -> str:
    return shlex.join(argv)
