"""The event loop: uvloop where it is installed, the standard loop elsewhere; blocking calls in daemon threads."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on uvloop (falls back to asyncio's loop)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def in_thread(fn: Callable[..., T], *args: Any, name: str = "profiler-blocking") -> T:
    """Call `fn(*args)` in a new daemon thread and await its result (or exception) on the loop.

    Unlike `asyncio.to_thread`, the caller may stop waiting (cancel the awaiting task) and abandon the
    thread: a call that blocks for good (an open() of a FIFO nobody writes, a read of a hung NFS file,
    a SQLite write behind a lock) then keeps only its own thread. That is safe because the thread is a
    daemon: neither the event loop's shutdown (which joins the default executor's threads) nor the
    interpreter's exit waits for it, and its late result is dropped, never delivered to a closed loop.
    Use it for calls whose only effects are their result or an atomic write (a temp file renamed, one
    SQLite transaction), so abandoning one half-way leaves nothing half done.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # the caller stopped waiting: the result has nowhere to go
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = fn(*args)
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed while the call blocked: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await future
