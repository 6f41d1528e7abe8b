"""A lean HTTP/1.1 keep-alive client on non-blocking sockets: the load engine's default HTTP transport.

aiohttp's client builds a request object, a response object, header multidicts and a stream
reader per request; at tens of thousands of requests per second that is most of the generator's
CPU. This client writes a request that was assembled once per (path, body) and parses only what
the engine needs from the answer: the status, the body (Content-Length or chunked, or up to the
close), and whether the server keeps the connection open. Failures are TransportError with kind
timeout, connection or http_status, like transports.http.

Answers are timed by the kernel. Each socket asks for receive timestamps (SO_TIMESTAMPNS), so an
answer's time is when its last bytes reached the socket, not when the event loop got round to
reading them (on a busy or virtualised core that is tens of microseconds to milliseconds later).

Every connection sits in one private epoll set, the inbox. Normally the event loop watches the
inbox and reads answers as they arrive. In polled mode (the engine's choice at high rates) the
loop does not watch it: the engine drains the inbox at each of its own wakes, so answers cost no
wake of their own, and their times, taken by the kernel, stay exact. Timeouts are found by one
sweep every tenth of the timeout (at most 100 ms), not by a timer per request.

A server closes a kept-alive connection when it has been idle for its keep-alive timeout (uvicorn:
5 s, aiohttp: 75 s). A request sent on it at that moment meets the close: a reset, or the end of
the stream before any answer. The server never saw that request, so it is sent once more on a new
connection, as browsers do, instead of being counted against the model as a connection error.
Only a request on a connection that has answered before and then sat idle for KEEPALIVE_RACE_IDLE_S
or longer (no server's keep-alive timeout is shorter; a connection in use that closes before its
answer is the model failing the request, and counts), and only before any byte of its answer
arrived; its latency still runs from its intended time.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Protocol

from profiler.core.errors import TransportError
from profiler.core.redact import redact_text
from profiler.core.units import NS_PER_S
from profiler.core.url import parse_target_url
from profiler.transports.base import Done, Marks, StreamDone
from profiler.transports.sockets import ANCILLARY_BYTES, READ_BYTES, clock_offset_ns, connect, received_ns

MAX_CACHED_REQUESTS = 65_536
"""Assembled requests kept for reuse; bodies beyond this are assembled per send (memory stays bounded)."""
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 256 * 1024 * 1024
"""The largest answer body accepted; a head that announces more is refused at once (a connection error)."""
_HEAD_OK, _HEAD_BAD, _HEAD_INTERIM = 0, 1, 2
KEEPALIVE_RACE_IDLE_S = 1.0
"""A connection idle for less than this was not closed by a keep-alive timeout (the shortest in common servers
is gunicorn's 2 s), so a close before its answer is the model's doing: an error, not a second try."""
OnStatus = Callable[[int], None]
"""Told the HTTP status of a complete answer, before the request's `done` runs (probe wants it)."""


class _Inbox:
    """The set of sockets with answers to read: epoll on Linux (itself watchable by the loop), else a selector."""

    def __init__(self) -> None:
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._selector = None if self._epoll is not None else selectors.DefaultSelector()

    def fileno(self) -> int:
        return self._epoll.fileno() if self._epoll is not None else self._selector.fileno()  # type: ignore[union-attr]

    def add(self, fd: int) -> None:
        if self._epoll is not None:
            self._epoll.register(fd, select.EPOLLIN)
        else:
            self._selector.register(fd, selectors.EVENT_READ)  # type: ignore[union-attr]

    def discard(self, fd: int) -> None:
        try:
            if self._epoll is not None:
                self._epoll.unregister(fd)
            else:
                self._selector.unregister(fd)  # type: ignore[union-attr]
        except (KeyError, OSError, ValueError):
            pass

    def ready(self) -> list[int]:
        """The descriptors with something to read (or an end), without waiting."""
        if self._epoll is not None:
            return [fd for fd, _ in self._epoll.poll(0)]
        return [key.fd for key, _ in self._selector.select(0)]  # type: ignore[union-attr]

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
        else:
            self._selector.close()  # type: ignore[union-attr]


class _Pool(Protocol):
    """What a connection tells the transport that pools it."""

    timeout_s: float  # a request's timeout (for the error that says it passed)
    race_idle_ns: int  # how long a connection must have sat idle for a close to be the keep-alive race

    def started(self, conn: _Connection) -> None:
        """A request went out on `conn`: its deadline is watched."""
        ...

    def watch_write(self, conn: _Connection) -> None:
        """`conn` has more of a request to write: call its flush() when the socket can take it."""
        ...

    def unwatch_write(self, conn: _Connection) -> None:
        """`conn` has nothing left to write."""
        ...

    def finished(self, conn: _Connection, reusable: bool) -> None:
        """The request on `conn` ended; a `reusable` connection takes the next request."""
        ...

    def forget(self, conn: _Connection) -> None:
        """`conn` closed: out of the pool and its count."""
        ...

    def resend(self, request: bytes, done: Done, deadline_ns: int, on_status: OnStatus | None,
               marks: Marks | None = None) -> None:
        """A request that met the server closing its kept-alive connection goes once more (see the module),
        on another connection, by its first try's deadline (monotonic ns)."""
        ...


class _Connection:
    """One keep-alive connection carrying one request at a time."""

    __slots__ = ("_buf", "_chunk_pos", "_chunked", "_close", "_done", "_free_ns", "_heard", "_length", "_marks",
                 "_may_retry", "_on_status", "_out", "_pool", "_received_ns", "_request", "_spans", "_status", "_view",
                 "_views", "answered", "closed", "deadline_ns", "fd", "sock")

    def __init__(self, pool: _Pool, sock: socket.socket, views: list[memoryview]) -> None:
        self._pool = pool
        self.sock = sock
        self.fd = sock.fileno()
        self._views = views  # the read buffer, shared by the pool's connections (reads never interleave)
        self._view = views[0]
        self._done: Done | None = None  # the open request's report
        self._on_status: OnStatus | None = None
        self._out: memoryview | None = None
        self._buf: bytes | bytearray = b""  # a partial answer (a bytearray while it grows)
        self._status = 0
        self._length = -1
        self._chunked = False
        self._close = False
        self._received_ns = 0
        self._request = b""
        self._may_retry = False  # whether a close before the answer may be the keep-alive race (see start)
        self._marks: Marks | None = None  # a streamed answer's (body offset, received_ns) per read
        self._spans: list[tuple[int, int]] = []  # a chunked body's chunks so far: (start, length) in _buf
        self._chunk_pos = 0  # where the next chunk's size line starts in _buf
        self._free_ns = 0  # when the last answer ended (monotonic ns): the connection is idle since
        self._heard = False  # whether any byte of the current answer has arrived
        self.answered = 0  # answers this connection has carried
        self.deadline_ns = 0
        self.closed = False

    def start(self, request: bytes, done: Done, timeout_ns: int, on_status: OnStatus | None = None,
              retried: bool = False, marks: Marks | None = None) -> None:
        """Write a request; `done(body, error, received_ns)` runs once: on the answer, a failure or the timeout.
        An answer with a status of 300 or more is an http_status error (with its body and time). `on_status`,
        if given, is told the status of a complete answer first. `retried`: this is the request's second try.
        `marks`, for a streamed answer, gets (body offset, received_ns) for each read of its body (offsets in
        the body as `done` gets it, the chunked framing taken out)."""
        self._done = done
        self._on_status = on_status
        self._request = request
        self._heard = False
        self._buf = b""
        self._status = 0
        self._marks = marks
        self._chunk_pos = 0
        if self._spans:
            self._spans = []
        now_ns = time.monotonic_ns()
        self.deadline_ns = now_ns + timeout_ns
        # A second try only on a connection idle long enough for a keep-alive timeout to have closed it.
        self._may_retry = (not retried and self.answered > 0
                           and now_ns - self._free_ns >= self._pool.race_idle_ns)
        self._pool.started(self)
        try:
            sent = self.sock.send(request)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._fail(TransportError("connection", f"{type(exc).__name__}: {exc}"))
            return
        if sent < len(request):
            self._out = memoryview(request)[sent:]
            self._pool.watch_write(self)

    def flush(self) -> None:
        """Write more of a request the socket could not take at once (the loop calls this when it can)."""
        out = self._out
        if out is None:
            return
        try:
            sent = self.sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(TransportError("connection", f"{type(exc).__name__}: {exc}"))
            return
        if sent < len(out):
            self._out = out[sent:]
            return
        self._out = None
        self._pool.unwatch_write(self)

    def expire(self) -> None:
        """The timeout passed: its answer may still come, so the connection cannot carry another request."""
        self._fail(TransportError("timeout", f"no answer within {self._pool.timeout_s:g} s"))

    def readable(self, offset_ns: int) -> None:
        """Read what has arrived; `offset_ns` (wall clock minus monotonic) turns kernel timestamps monotonic."""
        views = self._views
        while not self.closed:
            try:
                count, ancillary, _, _ = self.sock.recvmsg_into(views, ANCILLARY_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._ended(f"{type(exc).__name__}: {exc}")
                return
            if count == 0:
                self._ended(None)
                return
            self._received_ns = received_ns(ancillary, offset_ns)
            self._heard = True
            self._data(bytes(self._view[:count]))
            if count < READ_BYTES:
                return  # the rest (if any) has not arrived yet

    def _data(self, data: bytes) -> None:
        pending = self._buf
        if pending:
            pending += data  # a bytearray, extended in place: a long answer costs linear time, not quadratic
            buf: bytes | bytearray = pending
        else:
            buf = data
        if self._done is None:
            # Bytes nobody asked for: the stream is out of step, so the connection is useless.
            self.abort()
            return
        if not self._status:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    self._fail(TransportError("connection", "response head larger than 64 KiB"))
                    return
                self._keep(buf)
                return
            state = self._parse_head(bytes(buf[:end]))
            if state != _HEAD_OK:
                if state == _HEAD_INTERIM:
                    self._buf = b""
                    if len(buf) > end + 4:
                        self._data(bytes(buf[end + 4:]))
                return
            if self._length > MAX_BODY_BYTES:
                # Refused on the head: reading on would hold (and copy) the whole announced body first.
                self._fail(TransportError("connection", f"an answer of {self._length} bytes is over the "
                                                        f"{MAX_BODY_BYTES >> 20} MiB limit"))
                return
            buf = buf[end + 4:]
        if self._marks is not None:
            self._marks.append((len(buf), self._received_ns))  # a stream's read: its bytes so far, and their time
        self._body(buf)

    def _body(self, buf: bytes | bytearray) -> None:
        """What has arrived of the body after the head: finish the answer, or keep it until more comes."""
        if self._chunked:
            try:
                body = self._dechunk(buf)
            except TransportError as exc:
                self._fail(exc)
                return
            if body is None:
                if len(buf) > MAX_BODY_BYTES:
                    self._fail(TransportError("connection", "chunked response larger than 256 MiB"))
                    return
                self._keep(buf)
                return
            self._finish(body)
        elif self._length >= 0:
            if len(buf) < self._length:
                self._keep(buf)
                return
            whole = buf[:self._length] if len(buf) > self._length else buf
            self._finish(whole if isinstance(whole, bytes) else bytes(whole))
        else:
            if len(buf) > MAX_BODY_BYTES:
                self._fail(TransportError("connection", "response larger than 256 MiB"))
                return
            self._keep(buf)  # body runs to the close

    def _dechunk(self, buf: bytes | bytearray) -> bytes | None:
        """The body of a complete chunked message in `buf`, or None while it is incomplete; the chunks found so far
        are kept, so a body that arrives in many reads (a stream) is scanned once, not once per read."""
        self._chunk_pos, complete = _scan_chunks(buf, self._chunk_pos, self._spans)
        if not complete:
            return None
        spans = self._spans
        if self._marks is not None:
            _unframe_marks(self._marks, spans)
        with memoryview(buf) as view:
            return b"".join([view[first:first + length] for first, length in spans])

    def _keep(self, buf: bytes | bytearray) -> None:
        """Hold a partial answer until more arrives, as a bytearray that the next read extends in place."""
        self._buf = buf if isinstance(buf, bytearray) else bytearray(buf)

    def _parse_head(self, head: bytes) -> int:
        # One lower-cased copy and three searches: splitting every header line was a third of the parse.
        eol = head.find(b"\r\n")
        version, _, rest = (head if eol < 0 else head[:eol]).partition(b" ")
        try:
            status = int(rest[:3])
        except ValueError:
            self._fail(TransportError("connection", f"not an HTTP response: {head[:60]!r}"))
            return _HEAD_BAD
        if not version.startswith(b"HTTP/1."):
            self._fail(TransportError("connection", f"not an HTTP/1.x response: {head[:60]!r}"))
            return _HEAD_BAD
        if 100 <= status < 200:
            return _HEAD_INTERIM  # 100 Continue and the like: the real head follows
        fields = head[eol:].lower() if eol >= 0 else b""
        self._status = status
        self._length = -1
        self._chunked = False
        at = fields.find(b"\r\ncontent-length:")
        if at >= 0:
            end = fields.find(b"\r\n", at + 17)
            value = fields[at + 17:] if end < 0 else fields[at + 17:end]
            try:
                self._length = int(value)  # int() ignores the surrounding blanks
            except ValueError:
                self._fail(TransportError("connection", f"bad Content-Length {value.strip()!r}"))
                return _HEAD_BAD
        if fields.find(b"\r\ntransfer-encoding:") >= 0:
            self._chunked = b"chunked" in (_field(fields, b"\r\ntransfer-encoding:") or b"")
        connection = _field(fields, b"\r\nconnection:") if fields.find(b"\r\nconnection:") >= 0 else None
        if version == b"HTTP/1.0":
            self._close = connection != b"keep-alive"
        else:
            self._close = connection == b"close"
        if status in (204, 304):
            self._length = 0
        return _HEAD_OK

    def _finish(self, body: bytes) -> None:
        self._buf = b""
        status = self._status
        self._status = 0
        if self._close:
            self.abort()
        self._complete(status, body, None, self._received_ns)

    def _fail(self, error: TransportError) -> None:
        self.abort()
        if error.kind == "connection" and self._unanswered_on_reuse():
            self._resend()
            return
        self._complete(0, b"", error, 0)

    def _unanswered_on_reuse(self) -> bool:
        """Whether the request met a server closing this kept-alive connection at its keep-alive timeout: the
        connection answered before and then sat idle for a keep-alive timeout's length, nothing of this
        answer has arrived, and this is the request's first try."""
        return self._may_retry and not self._heard and self._done is not None

    def _resend(self) -> None:
        done, self._done = self._done, None
        assert done is not None
        self._pool.resend(self._request, done, self.deadline_ns, self._on_status, self._marks)

    def _ended(self, detail: str | None) -> None:
        """The server closed the connection (or it broke): a body delimited by the close is complete."""
        self.abort()
        if self._done is None:
            return
        if self._unanswered_on_reuse():
            self._resend()
            return
        if detail is None and self._status and self._length < 0 and not self._chunked:
            self._complete(self._status, bytes(self._buf), None, self._received_ns)
        else:
            self._complete(0, b"", TransportError("connection", detail or "the server closed the connection "
                                                                           "mid-response"), 0)
        self._buf = b""

    def _complete(self, status: int, body: bytes, error: TransportError | None, received_ns: int) -> None:
        done = self._done
        self._done = None
        if error is None:
            self.answered += 1
            self._free_ns = received_ns or time.monotonic_ns()
        # Back in the pool before the caller runs, ready for its next request.
        self._pool.finished(self, error is None and not self.closed)
        if done is None:
            return
        try:
            if error is None:
                if self._on_status is not None:
                    self._on_status(status)
                if status >= 300:
                    error = _status_error(status, body)
            done(body, error, received_ns)
        except Exception as exc:  # a consumer's bug must not break the connection
            asyncio.get_running_loop().call_exception_handler(
                {"message": "load engine result callback failed", "exception": exc})

    def abort(self) -> None:
        """Drop the connection (a reply can no longer be matched to its request)."""
        if self.closed:
            return
        self.closed = True
        if self._out is not None:
            self._out = None
            self._pool.unwatch_write(self)
        self._pool.forget(self)
        self.sock.close()

    def close(self, error: TransportError) -> None:
        """Drop the connection; a request still open on it ends with `error`."""
        self.abort()
        if self._done is not None:
            self._complete(0, b"", error, 0)


def _field(fields: bytes, name: bytes) -> bytes | None:
    """The (stripped) value of header `name` (given as b"\\r\\nname:", lower case) in lower-cased `fields`."""
    start = fields.find(name)
    if start < 0:
        return None
    start += len(name)
    end = fields.find(b"\r\n", start)
    return (fields[start:] if end < 0 else fields[start:end]).strip()


def _scan_chunks(buf: bytes | bytearray, pos: int, spans: list[tuple[int, int]]) -> tuple[int, bool]:
    """Read chunk sizes in `buf` from `pos`, appending each whole chunk's (start, length) to `spans`; returns where
    the next size line starts and whether the message is complete (the last chunk and its trailers are in).

    Only the chunk sizes are read; the body is copied once, when it is complete, so an answer that arrives in
    many reads costs time linear in its size.
    """
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return pos, False
        try:
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
        except ValueError:
            raise TransportError("connection", f"bad chunk size {bytes(buf[pos:eol][:20])!r}") from None
        if size > MAX_BODY_BYTES:
            raise TransportError("connection", f"a chunk of {size} bytes is over the {MAX_BODY_BYTES >> 20} MiB limit")
        start = eol + 2
        if size == 0:
            # Trailers, then an empty line.
            if buf.find(b"\r\n", start) < 0:
                return pos, False
            return pos, buf.find(b"\r\n\r\n", start - 2) >= 0
        if len(buf) < start + size + 2:
            return pos, False
        spans.append((start, size))
        pos = start + size + 2


def _unframe_marks(marks: Marks, spans: list[tuple[int, int]]) -> None:
    """Turn marks' offsets in the chunked framing into offsets in the body (in place; both lists in order)."""
    span = 0
    body = 0  # body bytes in the spans before `span`
    for i, (raw, at_ns) in enumerate(marks):
        while span < len(spans) and spans[span][0] + spans[span][1] <= raw:
            body += spans[span][1]
            span += 1
        inside = raw - spans[span][0] if span < len(spans) else 0
        marks[i] = (body + max(0, min(inside, spans[span][1] if span < len(spans) else 0)), at_ns)


def _dechunk(buf: bytes | bytearray) -> bytes | None:
    """The body of a complete chunked message in `buf`, or None while it is incomplete."""
    spans: list[tuple[int, int]] = []
    _, complete = _scan_chunks(buf, 0, spans)
    if not complete:
        return None
    with memoryview(buf) as view:
        return b"".join([view[first:first + length] for first, length in spans])


class Http1Transport:
    """POSTs pre-encoded bodies over a bounded pool of keep-alive HTTP/1.1 connections to one base URL.

    `keepalive_race_idle_s`: how long a connection must have sat idle for a close before its answer to be
    taken for the server's keep-alive timeout (a second try) rather than the model's failure (see the module).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        max_connections: int = 64,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        keepalive_race_idle_s: float = KEEPALIVE_RACE_IDLE_S,
    ) -> None:
        endpoint = parse_target_url(base_url)
        if endpoint.scheme != "http":
            raise ValueError(f"the lean HTTP/1.1 client speaks plain http:// only, got {endpoint.redacted()!r}")
        self.endpoint = endpoint
        self._host = endpoint.host
        self._port = endpoint.port
        self.timeout_s = timeout_s
        self.race_idle_ns = int(keepalive_race_idle_s * NS_PER_S)
        self._timeout_ns = int(timeout_s * NS_PER_S)
        self._sweep_s = min(max(timeout_s / 10, 0.001), 0.1)
        self._max_connections = max_connections
        # Host: carries host[:port] only; the URL's credentials go as Authorization: Basic.
        extra = "".join(f"{k}: {v}\r\n" for k, v in endpoint.with_auth(headers).items())
        self._common = (f"Host: {endpoint.authority}\r\nContent-Type: {content_type}\r\n{extra}").encode("latin-1")
        self._requests: dict[str, dict[bytes, bytes]] = {}
        self._cached = 0
        self._idle: list[_Connection] = []
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._open = 0
        self._all: dict[int, _Connection] = {}
        self._busy: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._buffer = bytearray(READ_BYTES)
        self._view = memoryview(self._buffer)
        self._views = [self._view]
        self._inbox: _Inbox | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watching = False
        self._polled = False
        self._sweeper: asyncio.TimerHandle | None = None

    # -- the inbox and the event loop

    def _bind(self) -> asyncio.AbstractEventLoop:
        """The running loop, watching the inbox unless in polled mode (a new loop takes over the watch)."""
        loop = asyncio.get_running_loop()
        if self._inbox is None:
            self._inbox = _Inbox()
        if loop is not self._loop:
            if self._loop is not None and self._watching and not self._loop.is_closed():
                self._loop.remove_reader(self._inbox.fileno())
            self._loop = loop
            self._watching = False
            self._sweeper = None
            self._watch(not self._polled)
        return loop

    def _watch(self, on: bool) -> None:
        if self._loop is None or self._inbox is None or on == self._watching:
            return
        if self._loop.is_closed():
            self._watching = False
            return
        if on:
            self._loop.add_reader(self._inbox.fileno(), self.poll)
        else:
            self._loop.remove_reader(self._inbox.fileno())
        self._watching = on

    def set_polled(self, polled: bool) -> bool:
        """Polled mode: the event loop stops watching for answers and the caller drains them with poll().

        Answers keep the kernel's receive times either way; what changes is who wakes to read them.
        """
        self._polled = polled
        self._watch(not polled)
        return polled

    def poll(self) -> None:
        """Read every answer that has arrived, without waiting."""
        inbox = self._inbox
        if inbox is None:
            return
        ready = inbox.ready()
        if not ready:
            return
        offset_ns = clock_offset_ns()
        conns = self._all
        for fd in ready:
            conn = conns.get(fd)
            if conn is not None:
                conn.readable(offset_ns)

    # -- what its connections tell it (the _Pool protocol)

    def started(self, conn: _Connection) -> None:
        """A request went out on `conn`: the sweep watches its deadline."""
        self._busy.add(conn)
        if self._sweeper is None and self._loop is not None:
            self._sweeper = self._loop.call_later(self._sweep_s, self._sweep)

    def _sweep(self) -> None:
        """Time out requests past their deadline (reading first whatever has arrived)."""
        self._sweeper = None
        self.poll()
        now = time.monotonic_ns()
        for conn in [c for c in self._busy if c.deadline_ns <= now]:
            conn.expire()
        if self._busy and self._loop is not None and not self._loop.is_closed():
            self._sweeper = self._loop.call_later(self._sweep_s, self._sweep)

    def watch_write(self, conn: _Connection) -> None:
        """`conn` has more of a request to write: the loop calls its flush() when the socket can take it."""
        assert self._loop is not None
        self._loop.add_writer(conn.fd, conn.flush)

    def unwatch_write(self, conn: _Connection) -> None:
        """`conn` has nothing left to write."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_writer(conn.fd)

    def finished(self, conn: _Connection, reusable: bool) -> None:
        """The request on `conn` ended; a `reusable` connection goes back into the pool."""
        self._busy.discard(conn)
        if reusable:
            if self._waiters:
                self._release(conn)
            else:
                self._idle.append(conn)  # (the common case, without a second call on the hot path)

    def forget(self, conn: _Connection) -> None:
        """A connection closed: out of the inbox, the pool and the count."""
        if self._inbox is not None:
            self._inbox.discard(conn.fd)
        self._busy.discard(conn)
        if self._all.get(conn.fd) is conn:
            del self._all[conn.fd]
            self._open -= 1
            self._wake()

    # -- the pool

    def _request(self, method: str, path: str, body: bytes) -> bytes:
        by_body = self._requests.get(path)
        if by_body is None:
            by_body = self._requests[path] = {}
        request = by_body.get(body)
        if request is None:
            request = (f"{method} {self.endpoint.request_target(path)} HTTP/1.1\r\n".encode("latin-1") + self._common
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
            sock = await self._connect()
        except OSError as exc:
            self._open -= 1
            self._wake()
            raise TransportError("connection", f"cannot connect to {self.endpoint.address}: "
                                               f"{exc.strerror or exc}") from None
        except BaseException:
            self._open -= 1
            self._wake()
            raise
        conn = _Connection(self, sock, self._views)
        assert self._inbox is not None
        self._inbox.add(conn.fd)
        self._all[conn.fd] = conn
        return conn

    async def _connect(self) -> socket.socket:
        self._bind()
        return await connect(self._host, self._port)

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

    async def _acquire_within(self) -> _Connection:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._acquire()
        except TimeoutError:
            raise TransportError("timeout", f"no connection within {self.timeout_s:g} s") from None

    # -- sending

    async def _exchange(self, request: bytes, on_status: OnStatus | None = None) -> bytes:
        """Send `request` and wait for the body of its 2xx answer; anything else raises TransportError."""
        loop = self._bind()
        conn = await self._acquire_within()
        waiter: asyncio.Future[bytes] = loop.create_future()

        def done(body: bytes, error: TransportError | None, _: int) -> None:
            if waiter.done():
                return
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(body)

        conn.start(request, done, self._timeout_ns, on_status)
        return await waiter

    def submit(self, path: str, body: bytes, done: Done, marks: Marks | None = None) -> None:
        """POST without a coroutine: `done(body, error, received_ns)` runs when the answer (or a failure) arrives.

        The load engine's hot path: with a kept-alive connection idle, no task, coroutine or future
        is made for the request; only when a connection must be opened or waited for does a task do it.
        `marks`: see submit_stream.
        """
        request = self._request("POST", path, body)
        if self._loop is not asyncio.get_running_loop():
            self._bind()
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.start(request, done, self._timeout_ns, marks=marks)
                return
        self._start_later(request, done, marks=marks)

    def submit_stream(self, path: str, body: bytes, done: StreamDone) -> None:
        """POST a request whose answer streams: as `submit`, and `done` also gets the answer's marks, (body offset,
        kernel receive time) for each read of its body, so each event in it can be timed.

        No wake per event: the reads are those the transport makes anyway (whatever has arrived at each wake);
        events that arrived together share a read, and its time.
        """
        marks: Marks = []
        self.submit(path, body, partial(_with_marks, done, marks), marks)

    def resend(self, request: bytes, done: Done, deadline_ns: int, on_status: OnStatus | None,
               marks: Marks | None = None) -> None:
        """The second try of a request that met the server closing its kept-alive connection (see the module),
        by its first try's deadline (monotonic ns)."""
        if marks:
            marks.clear()  # nothing of the first try's answer arrived (else it is no second try); to be sure
        self._start_later(request, done, deadline_ns, on_status, retried=True, marks=marks)

    def _start_later(self, request: bytes, done: Done, deadline_ns: int = 0, on_status: OnStatus | None = None,
                     retried: bool = False, marks: Marks | None = None) -> None:
        """Start the request once a connection is free or opened, in a task: the submit path's slow case,
        and the second try of a request that met a server closing its kept-alive connection (`retried`,
        keeping its first try's `deadline_ns`; see the module)."""
        task = asyncio.get_running_loop().create_task(
            self._start_slow(request, done, deadline_ns, on_status, retried, marks))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_slow(self, request: bytes, done: Done, deadline_ns: int, on_status: OnStatus | None,
                          retried: bool, marks: Marks | None = None) -> None:
        if retried:
            self.poll()  # the server closes idle connections together: drop those it already closed
        try:
            self._bind()
            conn = await self._acquire_within()
        except TransportError as exc:
            done(b"", exc, 0)
            return
        except asyncio.CancelledError:
            done(b"", TransportError("connection", "the client was closed"), 0)
            raise
        timeout_ns = deadline_ns - time.monotonic_ns() if deadline_ns else self._timeout_ns
        if timeout_ns <= 0:
            self._release(conn)
            done(b"", TransportError("timeout", f"no answer within {self.timeout_s:g} s"), 0)
            return
        conn.start(request, done, timeout_ns, on_status, retried, marks)

    async def send(self, path: str, body: bytes) -> bytes:
        """POST and return the body of a 2xx response."""
        return await self._exchange(self._request("POST", path, body))

    async def probe(self, path: str) -> int:
        """GET and return the status, 0 if the connection failed or timed out."""
        request = (f"GET {self.endpoint.request_target(path)} HTTP/1.1\r\n".encode("latin-1") + self._common
                   + b"Content-Length: 0\r\n\r\n")
        status = 0

        def answered(code: int) -> None:
            nonlocal status
            status = code

        # A complete answer's status, whatever it is (300 and above come with an http_status error).
        with contextlib.suppress(TransportError):
            await self._exchange(request, answered)
        return status

    async def close(self) -> None:
        """Close every connection; requests still open end as connection errors."""
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._all.values()):
            conn.close(TransportError("connection", "the client was closed"))
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        self._waiters.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._watch(False)
        if self._inbox is not None:
            self._inbox.close()
            self._inbox = None
        self._loop = None
        await asyncio.sleep(0)  # let cancelled tasks finish


def _with_marks(done: StreamDone, marks: Marks, body: bytes, error: TransportError | None, received_ns: int) -> None:
    done(body, error, received_ns, marks)


def _status_error(status: int, payload: bytes) -> TransportError:
    snippet = redact_text(payload[:200].decode("utf-8", errors="replace"))  # a server may echo the URL
    return TransportError("http_status", f"HTTP {status}: {snippet}", status)
