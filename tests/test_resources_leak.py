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
    detect_leak,
    requests_to_decide,
    trend,
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
