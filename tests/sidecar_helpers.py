"""Helpers for the sidecar tests: a short profile of the example model, and waiting on HTTP answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 5, ready_timeout_s: 30}}
dataset: {{path: {holdout}, inputs: pixels, label: label, id: id}}
load:
  stages: [{stages}]
objective: {{latency_ms: {objective_ms}}}
gates:
  - {{metric: f1_macro, min: {f1_min}}}
  - {{metric: error_rate, max: 0.05}}
  - {{metric: memory_growth_bytes, max: {growth_max}}}
resources: {{pid: {pid}, interval_s: 0.2, settle_s: {settle_s}}}
report: {{path: {report}}}
server: {{port: 0{server}}}
"""


def write_profile(directory: Path, url: str, pid: int, holdout: Path, *, stages: str = "{rate_rps: 40, duration_s: 1}",
                  f1_min: float = 0.9, growth_max: float = 1e12, settle_s: float = 0.6, server: str = "",
                  objective_ms: float = 200) -> Path:
    """A profile of the example model: short, gated on F1, error rate and memory growth."""
    path = directory / "profile.yaml"
    path.write_text(PROFILE.format(url=url, pid=pid, holdout=holdout, stages=stages, f1_min=f1_min,
                                   growth_max=growth_max, settle_s=settle_s, objective_ms=objective_ms,
                                   report=directory / "report.json",
                                   server=server), encoding="utf-8")
    return path


def get_json(url: str, timeout_s: float = 5.0) -> tuple[int, Any]:
    """GET a JSON document; (status, body) for any status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for_report(base: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Poll GET /report until it holds a finished run's report."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = get_json(f"{base}/report")
        if status == 200 and "schema_version" in body:
            return dict(body)
        assert body.get("status") != "error", body
        time.sleep(0.2)
    raise AssertionError(f"no report from {base} within {timeout_s} s")


def start_sidecar(profile: Path, env: dict[str, str], *flags: str) -> tuple[subprocess.Popen[str], str]:
    """Start `profiler serve`; returns the process and its base URL (read from its first line)."""
    proc = subprocess.Popen([sys.executable, "-m", "profiler.cli", "serve", "-c", str(profile), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline() if proc.stdout else ""), daemon=True)
    reader.start()
    reader.join(60)
    if not line or not line[0].startswith("profiler serving on "):
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"the sidecar did not start: {line} {out} {err}")
    return proc, line[0].split()[3]
