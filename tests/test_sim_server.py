"""The simulated server's HTTP API, its failures at start-up and under load, and its fidelity."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import FAST_PROFILE, SimProcess
from tui_tuner.sim.args import parse
from tui_tuner.sim.predict import predict_closed_loop
from tui_tuner.sim.probe import closed_loop
from tui_tuner.sim.profiles import load_profile_file
from tui_tuner.sim.tokens import TokenCodec

KEY = "sk-sim-test"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def api(start_sim: Callable[..., SimProcess], tiny_model: Path) -> SimProcess:
    return start_sim(
        "--api-key",
        KEY,
        "--sim-time-scale",
        "20",
        "--sim-profile-file",
        str(FAST_PROFILE),
        "--served-model-name",
        "tiny",
        model=str(tiny_model),
        env={"VLLM_SERVER_DEV_MODE": "1"},
    )


async def _post(
    url: str, body: dict[str, object], headers: dict[str, str] = AUTH
) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers) as r:
        return r.status, await r.text()


async def _get(url: str, headers: dict[str, str] = AUTH) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        return r.status, await r.text()


def _events(text: str) -> list[dict[str, object] | str]:
    out: list[dict[str, object] | str] = []
    for block in text.strip().split("\n\n"):
        assert block.startswith("data: "), block
        payload = block[len("data: ") :]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


async def test_models_health_and_auth(api: SimProcess) -> None:
    assert (await _get(api.url + "/health", {}))[0] == 200
    status, body = await _get(api.url + "/v1/models")
    card = json.loads(body)["data"][0]
    assert status == 200 and card["id"] == "tiny" and card["max_model_len"] == 131072
    assert card["simulated"]["simulated"] == "true"
    assert (await _get(api.url + "/v1/models", {}))[0] == 401
    assert (await _get(api.url + "/v1/models", {"Authorization": "Bearer wrong"}))[0] == 401
    status, _ = await _post(api.url + "/v1/completions", {"model": "tiny", "prompt": "x"}, {})
    assert status == 401


async def test_completion_counts_tokens_with_the_model_tokenizer(
    api: SimProcess, tiny_model: Path
) -> None:
    prompt = "The quick brown fox jumps over the lazy dog near the river bank."
    status, body = await _post(
        api.url + "/v1/completions", {"model": "tiny", "prompt": prompt, "max_tokens": 7}
    )
    assert status == 200
    data = json.loads(body)
    assert data["object"] == "text_completion"
    assert data["usage"]["prompt_tokens"] == len(TokenCodec(str(tiny_model)).encode(prompt))
    assert data["usage"]["completion_tokens"] == 7
    assert data["choices"][0]["finish_reason"] == "length" and data["choices"][0]["text"]


async def test_streaming_completion_and_chat(api: SimProcess) -> None:
    body = {
        "model": "tiny",
        "prompt": list(range(40, 140)),
        "max_tokens": 12,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    status, text = await _post(api.url + "/v1/completions", body)
    events = _events(text)
    assert status == 200 and events[-1] == "[DONE]"
    tokens = [e for e in events[:-2] if isinstance(e, dict) and e["choices"][0]["text"]]
    assert len(tokens) == 12
    usage = events[-2]
    assert isinstance(usage, dict) and usage["usage"] == {
        "prompt_tokens": 100,
        "total_tokens": 112,
        "completion_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    chat = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Say something."}],
        "max_completion_tokens": 5,
        "stream": True,
    }
    status, text = await _post(api.url + "/v1/chat/completions", chat)
    events = _events(text)
    first, last = events[0], events[-2]
    assert isinstance(first, dict) and first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert isinstance(last, dict) and last["choices"][0]["finish_reason"] == "length"
    contents = [
        e["choices"][0]["delta"].get("content") for e in events[1:-2] if isinstance(e, dict)
    ]
    assert len([c for c in contents if c]) == 5


async def test_request_errors_match_vllm(api: SimProcess) -> None:
    status, body = await _post(api.url + "/v1/completions", {"model": "nope", "prompt": "x"})
    assert status == 404 and "The model `nope` does not exist." in body
    status, body = await _post(
        api.url + "/v1/completions", {"model": "tiny", "prompt": [1] * 10, "max_tokens": 131070}
    )
    assert status == 400 and "maximum context length is 131072 tokens" in body
    status, body = await _post(api.url + "/v1/chat/completions", {"model": "tiny", "messages": []})
    assert status == 400


async def test_metrics_use_vllm_names_and_count_prefix_hits(api: SimProcess) -> None:
    prompt = list(range(1000, 1400))
    for _ in range(2):
        status, _ = await _post(
            api.url + "/v1/completions", {"model": "tiny", "prompt": prompt, "max_tokens": 2}
        )
        assert status == 200
    _, text = await _get(api.url + "/metrics", {})
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_sum",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:cache_config_info",
        "vllm:prefix_cache_hits_total",
        "tui_tuner:simulated_info",
        "tui_tuner:sim_max_lag_seconds",
    ):
        assert name in text, name
    values = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:") and "_bucket" not in line
    }
    assert values["vllm:generation_tokens_total"] == 4
    assert values["vllm:prefix_cache_hits_total"] == 384  # 24 full blocks of 16 reused
    assert (await _post(api.url + "/reset_prefix_cache", {}))[0] == 200


async def test_reset_prefix_cache_needs_dev_mode(start_sim: Callable[..., SimProcess]) -> None:
    sim = start_sim("--sim-time-scale", "50", "--sim-profile-file", str(FAST_PROFILE))
    assert (await _post(sim.url + "/reset_prefix_cache", {}, {}))[0] == 404


def test_port_in_use_fails_like_vllm(start_sim: Callable[..., SimProcess]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        sim = start_sim("--port", str(port), "--sim-time-scale", "100", wait=False)
        assert sim.wait() == 1
    assert "address already in use" in sim.log()


def test_sigterm_shuts_down_cleanly(start_sim: Callable[..., SimProcess]) -> None:
    sim = start_sim("--sim-time-scale", "50", "--sim-profile-file", str(FAST_PROFILE))
    sim.process.terminate()
    assert sim.wait() == 0
    assert "Shutting down" in sim.log()


def test_sigterm_during_startup_stops_at_once(start_sim: Callable[..., SimProcess]) -> None:
    sim = start_sim(wait=False)  # time scale 1: a 50 s start-up
    time.sleep(1.0)
    sim.process.terminate()
    t0 = time.monotonic()
    assert sim.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 3
    assert "Shutting down during start-up." in sim.log()


async def test_out_of_memory_under_load_kills_the_server(
    start_sim: Callable[..., SimProcess],
) -> None:
    # 0.989 starts (eager needs little capture memory) but leaves too little for a full batch.
    sim = start_sim(
        "--gpu-memory-utilization", "0.989", "--enforce-eager", "--sim-time-scale", "100"
    )
    status, body = await _post(
        sim.url + "/v1/completions", {"prompt": list(range(5000)), "max_tokens": 4}, {}
    )
    assert status == 500 and "EngineCore encountered an issue" in body
    assert sim.wait() == 1
    log = sim.log()
    assert "torch.OutOfMemoryError: CUDA out of memory" in log
    assert "Engine core proc EngineCore_DP0 died unexpectedly" in log


def test_startup_logs_have_vllm_shapes(start_sim: Callable[..., SimProcess]) -> None:
    sim = start_sim("--sim-time-scale", "50", "--sim-profile-file", str(FAST_PROFILE))
    log = sim.log()
    assert "SIMULATED" in log.splitlines()[0]
    for pattern in (
        "Model loading took ",
        "Available KV cache memory: ",
        "GPU KV cache size: 452,080 tokens, Maximum concurrency for 131,072 tokens per "
        "request: 3.45x",
        "Starting vLLM server on http://127.0.0.1:",
        "Application startup complete.",
    ):
        assert pattern in log, pattern
    assert "(EngineCore_DP0 pid=" in log and "] Available KV cache memory" in log


def test_startup_time_depends_on_compilation(start_sim: Callable[..., SimProcess]) -> None:
    t0 = time.monotonic()
    start_sim("--sim-time-scale", "20", "--enforce-eager")
    eager = time.monotonic() - t0
    t0 = time.monotonic()
    start_sim("--sim-time-scale", "20")
    compiled = time.monotonic() - t0
    # 15 vs 50 simulated seconds at 20x: 0.75 s vs 2.5 s of wall time
    assert compiled > eager + 1.0


@pytest.mark.parametrize("seqs", [4, 64])
async def test_live_server_delivers_the_predicted_throughput(
    start_sim: Callable[..., SimProcess], seqs: int
) -> None:
    flags = ["--max-num-seqs", str(seqs), "--enforce-eager"]
    sim = start_sim(*flags, "--sim-profile-file", str(FAST_PROFILE), "--disable-log-stats")
    probe = await closed_loop(
        sim.url, streams=32, prompt_tokens=256, output_tokens=64, warmup_s=2.0, window_s=4.0
    )
    predicted = predict_closed_loop(
        parse(["m", *flags])[0],
        load_profile_file(FAST_PROFILE),
        concurrency=32,
        prompt_tokens=256,
        output_tokens=64,
        duration_s=4.0,
        warmup_s=2.0,
    )
    assert probe.output_tok_s == pytest.approx(predicted.output_tok_s, rel=0.10)


async def test_generated_text_is_deterministic_for_a_seed(
    start_sim: Callable[..., SimProcess],
) -> None:
    async def first_text(seed: str) -> str:
        sim = start_sim("--sim-seed", seed, "--sim-time-scale", "50", "--sim-profile-file",
                        str(FAST_PROFILE))  # fmt: skip
        _, body = await _post(sim.url + "/v1/completions",
                              {"prompt": "Tell me a story.", "max_tokens": 16}, {})  # fmt: skip
        sim.process.terminate()
        sim.wait()
        return str(json.loads(body)["choices"][0]["text"])

    a, b, c = await first_text("7"), await first_text("7"), await first_text("8")
    assert a == b and a != c


async def test_periodic_stats_lines_like_vllm(start_sim: Callable[..., SimProcess]) -> None:
    sim = start_sim("--sim-time-scale", "100", "--sim-profile-file", str(FAST_PROFILE))
    await asyncio.sleep(0.2)  # 20 simulated seconds: the next busy step logs the stats line
    status, _ = await _post(
        sim.url + "/v1/completions", {"prompt": "hi " * 50, "max_tokens": 8}, {}
    )
    assert status == 200
    await asyncio.sleep(0.2)
    lines = [line for line in sim.log().splitlines() if "Avg prompt throughput:" in line]
    assert lines, sim.log()
    assert "[loggers.py:" in lines[0] and "Avg generation throughput:" in lines[0]
    assert "Running: " in lines[0] and "GPU KV cache usage: " in lines[0]
    assert "Prefix cache hit rate: " in lines[0]


async def test_max_model_len_auto_takes_what_the_kv_cache_holds(
    start_sim: Callable[..., SimProcess],
) -> None:
    # 256 MiB of KV at 128 KiB per token holds 2048 tokens
    sim = start_sim("--kv-cache-memory-bytes", "256M", "--max-model-len", "auto",
                    "--sim-time-scale", "100")  # fmt: skip
    _, body = await _get(sim.url + "/v1/models", {})
    assert json.loads(body)["data"][0]["max_model_len"] == 2048
    assert "Auto-fit max_model_len: 2048" in sim.log()
