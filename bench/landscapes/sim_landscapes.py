"""Performance landscapes from the simulated server's model, for bench/search_efficiency.py.

Each function takes a trial's parameters (as the study stores them: vLLM dest names, and
``workload.*`` for searched load settings; a missing flag keeps vLLM's default, so ``{}`` is the
baseline) and returns the noise-free figures of a closed-loop load, or ``{"failed": message}``
where the simulated vLLM would not start (or would run out of memory under this load), with
vLLM's message. The figures come from `tui_tuner.sim.predict.predict_closed_loop`, which runs
the simulator's scheduler with no real time passing (0.1-0.5 s a configuration), so every
configuration of a landscape's space is computed once and kept in a table outside the
repository (``~/.cache/tui-tuner/landscapes/<name>.json``, or ``$TUI_TUNER_LANDSCAPES``): it is
generated data, rebuilt from this file; a configuration missing from it is computed on first
use (a landscape's whole table takes minutes the first time).

The prediction gives means; the percentiles are derived from them (p95 = 1.15 x mean latency,
TTFT p95 = 1.5 x its mean: a closed loop of equal requests spreads little but queues at the
start of each request). Build or extend the tables with every configuration of a study's space:

    .venv/bin/python bench/landscapes/sim_landscapes.py bench/search-chat-8b.yaml chat_8b
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui_tuner.core.space import flag_args
from tui_tuner.core.vllm_flags import lookup
from tui_tuner.sim.args import parse
from tui_tuner.sim.failures import (
    StartupFailure,
    check_args,
    check_device,
    check_kv_capacity,
    check_kv_memory,
    check_warmup_memory,
    engine_failure,
    load_crash,
)
from tui_tuner.sim.hardware import plan_memory, resolve
from tui_tuner.sim.predict import predict_closed_loop
from tui_tuner.sim.profiles import get_profile

#: Where the computed tables are kept: a cache, not part of the repository.
TABLES = Path(
    os.environ.get("TUI_TUNER_LANDSCAPES", Path.home() / ".cache" / "tui-tuner" / "landscapes")
)


@dataclass(frozen=True)
class SimLandscape:
    """One profile, fixed flags and closed-loop workload; the searched flags vary."""

    name: str
    profile: str
    flags: Mapping[str, object]
    streams: int
    prompt_tokens: int
    output_tokens: int
    duration_s: float = 20.0
    warmup_s: float = 5.0

    @functools.cached_property
    def table(self) -> dict[str, dict[str, Any]]:
        path = TABLES / f"{self.name}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def save(self) -> None:
        TABLES.mkdir(parents=True, exist_ok=True)
        path = TABLES / f"{self.name}.json"
        path.write_text(json.dumps(self.table, sort_keys=True, indent=0) + "\n")

    def __call__(self, params: Mapping[str, object]) -> dict[str, Any]:
        key = table_key(params)
        if key not in self.table:
            self.table[key] = self.compute(params)
        return dict(self.table[key])

    def compute(self, params: Mapping[str, object]) -> dict[str, Any]:
        streams = int(params.get("workload.streams", self.streams))  # type: ignore[call-overload]
        argv = ["model"]
        for key, value in {**self.flags, **params}.items():
            flag = lookup(key)
            if flag is not None:
                argv += flag_args(flag, value)
        args, _, given = parse(argv)
        profile = get_profile(self.profile)
        try:
            cfg = resolve(args, profile)
            check_args(args, given, cfg, profile)
            plan = plan_memory(cfg, profile)
            check_device(cfg, plan, profile)
            if plan.weights_gib > plan.free_at_start_gib:
                raise engine_failure(
                    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.96 GiB. "
                    f"GPU 0 has a total capacity of {plan.total_gib:.2f} GiB"
                )
            check_kv_memory(plan)
            check_kv_capacity(cfg, plan)
            check_warmup_memory(cfg, plan)
        except StartupFailure as failure:
            return {"failed": failure.text}
        crash = load_crash(cfg, plan)
        if crash is not None and streams * self.prompt_tokens >= crash.min_tokens:
            return {"failed": crash.message}
        p = predict_closed_loop(
            args,
            profile,
            concurrency=streams,
            prompt_tokens=self.prompt_tokens,
            output_tokens=self.output_tokens,
            duration_s=self.duration_s,
            warmup_s=self.warmup_s,
        )
        latency_ms, ttft_ms, itl_ms = (
            p.latency_mean_s * 1e3,
            p.ttft_mean_s * 1e3,
            p.itl_mean_s * 1e3,
        )
        return {
            "output_tok_s": p.output_tok_s,
            "total_tok_s": p.output_tok_s + p.requests_per_s * self.prompt_tokens,
            "requests_per_s": p.requests_per_s,
            "request_latency_p50_ms": latency_ms,
            "request_latency_p95_ms": latency_ms * 1.15,
            "request_latency_p99_ms": latency_ms * 1.25,
            "ttft_p50_ms": ttft_ms,
            "ttft_p95_ms": ttft_ms * 1.5,
            "ttft_p99_ms": ttft_ms * 2.0,
            "itl_p50_ms": itl_ms,
            "itl_p95_ms": itl_ms * 1.2,
            "tpot_p50_ms": itl_ms,
            "achieved_concurrency": float(streams),
        }


def table_key(params: Mapping[str, object]) -> str:
    """Parameters as one text, floats rounded (a stepped float may come back as 0.8999999)."""

    def norm(v: object) -> object:
        if isinstance(v, float):
            return int(v) if v.is_integer() else round(v, 6)
        return v

    return json.dumps({k: norm(v) for k, v in sorted(params.items())}, sort_keys=True)


#: Llama 3.1 8B on one H100: short chat turns, many streams (the batch size matters).
CHAT_8B = SimLandscape("chat_8b", "llama-8b-h100", {"max_model_len": 4096}, 256, 256, 128)
#: Llama 2 7B on a 24 GB card: long prompts, 16 streams (KV memory and batch size matter).
LONG_24GB = SimLandscape("long_24gb", "llama-7b-24gb", {"max_model_len": 4096}, 16, 3072, 128)
#: Llama 3.1 70B on four H100s (-tp 4): medium prompts, 64 streams.
TP_70B = SimLandscape(
    "tp_70b", "llama-70b-4xh100", {"max_model_len": 8192, "tensor_parallel_size": 4}, 64, 1024, 256
)

LANDSCAPES = {ls.name: ls for ls in (CHAT_8B, LONG_24GB, TP_70B)}


def chat_8b(params: Mapping[str, object]) -> dict[str, Any]:
    return CHAT_8B(params)


def long_24gb(params: Mapping[str, object]) -> dict[str, Any]:
    return LONG_24GB(params)


def tp_70b(params: Mapping[str, object]) -> dict[str, Any]:
    return TP_70B(params)


def build(config_path: str, name: str) -> None:
    """Compute every configuration of the study's space (and the baseline) into the table."""
    from tui_tuner.core.config_load import load_config

    space = load_config(Path(config_path)).space.enabled()
    landscape = LANDSCAPES[name]
    combos = itertools.product(*[p.choices() or () for p in space])
    todo = [{}, *({p.key: v for p, v in zip(space, c, strict=True)} for c in combos)]
    for i, params in enumerate(todo):
        landscape(params)
        if i % 50 == 0:
            print(f"{name}: {i}/{len(todo)}", file=sys.stderr, flush=True)
            landscape.save()
    landscape.save()


if __name__ == "__main__":
    build(sys.argv[1], sys.argv[2])

__all__ = ["LANDSCAPES", "SimLandscape", "chat_8b", "long_24gb", "tp_70b"]
