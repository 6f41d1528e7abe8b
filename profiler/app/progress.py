"""Live progress of a run in the terminal (`profiler run`, `profiler demo`), read from the run's state.

A task on the run's event loop looks at the `RunView` every REFRESH_S (the engine never calls it, so the
progress cannot hold up a send) and shows what the run does now: what it waits for and the time left, and
during the load the current stage, offered against achieved rate, sent and errors, p50/p99 so far, the
model's memory and the time elapsed and left, with a line per finished stage.

When stderr is a terminal it is a `rich` live display there, redrawn in place and erased at the end (the
table follows on stdout). Elsewhere (CI logs, a pipe) it is plain text on stdout, beside the table: one line
per finished stage and one every PLAIN_EVERY_S, no control characters, written by a thread (core.logs'
queue) so a pipe nobody drains cannot stall the run. stderr stays for errors: a run that cannot run still
says so in one `profiler: error:` line there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from profiler.codecs.factory import codec_from_config
from profiler.core.logs import QueuedStreamHandler
from profiler.core.redact import redact_url
from profiler.measure.latency import StageRecorder, value_at_ms
from profiler.state import RunView

REFRESH_S = 0.5
"""How often the terminal display is redrawn: a redraw costs about a millisecond of the loop."""
PLAIN_EVERY_S = 10.0
"""Without a terminal, a status line this often (besides one per finished stage)."""
MIB = 1024 * 1024


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds:.0f}s" if seconds < 90 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class RunProgress:
    """What the progress shows, read off a run's state; pure over the state and the monotonic time given."""

    def __init__(self, run: RunView) -> None:
        self.run = run
        self._phase = ""
        self._phase_since = time.monotonic()
        self._finished: set[int] = set()
        target = run.config.target
        try:
            paths = codec_from_config(target, run.config.dataset.inputs, run.config.load.batch_size).ready_paths
        except Exception:  # a profile that builds no codec fails the run itself, with its own message
            paths = ()
        self.waiting_for = redact_url(target.url) + (f" ({', '.join(paths)})" if paths else "")

    def observe(self, now_s: float) -> None:
        """Note a change of phase (the readiness countdown counts from it)."""
        if self.run.phase != self._phase:
            self._phase = self.run.phase
            self._phase_since = now_s

    def status(self, now_s: float) -> str:
        """One line: the phase, and in it what is waited for or what the load does."""
        phase = self.run.phase
        if phase == "waiting for target":
            left = self.run.config.target.ready_timeout_s - (now_s - self._phase_since)
            return f"waiting for the target to be ready: {self.waiting_for}, {_duration(left)} left"
        recorder = self._current()
        if phase == "load" and recorder is not None:
            return self._stage_status(recorder)
        return f"{phase} ({_duration(now_s - self._phase_since)})"

    def _current(self) -> StageRecorder | None:
        recorders = self.run.recorders
        return recorders[-1] if recorders and not recorders[-1].ended_ns else None

    def _stage_status(self, recorder: StageRecorder) -> str:
        stage = recorder.stage
        achieved = recorder.achieved_rps()  # syncs the engine's live counts first
        elapsed_s = (time.monotonic_ns() - recorder.started_ns) / 1e9 if recorder.started_ns else 0.0
        index = len(self.run.recorders)
        later_s = sum(s.duration_s for s in self.run.stages[index:])
        memory = self._memory()
        return (f"{stage.name} [{index}/{len(self.run.stages)}]  offered {stage.rate_rps:g} rps  achieved "
                f"{achieved or 0:.1f} rps  sent {recorder.launched}  errors {recorder.errors}  p50 "
                f"{_ms(value_at_ms(recorder.latency, 50.0))} ms  p99 {_ms(value_at_ms(recorder.latency, 99.0))} ms"
                f"  memory {memory}  {_duration(elapsed_s)} of {_duration(stage.duration_s)}, "
                f"{_duration(stage.duration_s - elapsed_s + later_s)} left in the load")

    def _memory(self) -> str:
        last = self.run.series.last
        return "-" if last is None or last.memory_bytes is None else f"{last.memory_bytes / MIB:.1f} MiB"

    def finished_lines(self) -> list[str]:
        """A line for each stage that ended since the last call, in order."""
        lines = []
        for index, recorder in enumerate(self.run.recorders):
            if not recorder.ended_ns or index in self._finished:
                continue
            self._finished.add(index)
            stage = recorder.stage
            sent = recorder.completed + recorder.errors
            lines.append(f"{stage.name:<10} {'warm-up' if stage.warmup else 'done':<8} offered {stage.rate_rps:g} rps"
                         f"  achieved {recorder.achieved_rps() or 0:.1f} rps  sent {sent}"
                         f"  errors {recorder.errors}  p50 {_ms(value_at_ms(recorder.latency, 50.0))} ms"
                         f"  p99 {_ms(value_at_ms(recorder.latency, 99.0))} ms  memory {self._memory()}")
        return lines


