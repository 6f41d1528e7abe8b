"""The open-loop engine's accounting, with an in-process transport (a plain function, no sockets)."""

from __future__ import annotations

import asyncio
import json

import pytest

from profiler.core.errors import TransportError
from profiler.core.results import Result
from profiler.load.engine import Engine
from profiler.measure.latency import StageRecorder
from profiler.schedule import arrival_offsets_ns, make_stage
from profiler.transports.base import FunctionTransport

REPLY = json.dumps({"outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [3]}]}).encode()


def decode(body: bytes, count: int) -> list[int]:
    from profiler.codecs.v2 import V2RestCodec

    return V2RestCodec("m").decode(body, count)


class Sink:
    def __init__(self) -> None:
        self.results: list[Result] = []

    def add(self, result: Result) -> None:
        self.results.append(result)


def accounting(recorder: StageRecorder) -> dict[str, int]:
    s = recorder.summary()
    assert s["scheduled"] == s["sent"] + s["unsent"]
    assert s["sent"] == s["completed"] + s["errors"]
    assert s["errors"] == sum(s["errors_by_kind"].values())
    return {k: s[k] for k in ("scheduled", "sent", "unsent", "late", "completed", "errors")}


async def run(handler, *, rate=500.0, duration=0.2, cap=512, timeout_s=5.0, requests=None, answer_within_s=None):
    """One stage through the engine; the transport gives up on a request after answer_within_s (or timeout_s)."""
    sink = Sink()
    transport = FunctionTransport(handler, timeout_s=answer_within_s or timeout_s)
    engine = Engine(transport, "/infer", [b"a", b"b", b"c"], decode,
                    sample_count=3, max_in_flight=cap, timeout_s=timeout_s, consumers=[sink])
    stage = make_stage(1, rate, None if requests else duration, requests)
    recorder = StageRecorder(stage)
    await engine.run_stage(stage, arrival_offsets_ns(stage), recorder)
    return recorder, sink


async def test_every_request_is_accounted_for_and_latency_runs_from_the_intended_time():
    async def handler(path: str, body: bytes) -> bytes:
        await asyncio.sleep(0.005)
        return REPLY

    recorder, sink = await run(handler, rate=200, duration=0.5)
    assert accounting(recorder) == {"scheduled": 100, "sent": 100, "unsent": 0, "late": 0, "completed": 100,
                                    "errors": 0}
    assert [r.first_sample for r in sorted(sink.results, key=lambda r: r.intended_ns)][:4] == [0, 1, 2, 0]
    assert all(r.predictions == [3] for r in sink.results)
    assert all(r.latency_ns >= r.service_ns >= 5_000_000 for r in sink.results)
    summary = recorder.summary()
    assert summary["latency_ms"]["p50"] >= 5.0
    assert summary["generator_cpu_s"] > 0
    assert set(summary["histograms"]) == {"latency", "service", "lag"}


async def test_errors_are_classified():
    calls = {"n": 0}

    async def handler(path: str, body: bytes) -> bytes:
        calls["n"] += 1
        kind = calls["n"] % 4
        if kind == 1:
            raise TransportError("timeout", "slow")
        if kind == 2:
            raise TransportError("http_status", "HTTP 500", 500)
        if kind == 3:
            return b"not json"
        return REPLY

    recorder, _ = await run(handler, requests=40, rate=1000)
    assert accounting(recorder)["completed"] == 10
    assert recorder.summary()["errors_by_kind"] == {"decode": 10, "http_status": 10, "timeout": 10}
    assert recorder.summary()["error_rate"] == 0.75


async def test_cap_makes_requests_late_then_unsent_never_silently_dropped():
    release = asyncio.Event()

    async def handler(path: str, body: bytes) -> bytes:
        await release.wait()
        return REPLY

    async def opener() -> None:
        await asyncio.sleep(0.35)
        release.set()

    opening = asyncio.create_task(opener())
    # 2 in flight at most, 0.1 s before an unsent request is given up: the stall makes most of them unsent.
    recorder, _ = await run(handler, rate=100, duration=0.5, cap=2, timeout_s=0.1, answer_within_s=5.0)
    await opening
    counts = accounting(recorder)
    assert counts["scheduled"] == 50
    assert counts["unsent"] >= 20
    assert counts["late"] >= 1
    assert counts["completed"] == counts["sent"]


async def test_a_target_that_stops_answering_times_out_and_the_stage_still_ends():
    calls = {"n": 0}

    async def handler(path: str, body: bytes) -> bytes:
        calls["n"] += 1
        if calls["n"] > 10:
            await asyncio.sleep(3600)  # hangs; the transport's timeout ends it
        return REPLY

    recorder, _ = await run(handler, rate=100, duration=0.3, timeout_s=0.2)
    counts = accounting(recorder)
    assert counts["scheduled"] == 30
    assert counts["completed"] == 10
    assert recorder.summary()["errors_by_kind"] == {"timeout": counts["sent"] - 10}


async def test_stop_keeps_the_counts_consistent():
    async def handler(path: str, body: bytes) -> bytes:
        return REPLY

    sink = Sink()
    engine = Engine(FunctionTransport(handler), "/i", [b"a"], decode, sample_count=1, consumers=[sink])
    stage = make_stage(1, 1000, 10.0)
    recorder = StageRecorder(stage)
    asyncio.get_running_loop().call_later(0.1, engine.stop)
    await engine.run_stage(stage, arrival_offsets_ns(stage), recorder)
    counts = accounting(recorder)
    assert 20 < counts["scheduled"] < 10_000
    assert counts["completed"] == counts["scheduled"] == len(sink.results)


@pytest.mark.parametrize(("part", "parts"), [(0, 1), (1, 3)])
async def test_count_held_stage_sends_its_share(part, parts):
    async def handler(path: str, body: bytes) -> bytes:
        return REPLY

    engine = Engine(FunctionTransport(handler), "/i", [b"a"], decode, sample_count=1)
    stage = make_stage(1, 2000, None, 30)
    recorder = StageRecorder(stage)
    await engine.run_stage(stage, arrival_offsets_ns(stage, part=part, parts=parts), recorder)
    assert accounting(recorder)["completed"] == 30 // parts


def test_engine_needs_bodies():
    with pytest.raises(ValueError, match="at least one request body"):
        Engine(FunctionTransport(lambda p, b: None), "/i", [], decode, sample_count=1)  # type: ignore[arg-type]
