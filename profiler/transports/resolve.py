"""Resolve the target's host once before the run, so a name that does not exist is said to be one.

Without it an unresolvable host shows only as 'no answer' from every readiness probe until the
readiness timeout. The lookup runs in a daemon thread of its own, not the loop's executor: the C
library's getaddrinfo cannot be cancelled, and a resolver that never answers must neither hang the
run nor keep the process from exiting (asyncio.run waits for its executor's threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable
from typing import Any

from profiler.core.errors import TargetError
from profiler.core.url import TargetUrl

RESOLVE_TIMEOUT_S = 10.0
"""How long the one lookup of the target's host may take (the C library's default is 5 s per server)."""

AddressInfo = list[tuple[Any, ...]]
Resolver = Callable[..., AddressInfo]
"""socket.getaddrinfo's signature; a test hands in one that never answers."""


async def resolve_target(endpoint: TargetUrl, timeout_s: float = RESOLVE_TIMEOUT_S,
                         getaddrinfo: Resolver = socket.getaddrinfo) -> AddressInfo:
    """The addresses of the target's host; TargetError 'cannot resolve host X' when the name has none, or
    when no answer comes within `timeout_s`. An IP address is returned as it is, without a lookup."""
    host = endpoint.host
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 0, "", (host, endpoint.port))]
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[AddressInfo] = loop.create_future()

    def settle(infos: AddressInfo | None, error: BaseException | None) -> None:
        if answer.done():
            return
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(infos or [])

    def lookup() -> None:
        infos: AddressInfo | None = None
        error: BaseException | None = None
        try:
            infos = getaddrinfo(host, endpoint.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed while the lookup ran: nobody waits
            loop.call_soon_threadsafe(settle, infos, error)

    threading.Thread(target=lookup, name="profiler-resolve", daemon=True).start()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await answer
    except TimeoutError:
        raise TargetError(f"cannot resolve host {host}: no answer from the resolver within {timeout_s:g} s") \
            from None
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise TargetError(f"cannot resolve host {host}: {reason}") from None
    if not infos:
        raise TargetError(f"cannot resolve host {host}: no address")
    return infos
