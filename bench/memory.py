"""The generator's own memory: RSS after 100,000 and after 1,000,000 requests through the full engine.

Uses the in-process FunctionTransport (no sockets), so a million requests take seconds. Prints JSON.
Run: python bench/memory.py [--first 100000] [--total 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from profiler.codecs.v2 import V2RestCodec
from profiler.core import aio
from profiler.load.engine import Engine
from profiler.measure.accuracy import PredictionLog
from profiler.measure.latency import StageRecorder
from profiler.schedule import arrival_offsets_ns, make_stage
from profiler.transports.base import FunctionTransport

REPLY = (b'{"model_name":"digits","model_version":"1","id":"","outputs":[{"name":"label","datatype":"INT64",'
         b'"shape":[1],"data":[3]}]}')


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        import os

        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def handler(path: str, body: bytes) -> bytes:
    await asyncio.sleep(0)
    return REPLY


async def measure(first: int, total: int) -> dict[str, float]:
    codec = V2RestCodec("digits")
    bodies = [b"{}"] * 360
    log = PredictionLog(360)
    engine = Engine(FunctionTransport(handler), codec.infer_path, bodies, codec.decode, sample_count=360,
                    max_in_flight=512, timeout_s=3600, consumers=[log])  # never unsent: closed loop at 512
    points = {}
    for index, count in enumerate((first, total - first), start=1):
        stage = make_stage(index, 1_000_000, None, count)
        recorder = StageRecorder(stage)
        await engine.run_stage(stage, arrival_offsets_ns(stage), recorder)
        assert recorder.completed == count, recorder.summary()
        points[index] = rss_bytes()
    return {"requests_first": first, "requests_total": total, "rss_after_first_bytes": points[1],
            "rss_after_total_bytes": points[2], "growth_bytes": points[2] - points[1]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--first", type=int, default=100_000)
    parser.add_argument("--total", type=int, default=1_000_000)
    args = parser.parse_args()
    print(json.dumps(aio.run(measure(args.first, args.total))))
