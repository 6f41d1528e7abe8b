"""The lean HTTP/2 gRPC client against real grpc.aio servers: what a hand-made HTTP/2 client can get wrong.

Flow control both ways (messages far above the 64 KiB initial windows, split into frames), the
server's stream limit, metadata on every call, status details, a server that goes away, and its
use by the engine in polled mode with kernel receive times.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from profiler.codecs.v2_grpc import INFER_METHOD as INFER
from profiler.codecs.v2_grpc import V2GrpcCodec
from profiler.core.errors import TransportError
from profiler.core.results import OK, Result
from profiler.core.units import NS_PER_S
from profiler.load.engine import Engine
from profiler.measure.latency import StageRecorder
from profiler.schedule import arrival_offsets_ns, make_stage
from profiler.transports.grpc_h2 import H2GrpcTransport, _Connection, _Shared, frame, request_block

pytestmark = pytest.mark.serial  # timing bounds: run alone after the parallel part (Makefile)

ECHO = "/test.Echo/Echo"


async def echo(request: bytes, context: Any) -> bytes:
    """Answers with the request, prefixed by the caller's authorization metadata; can be told to fail or wait."""
    metadata = dict(context.invocation_metadata())
    if request.startswith(b"fail:"):
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full: 100% (try later)")
    if request.startswith(b"wait:"):
        await asyncio.sleep(float(request[5:].split(b"#")[0]))
    return metadata.get("authorization", "-").encode() + b"|" + request


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    server = aio.server(options=[("grpc.max_concurrent_streams", 4),
                                 ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                                 ("grpc.max_send_message_length", 64 * 1024 * 1024)])
    handler = grpc.unary_unary_rpc_method_handler(echo)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"Echo": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"grpc://127.0.0.1:{port}"
    await server.stop(grace=None)


async def test_large_messages_cross_the_flow_control_windows_both_ways(echo_url):
    client = H2GrpcTransport(echo_url, model="m", timeout_s=10)
    big = bytes(range(256)) * 12_000  # 3 MB: 47 windows of 64 KiB, 188 frames of 16 KiB
    answers = await asyncio.gather(*(client.send(ECHO, big + bytes([i])) for i in range(3)))
    assert [a == b"-|" + big + bytes([i]) for i, a in enumerate(answers)] == [True] * 3
    await client.close()


async def test_more_calls_than_the_servers_stream_limit_wait_their_turn(echo_url):
    client = H2GrpcTransport(echo_url, model="m", timeout_s=10)
    answers = await asyncio.gather(*(client.send(ECHO, b"wait:0.05#%d" % i) for i in range(24)))
    assert answers == [b"-|wait:0.05#%d" % i for i in range(24)]  # 4 at a time, none refused
    await client.close()


async def test_metadata_goes_with_every_call_and_status_details_come_back(echo_url):
    client = H2GrpcTransport(echo_url, model="m", timeout_s=10, headers={"Authorization": "Bearer s3cret"})
    assert await client.send(ECHO, b"x") == b"Bearer s3cret|x"
    with pytest.raises(TransportError) as failed:
        await client.send(ECHO, b"fail:")
    assert failed.value.kind == "grpc_status"
    assert failed.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "RESOURCE_EXHAUSTED: queue full: 100% (try later)" in str(failed.value)  # percent-decoded
    assert await client.send(ECHO, b"after") == b"Bearer s3cret|after"  # the connection is still good
    await client.close()


async def test_a_server_that_goes_away_fails_open_calls_and_the_next_call_reconnects():
    async def start(port: int = 0) -> tuple[aio.Server, int]:
        server = aio.server()
        handler = grpc.unary_unary_rpc_method_handler(echo)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"Echo": handler}),))
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        return server, bound

    server, port = await start()
    client = H2GrpcTransport(f"grpc://127.0.0.1:{port}", model="m", timeout_s=5)
    assert await client.send(ECHO, b"one") == b"-|one"
    pending = asyncio.ensure_future(client.send(ECHO, b"wait:2"))
    await asyncio.sleep(0.2)
    await server.stop(grace=None)
    with pytest.raises(TransportError) as gone:
        await asyncio.wait_for(pending, 5)
    assert gone.value.kind == "connection"
    server, _ = await start(port)
    try:
        assert await client.send(ECHO, b"two") == b"-|two"
    finally:
        await client.close()
        await server.stop(grace=None)


