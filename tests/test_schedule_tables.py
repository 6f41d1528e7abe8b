"""The schedule is pure: tables of stages, ramps and timetables, failure cases included (pacing: test_pacing.py)."""

from __future__ import annotations

import itertools
import math

import pytest

from profiler.core.units import NS_PER_S
from profiler.schedule import Stage, arrival_offsets_ns, make_stage, plan, ramp_rates


@pytest.mark.parametrize(
    ("start", "top", "factor", "step", "expected"),
    [
        (10, 80, 2.0, None, [10, 20, 40, 80]),
        (10, 100, 2.0, None, [10, 20, 40, 80]),
        (100, 400, None, 100, [100, 200, 300, 400]),
        (5, 5, 2.0, None, [5]),
        (1, 1.5, None, 0.25, [1, 1.25, 1.5]),
    ],
)
def test_ramp_rates(start, top, factor, step, expected):
    assert ramp_rates(start, top, factor, step) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("start", "top", "factor", "step", "message"),
    [
        (0, 10, 2.0, None, "above 0"),
        (-5, 10, 2.0, None, "above 0"),
        (math.nan, 10, 2.0, None, "above 0"),
        (10, 5, 2.0, None, "below its start"),
        (10, 100, None, None, "exactly one"),
        (10, 100, 2.0, 5, "exactly one"),
        (10, 100, 1.0, None, "factor must be above 1"),
        (10, 100, None, 0, "step must be above 0"),
        (10, 100, None, -1, "step must be above 0"),
        (1, 1e6, 1.000001, None, "more than"),
        (10, 2e6, 2.0, None, "at most"),
    ],
)
def test_ramp_rejects(start, top, factor, step, message):
    with pytest.raises(ValueError, match=message):
        ramp_rates(start, top, factor, step)


@pytest.mark.parametrize(
    ("rate", "duration", "requests", "message"),
    [
        (0, 1.0, None, "above 0"),
        (-1, 1.0, None, "above 0"),
        (math.inf, 1.0, None, "above 0"),
        (math.nan, 1.0, None, "above 0"),
        (5e6, 1.0, None, "at most"),
        (10, 0.0, None, "duration must be above 0"),
        (10, -1.0, None, "duration must be above 0"),
        (10, math.nan, None, "duration must be above 0"),
        (10, None, 0, "at least 1"),
        (10, None, None, "exactly one"),
        (10, 1.0, 5, "exactly one"),
    ],
)
def test_make_stage_rejects(rate, duration, requests, message):
    with pytest.raises(ValueError, match=message):
        make_stage(1, rate, duration, requests)


def test_plan_rejects_empty_and_bad_warmup():
    with pytest.raises(ValueError, match="at least one stage"):
        plan([])
    with pytest.raises(ValueError, match="warm-up"):
        plan([(10, 1.0, None)], warmup_s=-1)
    with pytest.raises(ValueError, match="at least one stage"):
        plan([])


def test_plan_puts_warmup_first_at_the_first_rate():
    stages = plan([(10, 2.0, None), (20, None, 50)], warmup_s=1.5)
    assert [(s.name, s.rate_rps, s.duration_s, s.warmup, s.requests) for s in stages] == [
        ("warmup", 10.0, 1.5, True, None),
        ("stage-1", 10.0, 2.0, False, None),
        ("stage-2", 20.0, 2.5, False, 50),
    ]
    assert [s.expected_requests for s in stages] == [15, 20, 50]


@pytest.mark.parametrize(
    ("rate", "duration", "requests", "index", "expected"),
    [
        (10, 1.0, None, 0, 0),                      # first request at once
        (10, 1.0, None, 1, 100_000_000),            # second 100 ms later
        (10, 1.0, None, 9, 900_000_000),
        (10, 1.0, None, 10, None),                  # 10 requests in 1 s: done
        (3, 1.0, None, 2, 666_666_666),             # truncated to whole ns, never rounded up
        (3, 1.0, None, 3, None),
        (1000, 0.0015, None, 1, 1_000_000),
        (1000, 0.0015, None, 2, None),              # rounds up to 2 requests, both before 1.5 ms
        (10, None, 3, 2, 200_000_000),              # held for a count
        (10, None, 3, 3, None),
        (1e6, 1.0, None, 999_999, 999_999_000),
        (1e6, 1.0, None, 1_000_000, None),
    ],
)
def test_constant_timetable(rate, duration, requests, index, expected):
    """The offset of arrival number `index` in ns, or None when the timetable has ended before it."""
    stage = make_stage(1, rate, duration, requests)
    assert next(itertools.islice(arrival_offsets_ns(stage), index, None), None) == expected


