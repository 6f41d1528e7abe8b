"""Is the model leaking memory? A robust trend test of memory against requests served. Pure.

The method, in order, one pure function a step (docs/resources.md explains why each step is there):

1. Window (`finite_readings`, `warmup_window`): readings taken under load, after the first
   `warmup_fraction` of the requests (start-up allocations, lazy imports and JIT caches are not leaks).
2. Garbage-collector sawtooth (`gc_floors`, `gc_series`): if the window holds at least two large drops (each larger than
   six robust standard deviations of the step-to-step change, a quarter of the window's range
   and `min_growth_bytes`), the trend is taken on the floors after each drop ("memory after GC") rather than on
   every reading, so the sawtooth's teeth are not mistaken for growth.
3. Trend (`trend`, `fit_trends`): Theil-Sen slope of memory against requests with its confidence interval, and
   Kendall's tau for a monotonic trend (scipy.stats.theilslopes, scipy.stats.kendalltau).
   The same slope against time gives the growth per hour at the tested load.
4. Plateau (`fit_trends`, `still_growing`): the slope over the last half of the window is compared
   with the first half. A cache that fills and stops, or warm-up that settles, slows down; a leak does not.
5. Decision (`classify`: `is_significant`, `still_growing`, `tail_grows`). Leaked needs all of: a
   significant upward trend over the window whose lower bound is above zero and whose estimate is at
   least `min_bytes_per_request`, a tail still growing (lower bound above zero) at no less than
   `min_tail_ratio` of the head's rate, and growth adding up to at least `min_growth_bytes`. No leak
   needs the tail's upper bound below `min_bytes_per_request`, or the whole window's, when the tail
   does not grow materially (a small step at the end is not a leak). Anything else is inconclusive,
   with the reason.
6. Projection (`time_to_limit`): a leak's requests and hours until the memory limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

LEAKED = "leaked"
NO_LEAK = "no leak"
INCONCLUSIVE = "inconclusive"

RAW = "every reading"
FLOORS = "floors after GC drops"


@dataclass(frozen=True, slots=True)
class LeakSettings:
    """Thresholds of the leak test; the defaults are the ones the benchmark was run with."""

    warmup_fraction: float = 0.2
    """Share of the load's requests (from the first reading under load) ignored as warm-up."""
    min_points: int = 10
    """Readings needed in the window before anything is decided."""
    min_bytes_per_request: float = 256.0
    """Growth below this rate is not material: a leak must exceed it, no leak must stay below it."""
    min_growth_bytes: float = 2**20
    """Growth that adds up to less than this over its span is not material either (a small step is not a leak)."""
    confidence: float = 0.95
    """Confidence level of the Theil-Sen intervals; Kendall's p must be below 1 - confidence."""
    min_tail_ratio: float = 0.5
    """A leak's tail slope is at least this share of its head slope (a filling cache slows down)."""
    drop_sigmas: float = 6.0
    drop_range_fraction: float = 0.25


@dataclass(frozen=True, slots=True)
class Trend:
    """A Theil-Sen slope with its confidence interval, Kendall's tau and its p-value."""

    slope: float
    low: float
    high: float
    tau: float
    p_value: float
    points: int


@dataclass(frozen=True, slots=True)
class LeakVerdict:
    """The leak test's answer, the growth rates with their intervals, and the projection to the limit."""

    status: str
    reason: str
    method: str = RAW
    window_requests: tuple[float, float] | None = None
    points: int = 0
    bytes_per_request: float | None = None
    bytes_per_request_low: float | None = None
    bytes_per_request_high: float | None = None
    tail_bytes_per_request: float | None = None
    tail_bytes_per_request_high: float | None = None
    head_bytes_per_request: float | None = None
    bytes_per_hour: float | None = None
    bytes_per_hour_low: float | None = None
    bytes_per_hour_high: float | None = None
    kendall_tau: float | None = None
    kendall_p: float | None = None
    limit_bytes: float | None = None
    requests_to_limit: float | None = None
    hours_to_limit: float | None = None

    def as_dict(self) -> dict[str, object]:
        """Plain data for the JSON report (no NaN: non-finite figures become None)."""
        out: dict[str, object] = {}
        for key, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


