"""hdrh's own reads against profiler.core.hdr's numpy reads, side by side, on the same histograms. Prints a table.

What /metrics and /report do per stage: 5 percentiles, 10 bucket counts, the sum.

    .venv/bin/python bench/hdr_reads.py --requests 3000 --repeat 20
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from profiler.core.hdr import counts_at_or_below, total_of, values_at_percentiles
from profiler.measure.latency import PERCENTILES, new_histogram

BOUNDS_US = [100_000 * f for f in (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0)]


def slow_buckets(histogram, bounds):  # type: ignore[no-untyped-def]
    """The former implementation: walk hdrh's recorded-value iterator."""
    counts = [0] * len(bounds)
    for item in histogram.get_recorded_iterator():
        value = histogram.get_highest_equivalent_value(item.value_iterated_to)
        for i, bound in enumerate(bounds):
            if value <= bound:
                counts[i] += item.count_added_in_this_iter_step
                break
    return counts


def best_of(repeat: int, work: Callable[[], object]) -> float:
    """The fastest of `repeat` runs, in milliseconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times) * 1e3


def main() -> None:
    """Time both ways on a narrow and a wide latency distribution."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    rng = random.Random(1)
    shapes = {"narrow (lognormal around 8 ms)": lambda: int(rng.lognormvariate(9, 0.5)) + 1,
              "wide (uniform 1 ms .. 1000 s)": lambda: rng.randint(1_000, 1_000_000_000)}
    print(f"{'distribution':<32} {'read':<12} {'hdrh ms':>9} {'numpy ms':>9} {'ratio':>7}")
    for name, draw in shapes.items():
        histogram = new_histogram()
        for _ in range(args.requests):
            histogram.record_value(draw())
        values_at_percentiles(histogram, PERCENTILES)  # the layout is computed once per shape
        rows = [
            ("percentiles", lambda h=histogram: [h.get_value_at_percentile(p) for p in PERCENTILES],
             lambda h=histogram: values_at_percentiles(h, PERCENTILES)),
            ("buckets", lambda h=histogram: slow_buckets(h, BOUNDS_US),
             lambda h=histogram: counts_at_or_below(h, BOUNDS_US)),
            ("sum", lambda h=histogram: h.get_mean_value() * h.get_total_count(), lambda h=histogram: total_of(h)),
        ]
        for read, slow, fast in rows:
            slow_ms, fast_ms = best_of(args.repeat, slow), best_of(args.repeat, fast)
            print(f"{name:<32} {read:<12} {slow_ms:9.3f} {fast_ms:9.3f} {slow_ms / fast_ms:6.0f}x")


if __name__ == "__main__":
    main()