def test_the_request_header_block_is_plain_hpack():
    import hpack

    block = request_block("/inference.GRPCInferenceService/ModelInfer", "127.0.0.1:8001", 2.5,
                          (("authorization", "Bearer t"),))
    assert hpack.Decoder().decode(block) == [
        (":method", "POST"), (":scheme", "http"), (":path", "/inference.GRPCInferenceService/ModelInfer"),
        (":authority", "127.0.0.1:8001"), ("content-type", "application/grpc"), ("te", "trailers"),
        ("grpc-timeout", "2500m"), ("authorization", "Bearer t")]


@pytest.fixture(scope="module")
def fixed_server() -> Iterator[str]:
    """bench/grpc_bench.py's server in its own process: one fixed ModelInfer answer, no work per call."""
    script = Path(__file__).resolve().parent.parent / "bench" / "grpc_bench.py"
    proc = subprocess.Popen([sys.executable, str(script), "--serve", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        yield f"grpc://127.0.0.1:{line.split()[1]}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_an_answer_read_late_keeps_its_kernel_time(fixed_server):
    client = H2GrpcTransport(fixed_server, model="digits", timeout_s=5)
    await client.send(INFER, b"")
    outcome: asyncio.Future[tuple[bytes, object, int]] = asyncio.get_running_loop().create_future()
    start = time.monotonic_ns()
    client.submit(INFER, b"", lambda body, error, received: outcome.set_result((body, error, received)))
    time.sleep(0.06)  # the loop is blocked while the answer arrives
    body, error, received = await asyncio.wait_for(outcome, 5)
    await client.close()
    assert error is None and body
    assert time.monotonic_ns() - start > 60_000_000
    assert 0 < received - start < 20_000_000  # the kernel's time of arrival, not the read's


async def test_the_engine_polls_the_lean_client(fixed_server):
    client = H2GrpcTransport(fixed_server, model="digits", timeout_s=5)
    await client.send(INFER, b"")
    results: list[Result] = []

    class Sink:
        def add(self, result: Result) -> None:
            results.append(result)

    modes: list[bool] = []
    original = client.set_polled

    def set_polled(polled: bool) -> bool:
        modes.append(polled)
        return original(polled)

    client.set_polled = set_polled  # type: ignore[method-assign]
    codec = V2GrpcCodec("digits")
    engine = Engine(client, INFER, [b""], codec.decode, sample_count=1, timeout_s=5, consumers=[Sink()])
    stage = make_stage(1, 1000, 0.3)
    recorder = StageRecorder(stage)
    await engine.run_stage(stage, arrival_offsets_ns(stage), recorder, even=True)
    await client.close()
    assert modes == [True, False]  # answers drained at the dispatcher's wakes, then events for the drain
    assert len(results) == 300 and all(r.outcome == OK for r in results)
    assert {tuple(r.predictions or ()) for r in results} == {(7,)}


async def test_a_server_that_never_speaks_http2_ends_calls_as_timeouts_or_connection_errors():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, reads, never answers (no SETTINGS: no call can start)
        writer.close()

    async def http1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    for handler, kind in ((silent, "timeout"), (http1, "connection")):
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = H2GrpcTransport(f"grpc://127.0.0.1:{port}", model="m", timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(TransportError) as failed:
            await asyncio.wait_for(client.send(ECHO, b"x"), 5)
        assert failed.value.kind == kind
        assert time.monotonic() - started < 2
        await client.close()
        server.close()
        await server.wait_closed()


class _BareH2Server:
    """Speaks just enough HTTP/2 to open calls (SETTINGS), then never answers one; counts the PINGs it gets.

    With `ack_pings` it acknowledges them, as a live server does; without, it is a connection that
    died silently (a crashed node behind a proxy, a dropped NAT entry).
    """

    def __init__(self, ack_pings: bool) -> None:
        self.ack_pings = ack_pings
        self.pings = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readexactly(24)  # the client preface
            writer.write(frame(4, 0, 0))  # empty SETTINGS: the defaults
            while True:
                head = await reader.readexactly(9)
                size = int.from_bytes(head[:3], "big")
                payload = await reader.readexactly(size)
                if head[3] == 6 and not head[4] & 1:  # a PING, not an ACK
                    self.pings += 1
                    if self.ack_pings:
                        writer.write(frame(6, 1, 0, payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"grpc://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def failed_call(bare: _BareH2Server, timeout_s: float) -> tuple[TransportError, float, H2GrpcTransport]:
    """One call to `bare` with keepalive every 0.2 s: the error it ends with, how long it took, the client."""
    async with bare as url:
        client = H2GrpcTransport(url, model="m", timeout_s=timeout_s, keepalive_s=0.2)
        started = time.monotonic()
        with pytest.raises(TransportError) as failed:
            await asyncio.wait_for(client.send(ECHO, b"x"), 10)
        took = time.monotonic() - started
        await client.close()
    return failed.value, took, client


async def test_keepalive_drops_a_connection_that_no_longer_answers():
    bare = _BareH2Server(ack_pings=False)
    error, took, client = await failed_call(bare, timeout_s=30)
    # Silent for 0.2 s with a call open: PING; no ACK within 0.2 s: dropped, long before the 30 s deadline.
    assert error.kind == "connection" and "keepalive PING" in str(error)
    assert bare.pings == client.pings_sent == 1
    assert 0.3 < took < 3


async def test_keepalive_acks_keep_a_slow_call_alive_until_its_deadline():
    bare = _BareH2Server(ack_pings=True)
    error, took, _ = await failed_call(bare, timeout_s=1.2)
    assert error.kind == "timeout"  # the deadline, not the keepalive, ended it
    assert 1.1 < took < 3
    assert bare.pings >= 3  # one per quiet keepalive interval, each answered


async def test_an_idle_connection_is_not_pinged(echo_url):
    client = H2GrpcTransport(echo_url, model="m", timeout_s=10, keepalive_s=0.2)
    assert await client.send(ECHO, b"hello") == b"-|hello"
    await asyncio.sleep(0.7)  # idle: no call open, so no PING (servers take pings without calls as abuse)
    assert client.pings_sent == 0
    assert await client.send(ECHO, b"again") == b"-|again"  # the idle connection is still good
    await client.close()


async def aging_server(method: Any) -> tuple[aio.Server, int]:
    """A grpc.aio server of test.Echo/Echo that sends GOAWAY on each connection 300 ms after it opened."""
    server = aio.server(options=[("grpc.max_connection_age_ms", 300), ("grpc.max_connection_age_grace_ms", 5000)])
    handler = grpc.unary_unary_rpc_method_handler(method)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"Echo": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_a_server_that_ages_out_its_connections_costs_no_call():
    """grpc.max_connection_age (common behind Kubernetes load balancers): the server sends GOAWAY every
    300 ms and closes the connection once its calls are done. No call may fail for it; each new call
    goes on a fresh connection once the old one has drained."""
    async def peer(request: bytes, context: Any) -> bytes:
        await asyncio.sleep(0.002)
        return context.peer().encode()

    server, port = await aging_server(peer)
    client = H2GrpcTransport(f"grpc://127.0.0.1:{port}", model="m", timeout_s=5)
    peers: set[bytes] = set()
    calls = 0

    async def caller() -> None:
        nonlocal calls
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            peers.add(await client.send(ECHO, b"x"))  # a TransportError fails the test
            calls += 1

    try:
        await asyncio.gather(*(caller() for _ in range(8)))
    finally:
        await client.close()
        await server.stop(None)
    assert calls > 500
    assert len(peers) >= 3  # one client port per connection: the client did move to new connections


async def test_after_a_goaway_new_calls_do_not_wait_for_the_old_connections_calls():
    """Open loop against a 100 ms model whose server ages connections out every 300 ms. Calls that arrive
    after a GOAWAY must go out on a new connection at once, not queue until the old connection's calls
    end: that wait (up to 100 ms here) would be reported as the model's latency."""
    server, port = await aging_server(echo)
    client = H2GrpcTransport(f"grpc://127.0.0.1:{port}", model="m", timeout_s=5)
    latencies: list[float] = []

    async def call(intended: float) -> None:
        await client.send(ECHO, b"wait:0.1")
        latencies.append(time.monotonic() - intended)

    try:
        calls = []
        start = time.monotonic()
        for i in range(150):  # 100 calls/s for 1.5 s, each timed from when it was meant to go
            intended = start + i * 0.01
            await asyncio.sleep(max(0.0, intended - time.monotonic()))
            calls.append(asyncio.create_task(call(intended)))
        await asyncio.gather(*calls)
    finally:
        await client.close()
        await server.stop(None)
    latencies.sort()
    assert client.connections_opened >= 3
    assert latencies[int(len(latencies) * 0.95)] < 0.15, latencies[-10:]


class _Owner:
    """A transport stand-in for one connection: records what the connection tells its owner."""

    def __init__(self) -> None:
        self.pings_sent = 0
        self.events: list[tuple[Any, ...]] = []

    def connection_lost(self, conn: _Connection, error: TransportError) -> None:
        self.events.append(("lost", str(error)))

    def retire(self, conn: _Connection) -> None:
        self.events.append(("retire",))

    def start_waiting(self) -> None:
        self.events.append(("start_waiting",))

    def requeue(self, path: str, body: bytes, done: Any, deadline_ns: int) -> None:
        self.events.append(("requeue", path, body, deadline_ns))

    def has_waiting(self, conn: _Connection) -> bool:
        return False


@pytest.fixture
async def wired() -> AsyncIterator[tuple[_Connection, _Owner, socket.socket]]:
    """A connection on one end of a socket pair (the server's end is returned), with a recording owner."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    owner = _Owner()
    conn = _Connection(owner, _Shared("h:1", 5.0, (), 30 * NS_PER_S, 20 * NS_PER_S), ours,
                       asyncio.get_running_loop())
    yield conn, owner, theirs
    conn.close()
    theirs.close()


def received(sock: socket.socket) -> bytes:
    """Everything the connection has written to the server's end so far."""
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return b""


def feed(conn: _Connection, *frames: bytes) -> None:
    conn.inbuf += b"".join(frames)
    conn.frames(0)


@pytest.mark.parametrize("kind", [2, 5, 0x0A, 0xFF], ids=["PRIORITY", "PUSH_PROMISE", "unknown-0x0a", "unknown-0xff"])
async def test_frames_without_a_handler_are_ignored_and_the_next_frame_is_handled(wired, kind):
    conn, owner, server = wired
    feed(conn, frame(kind, 0, 1, b"\x00" * 5), frame(6, 0, 0, b"12345678"))
    assert not conn.closed and owner.events == []
    assert received(server) == frame(6, 1, 0, b"12345678")  # the PING after it was answered


@pytest.mark.parametrize("kind", [0, 2, 6, 0xFF], ids=["DATA", "PRIORITY", "PING", "unknown-0xff"])
async def test_any_frame_but_continuation_inside_a_header_block_drops_the_connection(wired, kind):
    conn, owner, _ = wired
    feed(conn, frame(1, 0, 1, b"\x88"), frame(kind, 0, 0, b"12345678"))  # HEADERS without END_HEADERS
    assert conn.closed
    assert owner.events == [("lost", "protocol error: a header block was interrupted")]


async def test_a_refused_stream_goes_again_and_another_reset_ends_the_call(wired):
    conn, owner, _ = wired
    outcomes: list[tuple[bytes, TransportError | None]] = []
    for body in (b"first", b"second"):
        conn.open(ECHO, body, lambda message, error, _: outcomes.append((message, error)), 123)
    feed(conn, frame(3, 0, 1, (7).to_bytes(4, "big")), frame(3, 0, 3, (2).to_bytes(4, "big")))
    assert owner.events == [("requeue", ECHO, b"first", 123)]  # REFUSED_STREAM: not processed, sent again
    [(message, error)] = outcomes
    assert message == b"" and error is not None and error.kind == "connection" and "HTTP/2 error 2" in str(error)
    assert conn.streams == {}


async def test_goaway_ends_the_streams_the_server_never_took_and_retires_the_connection(wired):
    conn, owner, _ = wired
    outcomes: dict[bytes, TransportError | None] = {}
    for body in (b"taken", b"not taken"):
        conn.open(ECHO, body, lambda message, error, _, body=body: outcomes.__setitem__(body, error), 0)
    feed(conn, frame(7, 0, 0, (1).to_bytes(4, "big") + (0).to_bytes(4, "big")))  # last stream id 1
    assert owner.events == [("retire",)]
    assert list(conn.streams) == [1] and list(outcomes) == [b"not taken"]
    error = outcomes[b"not taken"]
    assert error is not None and error.kind == "connection" and "GOAWAY" in str(error)
