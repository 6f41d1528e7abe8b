from __future__ import annotations

import itertools

import pytest

from profiler.schedule import Stage, arrival_offsets_ns, plan


@pytest.mark.parametrize(
    ("rate", "duration", "expected"),
    [
        (10, 1, [i * 100_000_000 for i in range(10)]),
        (4, 0.5, [0, 250_000_000]),
        (3, 1, [0, 333_333_333, 666_666_666]),
        (1, 0.5, [0]),
        (0.5, 4, [0, 2_000_000_000]),
    ],
)
def test_constant_arrivals_are_evenly_spaced(rate: float, duration: float, expected: list[int]) -> None:
    assert list(arrival_offsets_ns(Stage(1, rate, duration))) == expected


def test_poisson_is_seeded_and_has_the_right_mean() -> None:
    stage = Stage(1, 1000, 10)
    first = list(arrival_offsets_ns(stage, "poisson", seed=7))
    assert first == list(arrival_offsets_ns(stage, "poisson", seed=7))
    assert first != list(arrival_offsets_ns(stage, "poisson", seed=8))
    assert 9_700 < len(first) < 10_300  # 10,000 expected; 3 sigma is about 300
    assert all(a < b for a, b in itertools.pairwise(first))
    assert first[-1] < 10_000_000_000


def test_unknown_arrival_process() -> None:
    with pytest.raises(ValueError, match="unknown arrival"):
        list(arrival_offsets_ns(Stage(1, 1, 1), "bursty"))


def test_plan_puts_warmup_first() -> None:
    stages = plan([(10, 2, None), (20, 3, None)], warmup_s=1.5)
    assert [(s.name, s.rate_rps, s.duration_s, s.warmup) for s in stages] == [
        ("warmup", 10, 1.5, True), ("stage-1", 10, 2, False), ("stage-2", 20, 3, False)]
    assert [s.expected_requests for s in stages] == [15, 20, 60]


@pytest.mark.parametrize("pairs", [[], [(0, 1)], [(-1, 1)], [(1, 0)], [(float("nan"), 1)], [(float("inf"), 1)]])
def test_plan_rejects_bad_input(pairs: list[tuple[float, float]]) -> None:
    with pytest.raises(ValueError):
        plan([(r, d, None) for r, d in pairs])
