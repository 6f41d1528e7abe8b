"""One profiling run, wired end to end: dataset -> codec -> engine -> recorders -> report -> verdict.

This is wiring and I/O: it owns the asyncio tasks (load, resource sampler) and the live state
that the server and the metrics collector read while the run is under way.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from profiler import __version__
from profiler.accuracy import PredictionLog, accuracy_metrics
from profiler.auth import redact_url
from profiler.capacity import capacity_summary, judge_stage, judge_window_stage
from profiler.codecs import Codec, codec_from_config
from profiler.config import Config
from profiler.dataset import Dataset, load_dataset
from profiler.engine import Engine, build_bodies
from profiler.errors import DecodeError, TargetError, TransportError
from profiler.history import Baseline, assess, find_baseline, record, requirements_section
from profiler.latency import StageRecorder
from profiler.resources.sampler import ResourceSampler
from profiler.resources.section import make_sampler, resources_report
from profiler.resources.series import ACCURACY, AFTER, BEFORE, LOAD, STARTING, BoundedSeries, ResourcePoint
from profiler.schedule import Stage
from profiler.search import Driver, run_search, run_stages
from profiler.transports import Transport
from profiler.transports.http import HttpTransport
from profiler.verdict import flatten_metrics
from profiler.workers import make_driver

REPORT_SCHEMA_VERSION = 1


@dataclass
class RunState:
    """What a run has measured so far; read by /report and /metrics while it runs."""

    run_id: str
    config: Config
    phase: str = "starting"
    started_at: str = ""
    stages: list[Stage] = field(default_factory=list)
    recorders: list[StageRecorder] = field(default_factory=list)
    current_stage: str | None = None
    predictions: PredictionLog | None = None
    dataset: Dataset | None = None
    series: BoundedSeries = field(default_factory=BoundedSeries)
    sampler: ResourceSampler | None = None
    accuracy_errors: int = 0
    baseline: Baseline | None = None
    report: dict[str, Any] | None = None
    requests_done: int = 0

    def add(self, result: Any) -> None:
        """Count every finished request (the resource series plots memory against requests)."""
        self.requests_done += 1

    def progress(self) -> dict[str, Any]:
        """A small document for /report while the run is under way."""
        return {
            "run_id": self.run_id,
            "phase": self.phase,
            "started_at": self.started_at,
            "current_stage": self.current_stage,
            "stages_done": sum(1 for r in self.recorders if r.ended_ns),
            "stages_total": len(self.stages),
            "requests_done": self.requests_done,
            "stages": [r.summary() for r in self.recorders],
        }


def new_state(config: Config) -> RunState:
    """A fresh state with a sortable, unique run id."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return RunState(run_id=f"{stamp}-{uuid.uuid4().hex[:6]}", config=config)


def make_transport(config: Config, codec: Codec) -> Transport:
    """The transport for the configured protocol (and HTTP client: load.client), with headers and secrets."""
    from profiler.secrets import resolve_headers

    headers = resolve_headers(config.target)
    lean = config.load.client in ("lean", "http1")
    if config.target.protocol == "v2-grpc":
        from profiler.transports.grpc import GrpcTransport

        if lean and config.target.url.startswith("grpc://"):
            from profiler.transports.grpc_h2 import H2GrpcTransport

            return H2GrpcTransport(config.target.url, model=config.target.model, version=config.target.version,
                                   timeout_s=config.target.timeout_s, headers=headers,
                                   keepalive_s=config.target.keepalive_s)
        return GrpcTransport(config.target.url, model=config.target.model, version=config.target.version,
                             timeout_s=config.target.timeout_s, headers=headers,
                             tls_ca_file=config.target.tls_ca_file, keepalive_s=config.target.keepalive_s)
    if lean and config.target.url.startswith("http://"):
        from profiler.transports.http1 import Http1Transport

        return Http1Transport(config.target.url, timeout_s=config.target.timeout_s,
                              max_connections=config.target.max_connections, content_type=codec.content_type,
                              headers=headers)
    return HttpTransport(
        config.target.url,
        timeout_s=config.target.timeout_s,
        max_connections=config.target.max_connections,
        content_type=codec.content_type,
        headers=headers,
    )


