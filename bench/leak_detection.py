"""Benchmark: real servers with known memory behaviour, sampled by the real sampler, judged by the leak test.

Each case is a bench/leak_target.py process driven over 127.0.0.1 by a bounded closed loop of
requests while profiler.measure.resources.sampler reads its PSS every --interval-s. The recorded series
goes through profiler.measure.resources.leak.detect_leak, as a run's does. Prints one row per run and a
summary against the targets: no false leak on a non-leaking case, every 10 KB/request leak found
within 20,000 requests, the estimated rate within 20% of the planted one.

Run: .venv/bin/python bench/leak_detection.py [--seeds 3] [--requests 12000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from profiler.measure.resources.leak import LEAKED, NO_LEAK, LeakSettings, detect_leak, requests_to_decide
from profiler.measure.resources.sampler import ProcessTree, ResourceSampler

TARGET = Path(__file__).with_name("leak_target.py")


@dataclass(frozen=True)
class Case:
    """One behaviour: its target flags, whether it leaks, and the planted rate in bytes per request."""

    name: str
    flags: tuple[str, ...]
    leaks: bool
    planted_bytes_per_request: float | None


CASES = [
    Case("leak 1 KB/req", ("--behaviour", "leak", "--bytes", "1024"), True, 1024),
    Case("leak 10 KB/req", ("--behaviour", "leak", "--bytes", "10240"), True, 10_240),
    Case("cache +50 MB then stops", ("--behaviour", "cache", "--bytes", "10240"), False, None),
    Case("GC sawtooth 15 MB", ("--behaviour", "sawtooth", "--bytes", "10240", "--every", "1500"), False, None),
    Case("steady, noisy", ("--behaviour", "noise", "--bytes", str(2**19), "--every", "32"), False, None),
]


@dataclass(frozen=True)
class Row:
    """One run's outcome."""

    case: Case
    status: str
    error: float | None
    decided: float | None
    ok: bool


def start(flags: tuple[str, ...], seed: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, str(TARGET), *flags, "--seed", str(seed)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"target did not start: {line!r}")
    return proc, line.split()[1]


async def drive(url: str, pid: int, requests: int, concurrency: int, interval_s: float,
                limit_s: float) -> list[tuple[int, float, int | None]]:
    """Send `requests` requests (closed loop, bounded in time too) while sampling; the (requests, t, bytes) series."""
    sampler = ResourceSampler(processes=ProcessTree(pid=pid))
    done = 0
    series: list[tuple[int, float, int | None]] = []
    t0 = time.monotonic()
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            reading = await asyncio.to_thread(sampler.read)
            series.append((done, time.monotonic() - t0, reading.memory_bytes if reading else None))
            await asyncio.sleep(interval_s)

    async def worker(session: aiohttp.ClientSession, quota: int) -> None:
        nonlocal done
        for _ in range(quota):
            if time.monotonic() - t0 > limit_s:
                return
            async with session.post(f"{url}/infer", data=b"x") as response:
                await response.read()
            done += 1

    sampling = asyncio.create_task(sample())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session, requests // concurrency) for _ in range(concurrency)))
    stop.set()
    await sampling
    series.append((done, time.monotonic() - t0, (r.memory_bytes if (r := sampler.read()) else None)))
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=12_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--interval-s", type=float, default=0.1)
    parser.add_argument("--limit-s", type=float, default=30.0, help="time cap per run")
    parser.add_argument("--cases", default="", help="comma-separated substrings of case names to run (default all)")
    parser.add_argument("--dump", type=Path, help="write each run's recorded series here as JSON")
    args = parser.parse_args()
    settings = LeakSettings()
    print(f"leak detection: {args.requests} requests per run, closed loop x{args.concurrency}, PSS every "
          f"{args.interval_s:g} s; {settings}\n")
    header = f"{'case':<24} {'seed':>4} {'verdict':<12} {'B/req':>8} {'95% interval':>19} {'err':>6} " \
             f"{'decided at':>10} {'served':>7} {'s':>5}  ok"
    print(header)
    print("-" * len(header))
    rows: list[Row] = []
    started = time.monotonic()
    cases = [c for c in CASES if not args.cases or any(k in c.name for k in args.cases.split(","))]
    for case in cases:
        for seed in range(args.seeds):
            proc, url = start(case.flags, seed)
            try:
                t = time.monotonic()
                series = asyncio.run(drive(url, proc.pid, args.requests, args.concurrency, args.interval_s,
                                           args.limit_s))
                took = time.monotonic() - t
            finally:
                proc.kill()
                proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
            if args.dump is not None:
                args.dump.mkdir(parents=True, exist_ok=True)
                name = "".join(ch if ch.isalnum() else "_" for ch in case.name).strip("_")
                (args.dump / f"{name}-seed{seed}.json").write_text(json.dumps(
                    {"case": case.name, "seed": seed, "interval_s": args.interval_s,
                     "series": [{"requests": r, "t_s": round(t, 3), "memory_bytes": m} for r, t, m in series]}))
            x = [s[0] for s in series]
            ts = [s[1] for s in series]
            mem = [s[2] for s in series]
            verdict = detect_leak(x, ts, mem, settings)
            decided = requests_to_decide(x, ts, mem, settings)
            err = None
            if case.planted_bytes_per_request and verdict.bytes_per_request is not None:
                err = (verdict.bytes_per_request - case.planted_bytes_per_request) / case.planted_bytes_per_request
            ok = (verdict.status == LEAKED) == case.leaks and (not case.leaks or (err is not None and abs(err) <= 0.2))
            if case.planted_bytes_per_request == 10_240:
                ok = ok and decided is not None and decided <= 20_000
            interval = (f"[{verdict.bytes_per_request_low:,.0f}, {verdict.bytes_per_request_high:,.0f}]"
                        if verdict.bytes_per_request_low is not None else "-")
            print(f"{case.name:<24} {seed:>4} {verdict.status:<12} "
                  f"{(verdict.bytes_per_request or 0):>8,.0f} {interval:>19} "
                  f"{(f'{err:+.1%}' if err is not None else '-'):>6} "
                  f"{(f'{decided:,.0f}' if decided is not None else '-'):>10} {x[-1]:>7,} {took:>5.1f}  "
                  f"{'yes' if ok else 'NO'}", flush=True)
            rows.append(Row(case, verdict.status, err, decided, ok))
    print(f"\nsummary ({time.monotonic() - started:.0f} s)")
    for case in cases:
        mine = [r for r in rows if r.case is case]
        leaked = sum(1 for r in mine if r.status == LEAKED)
        clean = sum(1 for r in mine if r.status == NO_LEAK)
        decided_at = [r.decided for r in mine if r.decided is not None]
        kind = "true positives" if case.leaks else "false positives"
        extra = ""
        if case.leaks:
            errs = [abs(r.error) for r in mine if r.error is not None]
            extra = f", worst rate error {max(errs):.1%}" if errs else ""
        else:
            extra = f", said 'no leak' in {clean}/{len(mine)}"
        when = f", decided by {max(decided_at):,.0f} requests" if len(decided_at) == len(mine) else ""
        print(f"  {case.name:<24} {kind} {leaked}/{len(mine)}{extra}{when}")
    failed = [r for r in rows if not r.ok]
    print(f"targets: {'met' if not failed else f'MISSED in {len(failed)} run(s)'}")


if __name__ == "__main__":
    main()
