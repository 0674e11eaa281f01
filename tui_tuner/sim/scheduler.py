"""A continuous-batching scheduler in the manner of vLLM V1, on a simulated KV cache.

Pure and clock-free: the caller decides when a step starts (`now`) and how time advances, so the
same engine drives the live HTTP server and the offline predictor used by tests and benchmarks.

Each step: running requests first (one decode token each, or their next prefill chunk), then
waiting requests while there is room (max-num-seqs, the token budget, free KV blocks). A running
request that cannot get a block preempts the newest running request (recompute), as vLLM does.
With prefix caching, full prompt blocks are hashed and reused while they stay cached (LRU).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from tui_tuner.sim.hardware import EngineConfig, step_seconds
from tui_tuner.sim.profiles import Profile


@dataclass(eq=False)
class SimRequest:
    rid: str
    prompt_ids: Sequence[int]
    max_tokens: int
    arrival: float
    num_computed: int = 0
    output_len: int = 0
    first_token_time: float | None = None
    scheduled_time: float | None = None
    finish_time: float | None = None
    preemptions: int = 0
    cached_tokens: int = 0
    blocks: list[int | None] = field(default_factory=list)  # block hash, or None if private
    hashes: list[int] = field(default_factory=list)  # chained hashes of full prompt blocks
    registered: int = 0  # prompt blocks already offered to the prefix cache

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def pending(self) -> int:
        return self.prompt_len + self.output_len - self.num_computed

    @property
    def finished(self) -> bool:
        return self.output_len >= self.max_tokens


class KVCache:
    """Block accounting with reference-counted, LRU-evicted prefix blocks."""

    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool) -> None:
        self.num_blocks, self.block_size, self.prefix_caching = (
            num_blocks,
            block_size,
            prefix_caching,
        )
        self.used = 0
        self._refs: dict[int, int] = {}
        self._evictable: OrderedDict[int, None] = OrderedDict()

    @property
    def free(self) -> int:
        return self.num_blocks - self.used

    @property
    def usage(self) -> float:
        return self.used / self.num_blocks if self.num_blocks else 0.0

    def reset_prefix_cache(self) -> None:
        self._evictable.clear()

    def _take_fresh(self, count: int) -> None:
        self.used += count
        overflow = self.used + len(self._evictable) - self.num_blocks
        for _ in range(max(0, overflow)):
            self._evictable.popitem(last=False)

    def match_prefix(self, req: SimRequest) -> int:
        """Attach cached full prompt blocks to a new request; return the tokens they cover."""
        if not self.prefix_caching:
            return 0
        bs, hits = self.block_size, 0
        limit = (req.prompt_len - 1) // bs  # the last prompt token is always computed
        for h in req.hashes[:limit]:
            if h in self._refs:
                self._refs[h] += 1
            elif h in self._evictable:
                del self._evictable[h]
                self._refs[h] = 1
                self.used += 1
            else:
                break
            req.blocks.append(h)
            hits += 1
        req.registered = hits
        return hits * bs

    def allocate(self, req: SimRequest, tokens_after: int) -> bool:
        need = -(-tokens_after // self.block_size) - len(req.blocks)
        if need <= 0:
            return True
        if need > self.free:
            return False
        self._take_fresh(need)
        req.blocks.extend([None] * need)
        return True

    def register_full_blocks(self, req: SimRequest) -> None:
        """Give hashes to prompt blocks that became full, so later requests can reuse them."""
        if not self.prefix_caching:
            return
        full = min(req.num_computed, req.prompt_len, len(req.hashes) * self.block_size)
        full //= self.block_size
        for i in range(req.registered, full):
            req.registered = i + 1
            if req.blocks[i] is not None:
                continue
            h = req.hashes[i]
            if h in self._refs or h in self._evictable:
                continue  # another request holds the same content: keep this copy private
            self._refs[h] = 1
            req.blocks[i] = h

    def release(self, req: SimRequest) -> None:
        for h in reversed(req.blocks):
            self.used -= 1 if h is None else 0
            if h is not None:
                self._refs[h] -= 1
                if self._refs[h] == 0:
                    del self._refs[h]
                    self.used -= 1
                    self._evictable[h] = None
        req.blocks.clear()


def block_hashes(token_ids: Sequence[int], block_size: int) -> list[int]:
    hashes, parent = [], 0
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = hash((parent, tuple(token_ids[start : start + block_size])))
        hashes.append(parent)
    return hashes


@dataclass
class StepOutcome:
    duration: float
    tokens: int  # tokens computed (prefill + decode)
    prompt_tokens: int
    emitted: list[SimRequest]  # requests that produced one new output token this step
    finished: list[SimRequest]
    preempted: int


@dataclass
class SchedulerStats:
    prompt_tokens: int = 0
    generation_tokens: int = 0
    preemptions: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    steps: int = 0
    busy_seconds: float = 0.0


class Scheduler:
    def __init__(self, cfg: EngineConfig, profile: Profile, num_blocks: int) -> None:
        self.cfg, self.profile = cfg, profile
        self.kv = KVCache(num_blocks, cfg.block_size, cfg.prefix_caching)
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.stats = SchedulerStats()

    def add(self, req: SimRequest) -> None:
        if self.cfg.prefix_caching:
            req.hashes = block_hashes(req.prompt_ids, self.cfg.block_size)
        self.waiting.append(req)

    def abort(self, req: SimRequest) -> None:
        if req in self.running:
            self.running.remove(req)
            self.kv.release(req)
        elif req in self.waiting:
            self.waiting.remove(req)
            self.kv.release(req)

    @property
    def idle(self) -> bool:
        return not self.running and not self.waiting

    def _preempt_last(self) -> SimRequest:
        victim = self.running.pop()
        self.kv.release(victim)
        victim.num_computed = victim.registered = 0
        victim.preemptions += 1
        self.waiting.appendleft(victim)
        self.stats.preemptions += 1
        return victim

    def step(self, now: float) -> StepOutcome:
        cfg = self.cfg
        budget = cfg.max_num_batched_tokens
        plan: list[tuple[SimRequest, int]] = []
        preempted = 0
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.pending, budget)
            if cfg.long_prefill_token_threshold and req.pending > 1:
                n = min(n, cfg.long_prefill_token_threshold)
            preempted_self = False
            while not self.kv.allocate(req, req.num_computed + n):
                preempted += 1
                if self._preempt_last() is req:
                    preempted_self = True
                    break
            if preempted_self:
                break
            plan.append((req, n))
            budget -= n
            i += 1
        while not preempted and self.waiting and budget > 0:
            if len(self.running) >= cfg.max_num_seqs:
                break
            req = self.waiting[0]
            if req.num_computed == 0 and not req.blocks:
                hit = self.kv.match_prefix(req)
                self.stats.prefix_queries += req.prompt_len
                self.stats.prefix_hits += hit
                req.num_computed = req.cached_tokens = hit
            n = req.pending
            if not cfg.chunked_prefill and n > budget:
                break
            if cfg.long_prefill_token_threshold:
                n = min(n, cfg.long_prefill_token_threshold)
            n = min(n, budget)
            if not self.kv.allocate(req, req.num_computed + n):
                break
            self.waiting.popleft()
            self.running.append(req)
            if req.scheduled_time is None:
                req.scheduled_time = now
            plan.append((req, n))
            budget -= n
        return self._execute(plan, preempted, now)

    def _execute(
        self, plan: list[tuple[SimRequest, int]], preempted: int, now: float
    ) -> StepOutcome:
        tokens = sum(n for _, n in plan)
        attended = sum(n * (r.num_computed + (n + 1) / 2) for r, n in plan)
        context = sum(r.num_computed for r, _ in plan)
        pure_decode = all(r.pending == 1 and r.output_len > 0 for r, _ in plan)
        duration = 0.0
        if plan:
            duration = step_seconds(
                self.cfg,
                self.profile,
                tokens=tokens,
                num_seqs=len(plan),
                attended=attended,
                context_sum=context,
                pure_decode=pure_decode,
            )
        end = now + duration
        emitted, finished, prompt_tokens = [], [], 0
        for req, n in plan:
            prompt_tokens += max(0, min(req.num_computed + n, req.prompt_len) - req.num_computed)
            req.num_computed += n
            self.kv.register_full_blocks(req)
            if req.pending == 0:
                req.output_len += 1
                if req.first_token_time is None:
                    req.first_token_time = end
                emitted.append(req)
                if req.finished:
                    req.finish_time = end
                    finished.append(req)
        for req in finished:
            self.running.remove(req)
            self.kv.release(req)
        stats = self.stats
        stats.prompt_tokens += prompt_tokens
        stats.generation_tokens += len(emitted)
        stats.steps += 1 if plan else 0
        stats.busy_seconds += duration
        return StepOutcome(duration, tokens, prompt_tokens, emitted, finished, preempted)
