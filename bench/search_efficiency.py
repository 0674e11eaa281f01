"""How many trials does a study's search need to find a near-best configuration?

Runs the study's own search (the real `Orchestrator` and `StudyStore`: the same sampler set-up,
baseline first, duplicates answered from the store, failures told as infeasible, re-runs and
whatever else the engine decides) with the server and GuideLLM replaced by a landscape: a function
``FUNCTION(params) -> dict`` of the trial's parameters that returns noise-free figures
(``output_tok_s``, ``request_latency_p95_ms``, ``ttft_p95_ms``, ...) or ``{"failed": "vLLM's
message"}`` for a configuration that does not start. Each measurement gets multiplicative
Gaussian noise of ``--noise`` (coefficient of variation) on every figure.

    .venv/bin/python bench/search_efficiency.py --config bench/search-chat-8b.yaml \
        --landscape bench/landscapes/sim_landscapes.py:chat_8b [--seeds 10] [--trials 40] \
        [--noise 0.05] [--strategies auto,tpe,random,grid] [--json]

Strategies: every ``study.sampler`` value (``auto``, ``tpe``, ``random``, ``gp``, ``nsga2``,
``cmaes``), ``grid`` (a grid in the order of vLLM's benchmarks/auto_tune/auto_tune.sh: nested
loops over the parameters and their values in the order the configuration lists them, the first
outermost; its seeds change only the noise) and ``optuna-grid`` (the study's own ``grid``
sampler, in its shuffled order).

The true best is the best noise-free figure over every configuration of the (finite) space and
the baseline. A trial counts when something ran: every measured or failed configuration, the
baseline and re-measurements included; duplicates answered from the store and configurations
refused before their launch (vLLM would reject them) do not. A configuration's
worth is its noise-free figure (0 when it fails or misses an SLA term on its noise-free figures).
Per strategy, over the seeds: the median and quartiles of the trials needed until one of them is
worth 98% of the true best (a seed that never gets there within ``--trials`` counts as never;
for ``grid`` it is read off its order, which needs no run), how many seeds got there, the best
worth after 15 and 30 trials, failed launches, and how often the best the study reports at its
end (`core.objectives.best_trials` over its records) is truly within 2% of the true best.
``--json`` prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tui_tuner.core.config import StudyConfig
from tui_tuner.core.config_load import load_config
from tui_tuner.core.events import Event, TrialStarted
from tui_tuner.core.measurement import Measurement
from tui_tuner.core.objectives import best_trials
from tui_tuner.core.trial import TrialRecord
from tui_tuner.engine.orchestrator import Orchestrator
from tui_tuner.engine.ports import (
    BenchRequest,
    LaunchRequest,
    ProgressCallback,
    ServerHandle,
    ServerStartFailed,
)
from tui_tuner.engine.samplers import encode_choice
from tui_tuner.engine.study import StudyStore
from tui_tuner.engine.trial_runner import TrialRunner

Landscape = Callable[[Mapping[str, object]], Mapping[str, Any]]

#: Figures a Measurement needs, and what a landscape that leaves one out gets.
_FIGURES = (
    "output_tok_s", "total_tok_s", "requests_per_s", "request_latency_p50_ms",
    "request_latency_p95_ms", "request_latency_p99_ms", "ttft_p50_ms", "ttft_p95_ms",
    "ttft_p99_ms", "itl_p50_ms", "itl_p95_ms", "tpot_p50_ms",
)  # fmt: skip
REACH = 0.98
#: Bench strategies that are not a study.sampler value.
AUTOTUNE_GRID, OPTUNA_GRID = "grid", "optuna-grid"


def load_landscape(spec: str) -> Landscape:
    path, _, name = spec.rpartition(":")
    if not path or not name:
        raise SystemExit(f"--landscape {spec!r}: give FILE.py:FUNCTION")
    module_spec = importlib.util.spec_from_file_location(f"_landscape_{Path(path).stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise SystemExit(f"--landscape: cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise SystemExit(f"--landscape: {path} has no function {name!r}")
    return fn  # type: ignore[no-any-return]


# -- the engine's ports, answered by the landscape ------------------------------------------------


@dataclass
class _Server:
    base_url: str = "http://127.0.0.1:1"
    returncode: int | None = None
    tail: list[str] = field(default_factory=list)
    pids_seen: set[int] = field(default_factory=set)

    async def wait_exit(self) -> int:
        await asyncio.Event().wait()  # never exits by itself
        return 0


class LandscapePorts:
    """Launcher, benchmarker and GPU watcher of a study whose server is a function. Which
    configuration runs is read from the engine's `TrialStarted` event, just before its launch."""

    def __init__(self, landscape: Landscape, noise: float, rng: random.Random) -> None:
        self.landscape, self.noise, self.rng = landscape, noise, rng
        self.params: Mapping[str, object] = {}

    def on_event(self, event: Event) -> None:
        if isinstance(event, TrialStarted):
            self.params = event.params

    def free_port(self, host: str) -> int:
        return 1

    @contextlib.asynccontextmanager
    async def _launch(self) -> AsyncIterator[ServerHandle]:
        figures = self.landscape(self.params)
        if "failed" in figures:
            text = str(figures["failed"])
            raise ServerStartFailed("exited", "exited", 1, text.splitlines())
        yield _Server()

    def launch(
        self, request: LaunchRequest, on_line: Callable[[str], None]
    ) -> contextlib.AbstractAsyncContextManager[ServerHandle]:
        return self._launch()

    async def smoke_test(self, server: ServerHandle, model: str, api_key: str | None) -> None:
        return None

    async def run(
        self, request: BenchRequest, on_line: Callable[[str], None], on_progress: ProgressCallback
    ) -> Measurement:
        figures = self.landscape(self.params)
        noisy = {k: self._noisy(float(figures.get(k, 0.0))) for k in _FIGURES}
        on_progress("active", 1.0, 100, 0, noisy["output_tok_s"])
        return Measurement(
            **noisy,
            successful_requests=100,
            errored_requests=0,
            incomplete_requests=0,
            achieved_concurrency=float(figures.get("achieved_concurrency", request.streams or 1.0)),
            duration_s=float(request.workload.duration_s),
        )

    def _noisy(self, value: float) -> float:
        return max(0.0, value * (1.0 + self.noise * self.rng.gauss(0.0, 1.0)))

    async def wait_released(self, pids: Collection[int], timeout_s: float) -> tuple[bool, float]:
        return True, 0.0


