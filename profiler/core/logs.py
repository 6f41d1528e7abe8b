"""Log lines that never block the event loop: a handler that queues them, and a thread that writes them.

A write to stderr blocks once the pipe behind it is full: a log collector that falls behind, a
container runtime under pressure, a parent process that does not read. In the sidecar that write
would happen on the event loop, so one log line could freeze the control plane and the load
generator together (and every latency measured across the freeze). Here the loop only formats the
line and puts it on a bounded queue; a daemon thread does the blocking write. When the queue is
full the line is dropped and counted, and the writer reports the count once it has caught up.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUEUE_LINES = 10_000
"""Lines held while the stream is blocked; beyond them lines are dropped (and counted)."""


class QueuedStreamHandler(logging.Handler):
    """Formats each record on the caller's thread and hands the line to a writer thread; never blocks."""

    def __init__(self, stream: TextIO | None = None, capacity: int = QUEUE_LINES) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr
        self.dropped = 0
        self._reported = 0
        self._lines: queue.Queue[str | None] = queue.Queue(maxsize=capacity)
        self._writer = threading.Thread(target=self._write, name="profiler-log-writer", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        try:
            self._lines.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def _write(self) -> None:
        while True:
            line = self._lines.get()
            if line is None:
                return
            dropped = self.dropped
            if dropped > self._reported and self._lines.empty():
                # Caught up with the lines queued before the drops: say how many came after them.
                line += f"({dropped - self._reported} log lines dropped: the log stream was blocked)\n"
                self._reported = dropped
            with contextlib.suppress(OSError, ValueError):  # a closed or broken stream loses the line
                self.stream.write(line)
                self.stream.flush()

    def close(self, timeout_s: float = 2.0) -> None:
        """Write what is queued (waiting at most `timeout_s` for a blocked stream) and stop the writer."""
        with contextlib.suppress(queue.Full):
            self._lines.put(None, timeout=timeout_s)
        self._writer.join(timeout_s)
        super().close()


def configure(level: int = logging.INFO) -> QueuedStreamHandler | None:
    """One line per event on stderr through a QueuedStreamHandler, unless the embedding program configured
    logging already (then None)."""
    root = logging.getLogger()
    if root.handlers:
        return None
    handler = QueuedStreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def unconfigure(handler: QueuedStreamHandler | None) -> None:
    """Flush and remove what configure() installed."""
    if handler is None:
        return
    logging.getLogger().removeHandler(handler)
    handler.close()
