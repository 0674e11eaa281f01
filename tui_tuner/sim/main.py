"""`tui-tuner sim-serve MODEL [vllm serve flags]`: start-up, failures and shutdown like vLLM's.

The start-up walks vLLM's phases (bind the port, check arguments, check free GPU memory, load
weights, profile, compile, size the KV cache, capture graphs, listen) with simulated durations,
and fails where vLLM would fail, with vLLM's messages and exit codes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence

from tui_tuner import __version__
from tui_tuner.core.vllm_flags import ServeArgs
from tui_tuner.sim import args as sim_args
from tui_tuner.sim.compile_cache import CompileCache
from tui_tuner.sim.failures import (
    StartupFailure,
    check_args,
    check_device,
    check_kv_capacity,
    check_kv_memory,
    check_warmup_memory,
    load_crash,
    load_failure,
)
from tui_tuner.sim.hardware import (
    EngineConfig,
    MemoryPlan,
    compile_family,
    plan_memory,
    resolve,
    startup_seconds,
)
from tui_tuner.sim.live import LiveReplica
from tui_tuner.sim.logs import ENGINE, VllmLog
from tui_tuner.sim.profiles import Profile, ProfileError, get_profile, load_profile_file
from tui_tuner.sim.server import ServerState, SimApi, serve, stop
from tui_tuner.sim.tokens import TokenCodec


class SimServer:
    def __init__(
        self, args: ServeArgs, sim: sim_args.SimOptions, given: set[str], profile: Profile
    ) -> None:
        self.args, self.sim, self.given, self.profile = args, sim, given, profile
        self.log = VllmLog()
        self.scale = sim.time_scale
        self.exit_code = 0
        self._stop = asyncio.Event()
        self._last_logged: dict[int, tuple[int, int, float, int, int]] = {}

    async def _phase(self, sim_seconds: float) -> None:
        if sim_seconds > 0:
            await asyncio.sleep(sim_seconds / self.sim.startup_scale)

    def _bind(self) -> socket.socket:
        host = str(self.args.get("host") or "127.0.0.1")
        port = int(str(self.args.get("port")))
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            sock.close()
            raise StartupFailure(
                f"OSError: [Errno {err.errno}] error while attempting to bind on address "
                f"('{host}', {port}): {err.strerror.lower() if err.strerror else err}"
            ) from None
        return sock

    async def start(self) -> tuple[EngineConfig, MemoryPlan, socket.socket]:
        log, profile = self.log, self.profile
        log.info(
            "api_server.py:1870",
            f"vLLM API server version 0.33.0 (SIMULATED by tui-tuner "
            f"{__version__}: no GPU is used; profile {profile.name}, time scale "
            f"{self.scale:g}x, start-up {self.sim.startup_scale:g}x)",
        )
        shown = {k: "***" if k == "api_key" else v for k, v in self.args.values.items()}
        log.info("utils.py:253", f"non-default args: {json.dumps(shown, default=str)}")
        sock = self._bind()
        cfg = resolve(self.args, profile)
        await self._phase(profile.startup.process_s * 0.6)
        check_args(self.args, self.given, cfg, profile)
        plan = plan_memory(cfg, profile, self.sim.gpu_busy_gib)
        family = compile_family(cfg, self.args.model, profile)
        cache = CompileCache.from_env(os.environ, family) if cfg.compiled else None
        dummy = self.sim.load_format == "dummy"
        warm = cache is not None and cache.warm
        phases = startup_seconds(cfg, profile, plan, dummy_weights=dummy, compile_cached=warm)
        log.info("model.py:1745", f"Resolved architecture: LlamaForCausalLM ({profile.model.name})")
        await self._phase(phases["process"] * 0.4)
        eng = ENGINE.format(dp=0)
        log.info(
            "core.py:98",
            f"Initializing a V1 LLM engine (v0.33.0) with config: "
            f"model='{self.args.model}', max_seq_len={cfg.max_model_len}, "
            f"tensor_parallel_size={cfg.tp}, pipeline_parallel_size={cfg.pp}, "
            f"data_parallel_size={cfg.dp}, enforce_eager={not cfg.compiled}, "
            f"max_num_seqs={cfg.max_num_seqs}, max_num_batched_tokens="
            f"{cfg.max_num_batched_tokens}, block_size={cfg.block_size}",
            eng,
        )
        if "CUDA_VISIBLE_DEVICES" in os.environ:  # what the tuner handed out (study.workers)
            visible = os.environ["CUDA_VISIBLE_DEVICES"]
            log.info("parallel_state.py:1", f"simulated GPUs: CUDA_VISIBLE_DEVICES={visible}", eng)
        check_device(cfg, plan, profile)
        if plan.weights_gib > plan.free_at_start_gib:
            await self._phase(phases["load_weights"] * plan.free_at_start_gib / plan.weights_gib)
            raise load_failure(plan, self.log)
        await self._phase(phases["load_weights"])
        if dummy:
            log.info("dummy_loader.py:35", "Loading dummy weights (random values)", eng)
        log.info(
            "gpu_model_runner.py:5089",
            f"Model loading took {plan.weights_gib:.4f} GiB "
            f"memory and {phases['load_weights']:.6f} seconds",
            eng,
        )
        if phases["compile"]:
            await self._compile(cache, phases["compile"], cfg.max_num_batched_tokens)
        await self._phase(phases["profile"])
        check_kv_memory(plan)
        log.info(
            "gpu_worker.py:772", f"Available KV cache memory: {plan.kv_cache_gib:.2f} GiB", eng
        )
        if self.args.get("max_model_len") == -1:  # -1 / auto: the longest that fits
            fitted = min(profile.model.max_position, plan.kv_tokens)
            log.info("model.py:1010", f"Auto-fit max_model_len: {fitted}", eng)
            cfg = dataclasses.replace(cfg, max_model_len=fitted)
        check_kv_capacity(cfg, plan)
        log.info(
            "kv_cache_utils.py:1147",
            f"GPU KV cache size: {plan.kv_tokens:,} tokens, "
            f"Maximum concurrency for {cfg.max_model_len:,} tokens per request: "
            f"{plan.kv_tokens / cfg.max_model_len:.2f}x",
            eng,
        )
        await self._phase(phases["capture"])
        check_warmup_memory(cfg, plan)
        if cfg.capture_sizes:
            log.info(
                "gpu_model_runner.py:6517",
                f"Graph capturing finished in "
                f"{phases['capture']:.0f} secs, took {plan.graph_pool_gib:.2f} GiB",
                eng,
            )
        total = sum(phases.values())
        log.info(
            "core.py:395",
            f"init engine (profile, create kv cache, warmup model) took "
            f"{total - phases['process']:.2f} s (compilation: {phases['compile']:.2f} s)",
            eng,
        )
        return cfg, plan, sock

    async def _compile(self, cache: CompileCache | None, seconds: float, tokens: int) -> None:
        """torch.compile: built (a cache miss) or loaded from ``VLLM_CACHE_ROOT`` (a hit), with
        vLLM's log lines; the first build of a family leaves its marker for the next start."""
        log, eng = self.log, ENGINE.format(dp=0)
        warm = cache is not None and cache.warm
        if cache is not None:
            cache.prepare()
            log.info(
                "backends.py:1101",
                f"Using cache directory: {cache.local} for vLLM's torch.compile",
                eng,
            )
        await self._phase(seconds)
        span = f"(1, {tokens})"
        if warm:
            text = f"Directly load the compiled graph(s) for compile range {span} from the cache"
            log.info("backends.py:296", f"{text}, took {seconds:.3f} s", eng)
        else:
            log.info("backends.py:399", f"Compiling a graph for compile range {span} takes "
                     f"{seconds:.2f} s", eng)  # fmt: skip
            if cache is not None:
                cache.record()
        log.info("monitor.py:34", f"torch.compile takes {seconds:.2f} s in total", eng)

    def _stats_line(self, replica: LiveReplica) -> None:
        if self.args.get("disable_log_stats"):
            return
        m, g = replica.scheduler.stats, replica.gauges
        last = self._last_logged.get(replica.index, (0, 0, 0.0, 0, 0))
        dt = max(1e-9, replica.sim_now - last[2])
        prompt_rate = (m.prompt_tokens - last[0]) / dt
        gen_rate = (m.generation_tokens - last[1]) / dt
        hits = (m.prefix_hits - last[3]) / max(1, m.prefix_queries - last[4])
        self._last_logged[replica.index] = (
            m.prompt_tokens,
            m.generation_tokens,
            replica.sim_now,
            m.prefix_hits,
            m.prefix_queries,
        )
        text = (
            f"Engine {replica.index:03d}: Avg prompt throughput: {prompt_rate:.1f} tokens/s, "
            f"Avg generation throughput: {gen_rate:.1f} tokens/s, Running: {g.running} reqs, "
            f"Waiting: {g.waiting} reqs, GPU KV cache usage: {g.kv_usage * 100:.1f}%, "
            f"Prefix cache hit rate: {hits * 100:.1f}%"
        )
        self.log.info("loggers.py:275", text)
        if replica.lag_s > 1.0:
            self.log.warning(
                "sim/live.py:1",
                (
                    f"SIMULATOR LAG: {replica.lag_s:.1f} s behind schedule at time scale "
                    f"{self.scale:g}x; this machine cannot keep up, measured figures are distorted"
                ),
            )

    def _fatal(self, message: str) -> None:
        self.log.raw(
            f'Traceback (most recent call last):\n  File "vllm/v1/engine/core.py", '
            f"line 1, in step\n{message}"
        )
        self.log.error(
            "core_client.py:610",
            "Engine core proc EngineCore_DP0 died unexpectedly, shutting down client.",
        )
        self.exit_code = 1
        self._state.healthy = False
        asyncio.get_running_loop().call_later(0.2 / max(1.0, self.scale) + 0.1, self._stop.set)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        starting = asyncio.create_task(self.start())
        stopping = asyncio.create_task(self._stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # SIGTERM or SIGINT during start-up: stop at once
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            self.log.info("launcher.py:110", "Shutting down during start-up.")
            return 0
        stopping.cancel()
        try:
            cfg, plan, sock = starting.result()
        except StartupFailure as failure:
            self.log.raw(failure.text)
            return failure.code
        codec = TokenCodec(str(self.sim.tokenizer or self.args.model), self.sim.seed)
        self.log.info("tokens.py:1", f"Counting prompt tokens with {codec.source}")
        crash = load_crash(cfg, plan)
        replicas = [
            LiveReplica(
                i,
                cfg,
                self.profile,
                plan.num_blocks,
                time_scale=self.scale,
                noise=self.sim.noise,
                seed=self.sim.seed,
                next_piece=codec.next_piece,
                on_stats=self._stats_line,
                on_fatal=self._fatal,
                load_crash=crash,
            )
            for i in range(cfg.dp)
        ]
        name = str(self.args.get("served_model_name") or self.args.model)
        api_key = self.args.get("api_key") or os.environ.get("VLLM_API_KEY")
        sim_info = {
            "simulated": "true",
            "profile": self.profile.name,
            "time_scale": f"{self.scale:g}",
            "seed": str(self.sim.seed),
        }
        cache_info = {
            "block_size": str(cfg.block_size),
            "num_gpu_blocks": str(plan.num_blocks),
            "gpu_memory_utilization": str(cfg.gpu_memory_utilization),
            "kv_cache_size_tokens": str(plan.kv_tokens),
            "kv_cache_max_concurrency": f"{plan.kv_tokens / cfg.max_model_len:.2f}",
            "enable_prefix_caching": str(cfg.prefix_caching),
        }
        self._state = ServerState(
            name,
            self.args.model,
            cfg.max_model_len,
            str(api_key) if api_key else None,
            os.environ.get("VLLM_SERVER_DEV_MODE") == "1",
            codec,
            replicas,
            sim_info,
            cache_info,
        )
        tasks = [asyncio.create_task(r.run()) for r in replicas]
        runner = await serve(SimApi(self._state), sock)
        host, port = sock.getsockname()[:2]
        self.log.info("api_server.py:1971", f"Starting vLLM server on http://{host}:{port}")
        self.log.info(
            "launcher.py:46",
            "Available routes are: /health, /v1/models, "
            "/v1/completions, /v1/chat/completions, /metrics, /version",
        )
        self.log.raw(f"INFO:     Started server process [{os.getpid()}]")
        self.log.raw("INFO:     Waiting for application startup.")
        self.log.raw("INFO:     Application startup complete.")
        await self._stop.wait()
        self.log.info("launcher.py:110", "Shutting down FastAPI HTTP server.")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stop(runner)
        if self.exit_code == 0:  # a crash exits at once; a requested stop tears the engine down
            await self._phase(self.profile.startup.shutdown_s)
        return self.exit_code


def main(argv: Sequence[str]) -> int:
    serve_args, sim, given = sim_args.parse(argv)
    try:
        profile = (
            load_profile_file(sim.profile_file) if sim.profile_file else get_profile(sim.profile)
        )
    except ProfileError as err:
        print(f"vllm serve: error: argument --sim-profile-file: {err}", file=sys.stderr)
        return 2
    if sim.noise < 0 or sim.gpu_busy_gib < 0:
        print("vllm serve: error: --sim-noise and --sim-gpu-busy-gib must not be negative",
              file=sys.stderr)  # fmt: skip
        return 2
    if sim.time_scale <= 0 or sim.startup_scale <= 0:
        print(
            "vllm serve: error: --sim-time-scale and --sim-startup-scale must be positive",
            file=sys.stderr,
        )
        return 2
    print(
        f"tui-tuner SIMULATED vLLM server: {profile.description}; no GPU is used; "
        f"time scale {sim.time_scale:g}x",
        flush=True,
    )
    try:
        return asyncio.run(SimServer(serve_args, sim, given, profile).run())
    except KeyboardInterrupt:
        return 0
