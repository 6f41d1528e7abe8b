"""Does a big hold-out set stall the sidecar? /healthz timed while `profiler serve` loads one. Prints a line.

Writes a JSONL hold-out of --megabytes (the example digits, repeated with unique ids), starts
`profiler serve` with a target that never becomes ready (a port where nothing listens), and GETs
/healthz every 10 ms from the moment the server listens until the run is waiting for the target, i.e.
until the file is read, hashed and every request body encoded. The issue's bound is 100 ms.

    .venv/bin/python bench/holdout_load.py --megabytes 75
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from profiler.examples.holdout import write_holdout

PROFILE = """\
target: {{url: "http://127.0.0.1:{port}", model: digits, timeout_s: 5, ready_timeout_s: 600}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load: {{stages: [{{rate_rps: 10, duration_s: 1}}]}}
resources: {{pid: 1, interval_s: 1, settle_s: 0}}
report: {{path: report.json}}
history: {{enabled: false}}
server: {{port: 0, shutdown_grace_s: 1}}
"""


def write_big_holdout(path: Path, megabytes: float) -> int:
    """The example hold-out repeated until the file holds `megabytes`; returns the sample count."""
    write_holdout(path)
    lines = path.read_text().splitlines()
    wanted = int(megabytes * 1e6)
    written = count = 0
    with path.open("w", encoding="utf-8") as out:
        while written < wanted:
            line = lines[count % len(lines)].replace('"id":"', f'"id":"{count}-', 1) + "\n"
            out.write(line)
            written += len(line)
            count += 1
    return count


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> tuple[float, bytes]:
    """Seconds for one GET (10 s timeout), and the body."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()
    return time.perf_counter() - started, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=75.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        samples = write_big_holdout(directory / "holdout.jsonl", args.megabytes)
        (directory / "profile.yaml").write_text(PROFILE.format(port=free_port()))
        sidecar = subprocess.Popen([sys.executable, "-m", "profiler.cli", "serve", "-c", "profile.yaml"],
                                   cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert sidecar.stdout is not None
            base = sidecar.stdout.readline().split()[3]
            started = time.monotonic()
            waits: list[float] = []
            while True:
                took, _ = get(f"{base}/healthz")
                waits.append(took)
                _, body = get(f"{base}/report")
                if json.loads(body)["progress"]["phase"] == "waiting for target":
                    break
                time.sleep(0.01)
            loaded_s = time.monotonic() - started
        finally:
            sidecar.terminate()
            sidecar.wait(30)
    print(f"{args.megabytes:g} MB hold-out ({samples:,} samples) loaded in {loaded_s:.1f} s; /healthz meanwhile: "
          f"n {len(waits)}, median {statistics.median(waits) * 1e3:.1f} ms, max {max(waits) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
