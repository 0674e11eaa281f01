"""Prometheus scraping: the parser on the simulator's real output and on awkward text, the
figures the GPU panel shows, and `scrape` against a live aiohttp server."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tui_tuner.adapters.metrics import (
    SIMULATED_INFO,
    MetricsScraper,
    ScrapeError,
    parse_exposition,
    scrape,
    server_figures,
    sim_figures,
)
from tui_tuner.sim.metrics import EngineGauges, EngineMetrics, render
from tui_tuner.sim.scheduler import SchedulerStats

SIM_INFO = {"simulated": "true", "profile": "llama-8b-h100", "time_scale": "1", "seed": "0"}


def _sim_text(generated: tuple[int, int] = (1000, 500), lag: float = 0.0) -> str:
    first = EngineMetrics()
    first.ttft.observe(0.05, 3)
    engines = [
        (first, EngineGauges(3, 2, 0.25), SchedulerStats(generation_tokens=generated[0])),
        (EngineMetrics(), EngineGauges(1, 0, 0.75), SchedulerStats(generation_tokens=generated[1])),
    ]
    return render("m", engines, {"block_size": "16"}, SIM_INFO, lag, lag)


def test_parses_the_simulators_output() -> None:
    expo = parse_exposition(_sim_text())
    values = expo.values
    assert values[SIMULATED_INFO] == 1.0
    assert values["vllm:num_requests_running"] == 4.0  # summed over both engines
    assert values["vllm:num_requests_waiting"] == 2.0
    assert values["vllm:generation_tokens_total"] == 1500.0
    assert values["vllm:time_to_first_token_seconds_count"] == 3.0
    assert math.isclose(values["vllm:time_to_first_token_seconds_sum"], 0.15)
    assert not any(name.endswith("_bucket") for name in values)
    assert expo.info[SIMULATED_INFO]["profile"] == "llama-8b-h100"


def test_sim_figures_from_the_simulator() -> None:
    expo = parse_exposition(_sim_text())
    info = expo.info[SIMULATED_INFO]
    first = sim_figures(expo.values, None, at=10.0, info=info)
    assert first is not None and first.simulated
    assert first.kv_cache_usage_pct == pytest.approx(50.0)  # the mean of 25% and 75%
    assert (first.running, first.waiting, first.engines) == (4, 2, 2)
    assert first.generation_tok_s is None  # no previous scrape yet
    assert first.gpu_name == "profile llama-8b-h100"
    later = parse_exposition(_sim_text((1600, 900)))
    second = sim_figures(later.values, first, at=12.0, info=info)
    assert second is not None and second.generation_tok_s == pytest.approx(500.0)
    restarted = parse_exposition(_sim_text((10, 0)))
    third = sim_figures(restarted.values, second, at=13.0, info=info)
    assert third is not None and third.generation_tok_s is None  # a counter reset is no rate


def test_the_gpu_label_names_the_gpu_when_present() -> None:
    figures = sim_figures({SIMULATED_INFO: 1.0}, info={"gpu": "NVIDIA H100 80GB HBM3"}, at=0.0)
    assert figures is not None and figures.gpu_name == "NVIDIA H100 80GB HBM3"


REAL_VLLM_010 = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 7.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.5
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{engine="0",model_name="m"} 42.0
vllm:generation_tokens_created{engine="0",model_name="m"} 1.7e9
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="m"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 2.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} 2.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 1.5
"""


def test_real_vllm_gets_the_generic_figures() -> None:
    values = parse_exposition(REAL_VLLM_010).values
    assert sim_figures(values) is None
    figures = server_figures(values, at=1.0)
    assert figures is not None and not figures.simulated
    assert figures.kv_cache_usage_pct == pytest.approx(50.0)  # the 0.10 name is understood
    assert (figures.running, figures.waiting, figures.gpu_name) == (7, 1, "")
    assert values["vllm:e2e_request_latency_seconds_count"] == 2.0
    assert "vllm:e2e_request_latency_seconds_bucket" not in values
    assert server_figures({"process_cpu_seconds_total": 3.0}) is None  # not a vLLM


def test_awkward_lines_are_parsed_or_skipped() -> None:
    text = """
# a comment
# TYPE rpc summary
rpc{quantile="0.5"} 4
rpc_sum 10
rpc_count 3
odd{path="a b}c",msg="say \\"hi\\""} 2 1700000000000
odd{path="x"} 3
no_labels 1.5e3
infinite +Inf
nan_value NaN
broken{unterminated="x 1
not a number here
junk_bucket{le="1"} 9
# EOF
"""
    expo = parse_exposition(text)
    values = expo.values
    assert values["odd"] == 5.0
    assert values["no_labels"] == 1500.0
    assert values["infinite"] == math.inf
    assert math.isnan(values["nan_value"])
    assert values["rpc_sum"] == 10 and values["rpc_count"] == 3
    assert "rpc" not in values  # quantiles dropped
    assert "junk_bucket" not in values  # looks like a bucket without a TYPE line
    assert "broken" not in values and "not" not in values


def test_info_labels_with_escapes() -> None:
    expo = parse_exposition('x_info{a="1",b="q\\"uote",c="sp ace"} 1\n')
    assert expo.info["x_info"] == {"a": "1", "b": 'q"uote', "c": "sp ace"}


@pytest.fixture
async def server() -> AsyncIterator[str]:
    calls = {"n": 0}

    async def metrics(request: web.Request) -> web.Response:
        calls["n"] += 1
        generated = (1000 * calls["n"], 500)  # the counter grows between scrapes
        return web.Response(text=_sim_text(generated), content_type="text/plain")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/broken/metrics", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_scrape_a_live_server(server: str) -> None:
    async with aiohttp.ClientSession() as session:
        values = await scrape(server, session)
        assert values["vllm:generation_tokens_total"] == 1500.0
        scraper = MetricsScraper()
        first = await scraper.poll(server)
        second = await scraper.poll(server)
        assert first is not None and second is not None
        assert first.generation_tok_s is None  # a rate needs two scrapes of one server
        assert second.generation_tok_s is not None and second.generation_tok_s > 0
        with pytest.raises(ScrapeError, match="HTTP 500"):
            await scraper.poll(server + "/broken")
        again = await scraper.poll(server)  # another server came between: no rate yet
        assert again is not None and again.generation_tok_s is None
        await scraper.close()
        with pytest.raises(ScrapeError, match="HTTP 500"):
            await scrape(server + "/broken", session)


async def test_scrape_refused_is_a_scrape_error() -> None:
    from tui_tuner.adapters.vllm_server import free_port

    async with aiohttp.ClientSession() as session:
        with pytest.raises(ScrapeError):
            await scrape(f"http://127.0.0.1:{free_port()}", session)