# -- what a configuration is truly worth ----------------------------------------------------------


class Worth:
    """A configuration's noise-free worth under the study's objective: output tok/s (throughput,
    and the Pareto objective, read as throughput under its SLA) or 1/p95 latency; 0 if it fails
    or misses an SLA term (on its noise-free figures)."""

    def __init__(self, config: StudyConfig, landscape: Landscape) -> None:
        self.config, self.landscape = config, landscape
        self.baseline = dict(landscape({}))
        self._cache: dict[str, float] = {}

    def __call__(self, params: Mapping[str, object]) -> float:
        key = json.dumps(sorted(params.items()), default=str)
        if key not in self._cache:
            self._cache[key] = self._worth(self.landscape(params))
        return self._cache[key]

    def _worth(self, figures: Mapping[str, Any]) -> float:
        if "failed" in figures:
            return 0.0
        objective = self.config.objective
        for term in objective.sla:
            if float(figures.get(term.metric, 0.0)) > term.limit:
                return 0.0
        p95 = float(figures.get("request_latency_p95_ms", math.inf))
        base_p95 = float(self.baseline.get("request_latency_p95_ms", math.inf))
        if objective.latency_vs_baseline and p95 > base_p95:
            return 0.0
        if objective.kind == "latency":
            return 1.0 / p95 if p95 > 0 else 0.0
        return float(figures.get("output_tok_s", 0.0))


