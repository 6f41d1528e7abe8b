"""A memory/CPU time series of bounded size, and its start/peak/end summary. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ResourcePoint:
    """One reading of the watched processes: seconds since the run began, bytes, CPU seconds so far."""

    t_s: float
    rss_bytes: int
    cpu_s: float
    processes: int
    phase: str
    requests: int = 0


@dataclass
class BoundedSeries:
    """Keeps at most `capacity` points by halving the resolution when full; the peak is kept exactly."""

    capacity: int = 512
    points: list[ResourcePoint] = field(default_factory=list)
    stride: int = 1
    _skipped: int = 0
    peak: ResourcePoint | None = None
    first: ResourcePoint | None = None
    last: ResourcePoint | None = None

    def add(self, point: ResourcePoint) -> None:
        """Take a reading; every reading updates first/last/peak even when not kept in `points`."""
        if self.first is None:
            self.first = point
        self.last = point
        if self.peak is None or point.rss_bytes > self.peak.rss_bytes:
            self.peak = point
        self._skipped += 1
        if self._skipped < self.stride:
            return
        self._skipped = 0
        self.points.append(point)
        if len(self.points) >= self.capacity:
            self.points = self.points[::2]
            self.stride *= 2

    def in_phase(self, phase: str) -> list[ResourcePoint]:
        """The kept points of one phase ('before', 'load', 'after')."""
        return [p for p in self.points if p.phase == phase]


def summarise(series: BoundedSeries, source: str, problems: list[str]) -> dict[str, Any]:
    """Memory at rest before the load, at peak, at rest after; CPU cores used under load."""
    before = series.in_phase("before")
    load = series.in_phase("load")
    after = series.in_phase("after")
    start = before[-1].rss_bytes if before else (series.first.rss_bytes if series.first else None)
    end = after[-1].rss_bytes if after else (series.last.rss_bytes if series.last else None)
    peak = series.peak.rss_bytes if series.peak else None
    cores = None
    if len(load) >= 2 and load[-1].t_s > load[0].t_s:
        cores = (load[-1].cpu_s - load[0].cpu_s) / (load[-1].t_s - load[0].t_s)
    return {
        "source": source,
        "measured": series.first is not None,
        "problems": problems,
        "rss_start_bytes": start,
        "rss_peak_bytes": peak,
        "rss_end_bytes": end,
        "rss_growth_bytes": end - start if start is not None and end is not None else None,
        "rss_growth_pct": (end - start) / start * 100 if start and end is not None else None,
        "cpu_cores_under_load": cores,
        "series": [
            {"t_s": round(p.t_s, 3), "rss_bytes": p.rss_bytes, "cpu_s": round(p.cpu_s, 3), "phase": p.phase,
             "requests": p.requests}
            for p in series.points
        ],
    }
