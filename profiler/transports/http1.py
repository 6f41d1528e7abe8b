"""A lean HTTP/1.1 keep-alive client on asyncio Protocols: the load engine's default HTTP transport.

aiohttp's client builds a request object, a response object, header multidicts and a stream
reader per request; at tens of thousands of requests per second that is most of the generator's
CPU. This client writes a request that was assembled once per (path, body) and parses only what
the engine needs from the answer: the status, the body (Content-Length or chunked, or up to the
close), and whether the server keeps the connection open. One timer per request bounds it.
Failures are TransportError with kind timeout, connection or http_status, like transports.http.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

from profiler.errors import TransportError

MAX_CACHED_REQUESTS = 65_536
"""Assembled requests kept for reuse; bodies beyond this are assembled per send (memory stays bounded)."""
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 256 * 1024 * 1024
_HEAD_OK, _HEAD_BAD, _HEAD_INTERIM = 0, 1, 2
Callback = Callable[[int, bytes, "TransportError | None"], None]
"""(status, body, error): how a connection reports the end of one exchange."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    __slots__ = ("_buf", "_callback", "_chunked", "_close", "_length", "_owner", "_status", "_timeout_s", "_timer",
                 "closed", "transport")

    def __init__(self, owner: Http1Transport) -> None:
        self._owner = owner
        self.transport: asyncio.Transport | None = None
        self._callback: Callback | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timeout_s = 0.0
        self._buf = b""
        self._status = 0
        self._length = -1
        self._chunked = False
        self._close = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass

    def start(self, request: bytes, callback: Callback, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        """Write a request; `callback(status, body, error)` runs once: on the answer, a failure or the timeout."""
        self._callback = callback
        self._buf = b""
        self._status = 0
        self._timeout_s = timeout_s
        self._timer = loop.call_later(timeout_s, self._expire)
        assert self.transport is not None
        self.transport.write(request)

    def _expire(self) -> None:
        self._timer = None
        # Its answer may still come; the connection cannot carry another request.
        self._fail(TransportError("timeout", f"no answer within {self._timeout_s:g} s"))

    def _complete(self, status: int, body: bytes, error: TransportError | None) -> None:
        callback = self._callback
        self._callback = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if error is None and not self.closed:
            self._owner._release(self)  # back in the pool before the caller runs, ready for its next request
        if callback is not None:
            try:
                callback(status, body, error)
            except Exception as exc:  # a consumer's bug must not break the connection
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "load engine result callback failed", "exception": exc})

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        if self._callback is None:
            # Bytes nobody asked for: the stream is out of step, so the connection is useless.
            self.abort()
            return
        if not self._status:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    self._fail(TransportError("connection", "response head larger than 64 KiB"))
                    return
                self._buf = buf
                return
            state = self._parse_head(buf[:end])
            if state != _HEAD_OK:
                if state == _HEAD_INTERIM:
                    self._buf = b""
                    if len(buf) > end + 4:
                        self.data_received(buf[end + 4:])
                return
            buf = buf[end + 4:]
        if self._chunked:
            try:
                body = _dechunk(buf)
            except TransportError as exc:
                self._fail(exc)
                return
            if body is None:
                if len(buf) > MAX_BODY_BYTES:
                    self._fail(TransportError("connection", "chunked response larger than 256 MiB"))
                    return
                self._buf = buf
                return
            self._finish(body)
        elif self._length >= 0:
            if len(buf) < self._length:
                self._buf = buf
                return
            self._finish(buf[:self._length] if len(buf) > self._length else buf)
        else:
            self._buf = buf  # body runs to the close

    def _parse_head(self, head: bytes) -> int:
        try:
            lines = head.split(b"\r\n")
            version, _, rest = lines[0].partition(b" ")
            status = int(rest[:3])
        except ValueError:
            self._fail(TransportError("connection", f"not an HTTP response: {head[:60]!r}"))
            return _HEAD_BAD
        if not version.startswith(b"HTTP/1."):
            self._fail(TransportError("connection", f"not an HTTP/1.x response: {head[:60]!r}"))
            return _HEAD_BAD
        if 100 <= status < 200:
            return _HEAD_INTERIM  # 100 Continue and the like: the real head follows
        self._status = status
        self._length = -1
        self._chunked = False
        self._close = version == b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                try:
                    self._length = int(value)
                except ValueError:
                    self._fail(TransportError("connection", f"bad Content-Length {value.strip()!r}"))
                    return _HEAD_BAD
            elif key == b"transfer-encoding":
                self._chunked = b"chunked" in value.lower()
            elif key == b"connection":
                lowered = value.strip().lower()
                self._close = lowered == b"close" or (self._close and lowered != b"keep-alive")
        if status in (204, 304):
            self._length = 0
        return _HEAD_OK

    def _finish(self, body: bytes) -> None:
        self._buf = b""
        status = self._status
        self._status = 0
        if self._close:
            self.abort()
        self._complete(status, body, None)

    def _fail(self, error: TransportError) -> None:
        self.abort()
        self._complete(0, b"", error)

    def abort(self) -> None:
        """Drop the connection (a reply can no longer be matched to its request)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._callback is not None:
            if self._status and self._length < 0 and not self._chunked:
                self._complete(self._status, self._buf, None)  # a body delimited by the close
            else:
                detail = f"{type(exc).__name__}: {exc}" if exc else "the server closed the connection mid-response"
                self._complete(0, b"", TransportError("connection", detail))
        self._buf = b""
        self._owner._lost(self)


def _dechunk(buf: bytes) -> bytes | None:
    """The body of a complete chunked message in `buf`, or None while it is incomplete."""
    parts: list[bytes] = []
    pos = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
        except ValueError:
            raise TransportError("connection", f"bad chunk size {buf[pos:eol][:20]!r}") from None
        start = eol + 2
        if size == 0:
            # Trailers, then an empty line.
            if buf.find(b"\r\n", start) < 0:
                return None
            end = buf.find(b"\r\n\r\n", start - 2)
            if end < 0:
                return None
            return b"".join(parts)
        if len(buf) < start + size + 2:
            return None
        parts.append(buf[start:start + size])
        pos = start + size + 2


class Http1Transport:
    """POSTs pre-encoded bodies over a bounded pool of keep-alive HTTP/1.1 connections to one base URL."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        max_connections: int = 64,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the lean HTTP/1.1 client speaks plain http:// only, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._common = (f"Host: {parts.netloc}\r\nContent-Type: {content_type}\r\n{extra}").encode("latin-1")
        self._requests: dict[str, dict[bytes, bytes]] = {}
        self._cached = 0
        self._idle: list[_Connection] = []
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._open = 0
        self._all: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _request(self, method: str, path: str, body: bytes) -> bytes:
        by_body = self._requests.get(path)
        if by_body is None:
            by_body = self._requests[path] = {}
        request = by_body.get(body)
        if request is None:
            request = (f"{method} {self._prefix}{path} HTTP/1.1\r\n".encode("latin-1") + self._common
                       + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            if self._cached < MAX_CACHED_REQUESTS:
                by_body[body] = request
                self._cached += 1
        return request

    async def _acquire(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        while self._open >= self._max_connections:
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                handed_late = waiter.result() if waiter.done() and not waiter.cancelled() else None
                if handed_late is not None:
                    self._release(handed_late)  # pass on a connection handed over as we were cancelled
                raise
            if handed is not None and not handed.closed:
                return handed
        self._open += 1
        try:
            transport, conn = await asyncio.get_running_loop().create_connection(
                lambda: _Connection(self), self._host, self._port)
            if conn.transport is None:
                conn.transport = transport
        except OSError as exc:
            self._open -= 1
            self._wake()
            raise TransportError("connection", f"cannot connect to {self._host}:{self._port}: "
                                               f"{exc.strerror or exc}") from None
        except BaseException:
            self._open -= 1
            self._wake()
            raise
        self._all.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.closed:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # a slot is free: open a new connection
                return

    def _lost(self, conn: _Connection) -> None:
        if conn in self._all:
            self._all.discard(conn)
            self._open -= 1
            self._wake()

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        conn = await self._acquire_within()
        waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()

        def finished(status: int, body: bytes, error: TransportError | None) -> None:
            if waiter.done():
                return
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result((status, body))

        conn.start(request, finished, loop, self._timeout_s)
        return await waiter

    async def _acquire_within(self) -> _Connection:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._acquire()
        except TimeoutError:
            raise TransportError("timeout", f"no connection within {self._timeout_s:g} s") from None

    def submit(self, path: str, body: bytes, done: Callable[[bytes, TransportError | None], None]) -> None:
        """POST without a coroutine: `done(body, error)` runs when the answer (or a failure) arrives.

        The load engine's hot path: with a kept-alive connection idle, no task, coroutine or future
        is made for the request; only when a connection must be opened or waited for does a task do it.
        """
        request = self._request("POST", path, body)

        def finished(status: int, payload: bytes, error: TransportError | None) -> None:
            if error is None and status >= 300:
                error = _status_error(status, payload)
            done(payload, error)

        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.start(request, finished, self._loop or asyncio.get_running_loop(), self._timeout_s)
                return
        task = asyncio.get_running_loop().create_task(self._submit_slow(request, finished))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _submit_slow(self, request: bytes, finished: Callback) -> None:
        try:
            conn = await self._acquire_within()
        except TransportError as exc:
            finished(0, b"", exc)
            return
        except asyncio.CancelledError:
            finished(0, b"", TransportError("connection", "the client was closed"))
            raise
        self._loop = asyncio.get_running_loop()
        conn.start(request, finished, self._loop, self._timeout_s)

    async def send(self, path: str, body: bytes) -> bytes:
        """POST and return the body of a 2xx response."""
        status, payload = await self._exchange(self._request("POST", path, body))
        if status >= 300:
            raise _status_error(status, payload)
        return payload

    async def probe(self, path: str) -> int:
        """GET and return the status, 0 if the connection failed or timed out."""
        request = (f"GET {self._prefix}{path} HTTP/1.1\r\n".encode("latin-1") + self._common
                   + b"Content-Length: 0\r\n\r\n")
        try:
            status, _ = await self._exchange(request)
        except TransportError:
            return 0
        return status

    async def close(self) -> None:
        """Close every connection."""
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._all):
            conn.abort()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        self._waiters.clear()
        await asyncio.sleep(0)  # let connection_lost run


def _status_error(status: int, payload: bytes) -> TransportError:
    snippet = payload[:200].decode("utf-8", errors="replace")
    return TransportError("http_status", f"HTTP {status}: {snippet}", status)
