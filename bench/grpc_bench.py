"""gRPC generator cost: CPU per call through the engine vs a bare grpc.aio client, same calls, same server.

The server is a separate process (core 0) that answers ModelInfer with one fixed, pre-serialized
response and does no protobuf work, so the client side (core 1) is what is measured. Every client
runs on uvloop and sends the same pre-serialized ModelInferRequest bytes.

- bare, closed loop: a grpc.aio client with `concurrency` calls in flight (no decoding). The engine
  flat out with the same cap on calls in flight is compared with it.
- bare, paced: the same client sending at a fixed open-loop rate, one task per call. The engine at
  that rate is compared with it.
- engine + lean h2: profiler.load.engine.Engine with the project's HTTP/2 client (the default for
  grpc://), decoding every answer into predictions and recording latency, as a real run does.
- engine + grpc.aio: the same with the grpc.aio transport (load.client: library; TLS targets).

Rounds are interleaved and medians printed, because this shared machine is noisy.
Run: python bench/grpc_bench.py [--rate 1000] [--seconds 3] [--repeats 3].
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from typing import Any

INFER = "/inference.GRPCInferenceService/ModelInfer"


def serve(port: int) -> None:
    """The fixed-answer V2 server (run in a child process)."""
    import grpc
    from grpc import aio

    from profiler._proto import grpc_predict_v2_pb2 as pb

    output = pb.ModelInferResponse.InferOutputTensor(name="label", datatype="INT64", shape=[1])
    output.contents.int64_contents.append(7)
    answer = pb.ModelInferResponse(model_name="digits", outputs=[output]).SerializeToString()

    async def infer(request: bytes, context: Any) -> bytes:
        return answer

    async def main() -> None:
        server = aio.server()
        handler = grpc.unary_unary_rpc_method_handler(infer)  # bytes in, bytes out
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService", {"ModelInfer": handler}),))
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print(f"PORT {bound}", flush=True)
        await server.wait_for_termination()

    import uvloop

    uvloop.run(main())


def request_body() -> bytes:
    from profiler.codecs.v2_grpc import V2GrpcCodec
    from profiler.dataset import Sample

    return V2GrpcCodec("digits").encode([Sample("s", [float(i % 16) for i in range(64)], 0)])


async def bare(url: str, calls: int, concurrency: int) -> tuple[float, float]:
    """CPU seconds per call and calls per second for a plain grpc.aio client."""
    from grpc import aio

    body = request_body()
    channel = aio.insecure_channel(url)
    call = channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)
    for _ in range(200):  # warm the channel
        await call(body, timeout=5)
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call(body, timeout=5)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await channel.close()
    return cpu / calls, calls / wall


async def bare_paced(url: str, rate_rps: float, seconds: float) -> tuple[float, int]:
    """CPU seconds per call for a plain grpc.aio client sending at a fixed open-loop rate (a task per call)."""
    from grpc import aio

    body = request_body()
    channel = aio.insecure_channel(url)
    call = channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)
    for _ in range(200):
        await call(body, timeout=5)
    count = int(rate_rps * seconds)
    gap_s = 1.0 / rate_rps
    tasks = set()
    cpu0 = time.process_time()
    start = time.perf_counter()
    for i in range(count):
        wait_s = start + i * gap_s - time.perf_counter()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        task = asyncio.ensure_future(call(body, timeout=5))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    cpu = time.process_time() - cpu0
    await channel.close()
    return cpu / count, count


async def engine(url: str, rate_rps: float, seconds: float, client: str = "lean",
                 cap: int = 512) -> tuple[float, int, dict[str, Any]]:
    """CPU seconds per request through the engine at an open-loop rate; requests sent; stage summary.

    client "lean" is the project's own HTTP/2 client (the default for grpc://), "library" is grpc.aio.
    A rate of 1e6 with a cap runs flat out: `cap` calls in flight, like the closed-loop bare client.
    """
    from profiler.codecs.v2_grpc import V2GrpcCodec
    from profiler.load.engine import Engine
    from profiler.measure.latency import StageRecorder
    from profiler.schedule import arrival_offsets_ns, plan
    from profiler.transports.grpc import GrpcTransport
    from profiler.transports.grpc_h2 import H2GrpcTransport

    codec = V2GrpcCodec("digits")
    kind = H2GrpcTransport if client == "lean" else GrpcTransport
    transport = kind(f"grpc://{url}", model="digits", timeout_s=5)
    body = request_body()
    for _ in range(200):
        await transport.send(INFER, body)
    runner = Engine(transport, codec.infer_path, [body], codec.decode, batch=1, sample_count=1,
                    max_in_flight=cap, timeout_s=5)
    [stage] = plan([(rate_rps, seconds, None)])
    recorder = StageRecorder(stage)
    deadline = time.monotonic_ns() + int(seconds * 1e9)
    await runner.run_stage(stage, arrival_offsets_ns(stage, "constant"), recorder,
                           until=lambda: time.monotonic_ns() >= deadline, even=True)
    await transport.close()
    summary = recorder.summary()
    return recorder.cpu_s / max(summary["sent"], 1), summary["sent"], summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000, help="bare closed-loop client calls")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop rate (requests/s)")
    parser.add_argument("--seconds", type=float, default=3.0, help="open-loop stage length")
    parser.add_argument("--repeats", type=int, default=3, help="rounds, interleaved; medians are printed")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    import os
    import statistics

    import uvloop

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the generator on core 1, the server (started next) on core 0
    server = subprocess.Popen(["taskset", "-c", "0", sys.executable, __file__, "--serve", "0"], stdout=subprocess.PIPE,
                              text=True)
    rows: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("PORT "):
            raise SystemExit("bench server did not start")
        url = f"127.0.0.1:{line.split()[1]}"
        for _ in range(args.repeats):
            cpu, rps = uvloop.run(bare(url, args.calls, args.concurrency))
            rows.setdefault("bare grpc.aio, closed loop", []).append(cpu)
            notes["bare grpc.aio, closed loop"] = f"{rps:.0f}/s"
            for client in ("lean", "library"):
                cpu, _, summary = uvloop.run(engine(url, 1e6, args.seconds, client, cap=args.concurrency))
                name = f"engine + {'lean h2' if client == 'lean' else 'grpc.aio'}, flat out"
                rows.setdefault(name, []).append(cpu)
                notes[name] = f"{summary['achieved_rps'] or 0:.0f}/s"
            cpu, _ = uvloop.run(bare_paced(url, args.rate, args.seconds))
            rows.setdefault(f"bare grpc.aio, paced {args.rate:g}/s", []).append(cpu)
            for client in ("lean", "library"):
                cpu, _, summary = uvloop.run(engine(url, args.rate, args.seconds, client))
                name = f"engine + {'lean h2' if client == 'lean' else 'grpc.aio'}, {args.rate:g}/s"
                rows.setdefault(name, []).append(cpu)
                notes[name] = (f"lag p99 {summary['schedule_lag_ms']['p99']} ms, "
                               f"p50 {summary['latency_ms']['p50']} ms, errors {summary['errors']}")
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()
    medians = {name: statistics.median(values) * 1e6 for name, values in rows.items()}
    closed = medians["bare grpc.aio, closed loop"]
    paced = medians[f"bare grpc.aio, paced {args.rate:g}/s"]
    print(f"gRPC generator CPU per call, median of {args.repeats} interleaved rounds (us); "
          "ratio to the bare grpc.aio client doing the same")
    print(f"{'client':<40}{'us/call':>9}{'ratio':>8}  runs / notes")
    for name, value in medians.items():
        base = closed if "flat out" in name or "closed" in name else paced
        runs = " ".join(f"{v * 1e6:.0f}" for v in rows[name])
        print(f"{name:<40}{value:>9.1f}{value / base:>7.2f}x  [{runs}] {notes.get(name, '')}")


if __name__ == "__main__":
    main()
