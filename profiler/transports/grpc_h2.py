"""A lean gRPC client: unary calls over one HTTP/2 connection on a non-blocking socket, in the event loop.

grpc.aio hands every call between threads: its own I/O threads read the socket, a poller thread
waits on the completion queue and wakes the event loop through a socket pair. On this VM that is
about eight context switches per call, most of the generator's CPU. This client does what a load
generator needs of gRPC and no more, with no thread at all:

- one HTTP/2 connection (h2c, prior knowledge), many concurrent streams (up to the server's
  SETTINGS_MAX_CONCURRENT_STREAMS; calls beyond it wait their turn). After a GOAWAY (a server that
  ages its connections out, or shuts down) new calls go out on a new connection at once, while the
  old one finishes its streams: a GOAWAY must not show up as latency the model never had;
- a request is a HEADERS frame whose HPACK block was encoded once per method (literal fields, no
  dynamic table) and DATA frames holding the gRPC length-prefixed message, split to the server's
  frame size and sent within its flow-control windows;
- answers are read like the lean HTTP/1.1 client's: kernel receive timestamps (SO_TIMESTAMPNS), and
  a polled mode in which the engine drains the socket at its own wakes;
- the server's header blocks are decoded with `hpack` (the python-hyper HPACK codec). We ask the
  server for a dynamic table of size 0, so its blocks are context free and each distinct block
  is decoded once and then looked up;
- SETTINGS, PING, WINDOW_UPDATE, RST_STREAM and GOAWAY are honoured; grpc-status and grpc-message
  become TransportError (DEADLINE_EXCEEDED -> timeout, UNAVAILABLE -> connection, others
  grpc_status with the code), deadlines are sent as grpc-timeout and enforced by a sweep;
- keepalive: while calls are open and the server has sent nothing for `keepalive_s`, a PING goes
  out; a connection that does not answer it within min(keepalive_s, 20 s) is dropped and its calls
  end as connection errors, as grpc.aio's keepalive does. An idle connection is not pinged (servers
  count pings without calls as abuse and answer them with GOAWAY).

TLS (grpcs://) is not spoken here: those targets use the grpc.aio transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

import grpc
import hpack

from profiler.core.errors import TransportError
from profiler.core.units import NS_PER_S
from profiler.transports.base import Done
from profiler.transports.grpc_common import (
    STATUS_KINDS,
    call_metadata,
    fetch_model_metadata,
    grpc_endpoint,
    probe_ready,
)
from profiler.transports.sockets import (
    ANCILLARY_BYTES,
    MAX_MESSAGE_BYTES,
    READ_BYTES,
    clock_offset_ns,
    connect,
    received_ns,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = (
    0, 1, 3, 4, 5, 6, 7, 8, 9)
_END_STREAM = _ACK = 0x1
_END_HEADERS, _PADDED, _PRIORITY = 0x4, 0x8, 0x20
_MAX_WINDOW = 2**31 - 1
_DEFAULT_WINDOW = 65_535
_LAST_STREAM_ID = 2**31 - 1
_FRAME_HEAD = struct.Struct(">BHBBI")  # length as 1 + 2 bytes, type, flags, stream id
_CODES = {code.value[0]: code for code in grpc.StatusCode}
_CANCEL, _REFUSED_STREAM = 0x8, 0x7
_KEEPALIVE_OPAQUE = b"profiler"  # the 8 bytes of our keepalive PINGs, echoed in the ACK


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    size = len(payload)
    return _FRAME_HEAD.pack(size >> 16, size & 0xFFFF, kind, flags, stream) + payload


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: str | int, value: str) -> bytes:
    """A literal header field without indexing (name by static index, or spelled out), no Huffman."""
    raw = value.encode("latin-1")
    if isinstance(name, int):
        head = _hpack_int(name, 4, 0x00)
    else:
        spelled = name.encode("latin-1")
        head = b"\x00" + _hpack_int(len(spelled), 7, 0x00) + spelled
    return head + _hpack_int(len(raw), 7, 0x00) + raw


def request_block(path: str, authority: str, timeout_s: float, metadata: tuple[tuple[str, str], ...]) -> bytes:
    """The HPACK block of a unary call's request headers (static table entries and literals only)."""
    parts = [
        b"\x20",  # dynamic table size update to 0: this encoder never indexes, whatever the server allows
        b"\x83",  # :method POST (static index 3)
        b"\x86",  # :scheme http (static index 6)
        _literal(4, path),  # :path
        _literal(1, authority),  # :authority
        _literal(31, "application/grpc"),  # content-type
        _literal("te", "trailers"),
        _literal("grpc-timeout", f"{max(1, min(int(timeout_s * 1000), 99_999_999))}m"),
    ]
    parts += [_literal(key, value) for key, value in metadata]
    return b"".join(parts)


