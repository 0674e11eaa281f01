"""A minimal closed-loop streaming client, to check the live simulator against its model.

N clients each keep one streaming completion in flight and count the output tokens that arrive
inside a window, the way `predict_closed_loop` counts them. Prompts are token-id lists, so the
prompt length is exact with or without a tokenizer. Used by bench/sim_fidelity.py and the tests.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class ProbeResult:
    tokens: int  # output tokens that arrived inside the window
    finished: int  # requests that completed inside the window
    window_s: float

    @property
    def output_tok_s(self) -> float:
        return self.tokens / self.window_s


async def closed_loop(
    url: str,
    *,
    streams: int,
    prompt_tokens: int,
    output_tokens: int,
    warmup_s: float,
    window_s: float,
    headers: dict[str, str] | None = None,
) -> ProbeResult:
    start = time.monotonic()
    t0, t1 = start + warmup_s, start + warmup_s + window_s
    tokens = finished = counter = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def client() -> None:
            nonlocal tokens, finished, counter
            while time.monotonic() < t1:
                counter += 1
                ids = [(counter * 7919 + i * 104729) % 120000 + 100 for i in range(prompt_tokens)]
                body = {"prompt": ids, "max_tokens": output_tokens, "stream": True,
                        "ignore_eos": True}  # fmt: skip
                async with session.post(url + "/v1/completions", json=body) as response:
                    response.raise_for_status()
                    async for line in response.content:
                        now = time.monotonic()
                        if now > t1:
                            break  # closing the stream aborts the request on the server
                        if line.startswith(b"data: {") and now >= t0:
                            tokens += b'"text":""' not in line
                    else:
                        finished += t0 <= time.monotonic() <= t1

        await asyncio.gather(*(client() for _ in range(streams)))
    return ProbeResult(tokens, finished, window_s)