async def wait_ready(transport: Transport, codec: Codec, url: str, timeout_s: float) -> None:
    """Poll the codec's readiness endpoints until all answer 200, or raise TargetError."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, int] = {}
    while True:
        last = {path: await transport.probe(path) for path in codec.ready_paths}
        if all(status == 200 for status in last.values()):
            return
        if time.monotonic() >= deadline:
            seen = ", ".join(f"{url}{p} -> {s or 'no answer'}" for p, s in last.items())
            raise TargetError(f"target never became ready within {timeout_s:g} s ({seen})")
        await asyncio.sleep(0.2)


GIL_SWITCH_INTERVAL_S = 0.0005
"""While a run is under way, a thread holding the GIL (the resource sampler parses /proc for ~10 ms
a reading, the history store) yields it within 0.5 ms instead of Python's default 5 ms, so the
dispatcher's wake-ups are not delayed behind it (that delay would show as schedule lag)."""


async def execute(state: RunState, stop: asyncio.Event | None = None) -> dict[str, Any]:
    """Run the whole profile and return the report (also kept on `state.report`)."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, GIL_SWITCH_INTERVAL_S))
    try:
        return await _execute(state, stop)
    finally:
        sys.setswitchinterval(previous)


async def _execute(state: RunState, stop: asyncio.Event | None) -> dict[str, Any]:
    config = state.config
    state.started_at = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.monotonic()
    state.phase = "loading dataset"
    dataset = load_dataset(
        config.dataset.path, inputs=config.dataset.inputs, label=config.dataset.label,
        id_field=config.dataset.id, fmt=config.dataset.resolved_format,
    )
    state.dataset = dataset
    state.baseline = await asyncio.to_thread(find_baseline, config, dataset.sha256, state.run_id)
    codec = codec_from_config(config.target, config.dataset.inputs, config.load.batch_size, dataset.samples[0])
    bodies = build_bodies(dataset.samples, config.load.batch_size, codec.encode)
    transport = make_transport(config, codec)
    state.predictions = PredictionLog(len(dataset.samples))
    state.sampler = make_sampler(config.resources)
    state.series = BoundedSeries(capacity=config.resources.series_points)
    state.stages = config.load.planned_stages()
    sampling = asyncio.create_task(_sample_resources(state, t0))
    status = "completed"
    try:
        state.phase = "waiting for target"
        await wait_ready(transport, codec, redact_url(config.target.url), config.target.ready_timeout_s)
        from profiler.transports.metadata import check_model_inputs

        await check_model_inputs(config.target, codec, transport, dataset.samples[0])
        state.phase = "before"
        await asyncio.sleep(config.resources.settle_s)
        engine = Engine(
            transport, codec.infer_path, bodies, codec.decode, batch=config.load.batch_size,
            sample_count=len(dataset.samples), max_in_flight=config.load.max_in_flight,
            timeout_s=config.target.timeout_s, consumers=[state.predictions, state],
            lag_budget_ns=round(config.load.lag_budget_ms * 1e6),
        )
        driver = make_driver(config, engine, bodies, codec, state)
        watcher = asyncio.create_task(_watch_stop(stop, driver)) if stop is not None else None
        if config.load.accuracy_pass:
            state.phase = "accuracy"
            await _accuracy_pass(state, transport, codec, dataset, config.load.batch_size,
                                 min(16, config.load.max_in_flight))
        state.phase = "load"
        try:
            if config.load.search is not None:
                status = await run_search(driver, config, state)
            else:
                status = await run_stages(driver, state.stages, config, state)
        finally:
            await driver.close()
        state.current_stage = None
        if watcher is not None:
            watcher.cancel()
        state.phase = "after"
        if status == "completed":
            await asyncio.sleep(config.resources.settle_s)
    finally:
        sampling.cancel()
        await transport.close()
    report = build_report(state, status, time.monotonic() - t0)
    await asyncio.to_thread(record, state, report)
    state.report = report
    state.phase = "done"
    return report


async def _watch_stop(stop: asyncio.Event, driver: Driver) -> None:
    await stop.wait()
    driver.stop()


async def _accuracy_pass(state: RunState, transport: Transport, codec: Codec, dataset: Dataset, batch: int,
                         concurrency: int) -> None:
    """Every sample once, closed loop: the reference predictions that accuracy is computed from."""
    from profiler.results import OK, Result

    assert state.predictions is not None
    n = len(dataset.samples)
    starts = list(range(0, n, batch))
    queue = iter(starts)

    async def worker() -> None:
        for first in queue:
            chunk = dataset.samples[first:first + batch]
            try:
                body = await transport.send(codec.infer_path, codec.encode(chunk))
                predictions = codec.decode(body, len(chunk))
            except (TransportError, DecodeError):
                state.accuracy_errors += 1
                continue
            assert state.predictions is not None
            state.predictions.add(Result(-1, first, len(chunk), 0, 0, 0, OK, predictions))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _sample_resources(state: RunState, t0: float) -> None:
    """Read the model's resources every interval_s, on a fixed grid (a slow read does not shift it)."""
    sampler = state.sampler
    if sampler is None or not sampler.configured:
        return
    interval = state.config.resources.interval_s
    phases = {"before": BEFORE, "accuracy": ACCURACY, "load": LOAD, "after": AFTER}
    next_s = time.monotonic()
    while True:
        reading = await asyncio.to_thread(sampler.read)
        if reading is not None:
            state.series.add(ResourcePoint(time.monotonic() - t0, reading.rss_bytes, reading.cpu_s,
                                           reading.processes, phases.get(state.phase, STARTING),
                                           state.requests_done, reading.memory_bytes))
        next_s = max(next_s + interval, time.monotonic())
        await asyncio.sleep(next_s - time.monotonic())


