"""Soak: `profiler serve` in trigger mode runs back-to-back runs against the example model; the sidecar's
memory and file descriptors must stay flat and /healthz must answer within 100 ms, run starts and ends included.

Starts the example model and `profiler serve` (server.start: on-trigger, the token from server.token_env) as
subprocesses on 127.0.0.1, then POSTs /runs --runs times, one after another. Each run is a short capacity
search (the kind of run whose end used to stall the control plane) or, with --stages, fixed stages. A separate
process GETs /healthz every 10 ms on a new connection each time, as a kubelet probe does, timing each answer
with its own monotonic clock. After each run: the sidecar's RSS (psutil) and open descriptors (/proc/PID/fd),
and the slowest /healthz within 1 s of the run's start and of its end. Prints the series and a summary. Bounded:
stops starting runs after --budget-s (default 280 s), so it ends within ~5 minutes.

    .venv/bin/python bench/soak.py                 # 50 runs
    .venv/bin/python bench/soak.py --runs 5        # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import multiprocessing.connection
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from profiler.app.demo import start_example_server, stop_process
from profiler.examples.holdout import write_holdout

TOKEN = "soak-token"
SEARCH = ("search: {start_rps: 50, max_rps: 200, factor: 2, window_s: 0.3, windows: 3, max_windows: 5, max_stages: 3, "
          "stability: 0.3}")
STAGES = "stages: [{rate_rps: 60, duration_s: 1}, {rate_rps: 120, duration_s: 0.5}]"
PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 5}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load: {{{load}}}
objective: {{latency_ms: 1000}}
gates:
  - {{metric: f1_macro, min: 0.9, change: {{max_worse: 0.01, significant: true}}}}
  - {{metric: latency_p99_ms, max: 100}}
  - {{metric: error_rate, max: 0.01}}
resources: {{pid: {pid}, interval_s: 0.25, settle_s: 0.2}}
report: {{path: report.json}}
server: {{port: 0, start: on-trigger, token_env: SOAK_TOKEN}}
"""
PROBE_EVERY_S = 0.010
EDGE_S = 1.0
"""A probe within this long of a run's start (POST /runs) or of its end (the report seen) counts at that edge."""
BOUND_S = 0.100


def probe_loop(host: str, port: int, stop: Any, out: multiprocessing.connection.Connection) -> None:
    """In its own process (so the bench's own work never delays it): GET /healthz every 10 ms on a new
    connection; sends back (sent at, seconds taken or None for a failure, how late this probe was sent)."""
    samples: list[tuple[float, float | None, float]] = []
    next_s = time.monotonic()
    while not stop.is_set():
        late_s = time.monotonic() - next_s
        sent = time.monotonic()
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            conn.close()
            took: float | None = time.monotonic() - sent if response.status == 200 else None
        except OSError:
            took = None
        samples.append((sent, took, late_s))
        next_s = max(next_s + PROBE_EVERY_S, time.monotonic())
        time.sleep(max(0.0, next_s - time.monotonic()))
    out.send(samples)
    out.close()


