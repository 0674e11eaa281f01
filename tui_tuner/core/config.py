"""A study's configuration: what to serve, what load to apply, what to optimise, where to store it.

These are the validated, typed values; `config_load.py` reads them from YAML and explains every
mistake with the file, line and key. Defaults here are the documented defaults of the YAML format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tui_tuner.core.space import Scalar, SearchSpace

__all__ = [
    "SAMPLERS",
    "SLA_METRICS",
    "ObjectiveKind",
    "ObjectiveSettings",
    "ServerSettings",
    "SlaTerm",
    "StudyConfig",
    "StudySettings",
    "WorkloadSettings",
]

ObjectiveKind = Literal["throughput", "latency", "pareto", "goodput"]
SamplerName = Literal["tpe", "random", "nsga2", "grid", "gp"]
SAMPLERS: tuple[SamplerName, ...] = ("tpe", "random", "nsga2", "grid", "gp")

#: SLA keys users write, mapped to the Measurement field they limit (upper bounds, ms). Both the
#: "p95_ttft_ms" spelling and the Measurement's own "ttft_p95_ms" are accepted.
SLA_METRICS: Mapping[str, str] = {
    **{f"p{p}_ttft_ms": f"ttft_p{p}_ms" for p in (50, 95, 99)},
    **{f"p{p}_request_latency_ms": f"request_latency_p{p}_ms" for p in (50, 95, 99)},
    **{f"p{p}_itl_ms": f"itl_p{p}_ms" for p in (50, 95)},
    "p50_tpot_ms": "tpot_p50_ms",
}


@dataclass(frozen=True)
class StudySettings:
    name: str
    #: Optuna storage URL; None means SQLite in the study directory (``study.db``).
    storage: str | None = None
    sampler: SamplerName = "tpe"
    seed: int | None = None
    #: Trials to finish in all (baseline included); None with a time budget means "until then".
    n_trials: int | None = None
    #: Wall-clock seconds this run may spend; the running trial finishes first.
    time_budget_s: float | None = None
    #: Measure vLLM's defaults (nothing from the search space) as trial 0.
    baseline: bool = True
    #: Stop the study after this many failed trials in a row.
    max_consecutive_failures: int = 5
    #: Seconds to wait for the storage (a lock another process holds, a database that is down)
    #: before the study stops; finished trials are kept and the study resumes later.
    storage_timeout_s: float = 60.0
    #: Runs of the baseline at the start (each a server of its own): their spread is the
    #: study's measured noise, which every gain is judged against.
    noise_repeats: int = 3
    #: Best configurations measured again, interleaved, before the study ends; the answer is
    #: chosen on the repeated figures (0: none).
    remeasure_top: int = 3
    #: Earlier studies (study directories, ``study.db`` files or storage URLs, a study picked
    #: with ``URL#NAME``) whose best configurations are tried first, after the baseline.
    warm_start: tuple[str, ...] = ()
    #: Trials run side by side, each on its own GPUs (None: ``auto``, as many as the GPUs
    #: allow one trial each).
    workers: int | None = 1
    #: Stop a trial's load once it clearly cannot beat the best so far (`core/early_stop.py`);
    #: None: ``auto``, on unless the sampler is ``grid``, ``gp`` or ``cmaes``.
    early_stop: bool | None = None


@dataclass(frozen=True)
class ServerSettings:
    model: str
    #: The program and its leading arguments; the model and flags follow.
    command: tuple[str, ...] = ("vllm", "serve")
    #: Flags every trial gets, by vLLM dest name (``max_model_len: 1024``), rendered as flags.
    flags: Mapping[str, Scalar | list[Scalar] | dict[str, object]] = field(default_factory=dict)
    #: Further arguments passed verbatim after the flags (for options the tuner does not know).
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    startup_timeout_s: float = 900.0
    #: Seconds between SIGTERM and SIGKILL when stopping the server.
    stop_grace_s: float = 30.0
    #: Give every trial's server a random API key (and only the load generator knows it).
    api_key: bool = True
    #: Seconds to wait for the GPU memory of a stopped server to be released.
    gpu_release_timeout_s: float = 60.0
    #: Throughput studies: random weights (``--load-format dummy``, never exported) and one
    #: torch.compile cache for the study's trials (``VLLM_CACHE_ROOT`` in its directory).
    fast_start: bool = False
    #: The GPUs (indices) the tuner hands out to its trials; None: every GPU NVML counts
    #: (within the tuner's own ``CUDA_VISIBLE_DEVICES``), or the simulated node's.
    gpus: tuple[int, ...] | None = None

    @property
    def simulated(self) -> bool:
        """Whether this runs tui-tuner's simulated server rather than a real vLLM."""
        return "sim-serve" in self.command


