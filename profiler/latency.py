"""Latency per stage in HDR histograms: from the intended send time, from the actual send, and lag."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from profiler.results import OK, Result
from profiler.schedule import Stage

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
MAX_ERROR_EXAMPLES = 5


def new_histogram() -> HdrHistogram:
    """A histogram of microseconds from 1 us to 1 h at 3 significant digits (fixed size)."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record_ns(histogram: HdrHistogram, value_ns: int) -> None:
    """Record a duration, clamped into the histogram's range."""
    histogram.record_value(min(max(value_ns // 1000, LOWEST_US), HIGHEST_US))


def spectrum_ms(histogram: HdrHistogram) -> dict[str, float | None]:
    """p50..p99.9 and max in milliseconds; None for an empty histogram (never a fake zero)."""
    keys = [_pkey(p) for p in PERCENTILES] + ["max"]
    if histogram.get_total_count() == 0:
        return dict.fromkeys(keys)
    values = [histogram.get_value_at_percentile(p) / 1000 for p in PERCENTILES]
    values.append(histogram.get_max_value() / 1000)
    return dict(zip(keys, values, strict=True))


def _pkey(percentile: float) -> str:
    return "p" + f"{percentile:g}".replace(".", "")


@dataclass
class StageRecorder:
    """Accumulates one stage's results: counts by outcome, three histograms, first error examples."""

    stage: Stage
    started_ns: int = 0
    ended_ns: int = 0
    latency: HdrHistogram = field(default_factory=new_histogram)
    service: HdrHistogram = field(default_factory=new_histogram)
    lag: HdrHistogram = field(default_factory=new_histogram)
    outcomes: Counter[str] = field(default_factory=Counter)
    error_examples: list[str] = field(default_factory=list)
    scheduled: int = 0
    unsent: int = 0
    last_done_ns: int = 0
    cpu_s: float = 0.0

    def add(self, result: Result) -> None:
        """Count the result; only successful requests enter the latency histograms."""
        self.outcomes[result.outcome] += 1
        record_ns(self.lag, max(result.lag_ns, 0))
        self.last_done_ns = max(self.last_done_ns, result.done_ns)
        if result.outcome == OK:
            record_ns(self.latency, result.latency_ns)
            record_ns(self.service, result.service_ns)
        elif len(self.error_examples) < MAX_ERROR_EXAMPLES and result.error:
            self.error_examples.append(f"{result.outcome}: {result.error}"[:300])

    @property
    def completed(self) -> int:
        """Requests that came back with a prediction."""
        return self.outcomes[OK]

    @property
    def errors(self) -> int:
        """Requests sent that failed, by any cause."""
        return sum(n for outcome, n in self.outcomes.items() if outcome != OK)

    def summary(self) -> dict[str, Any]:
        """The stage's figures as plain data for the report."""
        window_s = max(self.stage.duration_s, (max(self.last_done_ns, self.ended_ns) - self.started_ns) / 1e9)
        sent = sum(self.outcomes.values())
        attempted = sent + self.unsent
        return {
            "name": self.stage.name,
            "warmup": self.stage.warmup,
            "offered_rps": self.stage.rate_rps,
            "duration_s": self.stage.duration_s,
            "scheduled": self.scheduled,
            "sent": sent,
            "unsent": self.unsent,
            "completed": self.completed,
            "errors": self.errors,
            "errors_by_kind": {k: n for k, n in sorted(self.outcomes.items()) if k != OK},
            "error_rate": (self.errors + self.unsent) / attempted if attempted else None,
            "achieved_rps": self.completed / window_s if window_s > 0 else None,
            "latency_ms": spectrum_ms(self.latency),
            "service_time_ms": spectrum_ms(self.service),
            "schedule_lag_ms": {"p50": _lag(self.lag, 50.0), "p99": _lag(self.lag, 99.0)},
            "generator_cpu_s": round(self.cpu_s, 4),
            "generator_cpu_us_per_request": round(self.cpu_s / sent * 1e6, 1) if sent else None,
            "error_examples": list(self.error_examples),
        }


def _lag(histogram: HdrHistogram, percentile: float) -> float | None:
    if histogram.get_total_count() == 0:
        return None
    return float(histogram.get_value_at_percentile(percentile)) / 1000
