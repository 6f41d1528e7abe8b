"""The sidecar's log handler: the caller never waits for the stream; a full queue drops lines and says so."""

from __future__ import annotations

import io
import logging
import threading
import time

from profiler.core.logs import QueuedStreamHandler


class BlockedStream(io.StringIO):
    """A stream whose writes wait until `release` is set, like a pipe nobody reads."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait(10)
        return super().write(text)


def records(count: int) -> list[logging.LogRecord]:
    return [logging.LogRecord("t", logging.WARNING, __file__, 1, "line %d", (i,), None) for i in range(count)]


def test_emit_does_not_wait_for_a_blocked_stream_and_counts_what_it_drops() -> None:
    stream = BlockedStream()
    handler = QueuedStreamHandler(stream, capacity=3)
    started = time.monotonic()
    for record in records(10):
        handler.emit(record)
    assert time.monotonic() - started < 0.5  # nothing waited on the stream
    # The writer holds one line (blocked in write), the queue three: the other six are dropped.
    assert handler.dropped in (6, 7)
    stream.release.set()
    handler.close()
    out = stream.getvalue().splitlines()
    kept = 10 - handler.dropped
    assert out[:kept] == [f"line {i}" for i in range(kept)]  # in order, up to the first dropped one
    assert out[kept:] == [f"({handler.dropped} log lines dropped: the log stream was blocked)"]


def test_close_gives_up_on_a_stream_that_stays_blocked() -> None:
    stream = BlockedStream()
    handler = QueuedStreamHandler(stream, capacity=2)
    for record in records(3):
        handler.emit(record)
    started = time.monotonic()
    handler.close(timeout_s=0.3)
    assert time.monotonic() - started < 2  # a process on its way out is not held by its log stream
    stream.release.set()
