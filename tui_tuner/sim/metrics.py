"""Prometheus text exposition with vLLM 0.33's metric names (REFERENCE.md section 1.4).

Written by hand rather than with prometheus_client: a few counters, gauges and histograms are
all the simulator needs, and rendering them is cheap enough to scrape every second.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from tui_tuner.sim.scheduler import SchedulerStats

TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
LATENCY_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


@dataclass
class Histogram:
    buckets: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += count
        self.total += value * count
        self.n += count


@dataclass
class EngineMetrics:
    """Histograms and outcomes of one engine (data-parallel replica). Token, preemption and
    prefix-cache counters are the scheduler's own (`SchedulerStats`), not copied here."""

    success: dict[str, int] = field(default_factory=lambda: {"length": 0, "stop": 0, "abort": 0})
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    tpot: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    queue: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    prompt_len: Histogram = field(default_factory=lambda: Histogram(TOKEN_BUCKETS))
    gen_len: Histogram = field(default_factory=lambda: Histogram(TOKEN_BUCKETS))
    iteration_tokens: Histogram = field(default_factory=lambda: Histogram(TOKEN_BUCKETS))


@dataclass(frozen=True)
class EngineGauges:
    running: int
    waiting: int
    kv_usage: float


def _fmt(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else f"{float(value):.1f}"


def _labels(base: dict[str, str], **extra: str) -> str:
    items = {**base, **extra}
    return "{" + ",".join(f'{k}="{v}"' for k, v in items.items()) + "}"


def render(
    model_name: str,
    engines: Sequence[tuple[EngineMetrics, EngineGauges, SchedulerStats]],
    cache_info: dict[str, str],
    sim_info: dict[str, str],
    sim_lag_s: float,
    sim_max_lag_s: float,
) -> str:
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    def per_engine(name: str, kind: str, help_text: str, values: list[float]) -> None:
        family(name, kind, help_text)
        for i, v in enumerate(values):
            lines.append(f"{name}{_labels({'engine': str(i), 'model_name': model_name})} {_fmt(v)}")

    metrics = [m for m, _, _ in engines]
    gauges = [g for _, g, _ in engines]
    stats = [st for _, _, st in engines]
    family("tui_tuner:simulated_info", "gauge", "This server is SIMULATED by tui-tuner: no GPU.")
    lines.append(f"tui_tuner:simulated_info{_labels(sim_info)} 1.0")
    family(
        "tui_tuner:sim_lag_seconds",
        "gauge",
        "Wall seconds the simulator fell behind its schedule (0 = figures undistorted).",
    )
    lines.append(f"tui_tuner:sim_lag_seconds {_fmt(sim_lag_s)}")
    family(
        "tui_tuner:sim_max_lag_seconds",
        "gauge",
        "The largest lag since start: above a few step times, a measurement over that period "
        "is not the model's figure.",
    )
    lines.append(f"tui_tuner:sim_max_lag_seconds {_fmt(sim_max_lag_s)}")
    per_engine(
        "vllm:num_requests_running",
        "gauge",
        "Number of requests in model execution batches.",
        [g.running for g in gauges],
    )
    per_engine(
        "vllm:num_requests_waiting",
        "gauge",
        "Number of requests waiting to be processed.",
        [g.waiting for g in gauges],
    )
    per_engine(
        "vllm:kv_cache_usage_perc",
        "gauge",
        "KV-cache usage. 1 means 100 percent usage.",
        [g.kv_usage for g in gauges],
    )
    family("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig")
    for i in range(len(engines)):
        labels = _labels({"engine": str(i), "model_name": model_name}, **cache_info)
        lines.append(f"vllm:cache_config_info{labels} 1.0")
    counters = (
        (
            "vllm:num_preemptions_total",
            "Cumulative number of preemption from the engine.",
            [st.preemptions for st in stats],
        ),
        (
            "vllm:prompt_tokens_total",
            "Number of prefill tokens processed.",
            [st.prompt_tokens for st in stats],
        ),
        (
            "vllm:generation_tokens_total",
            "Number of generation tokens processed.",
            [st.generation_tokens for st in stats],
        ),
        (
            "vllm:prefix_cache_queries_total",
            "Prefix cache queries, in terms of number of queried tokens.",
            [st.prefix_queries for st in stats],
        ),
        (
            "vllm:prefix_cache_hits_total",
            "Prefix cache hits, in terms of number of cached tokens.",
            [st.prefix_hits for st in stats],
        ),
    )
    for name, help_text, values in counters:
        per_engine(name, "counter", help_text, [float(v) for v in values])
    family("vllm:request_success_total", "counter", "Count of successfully processed requests.")
    for i, m in enumerate(metrics):
        for reason, count in m.success.items():
            labels = _labels({"engine": str(i), "model_name": model_name}, finished_reason=reason)
            lines.append(f"vllm:request_success_total{labels} {_fmt(count)}")
    histograms = (
        (
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            "ttft",
        ),
        ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", "itl"),
        (
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            "tpot",
        ),
        ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", "e2e"),
        (
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            "queue",
        ),
        ("vllm:request_prompt_tokens", "Number of prefill tokens processed.", "prompt_len"),
        ("vllm:request_generation_tokens", "Number of generation tokens processed.", "gen_len"),
        (
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            "iteration_tokens",
        ),
    )
    for name, help_text, attr in histograms:
        family(name, "histogram", help_text)
        for i, m in enumerate(metrics):
            hist: Histogram = getattr(m, attr)
            base = {"engine": str(i), "model_name": model_name}
            running = 0
            for bound, count in zip(hist.buckets, hist.counts, strict=False):
                running += count
                lines.append(f"{name}_bucket{_labels(base, le=_fmt(bound))} {_fmt(running)}")
            lines.append(f"{name}_bucket{_labels(base, le='+Inf')} {_fmt(hist.n)}")
            lines.append(f"{name}_count{_labels(base)} {_fmt(hist.n)}")
            lines.append(f"{name}_sum{_labels(base)} {_fmt(hist.total)}")
    return "\n".join(lines) + "\n"
