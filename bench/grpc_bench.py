"""gRPC generator cost: CPU per request through the engine vs a bare grpc.aio client, same calls, same server.

The server is a separate process that answers ModelInfer with one fixed, pre-serialized response and
does no protobuf work, so the client side is what is measured. Both sides run on uvloop in this
process and send the same pre-serialized ModelInferRequest bytes with a raw (no serializer) unary call.

- bare:    a grpc.aio client, `concurrency` calls in flight, N calls; no decoding.
- paced:   the same client sending at the engine's open-loop rate, one task per call (the fair baseline:
           an open-loop generator pays for its timer wake-ups whatever it is built on).
- engine:  profiler.engine.Engine + GrpcTransport + V2GrpcCodec at a fixed open-loop rate, which also
           decodes every response into predictions and records latency (what a real run does).

Run: python bench/grpc_bench.py [--calls 4000] [--rate 1500] [--seconds 3]. Prints both and the ratio.
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


async def engine(url: str, rate_rps: float, seconds: float) -> tuple[float, int, dict[str, Any]]:
    """CPU seconds per request through the engine at an open-loop rate; requests sent; stage summary."""
    from profiler.codecs.v2_grpc import V2GrpcCodec
    from profiler.engine import Engine
    from profiler.latency import StageRecorder
    from profiler.schedule import arrival_offsets_ns, plan_stages
    from profiler.transports.grpc import GrpcTransport

    codec = V2GrpcCodec("digits")
    transport = GrpcTransport(f"grpc://{url}", model="digits", timeout_s=5)
    body = request_body()
    for _ in range(200):
        await transport.send(INFER, body)
    runner = Engine(transport, codec.infer_path, [body], codec.decode, batch=1, sample_count=1,
                    max_in_flight=512, timeout_s=5)
    [stage] = plan_stages([(rate_rps, seconds)])
    recorder = StageRecorder(stage)
    await runner.run_stage(stage, arrival_offsets_ns(stage, "constant"), recorder)
    await transport.close()
    summary = recorder.summary()
    return recorder.cpu_s / max(summary["sent"], 1), summary["sent"], summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000, help="bare client calls")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=1000.0, help="engine open-loop rate (requests/s)")
    parser.add_argument("--seconds", type=float, default=3.0, help="engine stage length")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    server = subprocess.Popen([sys.executable, __file__, "--serve", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("PORT "):
            raise SystemExit("bench server did not start")
        url = f"127.0.0.1:{line.split()[1]}"
        import uvloop

        bare_cpu, bare_rps = uvloop.run(bare(url, args.calls, args.concurrency))
        paced_cpu, paced_sent = uvloop.run(bare_paced(url, args.rate, args.seconds))
        engine_cpu, sent, summary = uvloop.run(engine(url, args.rate, args.seconds))
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()
    print(f"{'client':<34}{'requests':>10}{'CPU us/request':>16}{'rate':>14}")
    print(f"{'bare grpc.aio (closed loop)':<34}{args.calls:>10}{bare_cpu * 1e6:>16.1f}{bare_rps:>11.0f}/s")
    print(f"{'bare grpc.aio (paced, open loop)':<34}{paced_sent:>10}{paced_cpu * 1e6:>16.1f}{args.rate:>11.0f}/s")
    print(f"{'engine + GrpcTransport + decode':<34}{sent:>10}{engine_cpu * 1e6:>16.1f}"
          f"{summary['achieved_rps'] or 0:>11.0f}/s")
    print(f"ratio engine/bare paced: {engine_cpu / paced_cpu:.2f}, engine/bare closed loop: "
          f"{engine_cpu / bare_cpu:.2f}  (engine errors: {summary['errors']}, "
          f"p50 {summary['latency_ms']['p50']} ms, p99 {summary['latency_ms']['p99']} ms)")


if __name__ == "__main__":
    main()
