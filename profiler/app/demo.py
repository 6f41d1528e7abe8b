"""The demo: start the bundled example model, write a profile for it, and profile it."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from profiler.app.run import run_once
from profiler.app.server import serve
from profiler.config import load_config
from profiler.core import aio
from profiler.core.errors import TargetError
from profiler.examples.holdout import write_holdout, write_text_holdout

DEMO_PROFILE = """\
# Written by `profiler demo`: a profile of the bundled example model.
# The example model speaks every protocol: change `protocol:` (and, for v2-grpc, `url:`) to switch.
#   v2-rest | v1-rest | v1-rest-columnar: url {url}
#   v2-grpc:                              url {grpc_url}
#   json: add request_template, response_path and infer_path (docs/protocols.md)
target:
  url: {target_url}
  protocol: {protocol}
  model: digits
  timeout_s: 5
  ready_timeout_s: 60
dataset:
  path: holdout.jsonl
  inputs: pixels
  label: label
  id: id
load:
  warmup_s: 1
  arrival: constant
  stages:
    - {{rate_rps: 25, duration_s: 2}}
    - {{rate_rps: 50, duration_s: 2}}
    - {{rate_rps: 100, duration_s: 2}}
    - {{rate_rps: 200, duration_s: 2}}
    # A soak at a rate already reached: memory at a new concurrency level is not a leak,
    # growth that goes on at a constant rate is.
    - {{rate_rps: 100, duration_s: 5}}
objective:
  percentile: 99
  latency_ms: 100
gates:
  - {{metric: f1_macro, min: 0.9, change: {{max_worse: 0.01, significant: true}}}}
  - {{metric: accuracy, change: {{max_worse: 0.01, significant: true}}}}
  - {{metric: latency_p99_ms, max: 100, change: {{max_worse: 25}}}}
  - {{metric: error_rate, max: 0.01}}
  - {{metric: memory_leak, max: 0}}
requirements:
  requests_per_day: 100000
  peak_factor: 3
  latency_ms: 5000
node:
  price_per_hour: 0.40
resources:
  pid: {pid}
  interval_s: 0.25
  settle_s: 1
  artifact_path: model.joblib
  node_memory_bytes: 16Gi
  node_cpu_cores: 4
  # Replicas per node by storage too: each replica takes its artifact on the node's disk.
  node_storage_bytes: 100Gi
  # About 1,000 requests after warm-up, with memory wandering by ~1 MB, can rule out leaks of
  # 4 KB per request and more; a longer soak rules out smaller ones (the default is 256 B).
  leak_min_bytes_per_request: 4096
report:
  path: report.json
server:
  port: {port}
"""


def start_example_server(extra_args: list[str], timeout_s: float = 120.0) -> tuple[subprocess.Popen[str], str]:
    """Start the example model on a free port; returns the process and its base URL."""
    command = [sys.executable, "-m", "profiler.examples.server", "--port", "0", *extra_args]
    # stderr goes to a file, not a pipe nobody drains, so a chatty server can never block on it.
    errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed on both paths below
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline() if proc.stdout else ""),
                              daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not line or not line[0].startswith("READY "):
        stop_process(proc)
        errors.seek(0)
        err = errors.read()
        errors.close()
        detail = err.strip().splitlines()[-1] if err.strip() else "no output"
        raise TargetError(f"the example server did not start within {timeout_s:g} s: {detail}")
    errors.close()
    return proc, line[0].split()[1]


def read_grpc_url(proc: subprocess.Popen[str], timeout_s: float = 30.0) -> str:
    """The "GRPC grpc://host:port" line the example server prints after READY when --grpc-port is given."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline() if proc.stdout else ""),
                              daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not line or not line[0].startswith("GRPC "):
        raise TargetError(f"the example server printed no gRPC address within {timeout_s:g} s")
    return line[0].split()[1]


DEMO_PROTOCOLS = ("v2-rest", "v2-grpc", "v1-rest", "v1-rest-columnar", "json", "openai-chat", "openai-completions")

