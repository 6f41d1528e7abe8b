"""Transports: send one request body, return the response body. The only code that touches sockets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol


class Transport(Protocol):
    """Sends requests to one target; raises profiler.errors.TransportError on failure."""

    async def send(self, path: str, body: bytes) -> bytes:
        """POST `body` to `path`; the response body on success."""
        ...

    async def probe(self, path: str) -> int:
        """GET `path`; the HTTP status (0 when nothing answered)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class FunctionTransport:
    """A transport that calls a plain function: tests the layers above without sockets."""

    def __init__(self, handler: Callable[[str, bytes], Awaitable[bytes]], ready: bool = True) -> None:
        self._handler = handler
        self._ready = ready

    async def send(self, path: str, body: bytes) -> bytes:
        """Whatever the handler returns (or raises)."""
        return await self._handler(path, body)

    async def probe(self, path: str) -> int:
        """200 when ready, else 503."""
        return 200 if self._ready else 503

    async def close(self) -> None:
        """Nothing to release."""
