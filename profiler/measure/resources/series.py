"""A memory/CPU time series of bounded size, and its before/peak/after, CPU and leak summary. Pure."""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from profiler.measure.resources.leak import LeakSettings, detect_leak

STARTING = "starting"
BEFORE = "before"
ACCURACY = "accuracy"
LOAD = "load"
AFTER = "after"


@dataclass(frozen=True, slots=True)
class ResourcePoint:
    """One reading: seconds since the run began, RSS, cumulative CPU seconds, requests served so far.

    `memory_bytes` is the run's chosen memory figure (see the sampler's `memory_figure`); it is
    None where that figure could not be read.
    """

    t_s: float
    rss_bytes: int | None
    cpu_s: float | None
    processes: int
    phase: str
    requests: int = 0
    memory_bytes: int | None = None
    boundary: bool = False
    """Taken at a phase boundary (the start or end of a rest, the end of the load): always kept in the series."""
    gpu_memory_bytes: int | None = None
    """The model's GPU memory (see the GPU source), None where not read."""
    gpu_utilisation_pct: float | None = None


@dataclass
class BoundedSeries:
    """Keeps at most `capacity` points by halving the resolution when full; the peak is kept exactly."""

    capacity: int = 512
    points: list[ResourcePoint] = field(default_factory=list)
    stride: int = 1
    _skipped: int = 0
    peak: ResourcePoint | None = None
    gpu_peak: ResourcePoint | None = None
    """The reading with the highest GPU memory, kept exactly like `peak`."""
    first: ResourcePoint | None = None
    last: ResourcePoint | None = None

    def add(self, point: ResourcePoint) -> None:
        """Take a reading; every reading updates first/last/peak even when not kept in `points`.

        A `boundary` reading is always kept, and survives every halving (a run has four at most), so the
        rest figures before and after the load never depend on the resolution.
        """
        if self.first is None:
            self.first = point
        self.last = point
        if point.memory_bytes is not None and (self.peak is None or self.peak.memory_bytes is None
                                               or point.memory_bytes > self.peak.memory_bytes):
            self.peak = point
        if point.gpu_memory_bytes is not None and (self.gpu_peak is None or self.gpu_peak.gpu_memory_bytes is None
                                                   or point.gpu_memory_bytes > self.gpu_peak.gpu_memory_bytes):
            self.gpu_peak = point
        if not point.boundary:
            self._skipped += 1
            if self._skipped < self.stride:
                return
            self._skipped = 0
        self.points.append(point)
        if len(self.points) >= self.capacity:
            self.points = [p for i, p in enumerate(self.points) if i % 2 == 0 or p.boundary]
            self.stride *= 2

    def in_phase(self, phase: str) -> list[ResourcePoint]:
        """The kept points of one phase ('before', 'accuracy', 'load', 'after')."""
        return [p for p in self.points if p.phase == phase]


def _median_memory(points: list[ResourcePoint], gpu: bool = False) -> float | None:
    values = [v for v in (p.gpu_memory_bytes if gpu else p.memory_bytes for p in points) if v is not None]
    return float(statistics.median(values)) if values else None


def _pct(new: float | None, old: float | None) -> float | None:
    return (new - old) / old * 100 if new is not None and old else None


def cores_between(points: list[ResourcePoint]) -> float | None:
    """Average CPU cores used from the first to the last point (None without two CPU readings)."""
    timed = [p for p in points if p.cpu_s is not None]
    if len(timed) < 2 or timed[-1].t_s <= timed[0].t_s:
        return None
    assert timed[0].cpu_s is not None and timed[-1].cpu_s is not None
    return (timed[-1].cpu_s - timed[0].cpu_s) / (timed[-1].t_s - timed[0].t_s)


def cpu_summary(series: BoundedSeries) -> dict[str, float | None]:
    """Cores at rest before, under load (mean and busiest interval), at rest after; CPU seconds per request."""
    load = [p for p in series.in_phase(LOAD) if p.cpu_s is not None]
    peak = None
    for a, b in itertools.pairwise(load):
        if b.t_s > a.t_s and a.cpu_s is not None and b.cpu_s is not None:
            cores = (b.cpu_s - a.cpu_s) / (b.t_s - a.t_s)
            peak = cores if peak is None else max(peak, cores)
    per_request = None
    if len(load) >= 2 and load[-1].requests > load[0].requests:
        assert load[-1].cpu_s is not None and load[0].cpu_s is not None
        per_request = (load[-1].cpu_s - load[0].cpu_s) / (load[-1].requests - load[0].requests)
    return {
        "cores_before": cores_between(series.in_phase(BEFORE)),
        "cores_under_load": cores_between(load),
        "cores_peak": peak,
        "cores_after": cores_between(series.in_phase(AFTER)),
        "seconds_per_request": per_request,
    }


