"""The model server's own view of each stage: its counters read before and after the stage (`server_stats`).

A `StatsDriver` wraps the run's driver: before a stage it reads the server's cumulative counters, after the
stage (its requests drained) it reads them again, and the difference (measure/server_stats.py) goes into
the run's state under the stage's name, for the report to put beside the profiler's own figures. A reading
is one HTTP GET, bounded by `server_stats.timeout_s`; one that fails is noted in the stage's view, never a
failed run. Readings happen between stages only, so they add nothing to the load's own timing.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import aiohttp

from profiler.codecs.base import path_segment
from profiler.config import ServerStatsConfig
from profiler.core import aio
from profiler.core.hdr import total_of
from profiler.core.redact import redact_url
from profiler.load.search import Driver
from profiler.measure.latency import StageRecorder
from profiler.measure.server_stats import Snapshot, prometheus_counters, stage_view, triton_statistics
from profiler.schedule import Stage
from profiler.state import RunState

MAX_STATS_BYTES = 4 * 1024 * 1024
"""A statistics answer or /metrics page larger than this is refused (they are kilobytes)."""


class ServerStatsReader:
    """Reads one server's cumulative counters for one model (the kind and URL of `server_stats`); `infer_path` is
    the path inference requests go to (BentoML labels its series with it)."""

    def __init__(self, config: ServerStatsConfig, model: str, infer_path: str = "") -> None:
        self._config = config
        self._model = model
        self._infer_path = infer_path
        self.kind = config.kind
        base = config.url.rstrip("/")
        self.url = f"{base}/v2/models/{path_segment(model)}/stats" if config.kind == "triton" else config.url

    async def snapshot(self) -> Snapshot:
        """The counters now, or a Snapshot with only the problem (the URL redacted) when they cannot be read."""
        where = redact_url(self.url)
        try:
            timeout = aiohttp.ClientTimeout(total=self._config.timeout_s)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self.url) as answer:
                body = await answer.content.read(MAX_STATS_BYTES + 1)
                status = answer.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Snapshot({}, problem=f"{where}: {type(exc).__name__}: {exc}"[:300])
        if status != 200:
            return Snapshot({}, problem=f"{where} -> {status}")
        if len(body) > MAX_STATS_BYTES:
            return Snapshot({}, problem=f"{where}: more than {MAX_STATS_BYTES} bytes")
        # Parsed in a thread: a /metrics page can be hundreds of kilobytes, and the event loop keeps answering.
        return await aio.in_thread(self._parse, body, where, name="profiler-server-stats")

    def _parse(self, body: bytes, where: str) -> Snapshot:
        try:
            text = body.decode("utf-8")
            if self._config.kind == "triton":
                return triton_statistics(json.loads(text), self._model)
            return prometheus_counters(text, self._config.kind, self._model, self._infer_path)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            return Snapshot({}, problem=f"{where}: {exc}"[:300])


def profiler_means(recorder: StageRecorder) -> dict[str, float | None]:
    """The profiler's own mean latency (from the intended send) and service time (from the actual send), ms:
    the figures the server's means compare with (its counters give means only)."""
    means: dict[str, float | None] = {}
    for name, histogram in (("latency", recorder.latency), ("service", recorder.service)):
        count = histogram.get_total_count()
        means[name] = round(total_of(histogram) / count / 1e3, 4) if count else None
    return means


class StatsDriver:
    """A Driver that also reads the server's counters around each stage (see the module's docstring)."""

    def __init__(self, inner: Driver, reader: ServerStatsReader, state: RunState) -> None:
        self._inner = inner
        self._reader = reader
        self._state = state

    @property
    def stopping(self) -> bool:
        """Whether stop() was called."""
        return self._inner.stopping

    def stop(self) -> None:
        """Stop sending (the wrapped driver's stop)."""
        self._inner.stop()

    async def run(self, stage: Stage, recorder: StageRecorder, until: Callable[[], bool] | None = None) -> None:
        """Read, send the stage, read again; a stopped stage gets no second reading (the stop is in a hurry)."""
        before = await self._reader.snapshot()
        await self._inner.run(stage, recorder, until)
        if self._inner.stopping:
            return
        after = await self._reader.snapshot()
        self._state.server_views[stage.name] = {"kind": self._reader.kind, **stage_view(before, after),
                                                "profiler_mean_ms": profiler_means(recorder)}

    async def close(self) -> None:
        """Release what the wrapped driver holds."""
        await self._inner.close()
