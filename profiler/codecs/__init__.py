"""Codecs: turn samples into request bodies and response bodies into predictions. Pure, no sockets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from profiler.dataset import Sample


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


def make_codec(protocol: str, **options: Any) -> Codec:
    """The codec for a protocol name from the config."""
    if protocol == "v2-rest":
        from profiler.codecs.v2 import V2RestCodec

        return V2RestCodec(**options)
    raise ValueError(f"unknown protocol {protocol!r}")
