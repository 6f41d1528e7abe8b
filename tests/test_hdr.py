"""Fast HDR reads agree with hdrh's own (slow) answers, on tables that include the edge cases."""

from __future__ import annotations

import random

import pytest

from profiler.core.hdr import counts_at_or_below, recorded_buckets, total_of, values_at_percentiles
from profiler.measure.latency import new_histogram

PERCENTILES = [0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0]


def _histogram(values: list[int]):  # type: ignore[no-untyped-def]
    histogram = new_histogram()
    for value in values:
        histogram.record_value(value)
    return histogram


@pytest.mark.parametrize(
    "values",
    [
        [1],
        [5, 5, 5],
        [1, 1_000, 1_000_000, 3_600_000_000],
        list(range(1, 3000)),
        [random.Random(seed).randint(1, 10_000_000) for seed in range(500)],
        [int(random.Random(7).lognormvariate(9, 1.5)) + 1 for _ in range(2000)],
    ],
    ids=["one", "repeated", "extremes", "dense", "uniform", "lognormal"],
)
def test_percentiles_match_hdrh(values: list[int]) -> None:
    histogram = _histogram(values)
    assert values_at_percentiles(histogram, PERCENTILES) == [histogram.get_value_at_percentile(p) for p in PERCENTILES]


def test_empty_histogram_reads_zero() -> None:
    histogram = new_histogram()
    assert values_at_percentiles(histogram, PERCENTILES) == [0] * len(PERCENTILES)
    assert counts_at_or_below(histogram, [0, 1, 1e9]) == [0, 0, 0]


def _slow_counts(histogram, bounds: list[float]) -> list[int]:  # type: ignore[no-untyped-def]
    counts = []
    for bound in bounds:
        total = 0
        for item in histogram.get_recorded_iterator():
            if histogram.get_highest_equivalent_value(item.value_iterated_to) <= bound:
                total += item.count_added_in_this_iter_step
        counts.append(total)
    return counts


@pytest.mark.parametrize(
    ("values", "bounds", "expected"),
    [
        ([10, 20, 30], [5, 10, 25, 30, 1e12], [0, 1, 2, 3, 3]),
        ([100_000], [99_999, 100_000, 100_100], [0, 0, 1]),  # 100000 shares a bucket up to 100063
        ([8_000, 40_000, 150_000, 3_000_000], [5_000, 10_000, 100_000, 200_000, 1_000_000], [0, 1, 2, 3, 3]),
        ([1, 2, 3], [0, -1, 0.5], [0, 0, 0]),
        ([], [1, 10], [0, 0]),
    ],
)
def test_counts_at_or_below(values: list[int], bounds: list[float], expected: list[int]) -> None:
    histogram = _histogram(values)
    assert counts_at_or_below(histogram, bounds) == expected
    assert counts_at_or_below(histogram, bounds) == _slow_counts(histogram, bounds)


def test_counts_agree_with_the_iterator_on_random_data() -> None:
    rng = random.Random(3)
    histogram = _histogram([int(rng.lognormvariate(10, 1.2)) + 1 for _ in range(3000)])
    bounds = [round(100_000 * f, 3) for f in (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0)]
    assert counts_at_or_below(histogram, bounds) == _slow_counts(histogram, bounds)


@pytest.mark.parametrize(
    "values",
    [[], [1], [5, 5, 5], [1, 1_000, 1_000_000, 3_600_000_000], list(range(1, 3000)),
     [int(random.Random(7).lognormvariate(9, 1.5)) + 1 for _ in range(2000)]],
    ids=["empty", "one", "repeated", "extremes", "dense", "lognormal"],
)
def test_total_matches_hdrh_mean(values: list[int]) -> None:
    histogram = _histogram(values)
    assert total_of(histogram) == pytest.approx(histogram.get_mean_value() * histogram.get_total_count(), rel=1e-12)
    assert total_of(histogram) == pytest.approx(sum(values), rel=1e-3)


def test_layout_matches_hdrh_for_every_slot() -> None:
    from profiler.core.hdr import _layout

    histogram = new_histogram()
    lowest, highest, middle = _layout(histogram.unit_magnitude, histogram.sub_bucket_half_count_magnitude,
                                      histogram.counts_len)
    for index in range(histogram.counts_len):
        value = histogram.get_value_from_index(index)
        assert lowest[index] == histogram.get_lowest_equivalent_value(value) == value
        assert highest[index] == histogram.get_highest_equivalent_value(value)
        assert middle[index] == histogram._hdr_median_equiv_value(value)
    assert all(lowest[1:] > lowest[:-1])


def test_total_stays_right_past_the_int64_range() -> None:
    histogram = new_histogram()
    histogram.record_value(3_600_000_000, 3_000_000_000)  # 3e9 values of 1 h: the sum is past 2**63
    assert total_of(histogram) == pytest.approx(3_000_000_000 * 3_600_000_000, rel=1e-3)


@pytest.mark.parametrize("seed", range(6))
def test_recorded_buckets_equal_hdrhs_recorded_iterator(seed: int) -> None:
    rng = random.Random(seed)
    histogram = new_histogram()
    for _ in range(rng.choice([0, 1, 50, 5000])):
        histogram.record_value(max(1, int(rng.lognormvariate(rng.uniform(2, 14), rng.uniform(0.1, 3)))))
    values, counts = recorded_buckets(histogram)
    expected = [(float(i.value_iterated_to), int(i.count_at_value_iterated_to))
                for i in histogram.get_recorded_iterator()]
    assert list(zip(values.tolist(), counts.tolist(), strict=True)) == expected
    assert int(counts.sum()) == histogram.get_total_count()
