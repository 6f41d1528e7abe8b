"""The control plane's limits (profiler.app.limits), on real sockets on 127.0.0.1 with aiohttp behind the guard."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from profiler.app.limits import (
    FD_SHARE,
    MAX_CONNECTIONS,
    MIN_CONNECTIONS,
    Listener,
    connection_cap,
    error_answer,
    head_end,
    listen,
)

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: sidecar\r\n\r\n"
BIG_BYTES = 8 * 2**20

Start = Callable[..., Awaitable[Listener]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Start an aiohttp app (GET /healthz, GET /big: 8 MiB) behind a guard on 127.0.0.1:0; stopped after the test."""
    started: list[tuple[web.AppRunner, Listener]] = []

    async def run(**options: float) -> Listener:
        app = web.Application()

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        async def big(_: web.Request) -> web.Response:
            return web.Response(body=b"x" * BIG_BYTES)

        app.router.add_get("/healthz", healthz)
        app.router.add_get("/big", big)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=5)
        await runner.setup()
        assert runner.server is not None
        write_timeout_s = options.pop("write_timeout_s", None)
        listener = await listen(runner.server, "127.0.0.1", 0, **options)  # type: ignore[arg-type]
        if write_timeout_s is not None:
            listener.guard.write_timeout_s = write_timeout_s
        started.append((runner, listener))
        return listener

    yield run
    for runner, listener in started:
        listener.stop_accepting()
        await runner.cleanup()
        await listener.wait_closed()


async def read_all(reader: asyncio.StreamReader, timeout_s: float = 10) -> bytes:
    """Everything until the server closes (b"" parts after a reset are fine)."""
    try:
        return await asyncio.wait_for(reader.read(), timeout_s)
    except ConnectionResetError:
        return b""


async def close_all(streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    """Close client streams and wait for them (a reset one may complain: it is closed all the same)."""
    for _, writer in streams:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 answer with a Content-Length: (status, body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    return status, await asyncio.wait_for(reader.readexactly(length), 10)


@pytest.mark.parametrize(
    ("buffer", "start", "end"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, 27),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody", 0, 27),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", 0, -1),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r", 0, -1),
        (b"GET / HTTP/1.1\nHost: x\n\n", 0, 24),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 24, 27),  # the blank line began in an earlier packet
    ],
)
def test_head_end(buffer: bytes, start: int, end: int) -> None:
    assert head_end(buffer, start) == end


def test_error_answer_is_whole_http_with_a_json_body() -> None:
    raw = error_answer(408, "no head")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head and json.loads(body) == {"error": "no head"}


def test_the_cap_stays_well_below_the_descriptor_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert MIN_CONNECTIONS <= connection_cap() <= MAX_CONNECTIONS
    assert connection_cap() <= max(MIN_CONNECTIONS, soft // FD_SHARE)
    assert connection_cap(100) == min(100, max(MIN_CONNECTIONS, soft // FD_SHARE))


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one_in_a_child() -> None:
    """In a child process (the test process keeps its own limits): soft 256, hard 2048 -> 2048, and the cap with it."""
    script = ("import resource; from profiler.app.limits import connection_cap, raise_fd_limit; "
              "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 2048)); "
              "print(connection_cap(), raise_fd_limit(), connection_cap())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(MIN_CONNECTIONS), "2048", str(2048 // FD_SHARE)]


async def test_a_whole_head_is_served_and_kept_alive_even_byte_by_byte(start: Start) -> None:
    listener = await start()
    reader, writer = await asyncio.open_connection(*listener.address)
    writer.write(HEALTHZ + HEALTHZ)  # pipelined
    assert await answer(reader) == (200, b'{"status": "ok"}')
    assert await answer(reader) == (200, b'{"status": "ok"}')
    for byte in HEALTHZ:  # one byte a packet: the blank line is split across packets
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.001)
    assert await answer(reader) == (200, b'{"status": "ok"}')
    assert listener.guard.counts.handed == 1 and listener.guard.counts.timed_out == 0
    await close_all([(reader, writer)])


async def test_half_a_head_is_answered_408_and_closed_after_the_head_timeout(start: Start) -> None:
    listener = await start(head_timeout_s=0.5)
    reader, writer = await asyncio.open_connection(*listener.address)
    opened = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: side")
    for _ in range(3):  # a slowloris: a byte now and then never extends the deadline
        await asyncio.sleep(0.2)
        writer.write(b"c")
    raw = await read_all(reader)
    waited_s = time.monotonic() - opened
    assert raw.startswith(b"HTTP/1.1 408 ") and b"no whole request head within 0.5 s" in raw
    assert 0.5 <= waited_s < 5, waited_s
    assert listener.guard.counts.timed_out == 1 and listener.guard.open_connections == 0
    await close_all([(reader, writer)])


async def test_a_head_too_large_is_answered_431(start: Start) -> None:
    listener = await start()
    reader, writer = await asyncio.open_connection(*listener.address)
    writer.write(b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 40_000 + b"\r\n")
    raw = await read_all(reader)
    assert raw.startswith(b"HTTP/1.1 431 "), raw[:80]
    assert listener.guard.counts.too_large == 1
    await close_all([(reader, writer)])


async def test_past_the_cap_the_oldest_waiting_connection_goes_and_the_new_one_is_served(start: Start) -> None:
    listener = await start(max_connections=4)
    slow = []
    for _ in range(4):
        reader, writer = await asyncio.open_connection(*listener.address)
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        slow.append((reader, writer))
        await asyncio.sleep(0.02)  # accepted in this order
    assert listener.guard.open_connections == 4
    probes = []
    for _ in range(3):  # each probe (kept open) evicts the oldest slow socket still there, and is answered
        reader, writer = await asyncio.open_connection(*listener.address)
        writer.write(HEALTHZ)
        assert (await answer(reader))[0] == 200
        probes.append((reader, writer))
    assert listener.guard.counts.evicted == 3 and listener.guard.counts.peak <= 4
    closed = [await read_all(reader, 5) for reader, _ in slow[:3]]
    assert closed == [b"", b"", b""]  # reset, no answer
    assert not slow[3][0].at_eof()  # the newest slow socket is still there (until its head timeout)
    await close_all(slow + probes)


async def test_a_client_that_stops_reading_is_dropped_after_the_write_timeout(start: Start) -> None:
    listener = await start(write_timeout_s=0.5)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once: 8 MiB cannot go anywhere
    client.connect(listener.address)
    client.sendall(b"GET /big HTTP/1.1\r\nHost: sidecar\r\n\r\n")
    deadline = time.monotonic() + 10
    while listener.guard.counts.slow_readers == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert listener.guard.counts.slow_readers == 1 and listener.guard.open_connections == 0
    client.close()