def trend(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, confidence: float) -> Trend | None:
    """Theil-Sen slope of y on x with its interval, and Kendall's tau; None if x does not vary."""
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    if len(xs) < 2 or float(np.ptp(xs)) == 0.0:
        return None
    fit = stats.theilslopes(ys, xs, alpha=confidence)
    if float(np.ptp(ys)) == 0.0:
        # A perfectly flat series: Kendall's tau is undefined (all ties), and there is no trend.
        return Trend(0.0, 0.0, 0.0, 0.0, 1.0, len(xs))
    kendall = stats.kendalltau(xs, ys)
    tau = float(kendall.statistic)
    p_value = float(kendall.pvalue)
    return Trend(float(fit.slope), float(fit.low_slope), float(fit.high_slope),
                 0.0 if math.isnan(tau) else tau, 1.0 if math.isnan(p_value) else p_value, len(xs))


def gc_floors(y: np.ndarray, settings: LeakSettings) -> list[int]:
    """Indices of the lowest reading after each large drop; empty when the series has fewer than two drops."""
    if len(y) < 3:
        return []
    steps = np.diff(y)
    spread = 1.4826 * float(np.median(np.abs(steps - np.median(steps))))
    value_range = float(np.ptp(y))
    # A drop smaller than min_growth_bytes cannot hide a material leak, so it is not a GC cycle here.
    threshold = max(settings.drop_sigmas * spread, settings.drop_range_fraction * value_range,
                    settings.min_growth_bytes)
    drops = [i + 1 for i, step in enumerate(steps) if -step > threshold]
    if len(drops) < 2:
        return []
    floors = []
    for start, end in zip(drops, [*drops[1:], len(y)], strict=True):
        floors.append(start + int(np.argmin(y[start:end])))
    return floors


Row = tuple[float, float, float]
"""One reading: (requests served, seconds, memory bytes)."""


@dataclass(frozen=True, slots=True)
class Series:
    """Readings in request order, as arrays: requests served, seconds and memory bytes at each."""

    requests: np.ndarray
    t_s: np.ndarray
    memory_bytes: np.ndarray

    def __len__(self) -> int:
        return len(self.requests)

    def pick(self, index: list[int]) -> Series:
        """The readings at these indices."""
        return Series(self.requests[index], self.t_s[index], self.memory_bytes[index])


@dataclass(frozen=True, slots=True)
class Trends:
    """The trends of a series: over all of it, its two halves (by requests), and against time."""

    overall: Trend
    head: Trend | None
    tail: Trend | None
    per_s: Trend | None
    """Bytes per second, against the readings' time."""
    span_requests: float
    """Requests from the first reading to the last."""
    tail_requests: float
    """Requests from the middle (by requests) to the last reading."""


def finite_readings(requests: Sequence[float], t_s: Sequence[float],
                    memory_bytes: Sequence[float | None]) -> list[Row]:
    """The readings where every figure is a finite number, sorted by requests served then time."""
    rows = [(float(r), float(t), float(m)) for r, t, m in zip(requests, t_s, memory_bytes, strict=True)
            if m is not None and math.isfinite(float(m)) and math.isfinite(float(r)) and math.isfinite(float(t))]
    rows.sort(key=lambda row: (row[0], row[1]))
    return rows


def warmup_window(rows: Sequence[Row], warmup_fraction: float) -> Series:
    """The sorted readings from `warmup_fraction` of the requests served between the first and the last on."""
    if not rows:
        raise ValueError("no reading to take a window of")
    first_x, last_x = rows[0][0], rows[-1][0]
    cut = first_x + warmup_fraction * (last_x - first_x)
    window = [row for row in rows if row[0] >= cut]
    return Series(np.array([row[0] for row in window]), np.array([row[1] for row in window]),
                  np.array([row[2] for row in window]))


def gc_series(window: Series, settings: LeakSettings) -> tuple[Series, str]:
    """The series the trend is taken on, and how: the floors after GC drops (FLOORS), else every reading (RAW)."""
    floors = gc_floors(window.memory_bytes, settings)
    if floors:
        return window.pick(floors), FLOORS
    return window, RAW


def fit_trends(series: Series, confidence: float) -> Trends | None:
    """Trends over the series, its first and last half by requests, and against time; None if requests do not vary."""
    x, y = series.requests, series.memory_bytes
    overall = trend(x, y, confidence)
    if overall is None:
        return None
    half = float(x[0] + x[-1]) / 2
    return Trends(overall, trend(x[x <= half], y[x <= half], confidence), trend(x[x >= half], y[x >= half], confidence),
                  trend(series.t_s, y, confidence), float(x[-1] - x[0]), float(x[-1] - half))


