"""How the engine spends its wakes, against a real server with exact delays (bench/delay_server.py).

- Answers are timed by the kernel (SO_TIMESTAMPNS): a generator that is busy when an answer
  arrives does not add its own delay to the model's latency.
- Above 1 / lag budget the dispatcher wakes on a grid laid on the arrivals and reads answers at
  those wakes (polled mode); sends stay within the budget and service times stay exact.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from profiler.codecs.v2 import V2RestCodec
from profiler.core.results import OK, Result
from profiler.load.engine import LAG_BUDGET_NS, Engine
from profiler.load.timer import Sleeper
from profiler.measure.latency import StageRecorder
from profiler.schedule import arrival_offsets_ns, make_stage
from profiler.transports.http1 import Http1Transport

pytestmark = pytest.mark.serial  # timing bounds: run alone after the parallel part (Makefile)

DELAY_SERVER = Path(__file__).resolve().parent.parent / "bench" / "delay_server.py"
BODY = b'{"inputs":[{"name":"input-0","shape":[1,2],"datatype":"FP32","data":[1,2]}]}'


@pytest.fixture(scope="module")
def delayed_url() -> Iterator[str]:
    """A server that answers every request exactly 5 ms after it arrives."""
    proc = subprocess.Popen([sys.executable, str(DELAY_SERVER), "--delay-ms", "5"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        _, url, _ = proc.stdout.readline().split()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


class Sink:
    def __init__(self) -> None:
        self.results: list[Result] = []

    def add(self, result: Result) -> None:
        self.results.append(result)


class CountingTransport(Http1Transport):
    """The real client, counting how often the engine switches it between polled and event mode."""

    def __init__(self, url: str) -> None:
        super().__init__(url, timeout_s=5, max_connections=64)
        self.modes: list[bool] = []

    def set_polled(self, polled: bool) -> bool:
        self.modes.append(polled)
        return super().set_polled(polled)


def engine_for(transport: Http1Transport, sink: Sink, cap: int = 512) -> Engine:
    codec = V2RestCodec("digits")
    return Engine(transport, codec.infer_path, [BODY], codec.decode, sample_count=1, max_in_flight=cap,
                  timeout_s=5, consumers=[sink])


async def test_an_answer_that_arrives_while_the_generator_is_busy_keeps_its_kernel_time(delayed_url):
    transport = Http1Transport(delayed_url, timeout_s=5)
    await transport.send("/v2/models/digits/infer", BODY)  # open the connection first
    sink = Sink()
    engine = engine_for(transport, sink)
    stage = make_stage(1, 10, None, 2)  # two requests, 100 ms apart
    asked = []

    def until() -> bool:
        asked.append(time.monotonic_ns())
        if len(asked) == 2:
            time.sleep(0.06)  # the loop is blocked while the first answer (due after 5 ms) arrives
        return False

    recorder = StageRecorder(stage)
    await engine.run_stage(stage, arrival_offsets_ns(stage), recorder, until=until)
    await transport.close()
    first = min(sink.results, key=lambda r: r.intended_ns)
    assert first.outcome == OK
    read_late_by_ms = (asked[1] + 60_000_000 - first.sent_ns) / 1e6
    assert read_late_by_ms > 55  # the loop could not read it before then
    assert 4.5 <= (first.done_ns - first.sent_ns) / 1e6 < 20  # yet its time is the kernel's: ~5 ms


async def test_above_one_over_the_budget_the_grid_reads_answers_at_its_own_wakes(delayed_url):
    transport = CountingTransport(delayed_url)
    await transport.send("/v2/models/digits/infer", BODY)
    sink = Sink()
    engine = engine_for(transport, sink)
    rate = 1000.0
    stage = make_stage(1, rate, 0.6)
    recorder = StageRecorder(stage)
    await engine.run_stage(stage, arrival_offsets_ns(stage), recorder, even=True)
    await transport.close()
    assert transport.modes == [True, False]  # polled for the dispatch, back to events for the drain
    summary = recorder.summary()
    assert summary["completed"] == summary["scheduled"] == 600
    assert summary["errors"] == 0
    # The grid is laid on the arrivals: at 1,000 rps a wake every 2 ms, so half the sends are on time
    # and half one gap late; none is early, none later than the budget plus the OS's wake-up delay.
    lateness = sorted((r.sent_ns - r.intended_ns) / 1e6 for r in sink.results)
    assert lateness[0] >= 0
    assert sum(1 for x in lateness if x < 0.5) >= 200  # the grid ticks on arrivals: many go on time
    assert lateness[len(lateness) // 2] < LAG_BUDGET_NS / 1e6 + 1
    # Answers were read up to a wake later, but timed by the kernel: service time is the server's 5 ms.
    service = sorted((r.done_ns - r.sent_ns) / 1e6 for r in sink.results)
    assert 4.5 <= service[len(service) // 2] < 6.5


async def test_a_polled_stage_that_hits_the_cap_falls_back_to_waking_for_answers(delayed_url):
    transport = CountingTransport(delayed_url)
    await transport.send("/v2/models/digits/infer", BODY)
    sink = Sink()
    engine = engine_for(transport, sink, cap=2)  # 1,000 rps x 5 ms needs ~5 in flight
    stage = make_stage(1, 1000, 0.2)
    recorder = StageRecorder(stage)
    await engine.run_stage(stage, arrival_offsets_ns(stage), recorder, even=True)
    await transport.close()
    summary = recorder.summary()
    assert summary["scheduled"] == 200
    assert summary["scheduled"] == summary["sent"] + summary["unsent"]
    assert summary["completed"] == summary["sent"] > 100
    assert summary["late"] > 0  # the cap made requests wait, and they say so
    assert transport.modes[0] is True and transport.modes[-1] is False


async def test_budget_zero_means_every_request_gets_its_own_wake(delayed_url):
    transport = CountingTransport(delayed_url)
    await transport.send("/v2/models/digits/infer", BODY)
    sink = Sink()
    codec = V2RestCodec("digits")
    engine = Engine(transport, codec.infer_path, [BODY], codec.decode, sample_count=1, timeout_s=5,
                    consumers=[sink], lag_budget_ns=0)
    stage = make_stage(1, 1000, 0.3)
    await engine.run_stage(stage, arrival_offsets_ns(stage), StageRecorder(stage), even=True)
    await transport.close()
    assert transport.modes == []
    assert len(sink.results) == 300
    lateness = sorted((r.sent_ns - r.intended_ns) / 1e6 for r in sink.results)
    assert lateness[len(lateness) // 2] < 0.5


async def test_periodic_ticks_never_wake_early_and_land_on_the_grid():
    sleeper = Sleeper()
    if not sleeper.precise:
        pytest.skip("no timerfd on this platform")
    period = 2_000_000
    first = time.monotonic_ns() + period
    assert sleeper.tick(first, period)
    assert sleeper.ticking
    try:
        for k in (0, 1, 3, 4):
            deadline = first + k * period - period // 2  # between ticks: wakes at the next one
            await sleeper.until(deadline)
            now = time.monotonic_ns()
            assert now >= first + k * period  # not at the deadline between ticks: at the tick after it
            assert now < first + k * period + 50_000_000  # and not many ticks later
    finally:
        sleeper.close()


async def test_concurrent_sends_over_one_transport_complete_with_kernel_times(delayed_url):
    transport = Http1Transport(delayed_url, timeout_s=5, max_connections=8)
    done: list[tuple[bytes, object, int]] = []
    finished = asyncio.get_running_loop().create_future()

    def callback(body: bytes, error: object, received_ns: int) -> None:
        done.append((body, error, received_ns))
        if len(done) == 20 and not finished.done():
            finished.set_result(None)

    start = time.monotonic_ns()
    for _ in range(20):
        transport.submit("/v2/models/digits/infer", BODY, callback)
    await asyncio.wait_for(finished, 10)
    await transport.close()
    assert all(error is None for _, error, _ in done)
    assert all(b'"outputs"' in body for body, _, _ in done)
    assert all(start < received <= time.monotonic_ns() for _, _, received in done)


async def test_poisson_arrivals_wake_every_budget_and_none_is_sent_early(delayed_url):
    transport = CountingTransport(delayed_url)
    await transport.send("/v2/models/digits/infer", BODY)
    sink = Sink()
    engine = engine_for(transport, sink)
    stage = make_stage(1, 1500, 0.5)
    offsets = list(arrival_offsets_ns(stage, "poisson", seed=3))
    recorder = StageRecorder(stage)
    await engine.run_stage(stage, offsets, recorder, even=False)
    await transport.close()
    assert transport.modes == [True, False]
    assert len(sink.results) == len(offsets) and all(r.outcome == OK for r in sink.results)
    lateness = sorted((r.sent_ns - r.intended_ns) / 1e6 for r in sink.results)
    assert lateness[0] >= 0
    # On a grid of one budget (1.25 ms) the lateness spreads over [0, 1.25 ms): its median is near half of it.
    assert 0.3 < lateness[len(lateness) // 2] < LAG_BUDGET_NS / 1e6 + 1
