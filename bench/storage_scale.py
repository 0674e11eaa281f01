"""The study storage at scale: many workers doing ask/tell on one study in PostgreSQL, directly
and through Optuna's gRPC storage proxy, with no server processes (a landscape function stands
in for vLLM and GuideLLM, so a trial costs only its storage calls and its sampler).

    .venv/bin/python bench/storage_scale.py [--workers 8,32,128] [--seconds 20] \
        [--modes direct,proxy] [--samplers auto,random] [--proxy-threads 10] [--json]

It starts a PostgreSQL server of its own (``tests/postgres.py``: Debian's binaries, trust
authentication, ``fsync=off``, the default ``max_connections`` of 100), and for each sampler,
mode and worker count creates a fresh study the tuner's way (`StudyStore`: its RDB engine
options, its sampler from ``study.sampler``, the baseline and its noise runs queued). Each worker
is an OS process (forked from a forkserver that has imported the driver, gRPC and the landscape
once, rather than each worker importing them) with its own `StudyStore`, as each ``tui-tuner
tune`` process has:

- ``direct``: its own `RDBStorage` (SQLAlchemy engine, one pooled connection) to PostgreSQL;
- ``proxy``: a `GrpcStorageProxy` to one proxy process (``run_grpc_proxy_server`` over the
  tuner's `RDBStorage`, behind Optuna's in-process cache, ``--proxy-threads`` gRPC threads).

Once every worker has opened the study (or after ``OPEN_WITHIN_S``: a worker still opening then
starts when it can; opening checks Optuna's schema with alembic, over 120 s for 128 workers
on 2 busy cores), all start together and loop for ``--seconds``:
`StudyStore.ask` (the trial, its worker and heartbeat attributes, the sampler's proposal), the
figures of ``bench/landscapes/sim_landscapes.py:chat_8b`` (its table in the cache; a cheap
analytic stand-in when the table is not built), `StudyStore.tell` (the record as the tuner
stores it, a failed configuration told infeasible). A worker finishes the trial in hand after
the window, so every ask gets a tell; one that has not reported ``OPEN_WITHIN_S`` after the
window is stopped and counted as never reported (its trial in hand is left RUNNING, and the
study's own count of told trials gives the rate).

Per level: asks and tells per second over the window, ask and tell latency (p50, p99), the
trials the study holds at the end (TPE's ask reads every finished trial, so it costs more as the
study grows: ``--samplers random`` separates the sampler's cost from the storage's), errors by
their driver's words (a worker that could not open the study is counted apart: PostgreSQL's
``too many clients``), trials left RUNNING or never told, and CPU: the machine's, and the
seconds spent by the workers, the PostgreSQL server and the proxy, with which side was the
limit, and those seconds per told trial (what a trial costs each side, however busy the machine
was with other work). After its window each worker also times a few reads of the control
requests (`StudyStore.control`), which every tuner makes once a second while it runs.
``--json`` prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import faulthandler
import functools
import json
import math
import multiprocessing
import multiprocessing.synchronize
import os
import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from queue import Empty
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
import psutil  # noqa: E402
import psycopg  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from tui_tuner.adapters.vllm_server import free_port  # noqa: E402
from tui_tuner.core.config import StudyConfig  # noqa: E402
from tui_tuner.core.config_load import load_config  # noqa: E402
from tui_tuner.core.measurement import Measurement  # noqa: E402
from tui_tuner.core.objectives import (  # noqa: E402
    constraint_values,
    failed_constraints,
    failed_values,
    objective_values,
)
from tui_tuner.core.trial import TrialPlan, TrialRecord  # noqa: E402
from tui_tuner.engine import study as study_module  # noqa: E402
from tui_tuner.engine.storage import open_storage, storage_cause  # noqa: E402
from tui_tuner.engine.study import StudyStore  # noqa: E402

CONFIG = ROOT / "bench" / "search-chat-8b.yaml"
#: How long the workers of a level have to open the study (a hung one is reported, not waited).
OPEN_WITHIN_S = 120.0
#: Control reads each worker times after its window.
CONTROL_READS = 5
LANDSCAPE = ROOT / "bench" / "landscapes" / "sim_landscapes.py"
#: Measurement fields a landscape gives (the others are fixed).
_FIGURES = (
    "output_tok_s", "total_tok_s", "requests_per_s", "request_latency_p50_ms",
    "request_latency_p95_ms", "request_latency_p99_ms", "ttft_p50_ms", "ttft_p95_ms",
    "ttft_p99_ms", "itl_p50_ms", "itl_p95_ms", "tpot_p50_ms",
)  # fmt: skip
Landscape = Callable[[Mapping[str, object]], Mapping[str, Any]]


# -- one worker --------------------------------------------------------------------------------


@functools.cache
def landscape() -> tuple[str, Landscape]:
    """chat_8b when its table is built, else an analytic stand-in of the same space (no
    configuration is computed on first use: that would measure the simulator)."""
    from bench.search_efficiency import load_landscape

    fn = load_landscape(f"{LANDSCAPE}:chat_8b")
    module = sys.modules["_landscape_sim_landscapes"]
    if (module.TABLES / "chat_8b.json").exists():
        _ = module.CHAT_8B.table  # read before the window
        return "chat_8b", fn
    return "analytic", _analytic


def _analytic(params: Mapping[str, object]) -> dict[str, Any]:
    seqs = float(params.get("max_num_seqs", 256))  # type: ignore[arg-type]
    tokens = float(params.get("max_num_batched_tokens", 8192))  # type: ignore[arg-type]
    util = float(params.get("gpu_memory_utilization", 0.9))  # type: ignore[arg-type]
    if seqs >= 512 and util < 0.85:
        return {"failed": "ValueError: No available memory for the cache blocks."}
    tok_s = 9000 * util * (1 - math.exp(-seqs / 96)) * (1 - math.exp(-tokens / 3000))
    latency = 128 * 1000 * 256 / max(tok_s, 1.0)
    figures = {name: latency for name in _FIGURES}
    figures.update(output_tok_s=tok_s, total_tok_s=3 * tok_s, requests_per_s=tok_s / 128)
    return figures


def config_for(name: str, url: str, sampler: str, seed: int | None) -> StudyConfig:
    overrides = {"study.name": name, "study.storage": url, "study.sampler": sampler}
    return load_config(CONFIG, {**overrides, "study.seed": seed})


def record_for(config: StudyConfig, plan: TrialPlan, figures: Mapping[str, Any]) -> TrialRecord:
    """The record the tuner would store for these figures: measured, or (a configuration that
    does not start) failed and told infeasible."""
    objective, now = config.objective, time.time()
    if "failed" in figures:
        failure = {"class": "oom_startup", "message": str(figures["failed"]), "exit_code": 1,
                   "tail": [], "phase": "startup"}  # fmt: skip
        return TrialRecord(plan.number, "failed", plan.params, plan.baseline, failure=failure,
                           values=tuple(failed_values(objective.kind)),
                           constraints=failed_constraints(objective), finished_at=now)  # fmt: skip
    m = Measurement(
        **{k: float(figures.get(k, 0.0)) for k in _FIGURES},
        successful_requests=100,
        errored_requests=0,
        incomplete_requests=0,
        achieved_concurrency=float(config.workload.streams or 1),
        duration_s=float(config.workload.duration_s),
    )
    values = objective_values(objective.kind, m)
    return TrialRecord(plan.number, "complete", plan.params, plan.baseline, measurement=m,
                       values=tuple(values), constraints=constraint_values(objective, m, None),
                       finished_at=now)  # fmt: skip


def open_store(config: StudyConfig, proxy_port: int | None) -> StudyStore:
    """The worker's `StudyStore`; through the proxy, its storage is a `GrpcStorageProxy` (the
    tuner itself takes only SQLAlchemy URLs: this is what it would be)."""
    if proxy_port is not None:

        def grpc_storage(url: str, engine_kwargs: dict[str, Any]) -> Any:
            return optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=proxy_port)

        study_module.open_storage = grpc_storage  # type: ignore[assignment]
    return StudyStore(config, config.study.storage or "")


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {storage_cause(err)}"[:160]


def run_worker(
    spec: dict[str, Any],
    index: int,
    ready: Any,
    go: multiprocessing.synchronize.Event,
    done: multiprocessing.synchronize.Event,
    out: Any,
) -> None:
    """One worker: open the study, wait for the start, ask/evaluate/tell until the window ends,
    send what it saw to ``out``."""
    warnings.simplefilter("ignore")
    result: dict[str, Any] = {"index": index, "asks": 0, "tells": 0, "errors": {}}
    faulthandler.dump_traceback_later(OPEN_WITHIN_S - 30)  # where a slow open waits, on stderr
    try:
        _, fn = landscape()
        config = config_for(spec["name"], spec["url"], spec["sampler"], index)
        store = open_store(config, spec["proxy_port"])
    except BaseException as err:
        result["open_error"] = _error(err)
        ready.put(index)
        out.put(result)
        return
    finally:
        faulthandler.cancel_dump_traceback_later()
    ready.put(index)
    go.wait()
    space = config.space
    errors: Counter[str] = Counter()
    ask_ms: list[float] = []
    tell_ms: list[float] = []
    untold = 0
    start = time.monotonic()
    end = start + spec["seconds"]
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            plan = store.ask(space)
        except Exception as err:
            errors[_error(err)] += 1
            time.sleep(0.05)
            continue
        ask_ms.append(1000 * (time.perf_counter() - t0))
        record = record_for(config, plan, fn(plan.params))
        t1 = time.perf_counter()
        try:
            store.tell(plan, record, values=list(record.values or ()), state=TrialState.COMPLETE)
        except Exception as err:
            errors[_error(err)] += 1
            untold += 1
            continue
        tell_ms.append(1000 * (time.perf_counter() - t1))
    elapsed_s = time.monotonic() - start
    control_ms = []  # the control read every worker makes once a second (engine/control.py)
    for _ in range(CONTROL_READS):
        t0 = time.perf_counter()
        with contextlib.suppress(Exception):
            store.control()
            control_ms.append(1000 * (time.perf_counter() - t0))
    result.update(asks=len(ask_ms), tells=len(tell_ms), untold=untold, ask_ms=ask_ms,
                  tell_ms=tell_ms, errors=dict(errors),
                  elapsed_s=elapsed_s, control_ms=control_ms)  # fmt: skip
    out.put(result)
    done.wait(OPEN_WITHIN_S)  # alive (and its connection with it) until the CPU is counted


def run_proxy(url: str, port: int, threads: int) -> None:
    """Optuna's gRPC storage proxy in front of the tuner's RDB storage (with Optuna's cache, as
    `run_grpc_proxy_server`'s docstring advises)."""
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rdb = open_storage(url, {"pool_pre_ping": True, "connect_args": {"connect_timeout": 60}})
    pool = concurrent.futures.ThreadPoolExecutor(threads)
    optuna.storages.run_grpc_proxy_server(
        optuna.storages.get_storage(rdb), host="127.0.0.1", port=port, thread_pool=pool
    )


# -- CPU accounting ---------------------------------------------------------------------------


def _postmaster(port: int) -> psutil.Process | None:
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if p.info["name"] == "postgres" and "-p" in cmd and str(port) in cmd:
            return p
    return None


def _cpu_s(procs: list[psutil.Process]) -> dict[int, float]:
    seen = {}
    for p in procs:
        try:
            t = p.cpu_times()
            seen[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return seen


class CpuWatch:
    """CPU seconds of the workers, the PostgreSQL server (its backends) and the proxy over the
    window, and the machine's busy share (other programs included)."""

    def __init__(self, port: int, workers: list[int], proxy: int | None) -> None:
        master = _postmaster(port)
        self.groups: dict[str, Callable[[], list[psutil.Process]]] = {
            "workers": lambda: [psutil.Process(pid) for pid in workers if psutil.pid_exists(pid)],
            "postgres": lambda: [master, *master.children(recursive=True)] if master else [],
            "proxy": lambda: [psutil.Process(proxy)] if proxy else [],
        }
        self.before = {k: _cpu_s(get()) for k, get in self.groups.items()}
        psutil.cpu_percent()
        self.t0 = time.monotonic()

    def stop(self) -> dict[str, Any]:
        busy = psutil.cpu_percent()
        window = time.monotonic() - self.t0
        used = {}
        for k, get in self.groups.items():
            now = _cpu_s(get())
            used[k] = sum(v - self.before[k].get(pid, 0.0) for pid, v in now.items())
        cores = psutil.cpu_count() or 1
        out: dict[str, Any] = {"machine_busy_pct": busy, "cores": cores}
        out.update({f"{k}_cpu_s": round(v, 1) for k, v in used.items()})
        out.update({f"{k}_cores": round(v / window, 2) for k, v in used.items()})
        out["other_cores"] = round(max(0.0, busy / 100 * cores - sum(used.values()) / window), 2)
        out["limit"] = _limit(used, window, busy, cores)
        return out


def _limit(used: Mapping[str, float], window: float, busy: float, cores: int) -> str:
    """Which side held the figure back, read off the CPU seconds."""
    if used.get("proxy", 0.0) / window > 0.85:
        return "proxy (one Python process: a core)"
    if busy < 85:
        return "not CPU (waits: locks, round trips)"
    side = max(("workers", "postgres", "proxy"), key=lambda k: used.get(k, 0.0))
    return f"CPU, mostly {side} ({busy:.0f}% of {cores} cores busy)"


# -- one level ---------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def study_counts(url: str, name: str) -> dict[str, int]:
    storage = open_storage(url, {})
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        counts = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))
    finally:
        storage.engine.dispose()
    return dict(counts)


