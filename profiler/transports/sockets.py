"""What the lean clients share: a connected non-blocking TCP socket that asks for kernel receive times.

With SO_TIMESTAMPNS each read carries, as a control message, the wall-clock time at which its
last bytes reached the socket; `received_ns` turns that into the monotonic clock the engine uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import time

from profiler.core.units import NS_PER_S

READ_BYTES = 256 * 1024
"""What one recv_into takes at most; a read that fills it is followed by another before the loop moves on."""
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The largest gRPC message either gRPC client accepts or sends."""
# SO_TIMESTAMPNS (and its control message) is 35 on Linux for 64-bit time_t; the socket module lacks the name.
SO_TIMESTAMPNS: int | None = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None)
_TIMESPEC = struct.Struct("@qq")
ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
"""The control-message buffer one recvmsg needs for the timestamp."""


async def connect(host: str, port: int) -> socket.socket:
    """A connected, non-blocking TCP socket with Nagle off and kernel receive times on (where supported).

    Tries each address of `host` in turn; raises the last OSError when none connects.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if SO_TIMESTAMPNS is not None:
            with contextlib.suppress(OSError):  # without it answers are timed when read
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        return sock
    raise error


def clock_offset_ns() -> int:
    """Wall clock minus monotonic clock, now: what a kernel timestamp loses to become monotonic."""
    return time.time_ns() - time.monotonic_ns()


def received_ns(ancillary: list[tuple[int, int, bytes]], offset_ns: int) -> int:
    """The monotonic receive time in one recvmsg's control messages, or 0 when there is none."""
    if ancillary:
        _, kind, data = ancillary[0]
        if kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return int(sec * NS_PER_S + nsec - offset_ns)
    return 0
