"""A run's context: what was held fixed while it measured, recorded in the report so that two runs can be
judged comparable or not (profiler.judge.comparability). `host_facts` reads the machine (I/O, once per
run, at its start); `run_context` is pure.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler import __version__
from profiler.config import Config, LoadConfig
from profiler.load.workers import choose_workers

CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True, slots=True)
class HostFacts:
    """The machine the generator ran on: its CPU model and the cores this process may use."""

    cpu_model: str
    cores: int


def host_facts() -> HostFacts:
    """The CPU model (from /proc/cpuinfo, else the platform's name for it) and the usable core count."""
    model = ""
    try:
        for line in CPUINFO.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(("model name", "Hardware", "cpu model")) and ":" in line:
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass  # not Linux, or /proc not mounted: the platform's answer below
    model = " ".join((model or platform.processor() or platform.machine() or "unknown").split())
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may run on (a container's cpuset)
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return HostFacts(model, cores)


def plan_text(load: LoadConfig) -> str:
    """The stage plan in one comparable line: 'stages 50rps/5s, 100rps/5s; warm-up 1s', 'ramp ...', 'search ...'."""
    if load.stages is not None:
        steps = ", ".join(f"{s.rate_rps:g}rps/{s.duration_s:g}s" if s.duration_s is not None
                          else f"{s.rate_rps:g}rps x{s.requests}" for s in load.stages)
        text = f"stages {steps}"
    elif load.ramp is not None:
        r = load.ramp
        step = f"x{r.factor:g}" if r.factor is not None else f"+{r.step_rps:g}"
        hold = f"{r.duration_s:g}s" if r.duration_s is not None else f"x{r.requests}"
        text = f"ramp {r.start_rps:g}..{r.max_rps:g}rps {step} each {hold}"
    else:
        s = load.search
        assert s is not None
        text = (f"search {s.start_rps:g}..{s.max_rps:g}rps x{s.factor:g} precision {s.precision:g}, "
                f"{s.windows}..{s.max_windows} windows of {s.window_s:g}s")
    return text + (f"; warm-up {load.warmup_s:g}s" if load.warmup_s else "")


def effective_client(config: Config) -> str:
    """The client that sends: 'lean' (the project's own) or 'library' (aiohttp, grpc.aio; always for TLS)."""
    endpoint = config.target.endpoint
    return "lean" if config.load.client == "lean" and not endpoint.tls else "library"


def run_context(config: Config, host: HostFacts | None) -> dict[str, Any]:
    """The report's `context` section (see judge.comparability.CONTEXT_KEYS for which fields move figures)."""
    load = config.load
    cores = host.cores if host is not None else None
    return {
        "protocol": config.target.protocol,
        "client": effective_client(config),
        "arrival": load.arrival,
        "plan": plan_text(load),
        "batch_size": load.batch_size,
        "workers": choose_workers(load.workers, load.highest_rate_rps(), cores or 1),
        "lag_budget_ms": load.lag_budget_ms,
        "profiler_version": __version__,
        "host_cpu_model": host.cpu_model if host is not None else None,
        "host_cores": cores,
        "target_host": config.target.endpoint.host,
    }
