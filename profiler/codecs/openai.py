"""OpenAI-compatible generation (vLLM, TGI, llama.cpp's server, Ollama, SGLang): `/v1/chat/completions` and
`/v1/completions`, streamed as server-sent events or answered whole. Pure.

A request carries one hold-out sample: its prompt, or its chat messages (a prompt alone becomes one user
message). A streamed answer is read once it has ended: its events are split, each content event is given the
kernel receive time of the read that brought its last byte (the transport's marks), and the token timeline
(`core.results.TokenTimes`) comes from those times. Predictions are the generated text's scored answer
(`measure.text.TextRule`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import Any

import orjson

from profiler.codecs.base import loads
from profiler.core.errors import DecodeError
from profiler.core.results import TokenTimes
from profiler.dataset import Sample
from profiler.measure.text import TextRule

Marks = Sequence[tuple[int, int]]
"""(body offset, received_ns) per read of a streamed answer, in order: the bytes before the offset had arrived
by that time (monotonic ns, the kernel's receive time)."""

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"


class OpenAICodec:
    """openai-chat or openai-completions: request bodies from samples, text and token timings from answers."""

    content_type = "application/json"

    def __init__(self, model: str, *, chat: bool = True, stream: bool = True, include_usage: bool = True,
                 max_tokens: int = 64, temperature: float = 0.0, stop: list[str] | None = None,
                 extra_body: dict[str, Any] | None = None, rule: TextRule | None = None,
                 ready_path: str | None = None, infer_path: str | None = None) -> None:
        self.name = "openai-chat" if chat else "openai-completions"
        self.chat = chat
        self.stream = stream
        self.infer_path = infer_path or (CHAT_PATH if chat else COMPLETIONS_PATH)
        self.ready_paths: tuple[str, ...] = (ready_path or MODELS_PATH,)
        self.rule = rule or TextRule()
        fields: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": temperature}
        if stop:
            fields["stop"] = list(stop)
        if stream:
            fields["stream"] = True
            if include_usage:
                fields["stream_options"] = {"include_usage": True}
        fields.update(extra_body or {})
        self._fields = fields

    def encode(self, samples: Sequence[Sample]) -> bytes:
        """The request for the first sample (generative requests carry one prompt each)."""
        if not samples:
            raise ValueError("encode needs at least one sample")
        value = samples[0].inputs[0]
        body = dict(self._fields)
        if self.chat:
            body["messages"] = value if isinstance(value, list) else [{"role": "user", "content": str(value)}]
        elif isinstance(value, list):
            raise ValueError(f"{samples[0].where}: openai-completions takes a prompt, not chat messages")
        else:
            body["prompt"] = str(value)
        return orjson.dumps(body)

    def request_id(self, samples: Sequence[Sample]) -> str | None:
        """None: an OpenAI answer's `id` is the server's own, not the request's, so answers are not checked."""
        return None

    def decode(self, body: bytes, count: int, request_id: str | None = None) -> list[Any]:
        """The scored answer of a whole or streamed response (one per request); raises DecodeError."""
        text, _ = self.read(body, None)
        return [text]

    def read(self, body: bytes, marks: Marks | None) -> tuple[str, TokenTimes]:
        """The scored answer and the token timeline: from the events of a stream (timed by `marks`, when the
        transport gave them), or from a whole JSON answer (token counts only). Raises DecodeError."""
        if _is_stream(body):
            text, tokens = self._read_stream(body, marks or ())
        else:
            text, tokens = self._read_whole(body)
        return self.rule.answer(text), tokens

    def _read_whole(self, body: bytes) -> tuple[str, TokenTimes]:
        try:
            answer = loads(body)
        except ValueError as exc:
            raise DecodeError(f"the answer is not JSON: {exc}") from None
        choice = _first_choice(answer)
        if self.chat:
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else None
        else:
            text = choice.get("text")
        if not isinstance(text, str):
            where = "choices[0].message.content" if self.chat else "choices[0].text"
            raise DecodeError(f"the answer has no {where} string")
        output, prompt = _usage(answer)
        return text, TokenTimes(0, [], max(output, 0), prompt, counted=output < 0)

    def _read_stream(self, body: bytes, marks: Marks) -> tuple[str, TokenTimes]:
        parts: list[str] = []
        times: list[int] = []
        output = prompt = -1
        mark = 0
        last = len(marks) - 1
        for end, data in sse_events(body):
            if data == b"[DONE]":
                break
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise DecodeError(f"a stream event is not JSON: {data[:80]!r}") from None
            if not isinstance(event, dict):
                raise DecodeError(f"a stream event is not a JSON object: {data[:80]!r}")
            used_output, used_prompt = _usage(event)
            if used_output >= 0:
                output, prompt = used_output, used_prompt
            content = self._content(event)
            if not content:
                continue
            parts.append(content)
            while mark < last and marks[mark][0] < end:
                mark += 1
            times.append(marks[mark][1] if marks else 0)
        first = times[0] if times else 0
        gaps = [b - a for a, b in pairwise(times)] if marks else []
        counted = output < 0
        return "".join(parts), TokenTimes(first, gaps, len(times) if counted else output, prompt, counted)

    def _content(self, event: dict[str, Any]) -> str:
        """The text a stream event adds ('' for a role-only delta, the usage event, and the like)."""
        if "error" in event:
            raise DecodeError(f"the stream reported an error: {str(event['error'])[:200]}")
        choices = event.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        if self.chat:
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
        else:
            content = choice.get("text")
        return content if isinstance(content, str) else ""


def _is_stream(body: bytes) -> bool:
    head = body[:64].lstrip()
    return head.startswith((b"data:", b"event:", b":", b"id:", b"retry:"))


def _first_choice(answer: Any) -> dict[str, Any]:
    if isinstance(answer, dict) and "error" in answer:
        raise DecodeError(f"the answer is an error: {str(answer['error'])[:200]}")
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise DecodeError("the answer has no choices")
    return choices[0]


def _usage(answer: dict[str, Any]) -> tuple[int, int]:
    """(completion tokens, prompt tokens) from `usage`, -1 for each one missing."""
    usage = answer.get("usage")
    if not isinstance(usage, dict):
        return -1, -1
    output, prompt = usage.get("completion_tokens"), usage.get("prompt_tokens")
    return (output if isinstance(output, int) else -1), (prompt if isinstance(prompt, int) else -1)


def sse_events(body: bytes) -> Iterator[tuple[int, bytes]]:
    """(offset just past the event's last data line, its data) for each server-sent event with data.

    Lines end in LF or CRLF; an empty line ends an event; several `data:` lines are joined by LF (the
    SSE rules); comments (':') and other fields are skipped.
    """
    data: list[bytes] = []
    end = 0
    pos = 0
    size = len(body)
    while pos < size:
        eol = body.find(b"\n", pos)
        if eol < 0:
            eol = size
        line = body[pos:eol]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if data:
                yield end, b"\n".join(data)
                data = []
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
            end = eol + 1
        pos = eol + 1
    if data:
        yield end, b"\n".join(data)
