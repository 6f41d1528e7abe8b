"""The engine against in-process transports: open-loop accounting without sockets."""

from __future__ import annotations

import asyncio

from profiler.core.errors import DecodeError, TransportError
from profiler.core.results import Result
from profiler.load.engine import Engine, build_bodies
from profiler.measure.latency import StageRecorder
from profiler.schedule import Stage, arrival_offsets_ns
from profiler.transports.base import FunctionTransport


class Collect:
    def __init__(self) -> None:
        self.results: list[Result] = []

    def add(self, result: Result) -> None:
        self.results.append(result)


def decode(body: bytes, count: int) -> list[int]:
    if body == b"bad":
        raise DecodeError("bad body")
    return [int(body)] * count


async def test_open_loop_does_not_wait_for_slow_responses() -> None:
    async def slow(path: str, body: bytes) -> bytes:
        await asyncio.sleep(0.2)
        return body

    sink = Collect()
    engine = Engine(FunctionTransport(slow), "/p", [b"1", b"2"], decode, sample_count=2, consumers=[sink])
    stage = Stage(1, 100, 0.2)
    recorder = StageRecorder(stage)
    await engine.run_stage(stage, arrival_offsets_ns(stage), recorder)
    s = recorder.summary()
    assert (s["scheduled"], s["sent"], s["completed"], s["errors"], s["unsent"]) == (20, 20, 20, 0, 0)
    # Sends are spread over the 200 ms timetable, not serialised behind 200 ms responses.
    sends = sorted(r.sent_ns for r in sink.results)
    assert (sends[-1] - sends[0]) / 1e6 < 1000
    assert all(r.latency_ns >= 200_000_000 for r in sink.results)
    assert [r.first_sample for r in sink.results[:4]] == [0, 1, 0, 1]


async def test_errors_are_classified_and_counted() -> None:
    calls = {"n": 0}

    async def flaky(path: str, body: bytes) -> bytes:
        calls["n"] += 1
        n = calls["n"]
        if n % 4 == 1:
            raise TransportError("timeout", "slow")
        if n % 4 == 2:
            raise TransportError("http_status", "HTTP 500", 500)
        if n % 4 == 3:
            return b"bad"
        return b"7"

    engine = Engine(FunctionTransport(flaky), "/p", [b"x"], decode, sample_count=1)
    stage = Stage(1, 200, 0.1)
    recorder = StageRecorder(stage)
    await engine.run_stage(stage, arrival_offsets_ns(stage), recorder)
    s = recorder.summary()
    assert s["sent"] == 20
    assert s["errors_by_kind"] == {"decode": 5, "http_status": 5, "timeout": 5}
    assert s["completed"] == 5
    assert s["error_examples"][0] == "timeout: slow"


async def test_in_flight_cap_counts_stale_requests_as_unsent() -> None:
    release = asyncio.Event()

    async def stuck(path: str, body: bytes) -> bytes:
        await release.wait()
        return b"1"

    engine = Engine(FunctionTransport(stuck), "/p", [b"x"], decode, sample_count=1, max_in_flight=2, timeout_s=0.05)
    stage = Stage(1, 100, 0.3)
    recorder = StageRecorder(stage)
    asyncio.get_running_loop().call_later(0.25, release.set)
    await engine.run_stage(stage, arrival_offsets_ns(stage), recorder)
    s = recorder.summary()
    assert s["scheduled"] == 30
    assert s["sent"] + s["unsent"] == 30
    assert s["unsent"] > 0
    assert s["completed"] == s["sent"]


async def test_stop_ends_the_stage_and_keeps_results() -> None:
    async def fast(path: str, body: bytes) -> bytes:
        return b"1"

    engine = Engine(FunctionTransport(fast), "/p", [b"x"], decode, sample_count=1)
    stage = Stage(1, 100, 10)
    recorder = StageRecorder(stage)
    asyncio.get_running_loop().call_later(0.1, engine.stop)
    await engine.run_stage(stage, arrival_offsets_ns(stage), recorder)
    s = recorder.summary()
    assert 1 <= s["sent"] < 1000
    assert s["completed"] == s["sent"]


def test_build_bodies_wraps_batches() -> None:
    bodies = build_bodies([1, 2, 3, 4, 5], 2, lambda chunk: bytes(chunk))
    assert bodies == [bytes([1, 2]), bytes([3, 4]), bytes([5, 1])]
