"""The example model's generative face: an OpenAI-compatible chat and completions API over the digits classifier.

The prompt holds a digit's 64 pixel values as text; the model answers "The digit is N." and then filler
tokens (" ok") up to the request's max_tokens (at most --output-tokens). Token timings are exactly known, for
accuracy checks of the profiler's TTFT and inter-token figures: the first token is due --first-token-ms after
the request arrived, then one every --token-ms, each written as its own server-sent event at its due time
(absolute times on the loop's clock, so lateness does not add up). With `stream_options.include_usage` the
last event carries the token counts.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from profiler.examples.model import FEATURES, Behaviour, misbehave, predict

PROMPT_PREFIX = "Which digit is this 8x8 image? Pixels:"
FILLER = " ok"


@dataclass(frozen=True)
class Timing:
    """When tokens are due: the first `first_token_ms` after the request arrived, then one every `token_ms`;
    at most `output_tokens` tokens an answer."""

    first_token_ms: float = 50.0
    token_ms: float = 10.0
    output_tokens: int = 16


def digit_prompt(pixels: list[int]) -> str:
    """The prompt that asks for one digit's class."""
    return f"{PROMPT_PREFIX} {' '.join(str(int(v)) for v in pixels)}. Answer:"


def _pixels(prompt: str) -> Any:
    """The 64 pixel values a prompt holds (after the prefix), zeros for any missing."""
    text = prompt.split(PROMPT_PREFIX, 1)[-1]
    values = [float(v) for v in re.findall(r"\d+(?:\.\d+)?", text)][:FEATURES]
    values += [0.0] * (FEATURES - len(values))
    return np.asarray(values, dtype=np.float32).reshape(1, FEATURES)


def answer_tokens(model: Any, prompt: str, behaviour: Behaviour, count: int) -> list[str]:
    """The answer to `prompt` as `count` tokens (cut short when `count` is smaller than the answer)."""
    label = predict(model, _pixels(prompt), behaviour)
    tokens = ["The", " digit", " is", f" {label[0] if label else '?'}", "."]
    tokens += [FILLER] * max(0, count - len(tokens))
    return tokens[:count]


def _prompt_of(document: dict[str, Any], chat: bool) -> str:
    if chat:
        messages = document["messages"]
        return " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    return str(document["prompt"])


def add_routes(app: web.Application, model: Any, behaviour: Behaviour, name: str, timing: Timing) -> None:
    """GET /v1/models, POST /v1/chat/completions and /v1/completions on `app`."""

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": name, "object": "model"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        return await _generate(request, True)

    async def completions(request: web.Request) -> web.StreamResponse:
        return await _generate(request, False)

    async def _generate(request: web.Request, is_chat: bool) -> web.StreamResponse:
        arrived = asyncio.get_running_loop().time()
        try:
            document = json.loads(await request.read())
            prompt = _prompt_of(document, is_chat)
            limit = int(document.get("max_tokens") or timing.output_tokens)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": {"message": f"bad request: {exc}"}}, status=400)
        if document.get("model") != name:
            return web.json_response({"error": {"message": f"unknown model {document.get('model')}"}}, status=404)
        await misbehave(behaviour)  # the classifier's flags too: a stall, a capacity limit, a leak
        tokens = answer_tokens(model, prompt, behaviour, max(1, min(limit, timing.output_tokens)))
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(tokens),
                 "total_tokens": len(prompt.split()) + len(tokens)}
        if document.get("stream"):
            include_usage = bool((document.get("stream_options") or {}).get("include_usage"))
            return await _stream(request, is_chat, tokens, usage if include_usage else None, arrived, timing)
        await _sleep_until(arrived + (timing.first_token_ms + (len(tokens) - 1) * timing.token_ms) / 1000)
        text = "".join(tokens)
        choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": text},
                                   "finish_reason": "length"} if is_chat else
                                  {"index": 0, "text": text, "finish_reason": "length"})
        return web.json_response({"id": "example", "object": "chat.completion" if is_chat else "text_completion",
                                  "created": int(time.time()), "model": name, "choices": [choice], "usage": usage})

    async def _stream(request: web.Request, is_chat: bool, tokens: list[str], usage: dict[str, int] | None,
                      arrived: float, timing: Timing) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        kind = "chat.completion.chunk" if is_chat else "text_completion"
        if is_chat:
            await response.write(_event(kind, name, {"index": 0, "delta": {"role": "assistant"}}))
        for i, token in enumerate(tokens):
            await _sleep_until(arrived + (timing.first_token_ms + i * timing.token_ms) / 1000)
            choice = ({"index": 0, "delta": {"content": token}, "finish_reason": None} if is_chat else
                      {"index": 0, "text": token, "finish_reason": None})
            await response.write(_event(kind, name, choice))
        if usage is not None:
            await response.write(b"data: " + json.dumps({"id": "example", "object": kind, "model": name,
                                                         "choices": [], "usage": usage}).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)


def _event(kind: str, name: str, choice: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps({"id": "example", "object": kind, "model": name,
                                   "choices": [choice]}).encode() + b"\n\n"


async def _sleep_until(deadline: float) -> None:
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)
