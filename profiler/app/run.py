"""One profiling run, wired end to end: dataset -> codec -> engine -> recorders -> report -> verdict.

Wiring and I/O: it builds the pieces from the profile, owns the asyncio tasks (load, resource
sampler), fills the run's live state (profiler.state) phase by phase (it alone writes it), and ends
with `conclude` in a thread: measure the model artifact, assemble the report, save it to the history.
`run_once` is the CLI's whole run: execute, write, print, exit code.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from profiler.codecs.base import Codec
from profiler.codecs.factory import codec_from_config
from profiler.config import Config, ResourcesConfig
from profiler.core import aio
from profiler.core.errors import DecodeError, ReportError, TargetError, TransportError, error_line
from profiler.core.heap import freeze_baseline
from profiler.core.results import OK, Prediction
from profiler.core.url import TargetUrl
from profiler.dataset import Dataset, load_dataset
from profiler.judge.verdict import exit_code_for
from profiler.load.engine import Engine, build_bodies
from profiler.load.search import Driver, run_search, run_stages
from profiler.load.workers import make_driver
from profiler.measure.accuracy import PredictionLog
from profiler.measure.resources.sampler import Cgroup, ProcessTree, ResourceSampler, Scrape, artifact_size
from profiler.measure.resources.series import ACCURACY, AFTER, BEFORE, LOAD, STARTING, BoundedSeries, ResourcePoint
from profiler.record.baseline import find_baseline
from profiler.record.history import record
from profiler.record.render import render_text
from profiler.record.report import build_report, write_json
from profiler.state import ArtifactSize, RunState, new_state
from profiler.transports.base import Transport
from profiler.transports.factory import make_transport
from profiler.transports.metadata import check_model_inputs
from profiler.transports.resolve import resolve_target


async def wait_ready(transport: Transport, codec: Codec, endpoint: TargetUrl, timeout_s: float) -> None:
    """Poll the codec's readiness endpoints until all answer 200, or raise TargetError naming each endpoint's
    redacted URL and what it answered."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, int] = {}
    while True:
        last = {path: await transport.probe(path) for path in codec.ready_paths}
        if all(status == 200 for status in last.values()):
            return
        if time.monotonic() >= deadline:
            seen = ", ".join(f"{endpoint.redacted(p)} -> {s or 'no answer'}" for p, s in last.items())
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
    # Reading and hashing the hold-out file and encoding every request body take seconds for a large set:
    # in threads, so the sidecar's /healthz and /report keep answering while a run starts.
    dataset = await asyncio.to_thread(
        load_dataset, config.dataset.path, inputs=config.dataset.inputs, label=config.dataset.label,
        id_field=config.dataset.id, fmt=config.dataset.resolved_format,
    )
    state.dataset = dataset
    state.baseline = await asyncio.to_thread(find_baseline, config, dataset.sha256, state.run_id)
    codec = codec_from_config(config.target, config.dataset.inputs, config.load.batch_size, dataset.samples[0])
    bodies = await asyncio.to_thread(build_bodies, dataset.samples, config.load.batch_size, codec.encode)
    transport = make_transport(config, codec)
    state.predictions = PredictionLog(len(dataset.samples))
    state.sampler = make_sampler(config.resources)
    state.series = BoundedSeries(capacity=config.resources.series_points)
    state.stages = config.load.planned_stages()
    watch = ResourceWatch(state, t0)
    sampling = asyncio.create_task(watch.run())
    status = "completed"
    try:
        state.phase = "waiting for target"
        await resolve_target(config.target.endpoint)  # 'cannot resolve host X' now, not 'no answer' later
        await wait_ready(transport, codec, config.target.endpoint, config.target.ready_timeout_s)
        await check_model_inputs(config.target, codec, transport, dataset.samples[0])
        state.phase = "before"
        await watch.mark()
        await asyncio.sleep(config.resources.settle_s)
        await watch.mark()
        engine = Engine(
            transport, codec.infer_path, bodies, codec.decode, batch=config.load.batch_size,
            sample_count=len(dataset.samples), max_in_flight=config.load.max_in_flight,
            timeout_s=config.target.timeout_s, consumers=[state.predictions, state],
            lag_budget_ns=round(config.load.lag_budget_ms * 1e6),
        )
        driver = make_driver(config, engine, bodies, codec, [state.predictions, state])
        watcher = asyncio.create_task(_watch_stop(stop, driver)) if stop is not None else None
        if config.load.accuracy_pass:
            state.phase = "accuracy"
            await _accuracy_pass(state, transport, codec, dataset, config.load.batch_size,
                                 min(16, config.load.max_in_flight))
        state.phase = "load"
        try:
            if config.load.search is not None:
                status = await run_search(driver, config, state.recorders)
            else:
                status = await run_stages(driver, state.stages, config, state.recorders)
        finally:
            await driver.close()
        if watcher is not None:
            watcher.cancel()
        await watch.mark()
        state.phase = "after"
        if status == "completed":
            await asyncio.sleep(config.resources.settle_s)
            await watch.mark()
    finally:
        sampling.cancel()
        await transport.close()
    # Measuring the artifact (os.walk), the statistics of the report (bootstrap) and the history's SQLite
    # write all block: off the event loop, so /metrics and /report keep answering meanwhile.
    report = await asyncio.to_thread(conclude, state, status, time.monotonic() - t0)
    state.report = report
    state.phase = "done"
    return report


