"""How fast the sidecar's endpoints answer while its own load runs, against idle. Prints a table.

Starts the example model and `profiler serve` as subprocesses on 127.0.0.1, runs one stage at
--rate-rps for --duration-s, and times GET /healthz, /readyz, /metrics and /report in a loop,
during the load and after it (idle). The issue's bound is 100 ms while the load runs.

    .venv/bin/python bench/sidecar_api.py --rate-rps 400 --duration-s 8
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from profiler.app.demo import start_example_server, stop_process
from profiler.examples.holdout import write_holdout

ENDPOINTS = ("/healthz", "/readyz", "/metrics", "/report")
PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 5}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load: {{stages: [{{rate_rps: {rate}, duration_s: {duration}}}], accuracy_pass: false}}
resources: {{pid: {pid}, interval_s: 0.5, settle_s: 0.5}}
report: {{path: report.json}}
server: {{port: 0}}
"""


def timed(url: str) -> float:
    """Seconds for one GET, body read."""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        exc.read()
    return time.perf_counter() - started


def phase(base: str) -> str:
    """The run's phase from /report."""
    with urllib.request.urlopen(f"{base}/report", timeout=10) as response:
        body = json.loads(response.read())
    return "done" if "schema_version" in body else str(body["progress"]["phase"])


def summary(values: list[float]) -> str:
    """n, p50, p99 and max in milliseconds."""
    if not values:
        return f"{'0':>5}  {'-':>8}  {'-':>8}  {'-':>8}"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{len(values):>5}  {statistics.median(values) * 1e3:8.2f}  {p99 * 1e3:8.2f}  {max(values) * 1e3:8.2f}"


def main() -> None:
    """Run the benchmark and print one row per endpoint and phase."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate-rps", type=float, default=400.0)
    parser.add_argument("--duration-s", type=float, default=8.0)
    parser.add_argument("--idle-s", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_holdout(directory / "holdout.jsonl")
        model, url = start_example_server([])
        (directory / "profile.yaml").write_text(PROFILE.format(url=url, pid=model.pid, rate=args.rate_rps,
                                                               duration=args.duration_s))
        sidecar = subprocess.Popen([sys.executable, "-m", "profiler.cli", "serve", "-c", "profile.yaml"],
                                   cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line: list[str] = []
            reader = threading.Thread(target=lambda: line.append(sidecar.stdout.readline() if sidecar.stdout else ""))
            reader.start()
            reader.join(60)
            base = line[0].split()[3]
            timings: dict[tuple[str, str], list[float]] = {}
            while phase(base) not in ("load", "done"):
                time.sleep(0.05)
            idle_until = None
            while True:
                now_phase = phase(base)
                label = "load" if now_phase == "load" else "idle"
                if label == "idle":
                    idle_until = idle_until or time.monotonic() + args.idle_s
                    if time.monotonic() > idle_until:
                        break
                for path in ENDPOINTS:
                    timings.setdefault((path, label), []).append(timed(base + path))
            report = json.loads((directory / "report.json").read_text())
        finally:
            sidecar.send_signal(signal.SIGTERM)
            sidecar.communicate(timeout=30)
            stop_process(model)
    stage = report["stages"][0]
    print(f"load: {stage['offered_rps']:g} rps offered, {stage['achieved_rps']:.1f} achieved, {stage['sent']} sent, "
          f"p99 {stage['latency_ms']['p99']:.2f} ms, generator lag p99 {stage['schedule_lag_ms']['p99']:.2f} ms")
    print(f"{'endpoint':<10} {'phase':<5} {'n':>5}  {'p50 ms':>8}  {'p99 ms':>8}  {'max ms':>8}")
    for path in ENDPOINTS:
        for label in ("load", "idle"):
            print(f"{path:<10} {label:<5} {summary(timings.get((path, label), []))}")
    loaded = [v for (_, label), values in timings.items() if label == "load" for v in values]
    idle = [v for (_, label), values in timings.items() if label == "idle" for v in values]
    if loaded and idle:
        print(f"median answer under load / idle: {statistics.median(loaded) / statistics.median(idle):.2f}x; "
              f"answers over 100 ms under load: {sum(v > 0.1 for v in loaded)}/{len(loaded)}")


if __name__ == "__main__":
    main()