@pytest.mark.parametrize(
    ("rate", "duration", "requests", "count"),
    [(100, 1.0, None, 100), (7, 1.0, None, 7), (0.5, 3.0, None, 2), (50, None, 13, 13), (1000, 0.01, None, 10)],
)
def test_constant_offsets(rate, duration, requests, count):
    stage = make_stage(1, rate, duration, requests)
    offsets = list(arrival_offsets_ns(stage))
    assert len(offsets) == count == stage.expected_requests
    assert offsets[0] == 0
    assert offsets == sorted(offsets)
    assert all(b - a == pytest.approx(NS_PER_S / rate, abs=1) for a, b in itertools.pairwise(offsets))
    if requests is None:
        assert offsets[-1] < duration * NS_PER_S


@pytest.mark.parametrize(
    ("rate", "duration", "requests"),
    [(100, 1.0, None), (3, 1.0, None), (1000, 0.0015, None), (10, None, 3), (0.7, 10.0, None), (333.3, 0.5, None)],
)
def test_constant_offsets_are_whole_gaps_and_parts_are_slices(rate, duration, requests):
    """Arrival i is at i whole-ns gaps (the gap truncated to ns); worker k of n gets arrivals k, k+n, ... of the
    same timetable."""
    stage = make_stage(1, rate, duration, requests)
    gap_ns = int(NS_PER_S // rate)
    expected = [i * gap_ns for i in range(stage.expected_requests)]
    if requests is None:
        expected = [t for t in expected if t < duration * NS_PER_S]
    assert list(arrival_offsets_ns(stage)) == expected
    for parts in (2, 3):
        assert list(arrival_offsets_ns(stage, part=1, parts=parts)) == expected[1::parts]


@pytest.mark.parametrize("arrival", ["constant", "poisson"])
@pytest.mark.parametrize("parts", [1, 2, 3, 5])
def test_parts_deal_out_exactly_the_whole_timetable(arrival, parts):
    stage = make_stage(2, 200, 2.0)
    whole = list(arrival_offsets_ns(stage, arrival, seed=7))
    dealt = [list(arrival_offsets_ns(stage, arrival, seed=7, part=k, parts=parts)) for k in range(parts)]
    assert sorted(x for part in dealt for x in part) == whole
    assert max(len(p) for p in dealt) - min(len(p) for p in dealt) <= 1


def test_poisson_is_seeded_and_has_the_right_mean_rate():
    stage = make_stage(1, 500, 20.0)
    a = list(arrival_offsets_ns(stage, "poisson", seed=1))
    assert a == list(arrival_offsets_ns(stage, "poisson", seed=1))
    assert a != list(arrival_offsets_ns(stage, "poisson", seed=2))
    assert len(a) == pytest.approx(10_000, rel=0.05)
    assert all(0 < x < 20 * NS_PER_S for x in a)
    counted = list(arrival_offsets_ns(make_stage(1, 500, None, 321), "poisson", seed=1))
    assert len(counted) == 321


@pytest.mark.parametrize(("part", "parts"), [(0, 0), (2, 2), (-1, 2)])
def test_offsets_reject_bad_parts_and_arrivals(part, parts):
    with pytest.raises(ValueError, match="part"):
        list(arrival_offsets_ns(make_stage(1, 10, 1.0), part=part, parts=parts))
    with pytest.raises(ValueError, match="unknown arrival"):
        list(arrival_offsets_ns(make_stage(1, 10, 1.0), "bursty"))


def test_stage_names():
    assert Stage(0, 1.0, 1.0, warmup=True).name == "warmup"
    assert Stage(3, 1.0, 1.0).name == "stage-3"