def conclude(state: RunState, status: str, duration_s: float) -> dict[str, Any]:
    """Blocking, so call it in a thread: measure the model artifact (once), stamp the finish, assemble the
    report and save the run to the history. `status` is how the run ended, `duration_s` its wall time."""
    path = state.config.resources.artifact_path
    if state.artifact is None and path is not None:
        state.artifact = measure_artifact(path)
    finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    report = build_report(state, status, finished_at, duration_s)
    record(state, report)
    return report


def measure_artifact(path: Path) -> ArtifactSize:
    """The model artifact's bytes and file count on disk (a walk of a directory), or the problem reading it."""
    try:
        size_bytes, files = artifact_size(path)
    except OSError as exc:
        return ArtifactSize(path, problem=f"model artifact: cannot read {path}: {exc.strerror or 'not found'}")
    return ArtifactSize(path, size_bytes, files)


async def _watch_stop(stop: asyncio.Event, driver: Driver) -> None:
    await stop.wait()
    driver.stop()


async def _accuracy_pass(state: RunState, transport: Transport, codec: Codec, dataset: Dataset, batch: int,
                         concurrency: int) -> None:
    """Every sample once, closed loop: the reference predictions that accuracy is computed from."""
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
            state.predictions.add(Prediction(first, len(chunk), OK, predictions))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


SERIES_PHASES = {"before": BEFORE, "accuracy": ACCURACY, "load": LOAD, "after": AFTER}
"""The run's phases as the resource series tags its readings (anything else is 'starting')."""


class ResourceWatch:
    """The model's resources, read on a fixed grid of interval_s and at each phase boundary.

    The boundary readings (`mark`: the start and end of the rest before the load, the end of the load, the
    end of the rest after it) make the "before" and "after" figures exist whenever the sampler works,
    whatever interval_s and settle_s: a grid reading landing in a rest window is luck. One read at a time
    (the sampler keeps state between reads), each in a thread; a reading is tagged with the phase the run
    was in when it was taken (the run changes phase only after awaiting `mark`).
    """

    def __init__(self, state: RunState, t0: float) -> None:
        self._state = state
        self._t0 = t0
        self._lock = asyncio.Lock()

    @property
    def active(self) -> bool:
        """Whether there is anything to read."""
        sampler = self._state.sampler
        return sampler is not None and sampler.configured

    async def run(self) -> None:
        """Read every interval_s on a fixed grid (a slow read does not shift it) until cancelled."""
        if not self.active:
            return
        interval = self._state.config.resources.interval_s
        next_s = time.monotonic()
        while True:
            await self._read(boundary=False)
            next_s = max(next_s + interval, time.monotonic())
            await asyncio.sleep(next_s - time.monotonic())

    async def mark(self) -> None:
        """One reading now, at a phase boundary; kept in the series whatever its resolution."""
        if self.active:
            await self._read(boundary=True)

    async def _read(self, boundary: bool) -> None:
        state = self._state
        assert state.sampler is not None
        async with self._lock:
            # Stamped as the read starts: what it reads is the model at that moment, in that phase.
            t_s, phase, requests = time.monotonic() - self._t0, state.phase, state.requests_done
            reading = await asyncio.to_thread(state.sampler.read)
            if reading is not None:
                state.series.add(ResourcePoint(t_s, reading.rss_bytes, reading.cpu_s, reading.processes,
                                               SERIES_PHASES.get(phase, STARTING), requests, reading.memory_bytes,
                                               boundary=boundary))


def run_once(config: Config, quiet: bool = False) -> int:
    """Execute the profile, write the report, print the table; the exit code carries the verdict.

    The run is saved to the history (in `conclude`) before the report file is written, and the table is
    printed whether or not the file could be: when it cannot (a read-only or full folder, ...) what was
    measured is still shown, one `profiler: error:` line names the path, and the exit code is 3.
    """
    state = new_state(config)
    freeze_baseline()  # the modules and libraries: no collection between stages walks them (core.heap)
    report = aio.run(_execute_until_signal(state))
    problems: list[str] = []
    try:
        written = f"{write_json(report, config.report.path)}"
    except ReportError as exc:
        problems.append(str(exc))
        written = "NOT WRITTEN (see the error below)"
    if quiet:
        print(f"verdict {report['verdict']['status'].upper()}: {report['verdict']['reason']}")
    else:
        print(render_text(report), end="")
    print(f"report   {written}", flush=True)
    for problem in problems:
        print(error_line(problem), file=sys.stderr)
    return exit_code_for(report, problems)


async def _execute_until_signal(state: RunState) -> dict[str, Any]:
    """Run the profile; SIGINT/SIGTERM stop the load and the report records the run as aborted."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await execute(state, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def make_sampler(config: ResourcesConfig) -> ResourceSampler:
    """The sampler for the configured pid / command-line pattern / pod, cgroup and metrics endpoint."""
    processes = None
    if config.pid is not None or config.cmdline is not None or config.pod:
        processes = ProcessTree(pid=config.pid, pattern=config.cmdline, pod=config.pod)
    return ResourceSampler(
        processes=processes,
        cgroup=Cgroup(config.cgroup_path) if config.cgroup_path is not None else None,
        scrape=Scrape(config.metrics_url, timeout_s=min(2.0, config.interval_s * 2))
        if config.metrics_url is not None else None,
    )