def grid_order(config: StudyConfig) -> list[dict[str, object]]:
    """Every configuration of the space in auto_tune.sh's order: nested loops over the
    parameters as listed (the first outermost), each over its values as listed."""
    params = config.space.enabled()
    values = [[encode_choice(c) for c in p.choices() or ()] for p in params]
    return [
        {p.key: v for p, v in zip(params, combo, strict=True)}
        for combo in itertools.product(*values)
    ]


# -- one study ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedResult:
    trials_to_reach: float  # math.inf: never within the run
    best_at_15: float
    best_at_30: float
    failed_launches: int
    reported_within_2pct: bool
    trials: int
    wall_s: float


def run_one(
    config: StudyConfig,
    landscape: Landscape,
    worth: Worth,
    true_best: float,
    *,
    strategy: str,
    seed: int,
    trials: int,
    noise: float,
    work: Path,
) -> SeedResult:
    sampler = {AUTOTUNE_GRID: "random", OPTUNA_GRID: "grid"}.get(strategy, strategy)
    study = replace(
        config.study, name=f"{strategy}-{seed}", seed=seed, sampler=sampler, n_trials=trials,
        storage=None,
    )  # fmt: skip
    if strategy == AUTOTUNE_GRID:  # auto_tune.sh goes on after a configuration fails
        study = replace(study, max_consecutive_failures=trials + 1)
    cfg = replace(config, study=study)
    study_dir = work / f"{strategy}-{seed}"
    study_dir.mkdir(parents=True)
    ports = LandscapePorts(landscape, noise, random.Random(f"{seed}:noise"))
    store = StudyStore(cfg, f"sqlite:///{study_dir / 'study.db'}")
    order: list[dict[str, object]] = []
    if strategy == AUTOTUNE_GRID:  # the baseline first, then the grid in order
        order = grid_order(cfg)
        store.ensure_baseline()
        for params in order[:trials]:  # at most that many run; a long queue slows every ask
            store.study.enqueue_trial(params)
    runner = TrialRunner(cfg, study_dir, ports, ports, ports, ports.on_event)
    orchestrator = Orchestrator(cfg, store, runner, ports.on_event, study_dir=study_dir)
    started = time.perf_counter()
    outcome = asyncio.run(orchestrator.run())
    wall = time.perf_counter() - started
    ran = [r for r in sorted(outcome.records, key=lambda r: r.number) if _ran(r)]
    best, reached, at = 0.0, math.inf, {}
    for n, record in enumerate(ran, 1):
        best = max(best, worth(record.params) if record.measurement is not None else 0.0)
        if best >= REACH * true_best and reached == math.inf:
            reached = n
        at[n] = best
    if strategy == AUTOTUNE_GRID:  # read off its order: the noise does not change it
        runs = getattr(cfg.study, "noise_repeats", 1) if cfg.study.baseline else 0
        reached = _reached_in_order(worth, [*([{}] * runs), *order], true_best)
    reported = best_trials(cfg.objective.kind, outcome.records)
    truly = max((worth(r.params) for r in reported), default=0.0)
    return SeedResult(
        trials_to_reach=reached,
        best_at_15=at.get(min(15, len(ran)), 0.0) / true_best,
        best_at_30=at.get(min(30, len(ran)), 0.0) / true_best,
        failed_launches=sum(r.failure is not None for r in ran),
        reported_within_2pct=truly >= REACH * true_best,
        trials=len(ran),
        wall_s=wall,
    )


def _ran(record: TrialRecord) -> bool:
    """Something ran for it: measured or failed, not answered from the store, not cut short,
    not refused before its launch (a configuration vLLM would reject, told infeasible)."""
    if record.duplicate_of is not None or record.interrupted or getattr(record, "rejected", False):
        return False
    return record.state in ("complete", "failed", "pruned")


