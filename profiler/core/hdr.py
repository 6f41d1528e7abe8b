"""Fast reads of an HDR histogram: percentiles, cumulative bucket counts and the total. Pure.

hdrh walks its counts array in Python for every percentile (milliseconds per call) and for the
mean (hundreds of milliseconds on a wide histogram); /metrics and /report read many of them per
scrape while the load runs on the same event loop. Here the bucket layout (each counts slot's
lowest, highest and middle value) is computed once per histogram shape with numpy, and every read
is a cumulative sum or a dot product over the counts. Results equal hdrh's (tests/test_hdr.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from hdrh.histogram import HdrHistogram


@lru_cache(maxsize=8)
def _layout(unit_magnitude: int, half_magnitude: int, counts_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lowest, highest, middle) value of every counts slot, as hdrh's get_value_from_index and
    get_{lowest,highest}_equivalent_value define them for slots below sub_bucket_count."""
    index = np.arange(counts_len, dtype=np.int64)
    half = 1 << half_magnitude
    bucket = (index >> half_magnitude) - 1
    sub = (index & (half - 1)) + half
    first = bucket < 0
    sub = np.where(first, sub - half, sub)
    bucket = np.where(first, 0, bucket)
    lowest = sub << (bucket + unit_magnitude)
    size = np.left_shift(np.int64(1), bucket + unit_magnitude)
    return lowest, lowest + size - 1, lowest + (size >> 1)


def _arrays(histogram: HdrHistogram) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    # A view on the ctypes counts array, no copy.
    counts = np.ctypeslib.as_array(histogram.counts)
    layout = _layout(histogram.unit_magnitude, histogram.sub_bucket_half_count_magnitude, histogram.counts_len)
    return counts, layout


def values_at_percentiles(histogram: HdrHistogram, percentiles: Sequence[float]) -> list[int]:
    """The recorded value at each percentile (0..100), exactly as hdrh reports it; 0 for an empty histogram."""
    if histogram.get_total_count() == 0:
        return [0] * len(percentiles)
    counts, (lowest, highest, _) = _arrays(histogram)
    cumulative = np.cumsum(counts, dtype=np.int64)
    values = []
    for percentile in percentiles:
        target = histogram.get_target_count_at_percentile(percentile)
        index = int(np.searchsorted(cumulative, target, side="left"))
        if index >= len(cumulative):
            values.append(0)
        else:
            values.append(int(highest[index] if percentile else lowest[index]))
    return values


def counts_at_or_below(histogram: HdrHistogram, bounds: Sequence[float]) -> list[int]:
    """For each bound (in the histogram's unit), how many values were recorded in HDR buckets that lie
    wholly at or below it; a bucket straddling the bound counts above it, so latency is never understated."""
    counts, (_, highest, _) = _arrays(histogram)
    cumulative = np.cumsum(counts, dtype=np.int64)
    # Slots are in increasing value order: the last slot whose highest value is <= bound.
    positions = np.searchsorted(highest, np.asarray(bounds, dtype=np.float64), side="right")
    return [int(cumulative[p - 1]) if p > 0 else 0 for p in positions]


def recorded_buckets(histogram: HdrHistogram) -> tuple[np.ndarray, np.ndarray]:
    """(value, count) of every bucket that holds a count, in increasing value order: the value is the bucket's
    highest equivalent value, as hdrh's recorded iterator gives it (`value_iterated_to`), without its Python walk
    (seconds for the hundreds of histograms of a long capacity search)."""
    counts, (_, highest, _) = _arrays(histogram)
    nonzero = np.flatnonzero(counts)
    return highest[nonzero].astype(np.float64), counts[nonzero].astype(np.int64)


def total_of(histogram: HdrHistogram) -> float:
    """The sum of the recorded values, each at its HDR bucket's middle (as hdrh's mean takes it)."""
    counts, (_, _, middle) = _arrays(histogram)
    # numpy's mixed uint64 x int64 product is slow; as int64 it is exact while it cannot overflow.
    if histogram.get_total_count() * int(middle[-1]) < 2**63:
        return float(counts.view(np.int64) @ middle)
    return float(counts.astype(np.float64) @ middle.astype(np.float64))
