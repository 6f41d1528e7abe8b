"""One generator run of the project's engine against a URL, printed as JSON (used by bench/run.py).

Measures everything the sidecar does per request: the open-loop dispatcher, the HTTP client,
decoding the prediction (V2 JSON), three HDR histograms and the prediction log.
Run: python bench/engine_load.py URL --rate 5000 --duration 5 [--client http1|aiohttp] [--cap 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from profiler.codecs.v2 import V2RestCodec
from profiler.core import aio
from profiler.load.engine import Engine
from profiler.measure.accuracy import PredictionLog
from profiler.measure.latency import StageRecorder
from profiler.schedule import arrival_offsets_ns, make_stage
from profiler.transports.base import Transport
from profiler.transports.http import HttpTransport
from profiler.transports.http1 import Http1Transport

BODY_FLOATS = 34  # with the envelope, a ~313-byte JSON request like the issue's


def request_body(i: int, request_id: str | None = None) -> bytes:
    """A V2 REST request of BODY_FLOATS values; with `request_id`, carrying it as V2's `id` (as the codec does)."""
    data = ",".join(f"{(i * 7 + k) % 17 / 16:.4f}" for k in range(BODY_FLOATS))
    head = "{" if request_id is None else '{"id":' + json.dumps(request_id) + ","
    return (head + '"inputs":[{"name":"input-0","shape":[1,' + str(BODY_FLOATS)
            + '],"datatype":"FP32","data":[' + data + "]}]}").encode()


async def main(args: argparse.Namespace) -> dict[str, object]:
    transport: Transport
    if args.client == "lean":
        transport = Http1Transport(args.url, timeout_s=args.timeout, max_connections=args.connections)
    else:
        transport = HttpTransport(args.url, timeout_s=args.timeout, max_connections=args.connections)
    if args.no_poll:
        transport.set_polled = lambda polled: False  # type: ignore[method-assign]  # the engine then never polls
    codec = V2RestCodec("digits")
    # --ids: each body carries its sample's id and each answer is checked against it (what a V2 run does)
    ids = [f"digits-{i}" for i in range(64)] if args.ids else None
    bodies = [request_body(i, None if ids is None else ids[i]) for i in range(64)]
    log = PredictionLog(64)
    engine = Engine(transport, codec.infer_path, bodies, codec.decode, sample_count=64,
                    max_in_flight=args.cap, timeout_s=args.timeout, consumers=[log],
                    lag_budget_ns=int(args.lag_budget_ms * 1e6), ids=ids)
    warm = make_stage(0, min(args.rate, 2000), 0.5, warmup=True)
    await engine.run_stage(warm, arrival_offsets_ns(warm), StageRecorder(warm))
    stage = make_stage(1, args.rate, args.duration)
    recorder = StageRecorder(stage)
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    deadline = time.monotonic_ns() + int(args.duration * 1e9)
    # A flat-out rate would hold rate x duration requests: end the stage at the duration instead.
    await engine.run_stage(stage, arrival_offsets_ns(stage, args.arrival), recorder,
                           until=lambda: time.monotonic_ns() >= deadline, even=args.arrival == "constant")
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    await transport.close()  # type: ignore[attr-defined]
    s = recorder.summary()
    return {"offered_rps": args.rate, "completed": s["completed"], "errors": s["errors"], "unsent": s["unsent"],
            "late": s["late"], "sent": s["sent"], "wall_s": wall, "cpu_s": cpu,
            "achieved_rps": s["achieved_rps"], "lag_ms": s["schedule_lag_ms"], "latency_ms": s["latency_ms"],
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--client", choices=["lean", "library"], default="lean")
    parser.add_argument("--cap", type=int, default=16)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--arrival", default="constant")
    parser.add_argument("--lag-budget-ms", type=float, default=1.25,
                        help="how late a send may be to share a wake (the engine's LAG_BUDGET_NS)")
    parser.add_argument("--no-poll", action="store_true", help="never drain answers at the dispatcher's wakes")
    parser.add_argument("--ids", action="store_true",
                        help="V2 request ids in the bodies, each answer's id checked against its request's")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="per-request timeout; also how late a request may be sent before it counts unsent")
    print(json.dumps(aio.run(main(parser.parse_args()))))
