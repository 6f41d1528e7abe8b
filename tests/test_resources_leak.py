"""The leak test on synthetic and recorded series: tables of shapes, including the failure cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from profiler.measure.resources.leak import (
    FLOORS,
    INCONCLUSIVE,
    LEAKED,
    NO_LEAK,
    RAW,
    LeakSettings,
    Series,
    Trend,
    Trends,
    classify,
    detect_leak,
    finite_readings,
    fit_trends,
    gc_series,
    is_significant,
    requests_to_decide,
    still_growing,
    tail_grows,
    time_to_limit,
    trend,
    warmup_window,
)

FIXTURES = Path(__file__).parent / "fixtures" / "resources"
BASE = 60e6
N = 120
X = np.linspace(0, 12_000, N)


def shape(name: str, seed: int = 0) -> np.ndarray:
    """Memory (bytes) against X requests for each named behaviour."""
    noise = np.random.default_rng(seed).normal(0, 200e3, N)
    shapes = {
        "flat": np.full(N, BASE),
        "noise": BASE + noise,
        "big noise": BASE + noise * 5,
        "leak 10 KB": BASE + 10_240 * X + noise,
        "leak 1 KB": BASE + 1024 * X + noise,
        "cache fills then stops": BASE + np.minimum(X, 5000) * 10_240 + noise,
        "gc sawtooth": BASE + (X % 2000) * 10_240 + noise,
        "gc sawtooth over a leak": BASE + (X % 1000) * 10_240 + 2048 * X + noise,
        "still filling, slowing": BASE + 50e6 * (1 - np.exp(-X / 6000)) + noise,
        "shrinking": BASE + 50e6 - 2048 * X + noise,
        "warm-up then flat": BASE + np.where(X < 1500, X * 20_000, 1500 * 20_000) + noise,
        "small sawtooth": BASE + (X % 1000) * 200 + noise / 4,  # 200 KB teeth: below min_growth_bytes
        "two gc cycles": BASE + (X % 5000) * 10_240 + noise,
    }
    return shapes[name]


@pytest.mark.parametrize(
    ("name", "status", "method", "rate"),
    [
        ("flat", NO_LEAK, RAW, 0.0),
        ("noise", NO_LEAK, RAW, None),
        ("leak 10 KB", LEAKED, RAW, 10_240),
        ("leak 1 KB", LEAKED, RAW, 1024),
        ("cache fills then stops", NO_LEAK, RAW, None),
        ("gc sawtooth", NO_LEAK, FLOORS, None),
        ("gc sawtooth over a leak", LEAKED, FLOORS, 2048),
        ("still filling, slowing", INCONCLUSIVE, RAW, None),
        ("shrinking", NO_LEAK, RAW, -2048),
        ("warm-up then flat", NO_LEAK, RAW, None),
        ("small sawtooth", NO_LEAK, RAW, None),
        ("two gc cycles", INCONCLUSIVE, FLOORS, None),
    ],
)
def test_shapes(name: str, status: str, method: str, rate: float | None) -> None:
    memory = shape(name)
    verdict = detect_leak(X, X / 1000, memory.tolist())
    assert verdict.status == status, verdict.reason
    assert verdict.method == method
    assert verdict.reason
    if rate is not None:
        assert verdict.bytes_per_request == pytest.approx(rate, rel=0.1, abs=50)
        assert verdict.bytes_per_request_low is not None and verdict.bytes_per_request_high is not None
        assert verdict.bytes_per_request_low <= verdict.bytes_per_request <= verdict.bytes_per_request_high
        # 1000 requests per second in these series: per hour is per request x 3.6 million.
        assert verdict.bytes_per_hour == pytest.approx(rate * 3.6e6, rel=0.1, abs=50 * 3.6e6)


@pytest.mark.parametrize("seed", range(5))
def test_no_false_leak_over_seeds(seed: int) -> None:
    for name in ("noise", "cache fills then stops", "gc sawtooth", "warm-up then flat"):
        assert detect_leak(X, X / 1000, shape(name, seed).tolist()).status != LEAKED, name


@pytest.mark.parametrize(
    ("requests", "memory", "reason_part"),
    [
        ([], [], "no memory reading"),
        ([1.0, 2.0, 3.0], [1e6, 2e6, 3e6], "only"),
        ([5.0] * 30, [1e6 + i for i in range(30)], "no request was served"),
        (list(range(30)), [math.nan] * 30, "no memory reading"),
        (list(range(30)), [None] * 30, "no memory reading"),
    ],
)
def test_too_little_to_judge(requests: list[float], memory: list[float | None], reason_part: str) -> None:
    verdict = detect_leak(requests, [r / 10 for r in requests], memory)
    assert verdict.status == INCONCLUSIVE
    assert reason_part in verdict.reason


def test_nan_readings_are_skipped_not_fatal() -> None:
    memory = shape("leak 10 KB").tolist()
    for i in range(0, N, 7):
        memory[i] = math.nan
    verdict = detect_leak(X, X / 1000, memory)
    assert verdict.status == LEAKED
    assert verdict.points < N


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="same length"):
        detect_leak([1.0, 2.0], [1.0], [1.0, 2.0])


@pytest.mark.parametrize(
    ("limit", "requests_left"),
    [
        (None, None),
        (0.0, None),
        (BASE + 10_240 * 12_000 + 100 * 2**20, 100 * 2**20 / 10_240),
        (BASE, 0.0),  # already over the limit: no headroom left
    ],
)
def test_projection_to_the_limit(limit: float | None, requests_left: float | None) -> None:
    memory = BASE + 10_240 * X  # exact, so the projection is exact
    verdict = detect_leak(X, X / 1000, memory.tolist(), limit_bytes=limit)
    assert verdict.status == LEAKED
    if requests_left is None:
        assert verdict.requests_to_limit is None and verdict.hours_to_limit is None
    else:
        assert verdict.requests_to_limit == pytest.approx(requests_left, rel=1e-6, abs=1e-6)
        assert verdict.hours_to_limit == pytest.approx(requests_left / 1000 / 3600, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize(
    ("settings", "status"),
    [
        (LeakSettings(min_bytes_per_request=2048), NO_LEAK),  # 1 KB/request is below this threshold
        (LeakSettings(min_bytes_per_request=256), LEAKED),
        (LeakSettings(min_points=500), INCONCLUSIVE),
    ],
)
def test_settings_change_the_answer(settings: LeakSettings, status: str) -> None:
    assert detect_leak(X, X / 1000, (BASE + 1024 * X).tolist(), settings).status == status


def test_verdict_as_dict_has_no_nan() -> None:
    out = detect_leak(X, X / 1000, shape("flat").tolist()).as_dict()
    assert out["status"] == NO_LEAK
    json.dumps(out, allow_nan=False)
    assert out["window_requests"] == [pytest.approx(X[X >= 2400][0]), 12_000.0]


@pytest.mark.parametrize(
    ("x", "y", "slope"),
    [
        ([0, 1, 2, 3], [1, 3, 5, 7], 2.0),
        ([0, 1, 2, 3], [5, 5, 5, 5], 0.0),
        ([0, 1, 2, 3, 4], [0, 1, 100, 3, 4], 1.0),  # one outlier does not move Theil-Sen
    ],
)
def test_trend(x: list[float], y: list[float], slope: float) -> None:
    result = trend(x, y, 0.95)
    assert result is not None
    assert result.slope == pytest.approx(slope)
    assert result.low <= result.slope <= result.high


def test_trend_needs_spread_in_x() -> None:
    assert trend([1, 1, 1], [1, 2, 3], 0.95) is None
    assert trend([], [], 0.95) is None


def test_requests_to_decide() -> None:
    memory = shape("leak 10 KB").tolist()
    decided = requests_to_decide(X, X / 1000, memory)
    assert decided is not None and 0 < decided <= 12_000
    # Every longer prefix gives the same answer.
    for end in range(int(np.searchsorted(X, decided)) + 1, N + 1):
        assert detect_leak(X[:end], X[:end] / 1000, memory[:end]).status == LEAKED
    assert requests_to_decide(X, X / 1000, shape("still filling, slowing").tolist()) is None


@pytest.mark.parametrize(("name", "status", "rate"), [("demo_normal", NO_LEAK, None),
                                                      ("demo_normal_step", NO_LEAK, None),
                                                      ("demo_normal_small_drops", NO_LEAK, None),
                                                      ("demo_leak_10kb", LEAKED, 10_240)])
def test_recorded_demo_series(name: str, status: str, rate: float | None) -> None:
    series = json.loads((FIXTURES / f"{name}.json").read_text())["series"]
    load = [p for p in series if p["phase"] == "load"]
    verdict = detect_leak([p["requests"] for p in load], [p["t_s"] for p in load],
                          [p["memory_bytes"] for p in load])
    assert verdict.status == status, verdict.reason
    if rate is not None:
        assert verdict.bytes_per_request == pytest.approx(rate, rel=0.2)


@pytest.mark.parametrize(
    ("name", "status", "rate"),
    [
        ("bench_leak_1kb", LEAKED, 1024),
        ("bench_cache_50mb", NO_LEAK, None),
        ("bench_sawtooth_seed0", NO_LEAK, None),
        ("bench_sawtooth_seed2", INCONCLUSIVE, None),  # floors too noisy for 6 cycles: not a leak, not cleared
        ("bench_noisy", NO_LEAK, None),
    ],
)
def test_recorded_bench_series(name: str, status: str, rate: float | None) -> None:
    """Series recorded by bench/leak_detection.py --dump from real target processes."""
    series = json.loads((FIXTURES / f"{name}.json").read_text())["series"]
    verdict = detect_leak([p["requests"] for p in series], [p["t_s"] for p in series],
                          [p["memory_bytes"] for p in series])
    assert verdict.status == status, verdict.reason
    if rate is not None:
        assert verdict.bytes_per_request == pytest.approx(rate, rel=0.2)


# The steps of detect_leak, one table each.

NAN = float("nan")
INF = float("inf")


@pytest.mark.parametrize(
    ("requests", "t_s", "memory", "expected"),
    [
        ([], [], [], []),
        ([1, 2], [1, 2], [None, NAN], []),
        ([3, 1, 2], [3, 1, 2], [30, 10, 20], [(1, 1, 10), (2, 2, 20), (3, 3, 30)]),   # sorted by requests
        ([1, 1], [2, 1], [5, 6], [(1, 1, 6), (1, 2, 5)]),                             # then by time
        ([INF, 1, NAN], [0, 1, 2], [1, 2, 3], [(1, 1, 2)]),                           # no infinite or NaN figure
        ([1, 2], [0, INF], [0, 0], [(1, 0, 0)]),                                      # zero memory is a reading
    ],
)
def test_finite_readings(requests, t_s, memory, expected) -> None:
    assert finite_readings(requests, t_s, memory) == expected


@pytest.mark.parametrize(
    ("fraction", "kept"),
    [(0.0, [0, 10, 20, 30, 40]), (0.2, [10, 20, 30, 40]), (0.5, [20, 30, 40]), (1.0, [40]), (1.5, [])],
)
def test_warmup_window(fraction: float, kept: list[float]) -> None:
    rows = [(float(x), x / 10, 1e6 + x) for x in range(0, 50, 10)]
    window = warmup_window(rows, fraction)
    assert list(window.requests) == kept
    assert list(window.t_s) == [x / 10 for x in kept]
    assert list(window.memory_bytes) == [1e6 + x for x in kept]


def test_warmup_window_needs_readings() -> None:
    with pytest.raises(ValueError, match="no reading"):
        warmup_window([], 0.2)


def series_of(memory: np.ndarray) -> Series:
    return Series(X.copy(), X / 400, np.asarray(memory, dtype=float))


@pytest.mark.parametrize(
    ("name", "method", "points"),
    # The sawtooth drops at every 2,000 requests up to 12,000: 6 drops, 6 floors.
    [("flat", RAW, N), ("leak 10 KB", RAW, N), ("gc sawtooth", FLOORS, 6), ("two gc cycles", FLOORS, 2),
     ("small sawtooth", RAW, N)],
)
def test_gc_series(name: str, method: str, points: int) -> None:
    chosen, how = gc_series(series_of(shape(name)), LeakSettings())
    assert how == method
    assert len(chosen) == points
    if method == FLOORS:  # each floor is the lowest reading of its tooth, at its own requests and time
        assert set(chosen.memory_bytes) <= set(shape(name))
        assert list(chosen.t_s) == list(chosen.requests / 400)


def test_fit_trends() -> None:
    leak = fit_trends(series_of(shape("leak 10 KB")), 0.95)
    assert leak is not None
    assert leak.overall.slope == pytest.approx(10_240, rel=0.02)
    assert leak.head is not None and leak.tail is not None and leak.per_s is not None
    assert leak.per_s.slope == pytest.approx(10_240 * 400, rel=0.02)   # 400 requests a second
    assert leak.span_requests == 12_000 and leak.tail_requests == 6_000
    assert fit_trends(Series(np.full(5, 7.0), np.arange(5.0), np.arange(5.0)), 0.95) is None  # requests never moved
    assert fit_trends(Series(np.array([]), np.array([]), np.array([])), 0.95) is None


def fit(slope: float, low: float | None = None, high: float | None = None, p_value: float = 0.001,
        points: int = 100) -> Trend:
    return Trend(slope, slope / 2 if low is None else low, slope * 2 if high is None else high, 0.5, p_value, points)


@pytest.mark.parametrize(
    ("overall", "span", "expected"),
    [
        (fit(1000), 12_000, True),
        (fit(1000, low=0.0), 12_000, False),         # the interval reaches zero
        (fit(1000, p_value=0.06), 12_000, False),    # Kendall does not see a trend
        (fit(200), 12_000, False),                   # below 256 B per request
        (fit(1000), 1000, False),                    # 1 MB in all is not material
        (fit(NAN, low=NAN), 12_000, False),
    ],
)
def test_is_significant(overall: Trend, span: float, expected: bool) -> None:
    assert is_significant(overall, span, LeakSettings()) is expected


@pytest.mark.parametrize(
    ("head", "tail", "expected"),
    [
        (fit(1000), fit(1000), True),
        (fit(1000), fit(400), False),                # slowed to below half the head's rate: a cache filling
        (fit(1000), fit(500), True),                 # exactly half still counts
        (fit(-50), fit(300), True),                  # a shrinking head sets no bar
        (None, fit(300), True),
        (fit(1000), fit(1000, low=0.0), False),      # the tail's interval reaches zero
        (fit(1000), None, False),
        (fit(1000), fit(NAN, low=NAN), False),
    ],
)
def test_still_growing(head: Trend | None, tail: Trend | None, expected: bool) -> None:
    assert still_growing(head, tail, LeakSettings()) is expected


@pytest.mark.parametrize(
    ("tail", "tail_requests", "expected"),
    [
        (fit(1000), 6000, True),
        (fit(1000), 1000, False),                    # 1 MB over the last half is not material
        (fit(100), 60_000, False),                   # below 256 B per request
        (fit(1000, low=-1.0), 6000, False),
        (None, 6000, False),
        (fit(1000), 0.0, False),
    ],
)
def test_tail_grows(tail: Trend | None, tail_requests: float, expected: bool) -> None:
    assert tail_grows(tail, tail_requests, LeakSettings()) is expected


@pytest.mark.parametrize(
    ("overall", "head", "tail", "method", "status", "reason_part"),
    [
        (fit(1000), fit(1000), fit(1000), RAW, LEAKED, "grows 1,000 B per request (interval 500 to 2,000)"),
        (fit(1000, points=6), fit(1000), fit(1000), FLOORS, LEAKED, "still grows at the end"),
        (fit(1000, points=5), fit(1000), fit(1000), FLOORS, INCONCLUSIVE, "only 5 GC cycles were seen"),
        (fit(1000), fit(1000), fit(10, low=-5, high=100), RAW, NO_LEAK, "levelled off (last half: 10 B"),
        (fit(10, low=-5, high=20), fit(10), fit(5, low=-10, high=100), RAW, NO_LEAK, "last half is at most 100"),
        (fit(10, low=-5, high=100), None, None, RAW, NO_LEAK, "over the window is at most 100"),
        (fit(1000), fit(2000), fit(600, low=300, high=900), RAW, INCONCLUSIVE, "slowed down at the end (last half 600"),
        (fit(1000), None, None, RAW, INCONCLUSIVE, "(last half nan)"),
        (fit(100, low=-200, high=400), None, fit(100, low=-300, high=500), RAW, INCONCLUSIVE, "up to 500 B"),
        (fit(100, low=-200, high=400), None, None, RAW, INCONCLUSIVE, "up to 400 B"),
        (fit(NAN, low=NAN, high=NAN), None, None, RAW, INCONCLUSIVE, "up to nan B"),
    ],
)
def test_classify(overall: Trend, head: Trend | None, tail: Trend | None, method: str, status: str,
                  reason_part: str) -> None:
    trends = Trends(overall, head, tail, None, span_requests=12_000, tail_requests=6_000)
    got, reason = classify(trends, method, LeakSettings())
    assert got == status
    assert reason_part in reason, reason


@pytest.mark.parametrize(
    ("limit", "last", "per_request", "per_s", "expected"),
    [
        (2e9, 1e9, 1e4, 1e6, (1e5, 1e9 / 1e6 / 3600)),
        (2e9, 1e9, 1e4, None, (1e5, None)),          # no growth against time known
        (2e9, 1e9, 1e4, 0.0, (1e5, None)),
        (2e9, 1e9, 1e4, -5.0, (1e5, None)),
        (1e9, 3e9, 1e4, 1e6, (0.0, 0.0)),            # already past the limit: no headroom
        (None, 1e9, 1e4, 1e6, (None, None)),
        (0.0, 1e9, 1e4, 1e6, (None, None)),          # no limit set
        (-1.0, 1e9, 1e4, 1e6, (None, None)),
        (NAN, 1e9, 1e4, 1e6, (None, None)),
    ],
)
def test_time_to_limit(limit: float | None, last: float, per_request: float, per_s: float | None,
                       expected: tuple[float | None, float | None]) -> None:
    assert time_to_limit(limit, last, per_request, per_s) == pytest.approx(expected)