def run_level(
    ctx: Any, url: str, pg_port: int, *, workers: int, mode: str, sampler: str, seconds: float,
    proxy_threads: int,
) -> dict[str, Any]:  # fmt: skip
    name = f"scale-{mode}-{sampler}-{workers}-{int(time.time())}"
    setup = StudyStore(config_for(name, url, sampler, 0), url)  # the study, as the tuner makes it
    setup.ensure_baseline()
    setup.storage.engine.dispose()
    proxy = None
    port = None
    if mode == "proxy":
        port = free_port("127.0.0.1")
        proxy = ctx.Process(target=run_proxy, args=(url, port, proxy_threads), daemon=True)
        proxy.start()
        optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port).wait_server_ready(30)
    spec = {"name": name, "url": url, "sampler": sampler, "seconds": seconds, "proxy_port": port}
    ready, out, go, done = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event()
    procs = [ctx.Process(target=run_worker, args=(spec, i, ready, go, done, out))
             for i in range(workers)]  # fmt: skip
    t_open = time.monotonic()
    for p in procs:
        p.start()
    opened = _gather(ready, workers, t_open + OPEN_WITHIN_S)
    open_s = time.monotonic() - t_open
    watch = CpuWatch(pg_port, [p.pid for p in procs if p.pid], proxy.pid if proxy else None)
    go.set()  # those still opening start when they can
    t_go = time.monotonic()
    results = _gather(out, workers, t_go + seconds + OPEN_WITHIN_S)
    cpu = watch.stop()
    done.set()
    go_to_end_s = time.monotonic() - t_go
    for p in procs:
        p.join(10)
        if p.is_alive():  # hung: counted as never reported
            p.terminate()
            p.join(10)
    if proxy is not None:
        proxy.terminate()
        proxy.join(10)
    level = summarise(results, study_counts(url, name), cpu, open_s,
                      workers=workers, mode=mode, sampler=sampler)  # fmt: skip
    # Workers still in their last ask or tell at the deadline are stopped and do not report; the
    # study's own count of told trials, over the time from the start to the last report, is
    # the figure that includes them (their trial in hand is left RUNNING).
    told = level["trial_states"].get("complete", 0)
    level.update(opened_in_time=len(opened), never_reported=workers - len(results),
                 go_to_end_s=round(go_to_end_s, 1),
                 study_tells_per_s=round(told / go_to_end_s, 1))  # fmt: skip
    return level


