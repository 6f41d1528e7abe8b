"""What every tensor codec shares: the declared input tensors and how predictions are read."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import quote

import orjson

from profiler.codecs.predictions import PredictionReader
from profiler.codecs.tensors import TensorSpec, resolve_specs
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

    def decode(self, body: bytes, count: int) -> list[Any]:
        """`count` predictions (class index or name) from a response body; raises DecodeError."""
        ...
