"""What every tensor codec shares: the declared input tensors and how predictions are read."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import quote

import orjson

from profiler.codecs.predictions import PredictionReader
from profiler.codecs.tensors import TensorSpec, resolve_specs
from profiler.core.errors import IdMismatchError
from profiler.dataset import Sample


def path_segment(name: str) -> str:
    """A model name or version as one URL path segment: '/', '?', '#', '%', blanks and non-ASCII
    percent-encoded (UTF-8), so no name can end the path or break the request line."""
    return quote(name, safe="-._~:@!$&'()*+,;=")


def loads(body: bytes) -> Any:
    """Parse a JSON answer: orjson (the hot path), else the standard library (NaN, Infinity, huge integers).
    ValueError (UnicodeDecodeError included) when it is not JSON, or nested too deeply to read."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


class TensorCodec:
    """Holds the input specs (one tensor by default), the output to read, and the prediction reader."""

    def __init__(
        self,
        input_name: str = "input-0",
        datatype: str = "FP32",
        *,
        inputs: Sequence[TensorSpec] | None = None,
        output_name: str | None = None,
        reader: PredictionReader | None = None,
    ) -> None:
        self.specs: tuple[TensorSpec, ...] = tuple(inputs or (TensorSpec(input_name, datatype),))
        self.output_name = output_name
        self.reader = reader or PredictionReader()

    def _resolved(self, samples: Sequence[Sample]) -> tuple[TensorSpec, ...]:
        """The specs with every shape known (a single shapeless input takes the first sample's length)."""
        if not samples:
            raise ValueError("encode needs at least one sample")
        if any(spec.shape is None for spec in self.specs):
            self.specs = resolve_specs(self.specs, samples[0])
        return self.specs


class Codec(Protocol):
    """One wire protocol's request and response shapes."""

    name: str
    content_type: str
    infer_path: str
    ready_paths: tuple[str, ...]

    def encode(self, samples: Sequence[Sample]) -> bytes:
        """The request body that asks for a prediction for each sample, in order."""
        ...

    def request_id(self, samples: Sequence[Sample]) -> str | None:
        """The id the request for these samples carries (V2's `id`), or None for a protocol without one."""
        ...

    def decode(self, body: bytes, count: int, request_id: str | None = None) -> list[Any]:
        """`count` predictions (class index or name) from a response body; raises DecodeError.

        `request_id`: the id its request carried; an answer naming another raises IdMismatchError.
        """
        ...


def request_id_of(samples: Sequence[Sample]) -> str:
    """A request's V2 `id`: its sample's id, or `first..last` for a batch.

    Not unique per request (a sample is sent again on each pass over the hold-out set; the protocol asks
    for no uniqueness), but it costs nothing per request, since it is encoded into the body once, and it
    names the sample when an answer comes back under another request's id."""
    first = samples[0].id
    return first if len(samples) == 1 else f"{first}..{samples[-1].id}"


def check_answer_id(answer: object, request_id: str | None) -> None:
    """IdMismatchError when the answer carries an id (a non-empty one) that is not its request's."""
    if request_id is not None and answer and answer != request_id:
        raise IdMismatchError(f"the answer's id {str(answer)[:80]!r} is not its request's {request_id!r}")
