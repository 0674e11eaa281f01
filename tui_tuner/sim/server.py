"""The simulated server's HTTP API: vLLM's OpenAI-compatible routes on aiohttp.

Routes: /health, /v1/models, /v1/completions, /v1/chat/completions (streaming or not, with usage),
/metrics, /version, and /reset_prefix_cache (only with VLLM_SERVER_DEV_MODE=1, as in vLLM).
With --api-key, every /v1 route needs `Authorization: Bearer <key>`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tui_tuner.sim.live import EngineDeadError, Handle, LiveReplica
from tui_tuner.sim.metrics import render
from tui_tuner.sim.scheduler import SimRequest
from tui_tuner.sim.tokens import TokenCodec

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ServerState:
    served_name: str
    model: str
    max_model_len: int
    api_key: str | None
    dev_mode: bool
    codec: TokenCodec
    replicas: list[LiveReplica]
    sim_info: dict[str, str]
    cache_info: dict[str, str]
    healthy: bool = True


def _error(status: int, message: str, kind: str = "BadRequestError") -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return web.json_response(body, status=status)


class SimApi:
    def __init__(self, state: ServerState) -> None:
        self.s = state
        self._ids = itertools.count()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth], client_max_size=64 * 2**20)
        app.router.add_get("/health", self.health)
        app.router.add_get("/version", self.version)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        if self.s.dev_mode:
            app.router.add_post("/reset_prefix_cache", self.reset_prefix_cache)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        key = self.s.api_key
        denied = request.headers.get("Authorization", "") != f"Bearer {key}"
        if key and request.path.startswith("/v1") and denied:
            return web.json_response({"error": "Unauthorized"}, status=401)
        return await handler(request)

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.s.healthy else 503)

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "0.33.0", "simulated": True})

    async def metrics(self, request: web.Request) -> web.Response:
        engines = [(r.metrics, r.gauges, r.scheduler.stats) for r in self.s.replicas]
        lag = max((r.lag_s for r in self.s.replicas), default=0.0)
        worst = max((r.max_lag_s for r in self.s.replicas), default=0.0)
        text = render(self.s.served_name, engines, self.s.cache_info, self.s.sim_info, lag, worst)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def models(self, request: web.Request) -> web.Response:
        card = {
            "id": self.s.served_name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "vllm",
            "root": self.s.model,
            "parent": None,
            "max_model_len": self.s.max_model_len,
            "simulated": self.s.sim_info,
        }
        return web.json_response({"object": "list", "data": [card]})

    async def reset_prefix_cache(self, request: web.Request) -> web.Response:
        for replica in self.s.replicas:
            replica.scheduler.kv.reset_prefix_cache()
        return web.json_response({"success": True})

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "Request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(400, "Request body must be a JSON object.")
        model = body.get("model", self.s.served_name)
        if model != self.s.served_name:
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
        if not self.s.healthy:
            return _error(500, "EngineCore encountered an issue.", "InternalServerError")
        return body

    def _budget(self, body: dict[str, Any], prompt_len: int, default: int | None) -> int | str:
        raw = body.get("max_completion_tokens", body.get("max_tokens", default))
        room = self.s.max_model_len - prompt_len
        if raw is None:
            raw = room
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            return f"max_tokens must be at least 1, got {raw}."
        if prompt_len + raw > self.s.max_model_len:
            return (
                f"This model's maximum context length is {self.s.max_model_len} tokens. However, "
                f"you requested {prompt_len + raw} tokens ({prompt_len} in the messages, {raw} in "
                "the completion). Please reduce the length of the messages or completion."
            )
        return raw

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = self.s.codec.encode(prompt)
        elif isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt):
            ids = list(prompt)
        else:
            return _error(400, "prompt must be a string, a list of token ids, or a one-item list.")
        return await self._generate(request, body, ids, chat=False, default_max=16)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) for m in messages)
        ):
            return _error(400, "messages must be a non-empty list of message objects.")
        ids = self.s.codec.encode_chat(messages)
        return await self._generate(request, body, ids, chat=True, default_max=None)

    async def _generate(
        self,
        request: web.Request,
        body: dict[str, Any],
        ids: list[int],
        *,
        chat: bool,
        default_max: int | None,
    ) -> web.StreamResponse:
        if body.get("n", 1) != 1:
            return _error(400, "The simulated server supports n=1 only.")
        number = next(self._ids)
        rng = self.s.codec.generator(number)
        budget = self._budget(body, len(ids), default_max)
        if isinstance(budget, str):
            return _error(400, budget)
        finish = "length"
        no_limit = body.get("max_tokens") is None and body.get("max_completion_tokens") is None
        if not body.get("ignore_eos") and no_limit:
            natural = 1 + int(rng.expovariate(1 / 200))
            if natural < budget:
                budget, finish = natural, "stop"
        replica = min(self.s.replicas, key=lambda r: r.load)
        handle = Handle(SimRequest(f"{number}", ids, budget, 0.0), rng, finish_reason=finish)
        try:
            replica.submit(handle)
        except EngineDeadError as err:
            return _error(500, str(err), "InternalServerError")
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.UUID(int=rng.getrandbits(128)).hex}"
        try:
            if body.get("stream"):
                options = body.get("stream_options")
                include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
                return await self._stream(request, handle, rid, chat, include_usage)
            return await self._whole(handle, rid, chat)
        except ConnectionResetError:
            # The client went away mid-stream: vLLM aborts the request (done below) and moves on.
            return web.Response(status=499)
        finally:
            if not handle.done:
                replica.abort(handle)

    def _usage(self, handle: Handle) -> dict[str, Any]:
        p, c = handle.request.prompt_len, handle.request.output_len
        details = {"cached_tokens": handle.request.cached_tokens}
        return {
            "prompt_tokens": p,
            "total_tokens": p + c,
            "completion_tokens": c,
            "prompt_tokens_details": details,
        }

    async def _whole(self, handle: Handle, rid: str, chat: bool) -> web.Response:
        while not handle.done:
            handle.ready.clear()
            await handle.ready.wait()
        if handle.error is not None:
            return _error(500, str(handle.error), "InternalServerError")
        text = "".join(handle.pieces)
        created, name = int(time.time()), self.s.served_name
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": handle.finish_reason,
                "stop_reason": None,
            }
            obj = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": handle.finish_reason,
                "stop_reason": None,
            }
            obj = "text_completion"
        return web.json_response(
            {
                "id": rid,
                "object": obj,
                "created": created,
                "model": name,
                "choices": [choice],
                "usage": self._usage(handle),
            }
        )

    async def _stream(
        self, request: web.Request, handle: Handle, rid: str, chat: bool, include_usage: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        created, name = int(time.time()), json.dumps(self.s.served_name)
        obj = "chat.completion.chunk" if chat else "text_completion"
        head = f'data: {{"id":"{rid}","object":"{obj}","created":{created},"model":{name},'
        if chat:
            first = '"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'  # noqa: E501
            await response.write((head + first).encode())
            token_fmt = '"choices":[{{"index":0,"delta":{{"content":{}}},"logprobs":null,"finish_reason":null}}]}}\n\n'  # noqa: E501
        else:
            token_fmt = '"choices":[{{"index":0,"text":{},"logprobs":null,"finish_reason":null,"stop_reason":null}}]}}\n\n'  # noqa: E501
        while True:
            await handle.ready.wait()
            handle.ready.clear()
            if handle.error is not None:
                error = {
                    "error": {
                        "message": str(handle.error),
                        "type": "InternalServerError",
                        "code": 500,
                    }
                }
                await response.write(f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode())
                return response
            pieces, handle.pieces = handle.pieces, []
            if pieces:
                out = "".join(head + token_fmt.format(json.dumps(p)) for p in pieces)
                await response.write(out.encode())
            if handle.done:
                break
        final: dict[str, Any] = {"index": 0, "finish_reason": handle.finish_reason}
        final.update(stop_reason=None, logprobs=None)
        if chat:
            final["delta"] = {}
        else:
            final["text"] = ""
        tail = head + f'"choices":[{json.dumps(final)}]}}\n\n'
        if include_usage:
            tail += head + f'"choices":[],"usage":{json.dumps(self._usage(handle))}}}\n\n'
        await response.write((tail + "data: [DONE]\n\n").encode())
        return response


#: Seconds a stopping server lets the requests it is serving finish.
SHUTDOWN_GRACE_S = 1.0


async def serve(api: SimApi, sock: Any) -> web.AppRunner:
    """Start serving on an already bound socket (vLLM binds early and listens when ready)."""
    # A stop cancels the requests still being served after SHUTDOWN_GRACE_S, as vLLM's engine
    # going down ends them; aiohttp's own default waits 60 s for them.
    runner = web.AppRunner(
        api.app(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE_S
    )
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    return runner


async def stop(runner: web.AppRunner) -> None:
    await asyncio.wait_for(runner.cleanup(), timeout=SHUTDOWN_GRACE_S + 4)