def memory_summary(series: BoundedSeries, gpu: bool = False) -> dict[str, float | None]:
    """Memory (host, or GPU with `gpu`) at rest before the load (median), at peak, under sustained load, at rest
    after; growth."""
    before = _median_memory(series.in_phase(BEFORE), gpu)
    after = _median_memory(series.in_phase(AFTER), gpu)
    load = [p for p in series.in_phase(LOAD) if (p.gpu_memory_bytes if gpu else p.memory_bytes) is not None]
    # Steady state: the last third of the load, when warm-up is over.
    steady = _median_memory(load[len(load) * 2 // 3:], gpu) if load else None
    peak_point = series.gpu_peak if gpu else series.peak
    peak = (peak_point.gpu_memory_bytes if gpu else peak_point.memory_bytes) if peak_point is not None else None
    return {
        "before_bytes": before,
        "peak_bytes": float(peak) if peak is not None else None,
        "peak_t_s": peak_point.t_s if peak_point is not None and peak is not None else None,
        "steady_bytes": steady,
        "after_bytes": after,
        "growth_bytes": after - before if after is not None and before is not None else None,
        "growth_pct": _pct(after, before),
        "peak_increase_pct": _pct(float(peak) if peak is not None else None, before),
    }


def leak_verdict(series: BoundedSeries, settings: LeakSettings, limit_bytes: float | None,
                 gpu: bool = False) -> dict[str, Any]:
    """The leak test on the readings taken under load (of GPU memory with `gpu`)."""
    load = series.in_phase(LOAD)
    return detect_leak([p.requests for p in load], [p.t_s for p in load],
                       [p.gpu_memory_bytes if gpu else p.memory_bytes for p in load], settings, limit_bytes).as_dict()


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def utilisation_summary(series: BoundedSeries) -> dict[str, float | None]:
    """GPU utilisation (percent): mean at rest before, mean and busiest reading under load, mean at rest after."""
    def of(phase: str) -> list[float]:
        return [p.gpu_utilisation_pct for p in series.in_phase(phase) if p.gpu_utilisation_pct is not None]
    load = of(LOAD)
    return {"before_pct": _mean(of(BEFORE)), "under_load_pct": _mean(load), "peak_pct": max(load) if load else None,
            "after_pct": _mean(of(AFTER))}


def gpu_summarise(series: BoundedSeries, source: str, *, settings: LeakSettings | None = None,
                  limit_bytes: float | None = None) -> dict[str, Any]:
    """The GPU part of the resources section: GPU memory before/peak/steady/after, utilisation, the leak test.

    `measured` is false when no GPU memory reading was taken; `limit_bytes` (the GPU's memory) lets a leak
    be projected to the point the device is full.
    """
    measured = series.gpu_peak is not None
    memory = memory_summary(series, gpu=True)
    memory["limit_bytes"] = limit_bytes
    return {
        "source": source,
        "measured": measured,
        "memory": {k: _finite(v) for k, v in memory.items()},
        "utilisation": {k: _finite(v) for k, v in utilisation_summary(series).items()},
        "leak": leak_verdict(series, settings or LeakSettings(), limit_bytes, gpu=True),
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def summarise(series: BoundedSeries, source: str, problems: list[str], *, incomplete: str | None = None,
              limit_bytes: float | None = None, settings: LeakSettings | None = None) -> dict[str, Any]:
    """The resources section of the report: source, problems, memory, CPU, leak test and the series.

    `complete` is false when nothing was measured or the series stops short (`incomplete` says
    why); the verdict then treats every memory and CPU metric as not measured.
    """
    measured = any(p.memory_bytes is not None for p in series.points) or (
        series.peak is not None and series.peak.memory_bytes is not None)
    memory = memory_summary(series)
    memory["limit_bytes"] = limit_bytes
    return {
        "source": source,
        "measured": measured,
        "complete": measured and incomplete is None,
        "incomplete": incomplete if measured else "no memory reading was taken",
        "problems": problems,
        "memory": {k: _finite(v) for k, v in memory.items()},
        "cpu": {k: _finite(v) for k, v in cpu_summary(series).items()},
        "leak": leak_verdict(series, settings or LeakSettings(), limit_bytes),
        "series_stride": series.stride,
        "series": [
            {"t_s": round(p.t_s, 3), "memory_bytes": p.memory_bytes, "rss_bytes": p.rss_bytes,
             "cpu_s": round(p.cpu_s, 3) if p.cpu_s is not None else None,
             "cores": _round(cores_between([prev, p])) if prev is not None else None,
             "phase": p.phase, "requests": p.requests, "processes": p.processes,
             "gpu_memory_bytes": p.gpu_memory_bytes, "gpu_utilisation_pct": _round(p.gpu_utilisation_pct)}
            for prev, p in zip([None, *series.points], series.points, strict=False)
        ],
    }


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None
