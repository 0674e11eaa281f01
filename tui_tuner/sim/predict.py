"""What the performance model predicts for a closed-loop load, without any real time passing.

N clients each keep one request in flight (GuideLLM's `concurrent` profile). This is the figure
the live server must reproduce (bench/sim_fidelity.py), and what the direction tests check.
"""

from __future__ import annotations

from dataclasses import dataclass

from tui_tuner.core.vllm_flags import ServeArgs
from tui_tuner.sim.hardware import plan_memory, resolve
from tui_tuner.sim.profiles import Profile
from tui_tuner.sim.scheduler import Scheduler, SimRequest


@dataclass(frozen=True)
class Prediction:
    output_tok_s: float
    requests_per_s: float
    ttft_mean_s: float
    itl_mean_s: float
    latency_mean_s: float
    preemptions: int
    kv_tokens: int
    completed: int


def predict_closed_loop(
    args: ServeArgs,
    profile: Profile,
    *,
    concurrency: int,
    prompt_tokens: int,
    output_tokens: int,
    duration_s: float = 60.0,
    warmup_s: float = 10.0,
    shared_prefix_tokens: int = 0,
) -> Prediction:
    """Simulate `concurrency` clients for `duration_s` simulated seconds after `warmup_s`.

    Prompts are distinct token sequences except for `shared_prefix_tokens` leading tokens.
    Only requests that finish inside the window count toward latency; tokens generated inside
    the window count toward throughput, as a client sampling the stream would see them.
    """
    cfg = resolve(args, profile)
    plan = plan_memory(cfg, profile)
    replicas = [Scheduler(cfg, profile, plan.num_blocks) for _ in range(cfg.dp)]
    clocks = [0.0] * cfg.dp
    counter = 0

    def new_request(now: float) -> SimRequest:
        nonlocal counter
        counter += 1
        prefix = list(range(shared_prefix_tokens))
        body = [(counter * 7919 + k * 104729) % 1_000_003 + 1_000_000 for k in range(prompt_tokens)]
        ids = (prefix + body)[:prompt_tokens] if shared_prefix_tokens else body
        return SimRequest(f"r{counter}", ids, output_tokens, now)

    for c in range(concurrency):
        replicas[c % cfg.dp].add(new_request(0.0))
    end = warmup_s + duration_s
    window_tokens = completed = preemptions = 0
    ttft = itl = lat = 0.0
    while min(clocks) < end:
        k = clocks.index(min(clocks))
        sched = replicas[k]
        if sched.idle:
            clocks[k] = end
            continue
        before = sched.stats.preemptions
        out = sched.step(clocks[k])
        clocks[k] += out.duration if out.duration else 1e-3
        now = clocks[k]
        if now > warmup_s:
            window_tokens += len(out.emitted) if now <= end else 0
            preemptions += sched.stats.preemptions - before
        for req in out.finished:
            if warmup_s < now <= end:
                completed += 1
                first = req.first_token_time or now
                ttft += first - req.arrival
                lat += now - req.arrival
                itl += (now - first) / max(1, req.output_len - 1)
            sched.add(new_request(now))
    n = max(1, completed)
    return Prediction(
        output_tok_s=window_tokens / duration_s,
        requests_per_s=completed / duration_s,
        ttft_mean_s=ttft / n,
        itl_mean_s=itl / n,
        latency_mean_s=lat / n,
        preemptions=preemptions,
        kv_tokens=plan.kv_tokens,
        completed=completed,
    )
