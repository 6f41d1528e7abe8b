"""The dispatcher's sleep: wake at an absolute monotonic instant with microsecond precision, without spinning.

uvloop keeps timers in whole milliseconds (and runs one under 0.5 ms at once), so asyncio.sleep
either wakes up to ~1 ms late or, for short waits, spins the loop. On Linux a timerfd armed at an
absolute CLOCK_MONOTONIC deadline (the clock behind time.monotonic_ns) is watched by the event loop
like a socket: the kernel's high-resolution timer wakes the loop on time, one wake per sleep.
Elsewhere, or when the timerfd cannot be made, it falls back to asyncio.sleep of at least 1 ms.

`Clock` is the engine's one seam to time: what time it is and a sleeper on that same time line.
The default, MONOTONIC, is time.monotonic_ns with a Sleeper per stage; a test injects a fake whose
sleeps move its own time, and the engine runs the very same dispatch code on it.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
import time
from typing import Protocol

from profiler.core.units import NS_PER_S

MIN_SLEEP_NS = 1_000_000
"""The fallback's shortest sleep: shorter ones would spin uvloop."""

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = 0o4000
_TFD_CLOEXEC = 0o2000000
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                                         ctypes.c_void_p]
        return libc
    except (OSError, AttributeError):
        return None


class Waker(Protocol):
    """One stage's sleeps on its clock's time line: one sleep at a time, closed at the stage's end."""

    def tick(self, first_ns: int, interval_ns: int) -> bool:
        """Periodic mode: from now on wake only at `first_ns` + k x `interval_ns`; False if it cannot."""
        ...

    async def until(self, deadline_ns: int) -> None:
        """Return at `deadline_ns` (or at the first tick at or after it), or at once if it has passed."""
        ...

    def close(self) -> None:
        """Release what the sleeps held."""
        ...


class Clock(Protocol):
    """The engine's time: now, and sleepers on the same time line.

    Transports read answers' kernel receive times on the monotonic clock; the engine takes one as the
    answer's time only when it lies between the send and now on this clock. The real clock always
    has them; a fake clock has them only if it runs on the monotonic time line (tests that start
    theirs elsewhere, with in-process transports that read no kernel time, get none).
    """

    def now_ns(self) -> int:
        """The time now, in ns."""
        ...

    def waker(self) -> Waker:
        """A sleeper for one stage."""
        ...


class Sleeper:
    """Sleeps until absolute `time.monotonic_ns()` deadlines; one sleeper per event loop, one sleep at a time."""

    def __init__(self, precise: bool = True) -> None:
        self._libc = _libc() if precise else None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._spec = _Itimerspec()
        self._interval_ns = 0
        if self._libc is not None:
            fd = int(self._libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC))
            if fd >= 0:
                self._fd = fd

    @property
    def ticking(self) -> bool:
        """Whether the timer is periodic (see tick)."""
        return self._interval_ns > 0

    @property
    def precise(self) -> bool:
        """Whether sleeps use the timerfd (else the millisecond fallback)."""
        return self._fd >= 0

    def tick(self, first_ns: int, interval_ns: int) -> bool:
        """Periodic mode: the timer fires at `first_ns` and every `interval_ns` after, armed once.

        until() then returns at the first tick at or after its deadline, so a dispatcher that wakes
        on a fixed grid anyway saves re-arming the timer (a system call) at every wake. False (and
        no change) without a timerfd.
        """
        if self._fd < 0 or interval_ns <= 0:
            return False
        spec = _Itimerspec()
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(max(first_ns, 1), NS_PER_S)
        spec.it_interval.tv_sec, spec.it_interval.tv_nsec = divmod(interval_ns, NS_PER_S)
        assert self._libc is not None
        if self._libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            return False
        self._interval_ns = interval_ns
        return True

    async def until(self, deadline_ns: int) -> None:
        """Return at `deadline_ns` (monotonic), or at once if it has passed."""
        if self._interval_ns:
            await self._ticks_until(deadline_ns)
            return
        if self._fd < 0:
            await asyncio.sleep(max(deadline_ns - time.monotonic_ns(), MIN_SLEEP_NS) / NS_PER_S)
            return
        loop = self._watched_by_running_loop()
        spec = self._spec
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(max(deadline_ns, 1), NS_PER_S)
        waiter = self._waiter = loop.create_future()
        assert self._libc is not None
        if self._libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            self._waiter = None
            await asyncio.sleep(max(deadline_ns - time.monotonic_ns(), MIN_SLEEP_NS) / NS_PER_S)
            return
        try:
            await waiter
        finally:
            self._waiter = None

    def _watched_by_running_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, watching the timerfd (a sleeper moved to another loop moves its watch)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                self._loop.remove_reader(self._fd)
            loop.add_reader(self._fd, self._ready)
            self._loop = loop
        return loop

    async def _ticks_until(self, deadline_ns: int) -> None:
        loop = self._watched_by_running_loop()
        while time.monotonic_ns() < deadline_ns:
            waiter = self._waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def _ready(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """Release the timerfd."""
        if self._fd >= 0:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
            self._loop = None


class MonotonicClock:
    """time.monotonic_ns, with a timerfd Sleeper per stage: the engine's real time."""

    # The builtin itself, not a method wrapping it: the engine reads the clock twice per request.
    now_ns = staticmethod(time.monotonic_ns)

    def waker(self) -> Sleeper:
        """A new timerfd sleeper (the millisecond fallback where there is none)."""
        return Sleeper()


MONOTONIC = MonotonicClock()
"""The default clock of the engine."""
