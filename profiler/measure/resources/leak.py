"""Is the model leaking memory? A robust trend test of memory against requests served. Pure.

The method, in order (docs/resources.md explains why each step is there):

1. Window: readings taken under load, after the first `warmup_fraction` of the requests
   (start-up allocations, lazy imports and JIT caches are not leaks).
2. Garbage-collector sawtooth: if the window holds at least two large drops (each larger than
   six robust standard deviations of the step-to-step change, a quarter of the window's range
   and `min_growth_bytes`), the trend is taken on the floors after each drop ("memory after GC") rather than on
   every reading, so the sawtooth's teeth are not mistaken for growth.
3. Trend: Theil-Sen slope of memory against requests with its confidence interval, and
   Kendall's tau for a monotonic trend (scipy.stats.theilslopes, scipy.stats.kendalltau).
   The same slope against time gives the growth per hour at the tested load.
4. Plateau: the slope over the last half of the window is compared with the first half. A
   cache that fills and stops, or warm-up that settles, slows down; a leak does not.

Leaked needs all of: a significant upward trend over the window whose lower bound is above
zero and whose estimate is at least `min_bytes_per_request`, a tail still growing (lower bound
above zero) at no less than `min_tail_ratio` of the head's rate, and growth adding up to at least
`min_growth_bytes`. No leak needs the tail's upper bound below `min_bytes_per_request`, or the
whole window's, when the tail does not grow materially (a small step at the end is not a leak).
Anything else is inconclusive, with the reason.
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
    rows = [(float(r), float(t), float(m)) for r, t, m in zip(requests, t_s, memory_bytes, strict=True)
            if m is not None and math.isfinite(float(m)) and math.isfinite(float(r)) and math.isfinite(float(t))]
    if not rows:
        return LeakVerdict(INCONCLUSIVE, "no memory reading was taken under load")
    rows.sort(key=lambda row: (row[0], row[1]))
    first_x, last_x = rows[0][0], rows[-1][0]
    if last_x <= first_x:
        return LeakVerdict(INCONCLUSIVE, "no request was served between the memory readings", points=len(rows))
    cut = first_x + cfg.warmup_fraction * (last_x - first_x)
    window = [row for row in rows if row[0] >= cut]
    x = np.array([row[0] for row in window])
    t = np.array([row[1] for row in window])
    y = np.array([row[2] for row in window])
    span = (float(x[0]), float(x[-1]))
    if len(window) < cfg.min_points:
        return LeakVerdict(INCONCLUSIVE, f"only {len(window)} readings after warm-up; the test needs "
                                         f"{cfg.min_points}", window_requests=span, points=len(window))
    method = RAW
    floors = gc_floors(y, cfg)
    if floors:
        method = FLOORS
        x, t, y = x[floors], t[floors], y[floors]
        if len(floors) < 3:
            return LeakVerdict(INCONCLUSIVE, f"memory drops like a garbage collector's sawtooth, but only "
                                             f"{len(floors)} cycles were seen; the test needs 3", method, span,
                               len(window))
    overall = trend(x, y, cfg.confidence)
    if overall is None:
        return LeakVerdict(INCONCLUSIVE, "no request was served in the window after warm-up", method,
                           span, len(window))
    half = float(x[0] + x[-1]) / 2
    head = trend(x[x <= half], y[x <= half], cfg.confidence)
    tail = trend(x[x >= half], y[x >= half], cfg.confidence)
    per_s = trend(t, y, cfg.confidence)
    material = cfg.min_bytes_per_request
    significant = (overall.low > 0 and overall.p_value < 1 - cfg.confidence and overall.slope >= material
                   and overall.slope * float(x[-1] - x[0]) >= cfg.min_growth_bytes)
    still_growing = (tail is not None and tail.low > 0
                     and (head is None or head.slope <= 0 or tail.slope >= cfg.min_tail_ratio * head.slope))
    tail_grows = (tail is not None and tail.low > 0 and tail.slope >= material
                  and tail.slope * float(x[-1] - half) >= cfg.min_growth_bytes)
    enough_floors = method == RAW or len(x) >= 6
    if significant and still_growing and enough_floors:
        status = LEAKED
        reason = (f"memory grows {overall.slope:,.0f} B per request (interval {overall.low:,.0f} to "
                  f"{overall.high:,.0f}) and still grows at the end of the run")
    elif (tail is not None and tail.high < material) or (overall.high < material and not tail_grows):
        status = NO_LEAK
        if tail is not None and overall.low > 0 and overall.slope >= material:
            reason = (f"memory grew early in the window then levelled off (last half: {tail.slope:,.0f} B per "
                      f"request, at most {tail.high:,.0f}): a cache or warm-up, not a leak")
        else:
            if tail is not None and tail.high < material:
                reason = (f"growth in the last half is at most {tail.high:,.0f} B per request, below the "
                          f"threshold {material:g}")
            else:
                reason = (f"growth over the window is at most {overall.high:,.0f} B per request, below the "
                          f"threshold {material:g}, and the last half does not grow materially")
    else:
        status = INCONCLUSIVE
        if significant and not enough_floors:
            reason = f"floors after GC rise, but only {len(x)} GC cycles were seen; the test needs 6"
        elif significant:
            reason = (f"memory grew {overall.slope:,.0f} B per request but the growth slowed down at the end "
                      f"(last half {tail.slope if tail else float('nan'):,.0f}); run longer to tell a cache "
                      "filling up from a leak")
        else:
            upper = tail.high if tail is not None else overall.high
            reason = (f"growth of up to {upper:,.0f} B per request cannot be ruled out (threshold {material:g}); "
                      "run longer")
    to_limit_requests = to_limit_hours = None
    if status == LEAKED and limit_bytes is not None and limit_bytes > 0:
        headroom = max(limit_bytes - float(y[-1]), 0.0)
        to_limit_requests = headroom / overall.slope
        if per_s is not None and per_s.slope > 0:
            to_limit_hours = headroom / per_s.slope / 3600
    return LeakVerdict(
        status, reason, method, span, len(window),
        bytes_per_request=overall.slope, bytes_per_request_low=overall.low, bytes_per_request_high=overall.high,
        tail_bytes_per_request=tail.slope if tail else None, tail_bytes_per_request_high=tail.high if tail else None,
        head_bytes_per_request=head.slope if head else None,
        bytes_per_hour=per_s.slope * 3600 if per_s else None,
        bytes_per_hour_low=per_s.low * 3600 if per_s else None,
        bytes_per_hour_high=per_s.high * 3600 if per_s else None,
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
