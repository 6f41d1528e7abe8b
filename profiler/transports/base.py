"""The transport protocol the engine drives, and the pieces a transport can be built from.

Every transport offers the same six operations. `submit` is the load engine's hot path: it sends and
returns at once, and the transport calls `done` exactly once when the request ends (an answer, an
error, or its own timeout), so the engine needs no task per request. `set_polled` and `poll` let the
engine read answers at its own wakes instead of the event loop waking for each one; a transport that
cannot do that says so by returning False and keeps waking the loop itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from profiler.core.errors import TransportError

Done = Callable[[bytes, TransportError | None, int], None]
"""A transport's report of one request: (body, error, received_ns); received_ns is the kernel's receive time
on the monotonic clock, or 0 when the transport cannot read it."""
Send = Callable[[str, bytes], Awaitable[bytes]]
Marks = list[tuple[int, int]]
"""A streamed answer's reads: (body offset, received_ns) for each, in order; the bytes before the offset had
arrived by that time (the kernel's receive time on the monotonic clock)."""
StreamDone = Callable[[bytes, TransportError | None, int, Marks], None]
"""A streaming transport's report of one request: Done's three, and the answer's marks."""


class Transport(Protocol):
    """Sends requests to one target; failures are profiler.core.errors.TransportError."""

    def submit(self, path: str, body: bytes, done: Done) -> None:
        """POST `body` to `path` and return at once; `done` is called exactly once when it ends."""
        ...

    def set_polled(self, polled: bool) -> bool:
        """Ask for polled mode (True) or leave it; returns whether answers are now read only by poll()."""
        ...

    def poll(self) -> None:
        """In polled mode: take every answer that has arrived, without waiting."""
        ...

    async def send(self, path: str, body: bytes) -> bytes:
        """POST `body` to `path` and wait; the response body on success."""
        ...

    async def probe(self, path: str) -> int:
        """GET `path`; the HTTP status (0 when nothing answered)."""
        ...

    async def close(self) -> None:
        """Release connections; requests still open end as errors."""
        ...


@runtime_checkable
class StreamingTransport(Transport, Protocol):
    """A transport that can time each read of a streamed answer (the lean HTTP/1.1 client)."""

    def submit_stream(self, path: str, body: bytes, done: StreamDone) -> None:
        """As submit; `done` also gets the answer's marks (see Marks)."""
        ...


class TaskSubmitter:
    """`submit` for a transport whose primitive is an awaitable `send`: one task per request.

    The task is bounded by `timeout_s`, so every submitted request ends and calls `done`. The library
    clients (aiohttp) and the function transport of the tests are built on it.
    """

    def __init__(self, send: Send, timeout_s: float) -> None:
        self._send = send
        self._timeout_s = timeout_s
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, path: str, body: bytes, done: Done) -> None:
        """Start the request in a task; `done` gets its body or error."""
        task = asyncio.get_running_loop().create_task(self._one(path, body, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one(self, path: str, body: bytes, done: Done) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                payload = await self._send(path, body)
        except TransportError as exc:
            done(b"", exc, 0)
        except TimeoutError:
            done(b"", TransportError("timeout", f"no answer within {self._timeout_s:g} s"), 0)
        except asyncio.CancelledError:
            done(b"", TransportError("connection", "the transport was closed with the request open"), 0)
            raise
        else:
            done(payload, None, 0)

    async def close(self) -> None:
        """End every open request (each reports a connection error)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class FunctionTransport:
    """A transport that calls a plain async function: tests the layers above without sockets."""

    def __init__(self, handler: Send, ready: bool = True, timeout_s: float = 10.0) -> None:
        self._handler = handler
        self._ready = ready
        self._tasks = TaskSubmitter(handler, timeout_s)

    def submit(self, path: str, body: bytes, done: Done) -> None:
        """The handler's answer (or error) goes to `done`."""
        self._tasks.submit(path, body, done)

    def set_polled(self, polled: bool) -> bool:
        """Never polled: answers come as the handler returns."""
        return False

    def poll(self) -> None:
        """Nothing to read."""

    async def send(self, path: str, body: bytes) -> bytes:
        """Whatever the handler returns (or raises)."""
        return await self._handler(path, body)

    async def probe(self, path: str) -> int:
        """200 when ready, else 503."""
        return 200 if self._ready else 503

    async def close(self) -> None:
        """End open requests."""
        await self._tasks.close()