@dataclass(frozen=True)
class WorkloadSettings:
    prompt_tokens: int = 512
    output_tokens: int = 128
    prompt_tokens_stdev: int | None = None
    output_tokens_stdev: int | None = None
    #: Tokens of a shared prefix, and how many distinct prefixes (prefix-cache workloads).
    prefix_tokens: int | None = None
    prefix_count: int | None = None
    #: A dataset file (JSONL or CSV with a prompt column) instead of synthetic prompts.
    dataset: str | None = None
    profile: Literal["concurrent", "constant", "poisson"] = "concurrent"
    streams: int | None = 32
    rate: float | None = None
    duration_s: float = 60.0
    #: Seconds of load before the measured window (GuideLLM excludes them from the metrics).
    #: With ``warmup_s: auto`` the bound: the most seconds the warm-up may take.
    warmup_s: float = 10.0
    #: Set by ``warmup_s: auto`` (to its bound): the measured window starts where the output
    #: throughput settled, found in GuideLLM's per-request data (adapters/guidellm/settle.py).
    warmup_max_s: float | None = None
    #: Measure this many times and keep the median run; the spread is recorded.
    repeats: int = 1
    #: Seconds GuideLLM may run past its load window (its own start-up and report writing
    #: included) before it is stopped as hung and the trial fails as benchmark_failed.
    benchmark_grace_s: float = 300.0
    max_errors: int = 20
    #: Errored share of finished requests above which the trial fails as too_many_errors.
    max_error_rate: float = 0.05
    request_format: Literal["/v1/completions", "/v1/chat/completions"] = "/v1/completions"
    #: GuideLLM executable (None: $TUI_TUNER_GUIDELLM, the venv `make guidellm` makes, PATH).
    guidellm: str | None = None
    #: How GuideLLM runs: ``worker``, one long-lived process a study that runs each trial's
    #: ``guidellm run`` in-process (its start-up paid once), or ``cli``, a subprocess a trial.
    load_generator: Literal["worker", "cli"] = "worker"
    #: Tokenizer for GuideLLM's synthetic prompts (None: the model path).
    tokenizer: str | None = None
    seed: int = 0

    @property
    def warmup_auto(self) -> bool:
        return self.warmup_max_s is not None


@dataclass(frozen=True)
class SlaTerm:
    """``metric <= limit``: a Measurement field and its upper bound."""

    key: str
    metric: str
    limit: float


@dataclass(frozen=True)
class ObjectiveSettings:
    kind: ObjectiveKind = "throughput"
    sla: tuple[SlaTerm, ...] = ()
    #: p95 request latency no worse than the baseline's, as a constraint.
    latency_vs_baseline: bool = False
    #: Goodput: the highest concurrency GuideLLM's search may probe, and its probe budget
    #: (GuideLLM's ``max_streams`` and ``max_probes``); the first level is workload.streams.
    max_streams: int = 1024
    max_probes: int = 15


@dataclass(frozen=True)
class StudyConfig:
    study: StudySettings
    server: ServerSettings
    workload: WorkloadSettings = field(default_factory=WorkloadSettings)
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    space: SearchSpace = field(default_factory=SearchSpace)
    #: The file it was read from, for messages and for copying into the study directory.
    source: Path | None = None
    #: Notes the loader wants the user to see (a mapped predecessor key, an alias used).
    notes: tuple[str, ...] = ()
