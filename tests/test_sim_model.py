"""The performance model moves the way vLLM users see real servers move.

These run the scheduler with no real time passing (`predict_closed_loop`), so they are exact
and fast; tests/test_sim_server.py checks that the live server delivers the same figures.
"""

from __future__ import annotations

import pytest

from tui_tuner.sim.args import parse
from tui_tuner.sim.hardware import plan_memory, resolve
from tui_tuner.sim.predict import Prediction, predict_closed_loop
from tui_tuner.sim.profiles import get_profile
from tui_tuner.sim.scheduler import KVCache, Scheduler, SimRequest, block_hashes


def run(
    *flags: str,
    profile: str = "llama-8b-h100",
    concurrency: int = 32,
    prompt: int = 512,
    output: int = 128,
    duration: float = 30.0,
    prefix: int = 0,
) -> Prediction:
    args, _, _ = parse(["m", *flags])
    return predict_closed_loop(
        args,
        get_profile(profile),
        concurrency=concurrency,
        prompt_tokens=prompt,
        output_tokens=output,
        duration_s=duration,
        warmup_s=5.0,
        shared_prefix_tokens=prefix,
    )


def test_small_max_num_seqs_caps_throughput() -> None:
    small, large = run("--max-num-seqs", "4"), run("--max-num-seqs", "64")
    assert large.output_tok_s > 2 * small.output_tok_s
    assert small.ttft_mean_s > 3 * large.ttft_mean_s  # requests queue behind 4 slots


def test_large_batches_raise_inter_token_latency() -> None:
    narrow = run("--max-num-seqs", "8", concurrency=256)
    wide = run("--max-num-seqs", "256", concurrency=256)
    assert wide.itl_mean_s > 2 * narrow.itl_mean_s
    assert wide.output_tok_s > narrow.output_tok_s


def test_more_kv_room_helps_until_memory_runs_out() -> None:
    # Llama 2 7B has no GQA: 512 KiB of KV per token, so a 24 GB card preempts under load.
    tight = run("--gpu-memory-utilization", "0.80", profile="llama-7b-24gb", concurrency=64)
    roomy = run("--gpu-memory-utilization", "0.95", profile="llama-7b-24gb", concurrency=64)
    assert roomy.kv_tokens > tight.kv_tokens
    assert roomy.preemptions < tight.preemptions
    assert roomy.output_tok_s > 1.1 * tight.output_tok_s
    cfg = resolve(parse(["m", "--gpu-memory-utilization", "0.99"])[0], get_profile("llama-7b-24gb"))
    plan = plan_memory(cfg, get_profile("llama-7b-24gb"))
    assert plan.startup_headroom_gib < plan.startup_transient_gib  # 0.99 fails to start


def test_eager_is_slower_than_cuda_graphs() -> None:
    graphs, eager = (
        run(concurrency=8, output=256),
        run("--enforce-eager", concurrency=8, output=256),
    )
    assert eager.itl_mean_s > 1.05 * graphs.itl_mean_s
    o0 = run("-O0", concurrency=8, output=256)
    assert o0.itl_mean_s == pytest.approx(eager.itl_mean_s, rel=0.02)


def test_tensor_parallel_trades_communication_for_memory() -> None:
    tp4 = run("-tp", "4", profile="llama-70b-4xh100", concurrency=64)
    tp2pp2 = run("-tp", "2", "-pp", "2", profile="llama-70b-4xh100", concurrency=64)
    assert tp4.output_tok_s > 0 and tp2pp2.output_tok_s > 0
    assert tp4.itl_mean_s < tp2pp2.itl_mean_s  # pipeline stages run one after another here
    dp2 = run("-tp", "2", "-dp", "2", profile="llama-70b-4xh100", concurrency=64)
    assert dp2.output_tok_s > 0


def test_prefix_caching_pays_off_on_shared_prefixes() -> None:
    cached = run(concurrency=16, prompt=2048, prefix=1536)
    uncached = run("--disable-prefix-caching", concurrency=16, prompt=2048, prefix=1536)
    assert cached.ttft_mean_s < 0.9 * uncached.ttft_mean_s
    assert cached.output_tok_s > 1.3 * uncached.output_tok_s


def test_batched_token_budget_trades_ttft_for_itl() -> None:
    # vLLM's tuning guide: a smaller budget gives better ITL (fewer prefill tokens stall the
    # decodes of a step), a larger one better TTFT (a long prompt is prefilled in fewer steps).
    big = run("--max-num-batched-tokens", "16384", concurrency=64, prompt=2048)
    small = run("--max-num-batched-tokens", "1024", concurrency=64, prompt=2048)
    assert small.itl_mean_s < big.itl_mean_s
    lone_big = run("--max-num-batched-tokens", "16384", concurrency=1, prompt=8192, output=16)
    lone_small = run("--max-num-batched-tokens", "512", concurrency=1, prompt=8192, output=16)
    assert lone_big.ttft_mean_s < 0.9 * lone_small.ttft_mean_s


def test_prediction_is_deterministic() -> None:
    assert run("--max-num-seqs", "32") == run("--max-num-seqs", "32")


def test_preemption_frees_blocks_and_requeues() -> None:
    profile = get_profile("llama-8b-h100")
    cfg = resolve(parse(["m", "--block-size", "16", "--disable-prefix-caching"])[0], profile)
    sched = Scheduler(cfg, profile, num_blocks=10)  # 160 tokens of KV
    a = SimRequest("a", list(range(64)), 200, 0.0)
    b = SimRequest("b", list(range(100, 164)), 200, 0.0)
    sched.add(a)
    sched.add(b)
    now = 0.0
    for _ in range(60):
        now += sched.step(now).duration
    assert sched.stats.preemptions >= 1
    assert sched.kv.used <= 10
    assert b in sched.waiting or a in sched.waiting


def test_prefix_blocks_are_shared_and_evicted_lru() -> None:
    kv = KVCache(num_blocks=4, block_size=4, prefix_caching=True)
    r1 = SimRequest("1", list(range(9)), 1, 0.0, hashes=block_hashes(list(range(9)), 4))
    assert kv.allocate(r1, 9) and kv.used == 3
    r1.num_computed = 9
    kv.register_full_blocks(r1)
    kv.release(r1)
    assert kv.used == 0
    r2 = SimRequest("2", list(range(9)), 1, 0.0, hashes=block_hashes(list(range(9)), 4))
    assert kv.match_prefix(r2) == 8  # two full blocks reused; the last token is recomputed
    assert kv.used == 2
    other = SimRequest("3", list(range(50, 66)), 1, 0.0)
    assert not kv.allocate(other, 16)  # 2 free blocks only
    kv.release(r2)
    assert kv.allocate(other, 16)  # evicts the cached blocks
