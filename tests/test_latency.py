from __future__ import annotations

import pytest

from profiler.core.results import CONNECTION, OK, TIMEOUT, Result, StageAccount
from profiler.measure.latency import StageRecorder, new_histogram, record_ns, spectrum_ms
from profiler.schedule import Stage


def result(outcome: str, intended: int, sent: int, done: int, error: str | None = None) -> Result:
    return Result(1, 0, 1, intended, sent, done, outcome, [1] if outcome == OK else None, error)


def test_latency_is_measured_from_the_intended_send_time() -> None:
    rec = StageRecorder(Stage(1, 10, 1), started_ns=0, ended_ns=1_000_000_000)
    # sent 40 ms late, answered 10 ms after the send: latency 50 ms, service 10 ms, lag 40 ms
    rec.add(result(OK, 0, 40_000_000, 50_000_000))
    # The engine records the generator's own lag as it sends (a wait for an in-flight slot is not lag).
    rec.record_lag(40_000_000)
    summary = rec.summary()
    assert summary["latency_ms"]["p50"] == pytest.approx(50, rel=1e-3)
    assert summary["service_time_ms"]["p50"] == pytest.approx(10, rel=1e-3)
    assert summary["schedule_lag_ms"]["p99"] == pytest.approx(40, rel=1e-3)


def test_counts_add_up_and_errors_are_classified() -> None:
    rec = StageRecorder(Stage(1, 10, 1), started_ns=0, ended_ns=1_000_000_000)
    for i in range(7):
        rec.add(result(OK, i, i, i + 1_000_000))
    rec.add(result(TIMEOUT, 0, 0, 5, "no answer"))
    rec.add(result(CONNECTION, 0, 0, 5, "refused"))
    rec.close(StageAccount(started_ns=0, ended_ns=1_000_000_000, scheduled=10, unsent=1, late=0, cut_short=False,
                           cpu_s=0.0))
    s = rec.summary()
    assert (s["sent"], s["completed"], s["errors"], s["unsent"]) == (9, 7, 2, 1)
    assert s["errors_by_kind"] == {"connection": 1, "timeout": 1}
    assert s["error_rate"] == pytest.approx(3 / 10)
    assert s["error_examples"] == ["timeout: no answer", "connection: refused"]
    assert s["achieved_rps"] == pytest.approx(7.0)


def test_percentiles_are_ordered_and_empty_is_none() -> None:
    hist = new_histogram()
    assert spectrum_ms(hist) == dict.fromkeys(["p50", "p90", "p95", "p99", "p999", "max"])
    for ms in range(1, 1001):
        record_ns(hist, ms * 1_000_000)
    values = list(spectrum_ms(hist).values())
    assert values == sorted(values)
    assert values[0] == pytest.approx(500, rel=0.01)
    assert values[-1] == pytest.approx(1000, rel=0.01)


@pytest.mark.parametrize(("value_ns", "stored_us"), [(-5, 1), (0, 1), (999, 1), (10**20, 3_600_000_000)])
def test_record_clamps_into_range(value_ns: int, stored_us: int) -> None:
    hist = new_histogram()
    record_ns(hist, value_ns)
    assert hist.get_total_count() == 1
    assert hist.values_are_equivalent(hist.get_max_value(), stored_us)