class _Stream:
    __slots__ = ("body", "data", "deadline_ns", "done", "headers", "id", "out", "path", "received_ns", "size", "status",
                 "window")

    def __init__(self, stream_id: int, path: str, body: bytes, done: Done, deadline_ns: int, window: int) -> None:
        self.id = stream_id
        self.path = path
        self.body = body
        self.done = done
        self.deadline_ns = deadline_ns
        self.window = window
        self.out: bytes = b""  # DATA payload still to send (flow control)
        self.data: list[bytes] = []
        self.size = 0
        self.headers: dict[str, str] | None = None
        self.status = 0
        self.received_ns = 0


@dataclass(frozen=True, slots=True)
class _Shared:
    """What every connection of one transport shares: how its requests are headed, its keepalive, its read buffer."""

    authority: str  # host:port, the :authority of every request
    timeout_s: float  # the calls' deadline, sent as grpc-timeout
    metadata: tuple[tuple[str, str], ...]  # (lower-case key, value) sent with every call
    keepalive_ns: int  # how long a server with calls open may stay quiet before it is PINGed
    ping_timeout_ns: int  # how long a keepalive PING may go unanswered before the connection is dropped
    blocks: dict[str, bytes] = field(default_factory=dict)  # request header blocks by method path, encoded once
    buffer: bytearray = field(default_factory=lambda: bytearray(READ_BYTES))  # one read (reads never interleave)


class _Owner(Protocol):
    """What a connection tells the transport that owns it: the transport decides where new calls go."""

    pings_sent: int  # keepalive PINGs sent on all its connections

    def connection_lost(self, conn: _Connection, error: TransportError) -> None:
        """`conn` broke or closed: it is forgotten, and if new calls were waiting for it they fail with `error`."""
        ...

    def retire(self, conn: _Connection) -> None:
        """`conn` takes no new streams (GOAWAY, stream ids used up); it closes when its last stream has ended."""
        ...

    def start_waiting(self) -> None:
        """A stream ended or the server's limits changed: queued calls may go now."""
        ...

    def requeue(self, path: str, body: bytes, done: Done, deadline_ns: int) -> None:
        """A call the server refused unprocessed goes again, first in line, keeping its deadline (monotonic ns)."""
        ...

    def has_waiting(self, conn: _Connection) -> bool:
        """Whether calls are queued for `conn` (it is the connection new calls go on)."""
        ...


