"""A load split into N parts (`profiler run --part K/N`) against one single run of the same profile.

Starts the example model on 127.0.0.1, runs the profile once in one process, then as N processes with one
shared start instant (part 0 merges), and prints per stage: the counts of both (they must be equal), the
latency percentiles of both, and how far apart the parts' first requests left (start_skew_ms, each part
measured from the same instant on its own clock). Latency of two separate runs differs by what the machine
did meanwhile; the merged histogram itself is the parts' histograms added exactly (tests/test_parts.py).

Run: python bench/parts.py [--parts 3] [--rate 300] [--seconds 5] [--lead-s 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from profiler.app.demo import start_example_server, stop_process  # noqa: E402
from profiler.cli import part_report_path  # noqa: E402
from profiler.examples.holdout import write_holdout  # noqa: E402

PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 30, ready_timeout_s: 60}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load:
  accuracy_pass: false
  workers: 1
  stages: [{{rate_rps: {low}, duration_s: {seconds}}}, {{rate_rps: {rate}, duration_s: {seconds}}}]
resources: {{settle_s: 0}}
report: {{path: {report}}}
"""


def _run(args: list[str], folder: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "profiler.cli", "run", "-q", *args], cwd=folder, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=3)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--lead-s", type=float, default=20.0, help="how far ahead the shared start is set")
    args = parser.parse_args()
    proc, url = start_example_server([])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_holdout(folder / "holdout.jsonl")
            fields = {"url": url, "low": args.rate / 3, "rate": args.rate, "seconds": args.seconds}
            (folder / "single.yaml").write_text(PROFILE.format(report="single.json", **fields))
            (folder / "parts.yaml").write_text(PROFILE.format(report="merged.json", **fields))
            single = _run(["-c", "single.yaml"], folder)
            single.communicate(timeout=600)
            start_at = time.time() + args.lead_s
            parts = [_run(["-c", "parts.yaml", "--part", f"{k}/{args.parts}", "--start-at", f"{start_at:.3f}"],
                          folder) for k in range(args.parts)]
            for part in parts:
                part.communicate(timeout=600)
            one = json.loads((folder / "single.json").read_text())
            merged = json.loads((folder / "merged.json").read_text())
            pieces = [json.loads(part_report_path(folder / "merged.json", k, args.parts).read_text())
                      for k in range(args.parts)]
    finally:
        stop_process(proc)
    print(f"{args.parts} parts vs one process; example model on 127.0.0.1; stages of {args.seconds:g} s")
    print(f"{'stage':8} {'rps':>6} {'sched 1/N':>11} {'completed 1/N':>15} {'p50 ms 1/N':>15} {'p99 ms 1/N':>15} "
          f"{'first send ms (parts)':>24} {'skew ms':>8}")
    for position, (a, b) in enumerate(zip(one["stages"], merged["stages"], strict=True)):
        firsts = ", ".join(f"{p['stages'][position]['first_send_ms']:.2f}" for p in pieces)
        print(f"{a['name']:8} {a['offered_rps']:6.0f} {a['scheduled']:>5}/{b['scheduled']:<5} "
              f"{a['completed']:>7}/{b['completed']:<7} {a['latency_ms']['p50']:>7.2f}/{b['latency_ms']['p50']:<7.2f} "
              f"{a['latency_ms']['p99']:>7.2f}/{b['latency_ms']['p99']:<7.2f} {firsts:>24} {b['start_skew_ms']:8.2f}")


if __name__ == "__main__":
    main()