def is_significant(overall: Trend, span_requests: float, settings: LeakSettings) -> bool:
    """An upward trend whose interval excludes zero, Kendall-significant, material per request and in total."""
    return (overall.low > 0 and overall.p_value < 1 - settings.confidence
            and overall.slope >= settings.min_bytes_per_request
            and overall.slope * span_requests >= settings.min_growth_bytes)


def still_growing(head: Trend | None, tail: Trend | None, settings: LeakSettings) -> bool:
    """The last half still grows (interval above zero), at no less than `min_tail_ratio` of a growing head."""
    return (tail is not None and tail.low > 0
            and (head is None or head.slope <= 0 or tail.slope >= settings.min_tail_ratio * head.slope))


def tail_grows(tail: Trend | None, tail_requests: float, settings: LeakSettings) -> bool:
    """The last half grows materially: above zero, at least the material rate, and by `min_growth_bytes` in all."""
    return (tail is not None and tail.low > 0 and tail.slope >= settings.min_bytes_per_request
            and tail.slope * tail_requests >= settings.min_growth_bytes)


def _no_leak_reason(overall: Trend, tail: Trend | None, material: float) -> str:
    if tail is not None and overall.low > 0 and overall.slope >= material:
        return (f"memory grew early in the window then levelled off (last half: {tail.slope:,.0f} B per "
                f"request, at most {tail.high:,.0f}): a cache or warm-up, not a leak")
    if tail is not None and tail.high < material:
        return (f"growth in the last half is at most {tail.high:,.0f} B per request, below the "
                f"threshold {material:g}")
    return (f"growth over the window is at most {overall.high:,.0f} B per request, below the "
            f"threshold {material:g}, and the last half does not grow materially")


def _inconclusive_reason(overall: Trend, tail: Trend | None, significant: bool, enough_floors: bool,
                         material: float) -> str:
    if significant and not enough_floors:
        return f"floors after GC rise, but only {overall.points} GC cycles were seen; the test needs 6"
    if significant:
        return (f"memory grew {overall.slope:,.0f} B per request but the growth slowed down at the end "
                f"(last half {tail.slope if tail else float('nan'):,.0f}); run longer to tell a cache "
                "filling up from a leak")
    upper = tail.high if tail is not None else overall.high
    return f"growth of up to {upper:,.0f} B per request cannot be ruled out (threshold {material:g}); run longer"


def classify(trends: Trends, method: str, settings: LeakSettings) -> tuple[str, str]:
    """(status, reason): LEAKED, NO_LEAK or INCONCLUSIVE, by the rules in the module docstring."""
    overall, tail = trends.overall, trends.tail
    material = settings.min_bytes_per_request
    significant = is_significant(overall, trends.span_requests, settings)
    # Floors are few (one per GC cycle): a rise over fewer than 6 of them is not enough to call a leak.
    enough_floors = method == RAW or overall.points >= 6
    if significant and still_growing(trends.head, tail, settings) and enough_floors:
        return LEAKED, (f"memory grows {overall.slope:,.0f} B per request (interval {overall.low:,.0f} to "
                        f"{overall.high:,.0f}) and still grows at the end of the run")
    if ((tail is not None and tail.high < material)
            or (overall.high < material and not tail_grows(tail, trends.tail_requests, settings))):
        return NO_LEAK, _no_leak_reason(overall, tail, material)
    return INCONCLUSIVE, _inconclusive_reason(overall, tail, significant, enough_floors, material)


def time_to_limit(limit_bytes: float | None, last_bytes: float, bytes_per_request: float,
                  bytes_per_s: float | None) -> tuple[float | None, float | None]:
    """(requests, hours) until a leak at these rates reaches `limit_bytes` from `last_bytes`; None where unknown.

    No limit (None or not positive): (None, None). No growth against time: hours is None.
    """
    if limit_bytes is None or not limit_bytes > 0:
        return None, None
    headroom_bytes = max(limit_bytes - last_bytes, 0.0)
    hours = headroom_bytes / bytes_per_s / 3600 if bytes_per_s is not None and bytes_per_s > 0 else None
    return headroom_bytes / bytes_per_request, hours


