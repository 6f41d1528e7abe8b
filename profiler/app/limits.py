"""The control plane's limits on its clients, applied from the moment a connection is accepted.

aiohttp gives every accepted connection a request handler and a task at once, then waits for a request
head with no deadline of its own. A client that opens sockets and never finishes a request head (a
slowloris) holds one file descriptor each for as long as it likes; ~21,000 of them used up the
sidecar's descriptors and `/healthz` was refused. `ConnectionGuard` wraps the protocol factory given to
`loop.create_server`, in front of aiohttp:

- **Head first.** A connection reaches aiohttp only once its request head has arrived whole; until then
  it costs one small object and a file descriptor, no task and no parser.
- **Head timeout.** A connection that has not sent a whole head within `head_timeout_s` of being accepted
  is answered 408 and closed; a head over `max_head_bytes` is answered 431 and closed.
- **Connection cap.** At most `max_connections` at once. One more is still accepted, by closing (RST)
  the oldest connection that is waiting for its head; when none is waiting, the one idle longest. A probe
  sends its whole head in its first packet and is waiting only for a moment, the newest of all, so a
  flood of slow sockets evicts its own older sockets first: `/healthz` keeps answering under a slowloris
  of any size, and the sidecar holds no more than the cap (set well below the process's file-descriptor
  limit, see `connection_cap`; the listen queue, `listen`, takes as many again at most).
- **Write timeout.** A client that stops reading its answer (its socket's buffer full) for
  `write_timeout_s` is dropped, so a slow reader cannot hold a connection and its buffered answer forever.

After the head, aiohttp's own limits apply: the keep-alive timeout closes a connection idle between
requests (and one that starts a second head and stalls), and `POST /runs` reads its body under a timeout
(profiler.app.server). docs/sidecar.md ("Limits on clients") explains the choices.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
from collections import OrderedDict
from collections.abc import Callable
from http import HTTPStatus
from typing import cast

log = logging.getLogger("profiler.app.limits")

HEAD_TIMEOUT_S = 5.0
"""A client has this long after connecting (or after an answer, on a kept-alive connection) to send a whole
request head. A real client sends it in its first packet; a slowloris never does."""
BODY_TIMEOUT_S = 5.0
"""POST /runs must deliver its (at most 4 KiB) body within this long of its head."""
KEEPALIVE_S = 15.0
"""A kept-alive connection idle this long after an answer is closed (aiohttp's keep-alive timeout)."""
WRITE_TIMEOUT_S = 30.0
"""A client whose socket accepts no more of an answer for this long is dropped."""
MAX_HEAD_BYTES = 32 * 1024
"""The longest request head accepted (aiohttp allows 8 KiB per line); beyond it 431."""
MAX_CONNECTIONS = 1024
"""The most connections the control plane holds at once, where the file-descriptor limit allows."""
MIN_CONNECTIONS = 64
"""The fewest, however low the file-descriptor limit (below ~256 descriptors the sidecar cannot run anyway)."""
FD_SHARE = 4
"""The control plane's connections take at most 1/FD_SHARE of the process's descriptors, and its listen queue as
many again: the rest are the run's (its connections to the model, up to load.max_in_flight, the hold-out file,
the history, worker pipes)."""
FD_TARGET = 65536
"""The soft descriptor limit the sidecar raises itself to, where the hard limit allows (raise_fd_limit)."""
LISTEN_BACKLOG = 4096
"""Connections the kernel queues before they are accepted (capped by net.core.somaxconn and by fd_share())."""
SWEEP_S = 0.25
"""How often connections past their head deadline are looked for (the deadline's resolution)."""
REPORT_EVERY_S = 10.0
"""Closed connections are logged as one summary line at most this often, never one line each."""


def raise_fd_limit(target: int = FD_TARGET) -> int:
    """Raise the process's soft RLIMIT_NOFILE to the hard limit (at most `target`), as servers do: the soft
    limit is often 1024 where the hard one is far higher. Returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(hard, target)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def fd_share() -> int:
    """The descriptors the control plane may take: 1/FD_SHARE of the soft limit (never below MIN_CONNECTIONS)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return FD_TARGET // FD_SHARE
    return max(MIN_CONNECTIONS, soft // FD_SHARE)


def connection_cap(limit: int = MAX_CONNECTIONS) -> int:
    """The cap on the control plane's connections: `limit`, or a quarter of the process's soft
    RLIMIT_NOFILE where that is lower (never below MIN_CONNECTIONS)."""
    return min(limit, fd_share()) if limit >= MIN_CONNECTIONS else limit


def error_answer(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 answer with a JSON error body, like every other answer of the sidecar, and Connection: close."""
    body = json.dumps({"error": message}).encode("utf-8")
    phrase = HTTPStatus(status).phrase
    head = (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


def head_end(buffer: bytes | bytearray, start: int) -> int:
    """The index just past the blank line that ends a request head in `buffer`, looking from `start`; -1 if
    the head is not whole yet. CRLF line ends, or bare LF (aiohttp then answers 400 itself)."""
    crlf = buffer.find(b"\n\r\n", start)
    lf = buffer.find(b"\n\n", start)
    ends = [i + 3 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
    return min(ends) if ends else -1


class GuardCounts:
    """What the guard has done since it started (for the log summary and the tests)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.handed = 0
        self.timed_out = 0
        self.evicted = 0
        self.too_large = 0
        self.slow_readers = 0
        self.peak = 0


class ConnectionGuard:
    """A protocol factory for `loop.create_server` that applies the limits above in front of `factory` (aiohttp's
    web.Server). Single-threaded: every method runs on the event loop."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], *, max_connections: int | None = None,
                 head_timeout_s: float = HEAD_TIMEOUT_S, write_timeout_s: float = WRITE_TIMEOUT_S,
                 max_head_bytes: int = MAX_HEAD_BYTES) -> None:
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self._factory = factory
        self.max_connections = max_connections if max_connections is not None else connection_cap()
        self.head_timeout_s = head_timeout_s
        self.write_timeout_s = write_timeout_s
        self.max_head_bytes = max_head_bytes
        self.counts = GuardCounts()
        # Oldest first: connections waiting for a head (with their deadline, loop time in s), and those
        # handed to aiohttp, least recently active first.
        self._waiting: OrderedDict[GuardedConnection, float] = OrderedDict()
        self._handed: OrderedDict[GuardedConnection, None] = OrderedDict()
        self._sweep: asyncio.TimerHandle | None = None
        self._reported = GuardCounts()
        self._reported_at = -REPORT_EVERY_S

    @property
    def open_connections(self) -> int:
        """Connections held now, waiting for a head or handed to aiohttp."""
        return len(self._waiting) + len(self._handed)

    @property
    def waiting(self) -> int:
        """Connections that have not sent a whole request head yet."""
        return len(self._waiting)

    def __call__(self) -> GuardedConnection:
        """The protocol of a connection being accepted."""
        # Counted (and past the cap, room made) when the protocol is asked for: uvloop asks as it accepts each
        # connection, before it accepts the next, so a burst never holds more descriptors than the cap.
        conn = GuardedConnection(self)
        self.admit(conn)
        return conn

    # --- called by GuardedConnection --------------------------------------------------------------

    def admit(self, conn: GuardedConnection) -> None:
        """A new connection: it waits for its head; past the cap the oldest waiting (else idlest) one goes."""
        loop = asyncio.get_running_loop()
        self.counts.accepted += 1
        self._waiting[conn] = loop.time() + self.head_timeout_s
        while self.open_connections > self.max_connections:
            victim = next((c for c in self._waiting if c is not conn), None)
            if victim is None:
                victim = next(iter(self._handed))
            self.counts.evicted += 1
            self.drop(victim)
            victim.abort()
        self.counts.peak = max(self.counts.peak, self.open_connections)
        if self._sweep is None:
            self._sweep = loop.call_later(SWEEP_S, self._expire)

    def hand_over(self, conn: GuardedConnection) -> asyncio.Protocol:
        """The head is whole: from now on aiohttp serves the connection."""
        self._waiting.pop(conn, None)
        self._handed[conn] = None
        self.counts.handed += 1
        return self._factory()

    def active(self, conn: GuardedConnection) -> None:
        """A handed connection sent more: it is the last to be evicted at the cap."""
        if conn in self._handed:
            self._handed.move_to_end(conn)

    def too_large(self, conn: GuardedConnection) -> None:
        """A head over max_head_bytes: 431, then close."""
        self.counts.too_large += 1
        self.drop(conn)
        conn.refuse(431, f"the request head is over {self.max_head_bytes} bytes")

    def slow_reader(self, conn: GuardedConnection) -> None:
        """The client read none of its answer for write_timeout_s: drop it."""
        self.counts.slow_readers += 1
        self.drop(conn)
        conn.abort()

    def drop(self, conn: GuardedConnection) -> None:
        """Forget a connection (closed by either side)."""
        self._waiting.pop(conn, None)
        self._handed.pop(conn, None)

    def close(self) -> None:
        """Close every connection still waiting for a head (aiohttp closes the ones it serves)."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in list(self._waiting):
            self.drop(conn)
            conn.abort()
        self._report(asyncio.get_running_loop().time(), force=True)

    # --- the head deadline ---------------------------------------------------------------------

    def _expire(self) -> None:
        """Answer 408 to every connection past its head deadline; they are in deadline order."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        expired = []
        for conn, deadline in self._waiting.items():
            if deadline > now:
                break
            expired.append(conn)
        for conn in expired:
            self.counts.timed_out += 1
            self.drop(conn)
            conn.refuse(408, f"no whole request head within {self.head_timeout_s:g} s")
        self._report(now)
        self._sweep = loop.call_later(SWEEP_S, self._expire) if self._waiting else None

    def _report(self, now: float, force: bool = False) -> None:
        """One log line for the connections closed since the last one, at most every REPORT_EVERY_S (or now)."""
        if now - self._reported_at < REPORT_EVERY_S and not force:
            return
        done, seen = self.counts, self._reported
        closed = {"without a whole request head in time": done.timed_out - seen.timed_out,
                  "evicted at the cap": done.evicted - seen.evicted,
                  "with a head too large": done.too_large - seen.too_large,
                  "that stopped reading": done.slow_readers - seen.slow_readers}
        if not any(closed.values()):
            return
        log.warning("control plane: closed %s (cap %d connections, peak %d)",
                    ", ".join(f"{n} {why}" for why, n in closed.items() if n), self.max_connections, done.peak)
        self._reported = GuardCounts()
        vars(self._reported).update(vars(done))
        self._reported_at = now


class GuardedConnection(asyncio.Protocol):
    """One accepted connection: buffers the request head, then passes everything to aiohttp's handler."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._inner: asyncio.Protocol | None = None
        self._write_deadline: asyncio.TimerHandle | None = None
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Accepted (the guard counted it when its protocol was asked for)."""
        # A stream transport (uvloop's does not subclass asyncio.Transport, so no isinstance check).
        self._transport = cast(asyncio.Transport, transport)
        if self._closed:  # evicted or timed out between the accept and now
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        """Bytes from the client: buffered until the request head is whole, then aiohttp's."""
        if self._inner is not None:
            self._guard.active(self)
            self._inner.data_received(data)
            return
        if self._transport is None or self._transport.is_closing():
            return
        start = max(0, len(self._head) - 2)  # the blank line may begin in an earlier packet
        self._head += data
        if head_end(self._head, start) < 0:
            if len(self._head) > self._guard.max_head_bytes:
                self._guard.too_large(self)
            return
        inner = self._guard.hand_over(self)
        self._inner = inner
        head, self._head = bytes(self._head), bytearray()
        inner.connection_made(self._transport)
        inner.data_received(head)

    def eof_received(self) -> bool | None:
        """The client closed its side: aiohttp decides, once it has the connection."""
        if self._inner is not None:
            return self._inner.eof_received()
        return None  # half a head and then EOF: nothing to answer, the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        """Closed by either side: forgotten by the guard, and by aiohttp once it had it."""
        self._guard.drop(self)
        self._cancel_write_deadline()
        if self._inner is not None:
            self._inner.connection_lost(exc)
        self._transport = None

    def pause_writing(self) -> None:
        """The client's socket is full: its write deadline starts."""
        # The client's socket is full: it has this long to read some of the answer.
        if self._write_deadline is None:
            loop = asyncio.get_running_loop()
            self._write_deadline = loop.call_later(self._guard.write_timeout_s, self._guard.slow_reader, self)
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        """The client read some of its answer: no deadline until it stops again."""
        self._cancel_write_deadline()
        if self._inner is not None:
            self._inner.resume_writing()

    def _cancel_write_deadline(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    def refuse(self, status: int, message: str) -> None:
        """Answer with an error and close (the answer is small: the socket's buffer takes it at once)."""
        self._closed = True
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(error_answer(status, message))
            if transport.get_write_buffer_size():
                transport.abort()  # a client that reads nothing would keep the descriptor while the answer waits
            else:
                transport.close()

    def abort(self) -> None:
        """Close at once, without an answer (RST): frees the descriptor now (or as soon as it has a transport)."""
        self._closed = True
        if self._transport is not None:
            self._transport.abort()


class Listener:
    """The control plane's listening socket, with the guard in front of the protocol factory."""

    def __init__(self, server: asyncio.AbstractServer, guard: ConnectionGuard, address: tuple[str, int]) -> None:
        self.server = server
        self.guard = guard
        self.address = address

    def stop_accepting(self) -> None:
        """Close the listening socket and every connection still waiting for its head."""
        self.server.close()
        self.guard.close()

    async def wait_closed(self) -> None:
        """Wait for the listening socket to close (after the application's own connections are shut down)."""
        await self.server.wait_closed()


async def listen(factory: Callable[[], asyncio.Protocol], host: str, port: int, *,
                 max_connections: int | None = None, head_timeout_s: float = HEAD_TIMEOUT_S) -> Listener:
    """Listen on host:port (port 0: a free one) with `factory` (aiohttp's web.Server) behind a ConnectionGuard.
    Raises OSError when the address cannot be bound."""
    guard = ConnectionGuard(factory, max_connections=max_connections, head_timeout_s=head_timeout_s)
    loop = asyncio.get_running_loop()
    # A long queue in the kernel, so that a flood outpacing the accepts does not overflow it and drop a probe's
    # SYN (the probe would wait for its retransmit, 1 s). But the loop accepts everything queued before the
    # guard can close any of it, so the queue takes no more descriptors than the cap: a burst holds at most
    # twice the control plane's share for a moment, and the run keeps the rest.
    backlog = min(LISTEN_BACKLOG, fd_share())
    server = await loop.create_server(guard, host, port, backlog=backlog, reuse_address=True)
    sockname = server.sockets[0].getsockname()
    return Listener(server, guard, (str(sockname[0]), int(sockname[1])))
