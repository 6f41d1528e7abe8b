"""What the live progress (profiler/app/progress.py) costs the load generator: the engine's CPU per request and
its schedule lag p99 with the progress off, as plain lines (a log) and live on a terminal (rich, on a pty),
side by side in one run, medians of a few runs each, the modes interleaved so drift hits them alike.

Run: python bench/progress.py [--rate 1500] [--duration 4] [--runs 3]
The target is bench/delay_server.py (1 ms answers) on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine_load import request_body

from profiler.app.progress import show_progress
from profiler.codecs.v2 import V2RestCodec
from profiler.config import load_config
from profiler.core import aio
from profiler.load.engine import Engine
from profiler.measure.accuracy import PredictionLog
from profiler.measure.latency import StageRecorder, value_at_ms
from profiler.schedule import arrival_offsets_ns, make_stage
from profiler.state import new_state
from profiler.transports.http1 import Http1Transport

BENCH = Path(__file__).resolve().parent


def pty_stream() -> tuple[TextIO, threading.Thread]:
    """A terminal for the live display: the pty's other end is read and thrown away by a thread."""
    leader, follower = os.openpty()

    def drain() -> None:
        with contextlib.suppress(OSError):
            while os.read(leader, 65536):
                pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    return os.fdopen(follower, "w", buffering=1), reader


async def one_run(url: str, rate: float, duration_s: float, mode: str, profile: Path) -> dict[str, float]:
    """One stage at `rate` with the progress `mode` (off, plain, tty) watching it; the engine's CPU and lag."""
    transport = Http1Transport(url, timeout_s=10, max_connections=16)
    codec = V2RestCodec("digits")
    bodies = [request_body(i) for i in range(64)]
    engine = Engine(transport, codec.infer_path, bodies, codec.decode, sample_count=64, max_in_flight=64,
                    timeout_s=10, consumers=[PredictionLog(64)])
    warm = make_stage(0, min(rate, 1000), 0.5, warmup=True)
    await engine.run_stage(warm, arrival_offsets_ns(warm), StageRecorder(warm))
    stage = make_stage(1, rate, duration_s)
    recorder = StageRecorder(stage)
    state = new_state(load_config(profile))
    state.stages = [stage]
    state.recorders = [recorder]
    state.phase = "load"
    stream: TextIO | None = None
    watcher = None
    if mode == "plain":
        stream = open(os.devnull, "w")  # noqa: SIM115 - closed below
    elif mode == "tty":
        stream, _ = pty_stream()
    if stream is not None:
        watcher = asyncio.create_task(show_progress(state, stream))
    cpu0 = time.process_time()
    await engine.run_stage(stage, arrival_offsets_ns(stage), recorder)
    cpu_s = time.process_time() - cpu0
    if watcher is not None:
        watcher.cancel()
        await asyncio.wait({watcher})
    if stream is not None:
        stream.close()
    await transport.close()
    sent = max(1, recorder.completed + recorder.errors)
    return {"cpu_us_per_request": cpu_s / sent * 1e6, "lag_p99_ms": value_at_ms(recorder.lag, 99.0) or 0.0,
            "sent": float(sent), "errors": float(recorder.errors)}


def main() -> None:
    """Start the delay server, run the modes interleaved, print the medians side by side."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=1500)
    parser.add_argument("--duration", type=float, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, str(BENCH / "delay_server.py"), "--delay-ms", "1"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[1]
        with tempfile.TemporaryDirectory() as tmp:
            profile = Path(tmp) / "p.yaml"
            (Path(tmp) / "h.jsonl").write_text('{"x": [1]}\n')
            profile.write_text(f"target: {{url: '{url}', model: digits}}\ndataset: {{path: h.jsonl, inputs: x}}\n"
                               "load: {stages: [{rate_rps: 1, duration_s: 1}]}\n")
            results: dict[str, list[dict[str, float]]] = {"off": [], "plain": [], "tty": []}
            for _ in range(args.runs):
                for mode in results:
                    results[mode].append(aio.run(one_run(url, args.rate, args.duration, mode, profile)))
    finally:
        server.terminate()
        server.wait(10)
    print(f"progress cost at {args.rate:g} rps for {args.duration:g} s, median of {args.runs} runs each "
          "(the modes interleaved)")
    print(f"{'mode':<6} {'engine CPU us/request':>22} {'schedule lag p99 ms':>20} {'sent':>8} {'errors':>7}")
    base = statistics.median(r["cpu_us_per_request"] for r in results["off"])
    for mode, runs in results.items():
        cpu = statistics.median(r["cpu_us_per_request"] for r in runs)
        lag = statistics.median(r["lag_p99_ms"] for r in runs)
        sent = statistics.median(r["sent"] for r in runs)
        errors = statistics.median(r["errors"] for r in runs)
        print(f"{mode:<6} {cpu:>16.1f} ({cpu / base:4.2f}x) {lag:>20.3f} {sent:>8.0f} {errors:>7.0f}")


if __name__ == "__main__":
    main()