def _per_hour(per_s: Trend | None) -> tuple[float | None, float | None, float | None]:
    """A per-second trend's slope and its interval (low, high), in bytes per hour; Nones without one."""
    if per_s is None:
        return None, None, None
    return per_s.slope * 3600, per_s.low * 3600, per_s.high * 3600


def detect_leak(requests: Sequence[float], t_s: Sequence[float], memory_bytes: Sequence[float | None],
                settings: LeakSettings | None = None, limit_bytes: float | None = None) -> LeakVerdict:
    """Judge a memory series recorded under load: leaked, no leak or inconclusive, and how fast it grows.

    `requests` is the cumulative count of requests served at each reading, `t_s` its time in
    seconds and `memory_bytes` the memory figure (None or NaN where it was not measured).
    `limit_bytes` (the container's memory limit) turns a leak into a time until the limit.
    """
    cfg = settings or LeakSettings()
    if not (len(requests) == len(t_s) == len(memory_bytes)):
        raise ValueError("requests, t_s and memory_bytes must have the same length")
    rows = finite_readings(requests, t_s, memory_bytes)
    if not rows:
        return LeakVerdict(INCONCLUSIVE, "no memory reading was taken under load")
    if len(rows) < 2:
        return LeakVerdict(INCONCLUSIVE, f"only 1 memory reading was taken under load; the test needs "
                                         f"{cfg.min_points} (a longer load, or a shorter resources.interval_s)",
                           points=1)
    if rows[-1][0] <= rows[0][0]:
        return LeakVerdict(INCONCLUSIVE, "no request was served between the memory readings", points=len(rows))
    window = warmup_window(rows, cfg.warmup_fraction)
    span = (float(window.requests[0]), float(window.requests[-1]))
    if len(window) < cfg.min_points:
        return LeakVerdict(INCONCLUSIVE, f"only {len(window)} readings after warm-up; the test needs "
                                         f"{cfg.min_points}", window_requests=span, points=len(window))
    series, method = gc_series(window, cfg)
    if method == FLOORS and len(series) < 3:
        return LeakVerdict(INCONCLUSIVE, f"memory drops like a garbage collector's sawtooth, but only "
                                         f"{len(series)} cycles were seen; the test needs 3", method, span,
                           len(window))
    trends = fit_trends(series, cfg.confidence)
    if trends is None:
        return LeakVerdict(INCONCLUSIVE, "no request was served in the window after warm-up", method,
                           span, len(window))
    status, reason = classify(trends, method, cfg)
    overall, tail, per_s = trends.overall, trends.tail, trends.per_s
    to_limit_requests, to_limit_hours = (
        time_to_limit(limit_bytes, float(series.memory_bytes[-1]), overall.slope, per_s.slope if per_s else None)
        if status == LEAKED else (None, None))
    per_hour = _per_hour(per_s)
    return LeakVerdict(
        status, reason, method, span, len(window),
        bytes_per_request=overall.slope, bytes_per_request_low=overall.low, bytes_per_request_high=overall.high,
        tail_bytes_per_request=tail.slope if tail else None, tail_bytes_per_request_high=tail.high if tail else None,
        head_bytes_per_request=trends.head.slope if trends.head else None,
        bytes_per_hour=per_hour[0], bytes_per_hour_low=per_hour[1], bytes_per_hour_high=per_hour[2],
        kendall_tau=overall.tau, kendall_p=overall.p_value, limit_bytes=limit_bytes,
        requests_to_limit=to_limit_requests, hours_to_limit=to_limit_hours,
    )


def requests_to_decide(requests: Sequence[float], t_s: Sequence[float], memory_bytes: Sequence[float | None],
                       settings: LeakSettings | None = None) -> float | None:
    """Requests served when the test first gave its final answer and kept it on every longer prefix.

    None when the final answer is inconclusive. Used by the benchmark to say how many requests a
    verdict needs.
    """
    n = len(requests)
    final = detect_leak(requests, t_s, memory_bytes, settings).status
    if final == INCONCLUSIVE:
        return None
    decided_at: float | None = None
    for end in range(n, 0, -1):
        if detect_leak(requests[:end], t_s[:end], memory_bytes[:end], settings).status != final:
            break
        decided_at = float(requests[end - 1])
    return decided_at