def request(host: str, port: int, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request; (status, JSON body)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def open_fds(pid: int) -> int:
    """Descriptors the process holds now."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope(values: list[float]) -> float:
    """Least-squares slope of values against their index (units per run)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, statistics.fmean(values)
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return num / sum((i - mean_x) ** 2 for i in range(n))


def worst(samples: list[tuple[float, float | None, float]], start: float, end: float) -> float:
    """The slowest probe sent in [start, end], in s (inf when one failed)."""
    taken = [t if t is not None else float("inf") for sent, t, _ in samples if start <= sent <= end]
    return max(taken, default=0.0)


def main() -> None:
    """Run the soak and print the series and the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--stages", action="store_true", help="fixed stages instead of a capacity search")
    parser.add_argument("--budget-s", type=float, default=280.0, help="start no run after this long")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_holdout(directory / "holdout.jsonl")
        model, url = start_example_server([])
        (directory / "profile.yaml").write_text(PROFILE.format(url=url, pid=model.pid,
                                                               load=STAGES if args.stages else SEARCH))
        sidecar = subprocess.Popen([sys.executable, "-m", "profiler.cli", "serve", "-c", "profile.yaml"],
                                   cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "SOAK_TOKEN": TOKEN})
        stop = multiprocessing.Event()
        receive, send = multiprocessing.Pipe(duplex=False)
        prober: multiprocessing.Process | None = None
        try:
            assert sidecar.stdout is not None and sidecar.stderr is not None
            errors = sidecar.stderr
            threading.Thread(target=lambda: [None for _ in errors], daemon=True).start()  # drain the logs
            host, port = sidecar.stdout.readline().split()[3].split("//")[1].rsplit(":", 1)
            prober = multiprocessing.Process(target=probe_loop, args=(host, int(port), stop, send), daemon=True)
            prober.start()
            rows = soak(host, int(port), sidecar.pid, args.runs, args.budget_s)
            stop.set()
            samples = receive.recv()
            prober.join(10)
        finally:
            stop.set()
            if prober is not None and prober.is_alive():
                prober.terminate()
            sidecar.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                sidecar.communicate(timeout=30)
            stop_process(model)
    report(rows, samples)


def soak(host: str, port: int, pid: int, runs: int, budget_s: float) -> list[dict[str, Any]]:
    """POST /runs `runs` times back to back; one row per run: its times, verdict, and the sidecar's RSS and fds."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    process = psutil.Process(pid)
    rows = [{"run": 0, "start": time.monotonic(), "end": time.monotonic(), "verdict": "-",
             "rss": process.memory_info().rss, "fds": open_fds(pid)}]
    began = time.monotonic()
    for index in range(1, runs + 1):
        if time.monotonic() - began > budget_s:
            print(f"budget of {budget_s:g} s spent: stopping after {index - 1} runs", flush=True)
            break
        start = time.monotonic()
        status, body = request(host, port, "POST", "/runs", auth)
        if status != 202:
            raise SystemExit(f"POST /runs answered {status}: {body}")
        run_id = body["run_id"]
        while True:
            status, body = request(host, port, "GET", f"/runs/{run_id}")
            if status == 200 and "schema_version" in body:
                break
            if body.get("status") == "error":
                raise SystemExit(f"run {run_id} could not run: {body.get('error')}")
            time.sleep(0.05)
        end = time.monotonic()
        time.sleep(0.2)  # let the run's last objects go before measuring
        rows.append({"run": index, "start": start, "end": end, "verdict": body["verdict"]["status"],
                     "stages": len(body["stages"]), "rss": process.memory_info().rss, "fds": open_fds(pid)})
        print(f"run {index:3d}: {end - start:5.2f} s, {len(body['stages'])} stages, "
              f"verdict {body['verdict']['status']}, RSS {rows[-1]['rss'] / 2**20:7.1f} MiB, fds {rows[-1]['fds']}",
              flush=True)
    return rows


def report(rows: list[dict[str, Any]], samples: list[tuple[float, float | None, float]]) -> None:
    """The series and the summary."""
    print(f"\n{'run':>4} {'s':>6} {'RSS MiB':>8} {'fds':>4} {'healthz@start ms':>17} {'healthz@end ms':>15}")
    starts, ends = [], []
    for row in rows[1:]:
        at_start = worst(samples, row["start"] - EDGE_S, row["start"] + EDGE_S)
        at_end = worst(samples, row["end"] - EDGE_S, row["end"] + EDGE_S)
        starts.append(at_start)
        ends.append(at_end)
        print(f"{row['run']:4d} {row['end'] - row['start']:6.2f} {row['rss'] / 2**20:8.1f} {row['fds']:4d} "
              f"{at_start * 1e3:17.1f} {at_end * 1e3:15.1f}")
    done = rows[1:]
    if not done:
        return
    rss_mib = [r["rss"] / 2**20 for r in done]
    fds = [r["fds"] for r in done]
    taken = [t for _, t, _ in samples]
    ok = [t for t in taken if t is not None]
    late = max((late for _, _, late in samples), default=0.0)
    print(f"\nruns: {len(done)}; before the first run: RSS {rows[0]['rss'] / 2**20:.1f} MiB, fds {rows[0]['fds']}")
    fifth = max(1, len(rss_mib) // 5)
    later = rss_mib[fifth:] or rss_mib
    print(f"RSS: first run {rss_mib[0]:.1f} MiB, last {rss_mib[-1]:.1f} MiB; mean of the first {fifth} runs "
          f"{statistics.fmean(rss_mib[:fifth]):.1f} MiB, of the last {fifth} {statistics.fmean(rss_mib[-fifth:]):.1f} "
          f"MiB; after run {fifth} between {min(later):.1f} and {max(later):.1f} MiB; least-squares slope "
          f"{slope(rss_mib) * 1024:+.1f} KiB/run (after run {fifth}: {slope(later) * 1024:+.1f} KiB/run)")
    print(f"fds: min {min(fds)}, max {max(fds)}, first {fds[0]}, last {fds[-1]}")
    print(f"/healthz: {len(taken)} probes, {len(taken) - len(ok)} failed, p50 {statistics.median(ok) * 1e3:.1f} ms, "
          f"p99 {sorted(ok)[int(0.99 * (len(ok) - 1))] * 1e3:.1f} ms, max {max(ok) * 1e3:.1f} ms; "
          f"over {BOUND_S * 1e3:.0f} ms: {sum(t > BOUND_S for t in ok)}")
    print(f"/healthz at run starts: max {max(starts) * 1e3:.1f} ms; at run ends: max {max(ends) * 1e3:.1f} ms "
          f"(the prober itself woke up to {late * 1e3:.1f} ms late)")


if __name__ == "__main__":
    main()
