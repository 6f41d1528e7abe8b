"""The buffered, vectorised HDR recording builds exactly the histogram hdrh's record_value builds."""

from __future__ import annotations

import random

import pytest

from profiler.core.hdr import counts_at_or_below, total_of, values_at_percentiles
from profiler.core.results import StageAccount
from profiler.measure.latency import BUFFER_VALUES, Recording, StageRecorder, new_histogram, record_ns
from profiler.schedule import make_stage


@pytest.mark.parametrize("count", [0, 1, 7, BUFFER_VALUES - 1, BUFFER_VALUES, 3 * BUFFER_VALUES + 5])
@pytest.mark.parametrize("spread", ["edges", "lognormal"])
def test_recording_equals_record_value(count, spread):
    rng = random.Random(count)
    edges = [-10, 0, 1, 999, 1000, 1001, 2_047_000, 2_048_000, 3_600_000_000_000, 10**15]
    values = [rng.choice(edges) if spread == "edges" else int(rng.lognormvariate(14, 3)) for _ in range(count)]
    fast, slow = Recording(), new_histogram()
    for v in values:
        fast.add(v)
        record_ns(slow, v)
    got = fast.histogram
    assert got.get_total_count() == slow.get_total_count() == count
    assert list(got.counts) == list(slow.counts)
    assert got.encode() == slow.encode()
    if count:
        assert (got.get_min_value(), got.get_max_value()) == (slow.get_min_value(), slow.get_max_value())
        percentiles = [0.0, 50.0, 99.0, 99.9, 100.0]
        assert values_at_percentiles(got, percentiles) == [slow.get_value_at_percentile(p) for p in percentiles]
        assert total_of(got) / count == pytest.approx(slow.get_mean_value(), rel=1e-12)
        bounds = [0.5, 1, 1000, 1e6, 5e9]
        expected = [sum(1 for v in values if slow.get_highest_equivalent_value(min(max(v // 1000, 1), 3_600_000_000))
                        <= b) for b in bounds]
        assert counts_at_or_below(got, bounds) == expected


@pytest.mark.parametrize(
    ("cpu_s", "processes", "lags_ms", "limited", "reason"),
    [
        (0.1, 1, [0.1] * 100, False, None),
        (0.95, 1, [0.1] * 100, True, "generator CPU 95% of a core"),
        (1.5, 2, [0.1] * 100, False, None),             # 75% per process of two
        (1.9, 2, [0.1] * 100, True, "generator CPU 95%"),
        (0.1, 1, [0.1] * 98 + [50, 50], True, "schedule lag p99 50.0 ms"),
        (0.0, 1, [], False, None),
    ],
)
def test_generator_self_check(cpu_s, processes, lags_ms, limited, reason):
    recorder = StageRecorder(make_stage(1, 100, 1.0))
    recorder.close(StageAccount(1, 1 + 1_000_000_000, 100, 0, 0, False, cpu_s))
    recorder.processes = processes
    for lag in lags_ms:
        recorder.record_lag(int(lag * 1e6))
    check = recorder.summary()["generator"]
    assert check["limited"] is limited
    if reason:
        assert any(reason in r for r in check["reasons"]), check