class TerminalProgress:
    """A `rich` live display on a terminal: finished stages printed above, the status line redrawn below."""

    def __init__(self, run: RunView, stream: TextIO) -> None:
        self.progress = RunProgress(run)
        self.console = Console(file=stream, highlight=False)
        self.live = Live(console=self.console, auto_refresh=False, transient=True)

    def start(self) -> None:
        """Take the bottom of the terminal."""
        self.live.start()

    def tick(self, now_s: float) -> None:
        """Print finished stages, redraw the status."""
        self.progress.observe(now_s)
        for line in self.progress.finished_lines():
            self.live.console.print(Text(line))
        table = Table.grid(padding=(0, 1))
        table.add_row(Text("profiling", style="bold cyan"), Text(self.progress.status(now_s)))
        self.live.update(Group(table), refresh=True)

    def stop(self) -> None:
        """Print what is left and give the terminal back."""
        for line in self.progress.finished_lines():
            self.live.console.print(Text(line))
        self.live.stop()


class PlainProgress:
    """Plain lines for logs: one per finished stage and one every PLAIN_EVERY_S, through a writer thread."""

    def __init__(self, run: RunView, stream: TextIO) -> None:
        self.progress = RunProgress(run)
        self.handler = QueuedStreamHandler(stream)
        self.handler.setFormatter(logging.Formatter("progress %(message)s"))
        self._last_s = -PLAIN_EVERY_S

    def start(self) -> None:
        """Nothing to set up."""

    def _emit(self, line: str) -> None:
        self.handler.emit(logging.LogRecord("profiler.progress", logging.INFO, __file__, 0, line, None, None))

    def tick(self, now_s: float) -> None:
        """A line per finished stage, and the status line when PLAIN_EVERY_S have passed or the phase changed."""
        phase = self.progress.run.phase
        changed = phase != self.progress._phase
        self.progress.observe(now_s)
        for line in self.progress.finished_lines():
            self._emit(line)
        if (changed and phase in ("waiting for target", "load")) or now_s - self._last_s >= PLAIN_EVERY_S:
            self._emit(self.progress.status(now_s))
            self._last_s = now_s

    def stop(self) -> None:
        """The stages that finished since the last tick, then the writer drains."""
        for line in self.progress.finished_lines():
            self._emit(line)
        self.handler.close()


async def log_progress(run: RunView, logger: logging.Logger, every_s: float = 1.0) -> None:
    """The sidecar's progress in its log until cancelled: a line per finished stage, and the status line every
    PLAIN_EVERY_S and when the run starts waiting for its target or starts the load."""
    progress = RunProgress(run)
    last_s = -PLAIN_EVERY_S
    try:
        while True:
            now_s = time.monotonic()
            phase = run.phase
            changed = phase != progress._phase
            progress.observe(now_s)
            for line in progress.finished_lines():
                logger.info("run %s: %s", run.run_id, line)
            if phase in ("waiting for target", "load") and (changed or now_s - last_s >= PLAIN_EVERY_S):
                logger.info("run %s: %s", run.run_id, progress.status(now_s))
                last_s = now_s
            await asyncio.sleep(every_s)
    finally:
        for line in progress.finished_lines():  # the stages that ended since the last look
            logger.info("run %s: %s", run.run_id, line)


async def show_progress(run: RunView, stream: TextIO | None = None, refresh_s: float = REFRESH_S) -> None:
    """Show the run's progress until cancelled: on `stream`, live if it is a terminal, else plain lines; by
    default live on stderr when that is a terminal, else plain lines on stdout."""
    out = stream if stream is not None else (sys.stderr if sys.stderr.isatty() else sys.stdout)
    view: TerminalProgress | PlainProgress = (TerminalProgress(run, out) if out.isatty()
                                              else PlainProgress(run, out))
    view.start()
    try:
        while True:
            view.tick(time.monotonic())
            await asyncio.sleep(refresh_s)
    finally:
        with contextlib.suppress(Exception):  # the display must never be why a run fails
            view.stop()