def _reached_in_order(worth: Worth, order: list[dict[str, object]], true_best: float) -> float:
    for n, params in enumerate(order, 1):
        if worth(params) >= REACH * true_best:
            return n
    return math.inf


# -- the figures ----------------------------------------------------------------------------------


def summarise(results: list[SeedResult]) -> dict[str, Any]:
    reach = sorted(r.trials_to_reach for r in results)
    finite = [x for x in reach if x != math.inf]

    def q(p: float) -> float | None:
        value = _quantile(reach, p)
        return None if value == math.inf else value

    return {
        "trials_to_98_median": q(0.5),
        "trials_to_98_q1": q(0.25),
        "trials_to_98_q3": q(0.75),
        "reached": len(finite),
        "seeds": len(results),
        "best_at_15": round(statistics.median(r.best_at_15 for r in results), 4),
        "best_at_30": round(statistics.median(r.best_at_30 for r in results), 4),
        "failed_launches_mean": round(statistics.fmean(r.failed_launches for r in results), 2),
        "reported_within_2pct": round(
            sum(r.reported_within_2pct for r in results) / len(results), 3
        ),
        "trials_run_mean": round(statistics.fmean(r.trials for r in results), 1),
        "wall_s_per_trial": round(
            sum(r.wall_s for r in results) / max(1, sum(r.trials for r in results)), 4
        ),
    }


def _quantile(sorted_values: list[float], p: float) -> float:
    """The p-quantile with linear interpolation (inf stays inf)."""
    if not sorted_values:
        return math.inf
    k = (len(sorted_values) - 1) * p
    lo, hi = math.floor(k), math.ceil(k)
    a, b = sorted_values[lo], sorted_values[hi]
    if math.inf in (a, b):
        return math.inf if (b == math.inf and k > lo) or a == math.inf else a
    return a + (b - a) * (k - lo)


def _show(value: float | None) -> str:
    return "never" if value is None else f"{value:g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True, help="the study's YAML")
    ap.add_argument("--landscape", required=True, help="FILE.py:FUNCTION")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--strategies", default="auto,tpe,random,grid")
    ap.add_argument("--json", action="store_true", help="one JSON object as the last line")
    args = ap.parse_args(argv)
    config = load_config(args.config)
    if config.space.size() is None:
        raise SystemExit("the search space must be finite (steps or options) to know its best")
    landscape = load_landscape(args.landscape)
    worth = Worth(config, landscape)
    space = [{}, *grid_order(config)]
    true_best = max(worth(p) for p in space)
    if true_best <= 0:
        raise SystemExit("no configuration of the space works on this landscape")
    near = sum(worth(p) >= REACH * true_best for p in space)
    print(f"{args.config}: {len(space) - 1} configurations (+ baseline), {near} within 2% of "
          f"the best; the baseline is worth {worth({}) / true_best:.3f} of it")  # fmt: skip
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        for strategy in [s.strip() for s in args.strategies.split(",") if s.strip()]:
            results = []
            for seed in range(args.seeds):
                results.append(
                    run_one(
                        config,
                        landscape,
                        worth,
                        true_best,
                        strategy=strategy,
                        seed=seed,
                        trials=args.trials,
                        noise=args.noise,
                        work=Path(tmp),
                    )
                )
            out[strategy] = s = summarise(results)
            print(
                f"{strategy:>12}: trials to 98% median {_show(s['trials_to_98_median'])} "
                f"(q1 {_show(s['trials_to_98_q1'])}, q3 {_show(s['trials_to_98_q3'])}), "
                f"reached {s['reached']}/{s['seeds']}, best at 15 {s['best_at_15']:.3f}, "
                f"at 30 {s['best_at_30']:.3f}, failed launches {s['failed_launches_mean']:g}, "
                f"reported within 2% {s['reported_within_2pct']:.0%}, "
                f"{s['wall_s_per_trial'] * 1000:.0f} ms a trial",
                flush=True,
            )
    if args.json:
        print(json.dumps({"strategies": out}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