def _gather(queue: Any, n: int, deadline: float) -> list[Any]:
    """Up to ``n`` items from ``queue`` until ``deadline`` (monotonic)."""
    items: list[Any] = []
    while len(items) < n:
        try:
            items.append(queue.get(timeout=max(0.1, deadline - time.monotonic())))
        except Empty:
            break
    return items


def summarise(
    results: list[dict[str, Any]], counts: Mapping[str, int], cpu: Mapping[str, Any],
    open_s: float, *, workers: int, mode: str, sampler: str,
) -> dict[str, Any]:  # fmt: skip
    ran = [r for r in results if "open_error" not in r]
    open_errors = Counter(r["open_error"] for r in results if "open_error" in r)
    errors: Counter[str] = Counter()
    for r in ran:
        errors.update(r["errors"])
    ask_ms = [v for r in ran for v in r["ask_ms"]]
    tell_ms = [v for r in ran for v in r["tell_ms"]]
    control_ms = [v for r in ran for v in r.get("control_ms", ())]
    window = max((r["elapsed_s"] for r in ran), default=0.0)
    asks, tells = len(ask_ms), len(tell_ms)
    return {
        "mode": mode,
        "sampler": sampler,
        "workers": workers,
        "workers_running": len(ran),
        "open_s": round(open_s, 1),
        "window_s": round(window, 1),
        "asks": asks,
        "tells": tells,
        "asks_per_s": round(asks / window, 1) if window else 0.0,
        "tells_per_s": round(tells / window, 1) if window else 0.0,
        "ask_ms_p50": _pct(ask_ms, 0.50),
        "ask_ms_p99": _pct(ask_ms, 0.99),
        "ask_ms_mean": round(statistics.fmean(ask_ms), 1) if ask_ms else None,
        "tell_ms_p50": _pct(tell_ms, 0.50),
        "tell_ms_p99": _pct(tell_ms, 0.99),
        "control_ms_p50": _pct(control_ms, 0.50),
        "trials": sum(counts.values()),
        "trial_states": dict(counts),
        "untold": sum(r.get("untold", 0) for r in ran),
        "errors": dict(errors),
        "open_errors": dict(open_errors),
        "cpu": dict(cpu),
        # CPU per told trial on each side: what the figures cost, whatever else ran beside them
        "cpu_ms_per_trial": {
            side: round(1000 * float(cpu[f"{side}_cpu_s"]) / tells, 1) if tells else None
            for side in ("workers", "postgres", "proxy")
        },
    }