class _Connection:
    """One HTTP/2 connection: its socket, streams, flow-control windows, HPACK decoder and keepalive."""

    def __init__(self, owner: _Owner, shared: _Shared, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.shared = shared
        self.blocks = shared.blocks
        self.view = memoryview(shared.buffer)
        self.views = [self.view]
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = loop
        self.streams: dict[int, _Stream] = {}
        self.blocked: deque[_Stream] = deque()  # streams with DATA held back by flow control
        self.next_id = 1
        self.watching = False
        self.out = bytearray()
        self.writing = False
        self.inbuf = bytearray()
        self.decoder = hpack.Decoder()
        self.decoded: dict[bytes, dict[str, str]] = {}
        self.fragment: tuple[int, int, bytearray] | None = None  # a header block awaiting CONTINUATION
        self.send_window = _DEFAULT_WINDOW
        self.peer_window = _DEFAULT_WINDOW  # the server's initial window for each new stream
        self.max_frame = 16_384
        self.max_streams = 1 << 30
        self.recv_unacked = 0
        self.heard_ns = time.monotonic_ns()  # when the server last sent anything
        self.ping_sent_ns = 0  # when our unanswered keepalive PING went out (0: none out)
        self.going_away = False  # takes no new streams (GOAWAY received, or stream ids used up)
        self.settled = False  # the server's first SETTINGS (its stream limit, windows) has arrived
        self.closed = False
        self.pinger: asyncio.TimerHandle | None = None

    def start(self, polled: bool) -> None:
        """Send the preface and our SETTINGS; calls wait for the server's SETTINGS (opening more streams
        than it allows gets them refused)."""
        self.watch(not polled)
        settings = struct.pack(">HIHIHI", 0x1, 0, 0x2, 0, 0x4, _MAX_WINDOW)  # no dynamic table, no push, big windows
        self.write(PREFACE + frame(_SETTINGS, 0, 0, settings)
                   + frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", _MAX_WINDOW - _DEFAULT_WINDOW)))
        self.pinger = self.loop.call_later(self.shared.keepalive_ns / NS_PER_S, self.keepalive)

    def watch(self, on: bool) -> None:
        """Have the event loop read the socket as frames arrive (on), or leave reading to poll() (off)."""
        if self.closed or on == self.watching or self.loop.is_closed():
            return
        if on:
            self.loop.add_reader(self.fd, self.poll)
        else:
            self.loop.remove_reader(self.fd)
        self.watching = on

    def close(self) -> None:
        """Close the socket (the streams are the caller's business)."""
        if self.closed:
            return
        if self.pinger is not None:
            self.pinger.cancel()
            self.pinger = None
        if not self.loop.is_closed():
            if self.watching:
                self.loop.remove_reader(self.fd)
            if self.writing:
                self.loop.remove_writer(self.fd)
        self.sock.close()
        self.closed = True
        self.watching = self.writing = False
        self.out = bytearray()

    def drop(self, reason: str) -> None:
        """The connection is gone: its open calls fail with a connection error."""
        if self.closed:
            return
        self.close()
        error = TransportError("connection", reason)
        self.owner.connection_lost(self, error)  # first: calls made from the callbacks below must not land here
        streams, self.streams = self.streams, {}
        self.blocked.clear()
        for stream in streams.values():
            self.finish(stream, b"", error)

    def finish(self, stream: _Stream, message: bytes, error: TransportError | None) -> None:
        """Report the call's outcome to its `done` (with the answer's kernel time when it succeeded)."""
        try:
            stream.done(message, error, stream.received_ns if error is None else 0)
        except Exception as exc:  # a consumer's bug must not break the connection
            self.loop.call_exception_handler({"message": "load engine result callback failed", "exception": exc})

    # -- writing

    def write(self, data: bytes) -> None:
        """Send `data` now, or as much as the socket takes and the rest when it can."""
        if self.closed:
            return
        if self.writing:
            self.out += data
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.drop(f"{type(exc).__name__}: {exc}")
            return
        if sent < len(data):
            self.out += data[sent:]
            self.writing = True
            self.loop.add_writer(self.fd, self.flush)

    def flush(self) -> None:
        """Send more of what the socket could not take (the loop calls this when it can)."""
        if self.closed:
            return
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.drop(f"{type(exc).__name__}: {exc}")
            return
        del self.out[:sent]
        if not self.out:
            self.writing = False
            self.loop.remove_writer(self.fd)

    def send_data(self, stream: _Stream) -> bool:
        """Send as much of the stream's message as the windows allow; True when all of it went."""
        out = stream.out
        frames = []
        while out:
            size = min(len(out), self.max_frame, self.send_window, stream.window)
            if size <= 0:
                break
            chunk, out = out[:size], out[size:]
            self.send_window -= size
            stream.window -= size
            frames.append(frame(_DATA, 0 if out else _END_STREAM, stream.id, chunk))
        stream.out = out
        if frames:
            self.write(b"".join(frames))
        return not out

    def open(self, path: str, body: bytes, done: Done, deadline_ns: int) -> None:
        """Start the call on a new stream (the caller checked that one may be opened)."""
        block = self.blocks.get(path)
        if block is None:
            shared = self.shared
            block = self.blocks[path] = request_block(path, shared.authority, shared.timeout_s, shared.metadata)
        if len(block) > self.max_frame:
            done(b"", TransportError("connection", "request metadata larger than the server's frame size"), 0)
            return
        stream_id = self.next_id
        self.next_id += 2
        stream = _Stream(stream_id, path, body, done, deadline_ns, self.peer_window)
        self.streams[stream_id] = stream
        stream.out = b"\x00" + len(body).to_bytes(4, "big") + body
        head = frame(_HEADERS, _END_HEADERS, stream_id, block)
        size = len(stream.out)
        if not self.blocked and size <= self.max_frame and size <= self.send_window and size <= stream.window:
            self.send_window -= size
            stream.window -= size
            self.write(head + frame(_DATA, _END_STREAM, stream_id, stream.out))
            stream.out = b""
        else:
            self.write(head)
            if self.blocked or not self.send_data(stream):
                self.blocked.append(stream)

    def expire(self, now_ns: int) -> None:
        """Cancel the streams past their deadline."""
        for stream in [s for s in self.streams.values() if s.deadline_ns <= now_ns]:
            self.streams.pop(stream.id, None)
            with contextlib.suppress(ValueError):
                self.blocked.remove(stream)
            self.write(frame(_RST_STREAM, 0, stream.id, struct.pack(">I", _CANCEL)))
            self.finish(stream, b"", TransportError("timeout", f"gRPC DEADLINE_EXCEEDED: no answer within "
                                                               f"{self.shared.timeout_s:g} s"))
        if self.going_away and not self.streams:
            self.owner.retire(self)

    def keepalive(self) -> None:
        """Every keepalive_s: PING a server that has gone quiet with calls open; drop one that does not answer."""
        self.pinger = None
        if self.closed or self.loop.is_closed():
            return
        self.poll()  # (in polled mode frames may be waiting unread)
        if self.closed:
            return
        shared = self.shared
        now = time.monotonic_ns()
        if self.ping_sent_ns:
            if now - self.ping_sent_ns >= shared.ping_timeout_ns:
                self.drop(f"no answer to a keepalive PING within {shared.ping_timeout_ns / NS_PER_S:g} s")
                return
        elif (self.streams or self.owner.has_waiting(self)) and now - self.heard_ns >= shared.keepalive_ns:
            self.ping_sent_ns = now
            self.owner.pings_sent += 1
            self.write(frame(_PING, 0, 0, _KEEPALIVE_OPAQUE))
        wait_ns = shared.keepalive_ns
        if self.ping_sent_ns:
            wait_ns = self.ping_sent_ns + shared.ping_timeout_ns - now
        if not self.closed:
            self.pinger = self.loop.call_later(max(wait_ns, 1_000_000) / NS_PER_S, self.keepalive)

    # -- reading

    def poll(self) -> None:
        """Read and act on every frame that has arrived, without waiting."""
        sock = self.sock
        views = self.views
        offset_ns = -1
        while not self.closed:
            try:
                count, ancillary, _, _ = sock.recvmsg_into(views, ANCILLARY_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.drop(f"{type(exc).__name__}: {exc}")
                return
            if count == 0:
                self.drop("the server closed the connection")
                return
            if offset_ns < 0:
                self.heard_ns = time.monotonic_ns()
                if ancillary:
                    offset_ns = clock_offset_ns()
            self.inbuf += self.view[:count]
            self.frames(received_ns(ancillary, offset_ns))
            if count < READ_BYTES:
                return

    def frames(self, received_ns: int) -> None:
        """Act on every whole frame in the input buffer, each by its type's handler; a partial one waits.

        `received_ns`: the kernel's monotonic receive time of the bytes just read (0 when unknown).
        """
        buf = self.inbuf
        handlers = _FRAME_HANDLERS
        pos = 0
        end = len(buf)
        while end - pos >= 9:
            high, low, kind, flags, stream_id = _FRAME_HEAD.unpack_from(buf, pos)
            size = (high << 16) | low
            if end - pos - 9 < size:
                break
            payload = bytes(buf[pos + 9:pos + 9 + size])
            pos += 9 + size
            if self.fragment is not None and kind != _CONTINUATION:
                self.drop("protocol error: a header block was interrupted")
                return
            handler = handlers[kind]  # (a tuple indexed by the type byte: cheaper than a dict's get per frame)
            if handler is not None:
                handler(self, flags, stream_id & 0x7FFFFFFF, payload, received_ns)
                if self.closed:
                    return
        del buf[:pos]

    # Each frame type's handler: (flags, stream id, payload, received_ns).

    def _on_data(self, flags: int, stream_id: int, payload: bytes, received_ns: int) -> None:
        self.recv_unacked += len(payload)
        if self.recv_unacked > _MAX_WINDOW // 2:
            self.write(frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", self.recv_unacked)))
            self.recv_unacked = 0
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if flags & _PADDED:
            payload = payload[1:len(payload) - payload[0]]
        stream.data.append(payload)
        stream.size += len(payload)
        stream.received_ns = received_ns
        if stream.size > MAX_MESSAGE_BYTES + 5:
            self.streams.pop(stream_id, None)
            self.write(frame(_RST_STREAM, 0, stream_id, struct.pack(">I", _CANCEL)))
            self.finish(stream, b"", TransportError("connection", "answer larger than 64 MiB"))
            return
        if flags & _END_STREAM:
            self.end(stream)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes, received_ns: int) -> None:
        if flags & _PADDED:
            payload = payload[1:len(payload) - payload[0]]
        if flags & _PRIORITY:
            payload = payload[5:]
        if flags & _END_HEADERS:
            self.headers(stream_id, flags, payload, received_ns)
        else:
            self.fragment = (stream_id, flags, bytearray(payload))

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes, received_ns: int) -> None:
        if self.fragment is None or self.fragment[0] != stream_id:
            self.drop("protocol error: CONTINUATION without a header block")
            return
        self.fragment[2].extend(payload)
        if flags & _END_HEADERS:
            sid, first_flags, block = self.fragment
            self.fragment = None
            self.headers(sid, first_flags, bytes(block), received_ns)

    def _on_settings(self, flags: int, stream_id: int, payload: bytes, received_ns: int) -> None:
        if not flags & _ACK:
            # Acknowledge first: the server holds us to its old limits (frame size) until it has our ACK.
            self.write(frame(_SETTINGS, _ACK, 0))
            self.settings(payload)

    def _on_window_update(self, flags: int, stream_id: int, payload: bytes, received_ns: int) -> None:
        if len(payload) != 4:
            return
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            self.send_window += increment
        else:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.window += increment
        self.unblock()

    def _on_ping(self, flags: int, stream_id: int, payload: bytes, received_ns: int) -> None:
        if not flags & _ACK:
            self.write(frame(_PING, _ACK, 0, payload))
        elif payload == _KEEPALIVE_OPAQUE:
            self.ping_sent_ns = 0

    def _on_rst_stream(self, flags: int, stream_id: int, payload: bytes, received_ns: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        with contextlib.suppress(ValueError):
            self.blocked.remove(stream)
        code = int.from_bytes(payload[:4], "big") if len(payload) >= 4 else 0
        if code == _REFUSED_STREAM and not stream.data and stream.headers is None:
            # Not processed at all (the server counts streams a little longer than we do): send again.
            self.owner.requeue(stream.path, stream.body, stream.done, stream.deadline_ns)
        else:
            self.finish(stream, b"", TransportError("connection", f"the server reset the stream (HTTP/2 error {code})"))
        if self.going_away and not self.streams:
            self.owner.retire(self)

    def _on_goaway(self, flags: int, stream_id: int, payload: bytes, received_ns: int) -> None:
        last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF if len(payload) >= 4 else 0
        for sid in [s for s in self.streams if s > last]:
            stream = self.streams.pop(sid)
            self.finish(stream, b"", TransportError("connection", "the server is going away (GOAWAY)"))
        self.owner.retire(self)

    def headers(self, stream_id: int, flags: int, block: bytes, received_ns: int) -> None:
        """A whole header block (the answer's headers, or its trailers) for `stream_id`."""
        headers = self.decoded.get(block)
        if headers is None:
            table = self.decoder.header_table
            empty_before = not table.dynamic_entries
            try:
                headers = {str(k): str(v) for k, v in self.decoder.decode(block)}
            except hpack.HPACKError as exc:
                self.drop(f"cannot decode the server's headers: {exc}")
                return
            if empty_before and not table.dynamic_entries and len(self.decoded) < 256:
                self.decoded[block] = headers  # context free: the same bytes always mean the same
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        stream.received_ns = received_ns
        if stream.headers is None:
            try:
                stream.status = int(headers.get(":status", "0"))
            except ValueError:
                stream.status = 0
            stream.headers = headers
        else:
            stream.headers = {**stream.headers, **headers}  # the trailers
        if flags & _END_STREAM:
            self.end(stream)

    def settings(self, payload: bytes) -> None:
        """The server's SETTINGS: its stream limit, initial stream window and frame size."""
        for offset in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == 0x3:
                self.max_streams = value
            elif key == 0x4:
                delta = value - self.peer_window
                self.peer_window = value
                for stream in self.streams.values():
                    stream.window += delta
            elif key == 0x5:
                self.max_frame = value
        self.unblock()
        self.settled = True
        self.owner.start_waiting()

    def unblock(self) -> None:
        """Send what flow control held back, in order, as far as the windows now allow."""
        blocked = self.blocked
        while blocked:
            if not self.send_data(blocked[0]):
                return
            if blocked:  # (a failed write drops the connection and empties it)
                blocked.popleft()

    def end(self, stream: _Stream) -> None:
        """The stream's trailers (or a trailers-only answer) arrived: report its outcome."""
        self.streams.pop(stream.id, None)
        headers = stream.headers or {}
        status = headers.get("grpc-status")
        if stream.status != 200:
            self.finish(stream, b"", TransportError("connection", f"HTTP/2 status {stream.status} from the "
                                                                  "server (not a gRPC answer)"))
        elif status is None:
            self.finish(stream, b"", TransportError("connection", "the answer ended without a grpc-status"))
        elif status != "0":
            code = _CODES.get(int(status) if status.isdigit() else 2, grpc.StatusCode.UNKNOWN)
            detail = unquote(headers.get("grpc-message", ""))
            self.finish(stream, b"", TransportError(STATUS_KINDS.get(code, "grpc_status"),
                                                    f"gRPC {code.name}: {detail}"[:300], code.value[0]))
        else:
            payload = b"".join(stream.data)
            if len(payload) < 5 or payload[0] != 0:
                problem = "compressed" if payload[:1] == b"\x01" else "truncated"
                self.finish(stream, b"", TransportError("connection", f"a {problem} gRPC message"))
            else:
                self.finish(stream, payload[5:5 + int.from_bytes(payload[1:5], "big")], None)
        if self.going_away:
            if not self.streams:
                self.owner.retire(self)
        else:
            self.owner.start_waiting()


_FrameHandler = Callable[[_Connection, int, int, bytes, int], None]
_HANDLER_OF_TYPE: dict[int, _FrameHandler] = {
    _DATA: _Connection._on_data, _HEADERS: _Connection._on_headers, _CONTINUATION: _Connection._on_continuation,
    _SETTINGS: _Connection._on_settings, _WINDOW_UPDATE: _Connection._on_window_update, _PING: _Connection._on_ping,
    _RST_STREAM: _Connection._on_rst_stream, _GOAWAY: _Connection._on_goaway,
}
# PRIORITY, PUSH_PROMISE (disabled by our settings) and unknown frames have no handler: they are ignored.
_FRAME_HANDLERS: tuple[_FrameHandler | None, ...] = tuple(_HANDLER_OF_TYPE.get(kind) for kind in range(256))
"""The handler of each frame type (the frame head's type byte), or None."""


class H2GrpcTransport:
    """The gRPC transport on the lean client: GrpcTransport's calls, readiness, metadata and error classes;
    grpc:// only (grpcs:// targets use GrpcTransport)."""

    def __init__(self, url: str, *, model: str, version: str | None = None, timeout_s: float,
                 headers: dict[str, str] | None = None, keepalive_s: float = 30.0, **_: object) -> None:
        endpoint = grpc_endpoint(url)
        if endpoint.tls:
            raise ValueError(f"the lean gRPC client speaks plain grpc:// only, got {endpoint.redacted()!r}")
        self.endpoint = endpoint
        self._address = endpoint.address
        self._host = endpoint.host
        self._port = endpoint.port
        self._model = model
        self._version = version or ""
        self._timeout_s = timeout_s
        self._timeout_ns = int(timeout_s * NS_PER_S)
        self._sweep_s = min(max(timeout_s / 10, 0.001), 0.1)
        keepalive_ns = int(keepalive_s * NS_PER_S)
        # gRPC metadata keys are lower case; the values never leave this object.
        metadata = call_metadata(endpoint, headers)
        self._shared = _Shared(endpoint.authority, timeout_s, metadata, keepalive_ns, min(keepalive_ns, 20 * NS_PER_S))
        self.pings_sent = 0  # keepalive PINGs, for the curious (and the tests)
        self.connections_opened = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: _Connection | None = None  # the connection new calls go on
        self._draining: list[_Connection] = []  # connections after a GOAWAY, finishing their streams
        self._connecting: asyncio.Task[None] | None = None
        self._waiting: deque[tuple[str, bytes, Done, int]] = deque()  # calls not yet on a stream, and deadlines
        self._polled = False
        self._sweeper: asyncio.TimerHandle | None = None

    # -- connections

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            sock = await connect(self._host, self._port)
        except OSError as exc:
            self._fail_waiting(TransportError("connection", f"cannot connect to {self._address}: "
                                                            f"{exc.strerror or exc}"))
            return
        stale = [c for c in (self._conn, *self._draining) if c is not None and c.loop is not loop]
        if self._conn in stale:
            self._conn = None  # (detached first: the calls waiting here are for the new connection)
        for old in stale:
            old.drop("reconnected in a new event loop")
        if self._conn is not None:  # (a connection of this loop is open already: keep it, use the new one)
            self.retire(self._conn)
        conn = _Connection(self, self._shared, sock, loop)
        self._conn = conn
        self._loop = loop
        self.connections_opened += 1
        conn.start(self._polled)

    def retire(self, conn: _Connection) -> None:
        """`conn` takes no new streams (GOAWAY, or its stream ids ran out). New calls go on a new connection
        at once; `conn` is closed when its last stream has ended. (Its connections call this too.)"""
        conn.going_away = True
        if self._conn is conn:
            self._conn = None
            if conn.streams:
                self._draining.append(conn)
            if self._waiting or conn.streams:  # in use: have the next connection ready for the next call
                self._ensure_connecting(conn.loop)
        if not conn.streams:
            conn.close()
            if conn in self._draining:
                self._draining.remove(conn)

    def connection_lost(self, conn: _Connection, error: TransportError) -> None:
        """`conn` broke or closed. If it was the one new calls go on, the calls waiting for it fail too.
        (Its connections call this.)"""
        if conn in self._draining:
            self._draining.remove(conn)
        if self._conn is conn:
            self._conn = None
            self._fail_waiting(error)

    def has_waiting(self, conn: _Connection) -> bool:
        """Whether calls are queued for `conn`, the connection new calls go on. (Its connections ask this.)"""
        return bool(self._waiting) and self._conn is conn

    def _ensure_connecting(self, loop: asyncio.AbstractEventLoop) -> None:
        if (self._connecting is None or self._connecting.done()) and not loop.is_closed():
            self._connecting = loop.create_task(self._connect())

    def set_polled(self, polled: bool) -> bool:
        """Polled mode: the event loop stops watching the sockets and the caller drains them with poll()."""
        self._polled = polled
        for conn in (self._conn, *self._draining):
            if conn is not None:
                conn.watch(not polled)
        return polled

    def poll(self) -> None:
        """Read and act on every frame that has arrived, without waiting."""
        conn = self._conn
        if conn is not None:
            conn.poll()
        if self._draining:
            for old in list(self._draining):
                old.poll()

    def _fail_waiting(self, error: TransportError) -> None:
        waiting, self._waiting = self._waiting, deque()
        for _, _, done, _ in waiting:
            done(b"", error, 0)

    # -- calls

    def submit(self, path: str, body: bytes, done: Done) -> None:
        """Start a unary call; `done(message, error, received_ns)` runs when it ends."""
        self._start(path, body, done, 0)

    def _start(self, path: str, body: bytes, done: Done, deadline_ns: int) -> None:
        """Open a stream for the call, or queue it (with its deadline) until a connection can take it."""
        if not deadline_ns:
            deadline_ns = time.monotonic_ns() + self._timeout_ns
        loop = asyncio.get_running_loop()
        conn = self._conn
        if conn is None or conn.loop is not loop:
            self._waiting.append((path, body, done, deadline_ns))
            self._ensure_connecting(loop)
            self._arm_sweeper(loop)
            return
        if not conn.settled or len(conn.streams) >= conn.max_streams or conn.next_id > _LAST_STREAM_ID - 2:
            self._waiting.append((path, body, done, deadline_ns))
            if conn.next_id > _LAST_STREAM_ID - 2:
                self.retire(conn)
            self._arm_sweeper(loop)
            return
        conn.open(path, body, done, deadline_ns)
        if self._sweeper is None:
            self._arm_sweeper(loop)

    def _arm_sweeper(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sweeper is None and not loop.is_closed():
            self._sweeper = loop.call_later(self._sweep_s, self._sweep)

    def start_waiting(self) -> None:
        """Put queued calls on streams while the current connection takes them. (Its connections call this.)"""
        waiting = self._waiting
        while waiting:
            conn = self._conn
            if conn is None or not conn.settled or len(conn.streams) >= conn.max_streams or conn.going_away:
                return
            path, body, done, deadline_ns = waiting.popleft()
            self._start(path, body, done, deadline_ns)

    def requeue(self, path: str, body: bytes, done: Done, deadline_ns: int) -> None:
        """A call the server refused unprocessed: first in line again, keeping its deadline (monotonic ns).
        (Its connections call this.)"""
        self._waiting.appendleft((path, body, done, deadline_ns))
        self.start_waiting()

    async def send(self, path: str, body: bytes) -> bytes:
        """One unary call of method `path` with the pre-serialized `body`; the response bytes."""
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def done(message: bytes, error: TransportError | None, _: int) -> None:
            if waiter.done():
                return
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(message)

        self.submit(path, body, done)
        return await waiter

    async def probe(self, path: str) -> int:
        """ServerReady or ModelReady over this client: 200 ready, 503 not ready, 0 no answer."""
        return await probe_ready(self.send, path, self._model, self._version)

    async def model_metadata(self) -> dict[str, Any]:
        """The model's ModelMetadata over this client, in the REST document's shape."""
        return await fetch_model_metadata(self.send, self.endpoint.redacted(), self._model, self._version)

    def _sweep(self) -> None:
        """Cancel calls past their deadline (reading first whatever has arrived), queued ones included."""
        self._sweeper = None
        self.poll()
        now = time.monotonic_ns()
        if any(deadline <= now for _, _, _, deadline in self._waiting):
            late = [w for w in self._waiting if w[3] <= now]
            self._waiting = deque(w for w in self._waiting if w[3] > now)
            for _, _, done, _ in late:
                done(b"", TransportError("timeout", f"gRPC DEADLINE_EXCEEDED: no stream to the server within "
                                                    f"{self._timeout_s:g} s"), 0)
        busy = bool(self._waiting)
        for conn in (self._conn, *self._draining):
            if conn is not None:
                conn.expire(now)
                busy = busy or bool(conn.streams)
        if busy:
            with contextlib.suppress(RuntimeError):  # no loop left to sweep in
                self._arm_sweeper(self._loop or asyncio.get_running_loop())

    async def close(self) -> None:
        """Close the connections; calls still open end as connection errors."""
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in (self._conn, *self._draining):
            if conn is not None:
                conn.drop("the client was closed")
        self._conn = None
        self._draining = []
        self._fail_waiting(TransportError("connection", "the client was closed"))
        self._loop = None
