"""Streaming: the generator's CPU per streamed token and per request, and its TTFT/ITL accuracy, against a peer.

A server with exactly planned token timings (bench/sse_server.py: first token 50 ms after the request, then
one every 10 ms, 32 tokens) is driven at `--concurrency` streams in flight (closed loop) for `--duration` s by:
  profiler  the project's engine, lean HTTP/1.1 client, OpenAI chat codec (kernel receive time per read);
  aiohttp   a bare aiohttp + uvloop SSE client (a coroutine per stream, reading line by line, timing each
            content event with time.monotonic_ns when its coroutine gets it): what most SSE benchmarks do.
vLLM's `bench serve` client needs vLLM (torch, a GPU build): not installable here, so aiohttp is the peer.
Each is compared with what the server actually did (its own write times, /stats) and with the plan.

Run: python bench/streaming.py [--concurrency 50] [--duration 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from profiler.codecs.openai import OpenAICodec
from profiler.dataset import Sample
from profiler.load.engine import Engine
from profiler.measure.latency import StageRecorder
from profiler.schedule import Stage
from profiler.transports.http1 import Http1Transport

PATH = "/v1/chat/completions"


def start_server(first_ms: float, gap_ms: float, tokens: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("sse_server.py")), "--first-ms",
                             str(first_ms), "--gap-ms", str(gap_ms), "--tokens", str(tokens)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, line.split()[1]


def server_stats(url: str) -> dict[str, list[int]]:
    with urllib.request.urlopen(f"{url}/stats", timeout=30) as answer:
        stats: dict[str, list[int]] = json.loads(answer.read())
        return stats


def pct(values_ns: list[int] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(values_ns, dtype=np.float64), q)) / 1e6 if len(values_ns) else float("nan")


async def profiler_run(url: str, concurrency: int, duration_s: float) -> dict[str, Any]:
    codec = OpenAICodec("bench", stream=True, max_tokens=64)
    body = codec.encode([Sample("s", ["hello"], "x")])
    transport = Http1Transport(url, timeout_s=30, max_connections=concurrency)
    engine = Engine(transport, PATH, [body], codec.decode, sample_count=1, max_in_flight=concurrency, timeout_s=30,
                    tokens=codec.read, stream=True)
    warm = Stage(0, 0.0, 1.0, warmup=True, concurrency=concurrency)
    await engine.run_stage(warm, iter(()), StageRecorder(warm))
    await asyncio.to_thread(server_stats, url)  # clears the server's record of the warm-up
    stage = Stage(1, 0.0, duration_s, concurrency=concurrency)
    recorder = StageRecorder(stage)
    cpu0 = time.process_time()
    await engine.run_stage(stage, iter(()), recorder)
    cpu_s = time.process_time() - cpu0
    await transport.close()
    summary = recorder.summary()
    assert recorder.tokens is not None
    return {"requests": summary["completed"], "errors": summary["errors"], "tokens": summary["output_tokens"],
            "cpu_s": cpu_s, "ttft_p50": summary["ttft_ms"]["p50"], "ttft_p99": summary["ttft_ms"]["p99"],
            "itl_p50": summary["itl_ms"]["p50"], "itl_p99": summary["itl_ms"]["p99"]}


async def aiohttp_run(url: str, concurrency: int, duration_s: float) -> dict[str, Any]:
    body = OpenAICodec("bench", stream=True, max_tokens=64).encode([Sample("s", ["hello"], "x")])
    ttft: list[int] = []
    itl: list[int] = []
    counts = {"requests": 0, "tokens": 0, "errors": 0}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"Content-Type": "application/json"}) as session:

        async def one() -> None:
            sent = time.monotonic_ns()
            last = 0
            async with session.post(url + PATH, data=body) as response:
                async for line in response.content:
                    if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                        continue
                    event = json.loads(line[6:])
                    choices = event.get("choices") or []
                    if not choices or not choices[0].get("delta", {}).get("content"):
                        continue
                    now = time.monotonic_ns()
                    if last:
                        itl.append(now - last)
                    else:
                        ttft.append(now - sent)
                    last = now
                    counts["tokens"] += 1
            counts["requests"] += 1

        async def worker(deadline: float) -> None:
            while time.monotonic() < deadline:
                try:
                    await one()
                except aiohttp.ClientError:
                    counts["errors"] += 1

        await asyncio.gather(*(worker(time.monotonic() + 1.0) for _ in range(concurrency)))  # warm-up
        await asyncio.to_thread(server_stats, url)
        ttft.clear()
        itl.clear()
        counts.update(requests=0, tokens=0, errors=0)
        cpu0 = time.process_time()
        await asyncio.gather(*(worker(time.monotonic() + duration_s) for _ in range(concurrency)))
        cpu_s = time.process_time() - cpu0
    return {**counts, "cpu_s": cpu_s, "ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99),
            "itl_p50": pct(itl, 50), "itl_p99": pct(itl, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--first-ms", type=float, default=50.0)
    parser.add_argument("--gap-ms", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    proc, url = start_server(args.first_ms, args.gap_ms, args.tokens)
    rows = {}
    try:
        for name, run in (("profiler", profiler_run), ("aiohttp", aiohttp_run)):
            figures = uvloop.run(run(url, args.concurrency, args.duration))
            stats = server_stats(url)
            for key in ("ttft", "itl"):
                figures[f"server_{key}_p50"] = pct(stats[f"{key}_ns"], 50)
                figures[f"server_{key}_p99"] = pct(stats[f"{key}_ns"], 99)
            figures["cpu_us_per_request"] = figures["cpu_s"] / max(figures["requests"], 1) * 1e6
            figures["cpu_us_per_token"] = figures["cpu_s"] / max(figures["tokens"], 1) * 1e6
            rows[name] = figures
    finally:
        proc.terminate()
        proc.wait()
    print(json.dumps(rows, indent=1))
    print(f"\n{args.concurrency} streams in flight, {args.duration:g} s, plan: first token {args.first_ms:g} ms, "
          f"then every {args.gap_ms:g} ms, {args.tokens} tokens")
    print(f"{'client':9} {'req':>6} {'tokens':>7} {'CPU us/req':>10} {'CPU us/tok':>10}   {'TTFT p50':>8} {'p99':>7} "
          f"{'(server':>8} {'p99)':>7}   {'ITL p50':>7} {'p99':>7} {'(server':>8} {'p99)':>7}")
    for name, f in rows.items():
        print(f"{name:9} {f['requests']:6d} {f['tokens']:7d} {f['cpu_us_per_request']:10.0f} "
              f"{f['cpu_us_per_token']:10.1f}   {f['ttft_p50']:8.2f} {f['ttft_p99']:7.2f} {f['server_ttft_p50']:8.2f} "
              f"{f['server_ttft_p99']:7.2f}   {f['itl_p50']:7.2f} {f['itl_p99']:7.2f} {f['server_itl_p50']:8.2f} "
              f"{f['server_itl_p99']:7.2f}")
    p, a = rows["profiler"], rows["aiohttp"]
    print(f"\nCPU per token: aiohttp / profiler = {a['cpu_us_per_token'] / p['cpu_us_per_token']:.2f}x; "
          f"per request {a['cpu_us_per_request'] / p['cpu_us_per_request']:.2f}x")


if __name__ == "__main__":
    main()
