"""How long the verdict's significance tests take, by hold-out size and request count.

Run: .venv/bin/python bench/significance.py   (prints a table; asserts nothing)
The bootstraps resample cells (joint label/prediction triples, HDR buckets), so their cost should
follow the number of distinct cells rather than the number of samples or requests.
"""

from __future__ import annotations

import time

import numpy as np

from profiler.judge.significance import (
    ClassBootstrap,
    bootstrap_percentile_difference,
    histogram_counts,
    mcnemar_accuracy,
    pair,
)
from profiler.measure.latency import new_histogram


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'samples':>9} {'classes':>7} {'pair ms':>8} {'McNemar ms':>10} {'draws ms':>9} {'per metric ms':>13}"
          "  (2000 paired resamples, drawn once for all class metrics)")
    for n, k in ((360, 10), (10_000, 10), (100_000, 10), (100_000, 100)):
        labels = [str(x) for x in rng.integers(0, k, n)]
        cand = [y if rng.random() > 0.1 else str(rng.integers(0, k)) for y in labels]
        prev = [y if rng.random() > 0.12 else str(rng.integers(0, k)) for y in labels]
        pair_ms = timed(lambda labels=labels, cand=cand, prev=prev: pair(labels, cand, prev), 1)
        paired = pair(labels, cand, prev)
        mc_ms = timed(lambda paired=paired: mcnemar_accuracy(paired))
        draws_ms = timed(lambda paired=paired: ClassBootstrap(paired), 1)
        boot = ClassBootstrap(paired)
        metric_ms = timed(lambda boot=boot: boot.interval("f1_macro"))
        print(f"{n:>9} {k:>7} {pair_ms:>8.1f} {mc_ms:>10.2f} {draws_ms:>9.1f} {metric_ms:>13.2f}")
    print()
    print(f"{'requests':>9} {'buckets':>7} {'decode ms':>9} {'p99 bootstrap ms':>16} (2000 resamples, both runs)")
    for n in (1_000, 100_000, 1_000_000):
        encoded = []
        for shift in (0.0, 0.05):
            histogram = new_histogram()
            for value in rng.lognormal(8 + shift, 0.6, n).astype(np.int64):
                histogram.record_value(int(value))
            encoded.append(histogram.encode())
        decode_ms = timed(lambda encoded=encoded: [histogram_counts(e) for e in encoded], 1)
        a, b = (histogram_counts(e) for e in encoded)
        boot_ms = timed(lambda a=a, b=b: bootstrap_percentile_difference(a, b, 99.0), 1)
        print(f"{n:>9} {len(a[0]):>7} {decode_ms:>9.1f} {boot_ms:>16.1f}")


if __name__ == "__main__":
    main()
