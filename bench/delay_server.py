"""A bench target with exactly known delays: every answer after --delay-ms, and a stall of --stall-s every
--stall-every-s that holds everything arriving in it until the stall ends (like the example server's).

Prints "READY http://127.0.0.1:PORT EPOCH_NS" first: EPOCH_NS (time.monotonic_ns, shared by every process
on the machine) is when its stall cycle starts, so the truth for a request meant to go at t is
delay + (stall - (t - epoch) % every, when that phase is inside the stall).
"""

from __future__ import annotations

import argparse
import asyncio
import time

REPLY = (b'{"model_name":"digits","model_version":"1","id":"","outputs":[{"name":"label","datatype":"INT64",'
         b'"shape":[1],"data":[3]}]}')
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(REPLY), REPLY)


def extra_ns(now_ns: int, epoch_ns: int, every_ns: int, stall_ns: int) -> int:
    """How long a request arriving at now_ns is held by the stall."""
    if not every_ns or not stall_ns:
        return 0
    phase = (now_ns - epoch_ns) % every_ns
    return stall_ns - phase if phase < stall_ns else 0


class Handler(asyncio.Protocol):
    def __init__(self, delay_ns: int, epoch_ns: int, every_ns: int, stall_ns: int) -> None:
        self.delay_ns, self.epoch_ns, self.every_ns, self.stall_ns = delay_ns, epoch_ns, every_ns, stall_ns
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        loop = asyncio.get_running_loop()
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
            now = time.monotonic_ns()
            due_ns = now + extra_ns(now, self.epoch_ns, self.every_ns, self.stall_ns) + self.delay_ns
            loop.call_at(due_ns / 1e9, self.answer)

    def answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(RESPONSE)


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    epoch_ns = time.monotonic_ns()
    server = await loop.create_server(
        lambda: Handler(int(args.delay_ms * 1e6), epoch_ns, int(args.stall_every_s * 1e9), int(args.stall_s * 1e9)),
        "127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"READY http://127.0.0.1:{port} {epoch_ns}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=50)
    parser.add_argument("--stall-every-s", type=float, default=0)
    parser.add_argument("--stall-s", type=float, default=0)
    asyncio.run(main(parser.parse_args()))