GENERATIVE_PROFILE = """\
# Written by `profiler demo --protocol {protocol}`: the bundled example model's OpenAI-compatible face.
# Its first token is due 50 ms after a request arrives, then one every 10 ms (exactly known timings),
# so TTFT p50 should read ~50 ms, ITL ~10 ms and TPOT ~10 ms. The prompt holds a digit's pixels; the
# answer "The digit is N." is scored by a regular expression against the label.
target:
  url: {url}
  protocol: {protocol}
  model: digits
  timeout_s: 10
  ready_timeout_s: 60
  generation: {{stream: true, max_tokens: 16, temperature: 0}}
dataset:
  path: holdout-text.jsonl
  prompt: prompt
  label: label
  id: id
  match: regex
  pattern: 'digit is (\\d)'
load:
  # Closed loop: keep N streams in flight, each level held for duration_s (vLLM's --max-concurrency).
  concurrency: [1, 4, 16]
  duration_s: 3
  warmup_s: 1
objective:
  percentile: 99
  latency_ms: 1000
  ttft_ms: 200
  tpot_ms: 20
gates:
  - {{metric: regex_match, min: 0.9}}
  - {{metric: ttft_p99_ms, max: 200}}
  - {{metric: error_rate, max: 0.01}}
resources:
  pid: {pid}
  interval_s: 0.25
  settle_s: 1
report:
  path: report.json
server:
  port: {port}
"""

JSON_TARGET = """  request_template: {instances: ["{{inputs}}"]}
  response_path: predictions[0]
  infer_path: /v1/models/digits:predict
  ready_path: /v1/models/digits
"""


def demo_profile(url: str, grpc_url: str, protocol: str, pid: int, port: int) -> str:
    """The demo's profile text for one protocol (the example server's REST and gRPC addresses)."""
    if protocol not in DEMO_PROTOCOLS:
        raise ValueError(f"unknown demo protocol {protocol!r}")
    if protocol.startswith("openai-"):
        return GENERATIVE_PROFILE.format(url=url, protocol=protocol, pid=pid, port=port)
    text = DEMO_PROFILE.format(url=url, grpc_url=grpc_url, target_url=grpc_url if protocol == "v2-grpc" else url,
                               protocol=protocol, pid=pid, port=port)
    if protocol == "json":
        text = text.replace("  model: digits\n", "  model: digits\n" + JSON_TARGET, 1)
    return text


def stop_process(proc: subprocess.Popen[str]) -> None:
    """Terminate, then kill if it lingers; close its pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdout, proc.stderr, proc.stdin):
        if pipe is not None:
            pipe.close()


def run_demo(directory: Path, variant: str = "good", serve_port: int | None = None,
             server_args: list[str] | None = None, protocol: str = "v2-rest") -> int:
    """Profile the example model once (or serve the run with serve_port); returns the exit code."""
    directory.mkdir(parents=True, exist_ok=True)
    count = write_holdout(directory / "holdout.jsonl")
    write_text_holdout(directory / "holdout-text.jsonl")
    print(f"demo: wrote {count} hold-out samples to {directory / 'holdout.jsonl'} (and as prompts to "
          f"{directory / 'holdout-text.jsonl'})")
    proc, url = start_example_server(["--variant", variant, "--grpc-port", "0",
                                      "--save-model", str(directory / "model.joblib"), *(server_args or [])])
    print(f"demo: example model ({variant}) serving on {url} as pid {proc.pid}")
    try:
        grpc_url = read_grpc_url(proc)
        profile = directory / "profile.yaml"
        port = 9090 if serve_port is None else serve_port
        profile.write_text(demo_profile(url, grpc_url, protocol, proc.pid, port), encoding="utf-8")
        print(f"demo: profile written to {profile}; profiling (about 20 s) ...\n", flush=True)
        config = load_config(profile)
        if serve_port is None:
            code = run_once(config)
            print(f"\nSidecar mode: `profiler demo --serve`, then open http://127.0.0.1:{9090}/ (the live page) or "
                  f"`curl http://127.0.0.1:{9090}/report` (or /report?format=text, /metrics).")
            page = config.report.html_file()
            if page is not None and page.exists():
                print(f"demo: the report with its charts: {page}")
            return code
        return aio.run(serve(config))
    finally:
        stop_process(proc)