def build_report(state: RunState, status: str, duration_s: float) -> dict[str, Any]:
    """The versioned JSON document: stages, capacity, accuracy, resources, metrics and verdict."""
    config = state.config
    objective = config.objective
    stages = []
    search = config.load.search
    for recorder in state.recorders:
        summary = recorder.summary()
        if not recorder.stage.warmup and search is not None:
            summary["objective"] = judge_window_stage(summary, objective.percentile, objective.latency_ms,
                                                      objective.max_error_rate, search.windows, search.stability)
        elif not recorder.stage.warmup:
            summary["objective"] = judge_stage(summary, objective.percentile, objective.latency_ms,
                                               objective.max_error_rate)
        stages.append(summary)
    dataset = state.dataset
    labels = [s.label for s in dataset.samples] if dataset else []
    accuracy: dict[str, Any] = {}
    if state.predictions is not None and dataset is not None:
        accuracy = accuracy_metrics(labels, state.predictions.reference)
        accuracy["errors"] = state.accuracy_errors
        accuracy["consistency"] = {"compared": state.predictions.compared,
                                   "inconsistent": state.predictions.inconsistent}
    capacity = {**capacity_summary(stages), "method": "search" if search is not None else "stages"}
    resources = resources_report(state.series, state.sampler, config.resources, capacity["max_sustained_rps"])
    report: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "profiler_version": __version__,
        "run": {"id": state.run_id, "status": status, "started_at": state.started_at,
                "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "duration_s": round(duration_s, 3)},
        "target": {"url": redact_url(config.target.url), "protocol": config.target.protocol,
                   "model": config.target.model, "version": config.target.version},
        "dataset": {"path": str(dataset.path) if dataset else str(config.dataset.path),
                    "sha256": dataset.sha256 if dataset else None,
                    "samples": len(dataset.samples) if dataset else 0},
        "load": {"arrival": config.load.arrival, "seed": config.load.seed, "batch_size": config.load.batch_size,
                 "max_in_flight": config.load.max_in_flight, "warmup_s": config.load.warmup_s},
        "objective": objective.model_dump(),
        "stages": stages,
        "capacity": capacity,
        "accuracy": accuracy,
        "resources": resources,
    }
    report["gates"] = [g.model_dump() for g in config.gates]
    report["requirements"] = requirements_section(config, report)
    report["metrics"] = flatten_metrics(report)
    verdict, report["predecessor"] = assess(state, report, state.baseline)
    if status != "completed" and verdict.status == "pass":
        report["verdict"] = {"status": "inconclusive", "reason": f"the run was {status} before it finished",
                             "checks": verdict.as_dict()["checks"]}
    else:
        report["verdict"] = verdict.as_dict()
    return report