@contextmanager
def postgres() -> Iterator[tuple[str, int]]:
    from tests.postgres import postgres_server

    try:
        with postgres_server() as url:
            yield url, int(url.rsplit(":", 1)[1].split("/")[0])
    except BaseException as err:  # pytest.skip outside pytest: PostgreSQL is not installed
        if type(err).__name__ == "Skipped":
            raise SystemExit(f"storage_scale: {err}") from None
        raise


def _row(r: Mapping[str, Any]) -> str:
    cpu = r["cpu"]
    late = ""
    if r["never_reported"]:
        late = (f"  NEVER REPORTED: {r['never_reported']} (study: {r['study_tells_per_s']} "
                f"tells/s, {r['trial_states'].get('running', 0)} left running)")  # fmt: skip
    broke = ", ".join(f"{n}x {e}" for e, n in {**r["open_errors"], **r["errors"]}.items())
    return (
        f"{r['mode']:6} {r['sampler']:6} {r['workers']:>4} ({r['workers_running']:>3} ran) "
        f"asks/s {r['asks_per_s']:>6} tells/s {r['tells_per_s']:>6} "
        f"ask p50 {r['ask_ms_p50']} p99 {r['ask_ms_p99']} ms  trials {r['trials']:>5}  "
        f"cpu {cpu['machine_busy_pct']:.0f}% (w {cpu['workers_cores']} pg "
        f"{cpu['postgres_cores']} px {cpu['proxy_cores']} other {cpu['other_cores']} cores) "
        f"{cpu['limit']}" + (f"  ERRORS: {broke}" if broke else "") + late
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="8,32,128", help="worker counts, comma-separated")
    ap.add_argument("--seconds", type=float, default=20.0, help="each level's window")
    ap.add_argument("--modes", default="direct,proxy")
    ap.add_argument("--samplers", default="auto", help="study.sampler values, comma-separated")
    ap.add_argument("--proxy-threads", type=int, default=10, help="the proxy's gRPC threads")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    modes = args.modes.split(",")
    if "proxy" in modes:
        try:
            import grpc  # noqa: F401
        except ImportError:
            raise SystemExit("--modes proxy needs grpcio: pip install 'tui-tuner[scale]'") from None
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__"])
    kind, _ = landscape()
    levels = []
    started = time.time()
    with postgres() as (url, port):
        with psycopg.connect(url) as conn:
            max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
        for sampler in args.samplers.split(","):
            for mode in modes:
                for n in counts:
                    level = run_level(ctx, url, port, workers=n, mode=mode, sampler=sampler,
                                      seconds=args.seconds,
                                      proxy_threads=args.proxy_threads)  # fmt: skip
                    levels.append(level)
                    print(_row(level), flush=True)
    result = {
        "bench": "storage_scale",
        "landscape": kind,
        "seconds": args.seconds,
        "proxy_threads": args.proxy_threads,
        "max_connections": max_connections,
        "cores": os.cpu_count(),
        "optuna": optuna.__version__,
        "wall_s": round(time.time() - started, 1),
        "levels": levels,
    }
    if args.json:
        print(json.dumps(result))
    return 0


def _preload() -> None:
    """What every worker needs, loaded once in the forkserver before it forks them: the
    PostgreSQL dialect and driver, the gRPC client, the landscape's table (otherwise 128 workers
    import and parse them each, for minutes on 2 cores)."""
    import importlib

    names = ("psycopg", "sqlalchemy.dialects.postgresql.psycopg", "optuna.storages._rdb.models",
             "grpc", "optuna.storages._grpc.client", "optuna.storages._grpc.server")  # fmt: skip
    for name in names:
        with contextlib.suppress(ImportError):  # grpcio is optional: no proxy mode without it
            importlib.import_module(name)
    landscape()


if __name__ == "__main__":
    sys.exit(main())
elif __name__ == "__mp_main__":  # the forkserver's preload of this file (set_forkserver_preload)
    _preload()
