"""A bench target with exactly known delays: every answer after --delay-ms, and a stall of --stall-s every
--stall-every-s that holds everything arriving in it until the stall ends (like the example server's).

Prints "READY http://127.0.0.1:PORT EPOCH_NS" first: EPOCH_NS (time.monotonic_ns, shared by every process
on the machine) is when its stall cycle starts, so the truth for a request meant to go at t is
delay + (stall - (t - epoch) % every, when that phase is inside the stall).

This server is a process on a shared VM too: now and then it answers late, when its own wake-up is
held up. With --report-lateness each answer's one output value is that lateness in microseconds
(when it was sent minus when it was due), so a benchmark can tell the server's hiccups, which are
part of the latency it really served, from the generator's own measurement error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import heapq
import os
import socket
import struct
import time
from collections.abc import Callable

SO_TIMESTAMPNS = 35  # Linux (64-bit time_t); its control message has the same number
REPLY = (b'{"model_name":"digits","model_version":"1","id":"","outputs":[{"name":"label","datatype":"INT64",'
         b'"shape":[1],"data":[3]}]}')
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(REPLY), REPLY)
LATE_REPLY = REPLY.replace(b"[3]", b"[%d]")


def late_response(late_ns: int) -> bytes:
    """The answer whose output value is this answer's lateness in microseconds."""
    body = LATE_REPLY % (late_ns // 1000)
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def extra_ns(now_ns: int, epoch_ns: int, every_ns: int, stall_ns: int) -> int:
    """How long a request arriving at now_ns is held by the stall."""
    if not every_ns or not stall_ns:
        return 0
    phase = (now_ns - epoch_ns) % every_ns
    return stall_ns - phase if phase < stall_ns else 0


class Handler:
    """One connection on a raw non-blocking socket, so that each request's arrival is the kernel's
    receive time (SO_TIMESTAMPNS), not when this process got round to reading it: the injected
    delay then runs from the true arrival, and this server's own wake-up delays stay out of the truth.
    """

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop, timers: Timers, delay_ns: int,
                 epoch_ns: int, every_ns: int, stall_ns: int, report_lateness: bool = False) -> None:
        self.sock, self.loop, self.timers = sock, loop, timers
        self.report_lateness = report_lateness
        self.delay_ns, self.epoch_ns, self.every_ns, self.stall_ns = delay_ns, epoch_ns, every_ns, stall_ns
        self.buffer = b""
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        loop.add_reader(sock.fileno(), self.readable)

    def readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(16))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            return
        arrived = time.monotonic_ns()
        for level, kind, raw in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
                sec, nsec = struct.unpack_from("@qq", raw)
                arrived = min(arrived, sec * 1_000_000_000 + nsec - (time.time_ns() - time.monotonic_ns()))
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            due_ns = arrived + extra_ns(arrived, self.epoch_ns, self.every_ns, self.stall_ns) + self.delay_ns
            self.timers.at(due_ns, functools.partial(self.answer, due_ns))

    def answer(self, due_ns: int) -> None:
        if self.sock.fileno() >= 0:
            response = late_response(time.monotonic_ns() - due_ns) if self.report_lateness else RESPONSE
            with contextlib.suppress(OSError):
                self.sock.send(response)


class Timers:
    """Callbacks at absolute monotonic instants, to the microsecond: one timerfd re-armed to the earliest.

    The event loop's own timers are only good to ~1 ms, which would blur the injected delays.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.timerfd_create(1, 0o4000 | 0o2000000)  # CLOCK_MONOTONIC, non-blocking, cloexec
        self.heap: list[tuple[int, int, Callable[[], None]]] = []
        self.seq = 0
        self.armed = 0
        loop.add_reader(self.fd, self.fire)

    def at(self, due_ns: int, callback: Callable[[], None]) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (due_ns, self.seq, callback))
        if not self.armed or due_ns < self.armed:
            self.arm(due_ns)

    def arm(self, due_ns: int) -> None:
        self.armed = due_ns
        spec = (ctypes.c_long * 4)(0, 0, *divmod(due_ns, 1_000_000_000))
        self.libc.timerfd_settime(self.fd, 1, spec, None)  # TFD_TIMER_ABSTIME

    def fire(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            return
        self.armed = 0
        now = time.monotonic_ns()
        while self.heap and self.heap[0][0] <= now:
            heapq.heappop(self.heap)[2]()
        if self.heap:
            self.arm(self.heap[0][0])


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    epoch_ns = time.monotonic_ns()
    timers = Timers(loop)
    listener = socket.socket()
    listener.bind(("127.0.0.1", args.port))
    listener.listen(1024)
    listener.setblocking(False)

    def accept() -> None:
        with contextlib.suppress(BlockingIOError):
            sock, _ = listener.accept()
            Handler(sock, loop, timers, int(args.delay_ms * 1e6), epoch_ns, int(args.stall_every_s * 1e9),
                    int(args.stall_s * 1e9), args.report_lateness)

    loop.add_reader(listener.fileno(), accept)
    print(f"READY http://127.0.0.1:{listener.getsockname()[1]} {epoch_ns}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=50)
    parser.add_argument("--stall-every-s", type=float, default=0)
    parser.add_argument("--stall-s", type=float, default=0)
    parser.add_argument("--report-lateness", action="store_true",
                        help="answer with this answer's own lateness (microseconds) as the output value")
    asyncio.run(main(parser.parse_args()))
