"""One profiling run, wired end to end: dataset -> codec -> engine -> recorders -> report -> verdict.

Wiring and I/O: it builds the pieces from the profile, owns the asyncio tasks (load, resource
sampler), fills the run's live state (profiler.state) phase by phase (it alone writes it), and ends
with `conclude` in a thread (measure the model artifact, assemble the report), then `record` in a
thread (save it to the history). Nothing slow or blocking runs on the event loop: the hold-out file is
read, hashed and encoded in a thread, so /healthz answers and a stop is seen whatever the file does.
Every phase ends on the run's `stop` event: see `execute`.
`run_once` is the CLI's whole run: execute, write, print, exit code.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import platform
import signal
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from profiler.app.progress import show_progress as progress_display
from profiler.app.server_stats import ServerStatsReader, StatsDriver
from profiler.codecs.base import Codec
from profiler.codecs.factory import codec_from_config
from profiler.codecs.openai import OpenAICodec
from profiler.config import Config, ResourcesConfig
from profiler.core import aio, logs
from profiler.core.errors import DecodeError, ReportError, TargetError, TransportError, error_line
from profiler.core.heap import freeze_baseline
from profiler.core.results import OK, Prediction
from profiler.core.url import TargetUrl
from profiler.dataset import Dataset, TextField, load_dataset
from profiler.judge.significance import Baseline
from profiler.judge.verdict import exit_code_for
from profiler.load.engine import Engine, build_bodies, build_ids
from profiler.load.search import Driver, run_search, run_stages
from profiler.load.workers import make_driver
from profiler.measure.accuracy import PredictionLog
from profiler.measure.resources.gpu import GpuEndpoint, Nvml, gpu_names
from profiler.measure.resources.sampler import Cgroup, ProcessTree, ResourceSampler, Scrape, artifact_size
from profiler.measure.resources.series import ACCURACY, AFTER, BEFORE, LOAD, STARTING, BoundedSeries, ResourcePoint
from profiler.measure.text import TextRule
from profiler.record.baseline import find_baseline
from profiler.record.cioutput import CiOutputs, write_ci_outputs
from profiler.record.context import host_facts, run_context
from profiler.record.history import history_problems, record
from profiler.record.page import history_lookup, write_html
from profiler.record.render import render_text
from profiler.record.report import aborted_report, build_report, write_json
from profiler.state import (
    PHASE_DONE,
    PHASE_RUNNING,
    PHASE_SKIPPED,
    PHASE_STOPPED,
    PHASES,
    ArtifactSize,
    RunState,
    new_state,
)
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
GRACEFUL_PHASES = frozenset({"accuracy", "load"})
"""Phases with requests in flight: on a stop they get the grace period to finish them (the answers are
recorded); every other phase (a wait, a file read, a sleep) is cancelled at once."""
CANCEL_WAIT_S = 0.25
"""How long a cancelled phase may take to close its connections before the run concludes without it."""
SAVE_AFTER_GRACE_S = 0.3
"""How long the history write of a stopped run may take when the grace period is already spent (the
requests in flight had it all): a write takes milliseconds unless another writer holds the file locked."""
ACCURACY_CONCURRENCY = 16
"""Requests the accuracy pass keeps in flight (fewer when load.max_in_flight is lower)."""
ACCURACY_GIVE_UP = 32
"""The accuracy pass gives up once this many requests went unanswered (timeouts, connection errors) and
they are at least half of those sent. A model that never answers would otherwise hold the run for
samples / concurrency x timeout_s: 10,000 samples, 16 in flight and a 10 s timeout are 104 minutes; this
way it is two rounds of the timeout, and the load that follows shows the failures in the report."""
ACCURACY_TIMEOUT_SLACK_S = 1.0
"""Each accuracy request is also bounded here, timeout_s plus this: the transport's own timeout ends it
first, with its own error kind; this bound holds whatever the transport does."""
UNANSWERED = frozenset({"timeout", "connection"})
log = logging.getLogger("profiler.app.run")


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the run sends: the hold-out set, its codec and every request body, encoded once."""

    dataset: Dataset
    codec: Codec
    bodies: list[bytes]
    ids: list[str | None] | None
    """The id each body carries (V2), checked against each answer's; None for a protocol without ids."""


def text_field(config: Config) -> TextField | None:
    """The hold-out field a generative protocol reads (a prompt or chat messages), None for tensor inputs."""
    name = config.dataset.text_field
    return None if name is None else TextField(name, messages=config.dataset.messages is not None)


def prepare_inputs(config: Config) -> Inputs:
    """Blocking, so call it in a thread: read and hash the hold-out file, build the codec, encode each body.

    All three take time proportional to the hold-out set (a 75 MB file is seconds of parsing and encoding),
    and the open or a read can block for good (a FIFO nobody writes, a hung network file system).

    The garbage collector is off meanwhile: every full collection would walk all the samples read so far,
    holding the GIL, so the event loop's thread could not run (measured: pauses of 170 to 400 ms while a
    75 MB hold-out loads). Afterwards what is alive is frozen (the samples are kept for the whole run, and
    are freed by reference counting, not by the collector), and collection resumes. `execute` turns the
    collector back on too, in case this thread is abandoned blocked.
    """
    # First the garbage of earlier runs (a stage's HDR histograms are cyclic: only the collector frees them), or
    # the freeze below would keep it for the life of the sidecar. It walks only what is not frozen already
    # (the baseline is: core.heap), milliseconds.
    gc.collect()
    gc.disable()
    try:
        dataset = load_dataset(
            config.dataset.path, inputs=config.dataset.inputs, label=config.dataset.label,
            id_field=config.dataset.id, fmt=config.dataset.resolved_format, cache_dir=config.dataset.cache_dir,
            ca_file=config.dataset.tls_ca_file, text=text_field(config),
        )
        codec = codec_from_config(config.target, config.dataset.inputs, config.load.batch_size, dataset.samples[0],
                                  TextRule(config.dataset.match, config.dataset.pattern))
        bodies = build_bodies(dataset.samples, config.load.batch_size, codec.encode)
        ids = build_ids(dataset.samples, config.load.batch_size, codec.request_id)
        gc.freeze()
    finally:
        gc.enable()
    return Inputs(dataset, codec, bodies, ids)


class StopClock:
    """The run's stop event and when it was set: a stopped run has `grace_s` from then to end."""

    def __init__(self, event: asyncio.Event, grace_s: float) -> None:
        self.event = event
        self.grace_s = grace_s
        self.at: float | None = None
        self._watch = asyncio.create_task(_mark_on_stop(weakref.ref(self), event))

    @property
    def stopped(self) -> bool:
        """Whether a stop was asked for."""
        return self.event.is_set()

    def mark(self) -> None:
        """Note the stop's time (the first caller to see the event set does)."""
        if self.at is None and self.event.is_set():
            self.at = time.monotonic()

    def left_s(self) -> float:
        """Seconds left of the grace period (0 when spent); infinite while no stop was asked for."""
        self.mark()
        if self.at is None:
            return math.inf
        return max(0.0, self.at + self.grace_s - time.monotonic())

    def close(self) -> None:
        """Stop watching the event."""
        self._watch.cancel()


async def _mark_on_stop(clock: weakref.ref[StopClock], event: asyncio.Event) -> None:
    """StopClock's watch. It holds its clock weakly: the clock holds the watch, and a cancelled watch's traceback
    would hold the clock back, a cycle that outlives the run once frozen with the hold-out set (prepare_inputs)."""
    await event.wait()
    watched = clock()
    if watched is not None:
        watched.mark()


async def execute(state: RunState, stop: asyncio.Event | None = None, grace_s: float | None = None) -> dict[str, Any]:
    """Run the whole profile and return the report (also kept on `state.report`).

    Setting `stop` (SIGTERM, SIGINT, a sidecar's shutdown) ends the run in any phase: requests in flight
    get `grace_s` seconds (default server.shutdown_grace_s) to finish, every other phase ends at once, and
    the report, with status "aborted", keeps what was measured. A ProfilerError is a run that could not run.
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, GIL_SWITCH_INTERVAL_S))
    clock = StopClock(stop if stop is not None else asyncio.Event(),
                      state.config.server.shutdown_grace_s if grace_s is None else grace_s)
    try:
        return await _execute(state, clock)
    finally:
        clock.close()
        gc.enable()  # prepare_inputs turns it off; a stop may have abandoned it blocked in a read
        sys.setswitchinterval(previous)


async def _execute(state: RunState, clock: StopClock) -> dict[str, Any]:
    state.started_at = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.monotonic()
    status = await _measure_until_stopped(state, clock, t0)
    report = await _conclude(state, status, t0, clock)
    state.report = report
    _enter(state, "done")
    return report


def _enter(state: RunState, phase: str) -> None:
    """Move the run to `phase`: the one it leaves is done (unless already marked), the log says so."""
    if state.phases.get(state.phase) == PHASE_RUNNING:
        state.phases[state.phase] = PHASE_DONE
    state.phase = phase
    if phase in PHASES:
        state.phases[phase] = PHASE_RUNNING
    log.info("run %s: %s", state.run_id, phase)


async def _measure_until_stopped(state: RunState, clock: StopClock, t0: float) -> str:
    """Every measuring phase, in a task that a stop ends: at once, or after the grace period in a phase with
    requests in flight. Returns the run's status; raises what made the run unable to run (not after a stop)."""
    measuring = asyncio.create_task(_measure(state, clock.event, t0))
    stopped = asyncio.create_task(clock.event.wait())
    try:
        await asyncio.wait({measuring, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not measuring.done() and state.phase in GRACEFUL_PHASES:
            await asyncio.wait({measuring}, timeout=clock.left_s())
    finally:
        stopped.cancel()
        if not measuring.done():
            measuring.cancel()
            # Cancelled, the phase closes its connections; a thread it waited on is abandoned (aio.in_thread).
            await asyncio.wait({measuring}, timeout=CANCEL_WAIT_S)
    status = "aborted"
    if measuring.done() and not measuring.cancelled():
        error = measuring.exception()
        if error is None:
            status = measuring.result()
        elif not clock.stopped:
            raise error
        else:
            log.warning("run %s: %s after the stop: %s", state.run_id, state.phase, error)
    if status == "aborted":
        _note_stop(state)
    return status


def _note_stop(state: RunState) -> None:
    """Record where the stop ended the run; an accuracy pass it kept from running says so."""
    if state.stopped_in is None:
        state.stopped_in = state.phase
    if state.phases.get(state.phase) == PHASE_RUNNING:
        state.phases[state.phase] = PHASE_STOPPED
    if (state.config.load.accuracy_pass and state.dataset is not None and state.accuracy_incomplete is None
            and "accuracy" not in state.phases):
        state.accuracy_incomplete = f"not reached: the run was stopped while {state.stopped_in}"
        state.accuracy_unsent = len(state.dataset.samples)


async def _measure(state: RunState, stop: asyncio.Event, t0: float) -> str:
    """Load the hold-out set, then the target's phases; the resource sampler runs from the dataset's load on."""
    config = state.config
    state.sampler = make_sampler(config.resources)
    state.series = BoundedSeries(capacity=config.resources.series_points)
    state.stages = config.load.planned_stages()
    _enter(state, "loading dataset")
    # In a daemon thread: a stop abandons an open() or read() that blocks for good (see aio.in_thread).
    inputs = await aio.in_thread(prepare_inputs, config, name="profiler-dataset")
    state.dataset = inputs.dataset
    state.predictions = PredictionLog(len(inputs.dataset.samples))
    state.context, state.baseline, state.baseline_problem = await aio.in_thread(
        before_load, config, inputs.dataset.sha256, state.run_id, name="profiler-baseline")
    transport = make_transport(config, inputs.codec)
    watch = ResourceWatch(state, t0)
    sampling = asyncio.create_task(watch.run())
    try:
        return await _drive(state, stop, inputs, transport, watch)
    finally:
        sampling.cancel()
        await transport.close()


def before_load(config: Config, holdout_sha256: str, run_id: str) -> tuple[dict[str, Any], Baseline, str | None]:
    """Blocking (reads the machine and the history): the run's context, its predecessor, and why the shared
    history could not be read (None when it could)."""
    context = run_context(config, host_facts())
    baseline, problem = find_baseline(config, holdout_sha256, run_id, context)
    return context, baseline, problem


async def _drive(state: RunState, stop: asyncio.Event, inputs: Inputs, transport: Transport,
                 watch: ResourceWatch) -> str:
    """The target's phases: readiness, metadata, settle, accuracy pass, load, settle. Returns the status."""
    config = state.config
    codec, dataset = inputs.codec, inputs.dataset
    _enter(state, "waiting for target")
    await resolve_target(config.target.endpoint)  # 'cannot resolve host X' now, not 'no answer' later
    await wait_ready(transport, codec, config.target.endpoint, config.target.ready_timeout_s)
    _enter(state, "checking metadata")
    if not await check_model_inputs(config.target, codec, transport, dataset.samples[0]):
        state.phases["checking metadata"] = PHASE_SKIPPED
    _enter(state, "before")
    await watch.mark()
    await asyncio.sleep(config.resources.settle_s)
    await watch.mark()
    assert state.predictions is not None
    engine = Engine(
        transport, codec.infer_path, inputs.bodies, codec.decode, batch=config.load.batch_size,
        sample_count=len(dataset.samples), max_in_flight=config.load.max_in_flight,
        timeout_s=config.target.timeout_s, consumers=[state.predictions, state],
        lag_budget_ns=round(config.load.lag_budget_ms * 1e6), ids=inputs.ids,
        tokens=codec.read if isinstance(codec, OpenAICodec) else None,
        stream=isinstance(codec, OpenAICodec) and codec.stream,
    )
    driver: Driver = make_driver(config, engine, inputs.bodies, codec, [state.predictions, state])
    if config.server_stats is not None:
        reader = ServerStatsReader(config.server_stats, config.target.model, codec.infer_path)
        driver = StatsDriver(driver, reader, state)
    try:
        if config.load.accuracy_pass:
            _enter(state, "accuracy")
            await _accuracy_pass(state, stop, transport, codec, dataset, config.load.batch_size,
                                 min(ACCURACY_CONCURRENCY, config.load.max_in_flight), config.target.timeout_s)
        if stop.is_set():
            return "aborted"
        _enter(state, "load")
        watcher = asyncio.create_task(_watch_stop(stop, driver))
        try:
            if config.load.search is not None:
                status = await run_search(driver, config, state.recorders)
            else:
                status = await run_stages(driver, state.stages, config, state.recorders)
        finally:
            watcher.cancel()
    finally:
        await driver.close()
    if status == "aborted":
        return status
    await watch.mark()  # the end of the load, tagged "load": the run changes phase only after the reading
    _enter(state, "after")
    if status == "completed":
        await asyncio.sleep(config.resources.settle_s)
        await watch.mark()
    else:
        state.phases["after"] = PHASE_SKIPPED
    return status


async def _conclude(state: RunState, status: str, t0: float, clock: StopClock) -> dict[str, Any]:
    """Build the report and save the run, both in threads (the loop keeps serving /healthz, /metrics).

    A stop before the history write begins makes the run aborted; the write then has what is left of the
    grace period (at least SAVE_AFTER_GRACE_S). A write still waiting then (a locked history) is abandoned:
    SQLite writes the run in one transaction, so the history holds all of it or none, and the report says
    it may lack it.
    """
    if clock.stopped and status == "completed":
        status = "aborted"
        state.stopped_in = state.phase if state.phase not in PHASES else "building report"
    _enter(state, "building report")
    report = await aio.in_thread(conclude, state, status, time.monotonic() - t0, name="profiler-report")
    if clock.stopped and report["run"]["status"] == "completed":
        state.stopped_in = "building report"
        report = aborted_report(report, "building report")
    config = state.config
    if not (config.history.enabled and config.history.path is not None) and config.tracking is None:
        return report
    _enter(state, "saving history")
    draft = dict(report)  # record() adds its sections to the copy: an abandoned write cannot touch `report`
    saving = asyncio.ensure_future(aio.in_thread(record, state, draft, name="profiler-history"))
    stopped = asyncio.create_task(clock.event.wait())
    try:
        await asyncio.wait({saving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not saving.done():
            await asyncio.wait({saving}, timeout=max(clock.left_s(), SAVE_AFTER_GRACE_S))
    finally:
        stopped.cancel()
        if not saving.done():
            saving.cancel()
    if saving.done() and not saving.cancelled():
        saving.result()  # record() notes its own failures in the report; anything else is a bug: raise it
        return draft
    state.stopped_in = "saving history"
    return _unsaved(aborted_report(report, "saving history"), state)


def _unsaved(report: dict[str, Any], state: RunState) -> dict[str, Any]:
    """The report of a run whose history write (and MLflow logging) a stop abandoned."""
    config = state.config
    why = ("the run was stopped while saving it to the history, and the write did not finish within "
           f"the grace period ({state.config.server.shutdown_grace_s:g} s); the history holds it only if "
           "the write ended before the process did")
    if config.history.enabled and config.history.path is not None:
        report["history"] = {"path": str(config.history.path), "saved": False, "error": why,
                             "predecessor_id": (report.get("predecessor") or {}).get("id")}
    if config.tracking is not None:
        report["tracking"] = {"error": why}
    return report


def conclude(state: RunState, status: str, duration_s: float) -> dict[str, Any]:
    """Blocking, so call it in a thread: measure the model artifact (once), stamp the finish, assemble the
    report. `status` is how the run ended, `duration_s` its wall time. Saving it is `record`'s job."""
    path = state.config.resources.artifact_path
    if state.artifact is None and path is not None:
        state.artifact = measure_artifact(path)
    finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    report = build_report(state, status, finished_at, duration_s)
    report["run"]["host"] = platform.node()  # the generator's machine, for the report's context
    return report


def conclude_and_record(state: RunState, status: str, duration_s: float) -> dict[str, Any]:
    """Blocking: `conclude`, then save the run to the history (the sidecar's end of a run it had to cancel)."""
    report = conclude(state, status, duration_s)
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


@dataclass
class _AccuracyTally:
    """The accuracy pass so far: requests sent, those unanswered, samples sent, why it ended early."""

    sent: int = 0
    unanswered: int = 0
    samples_sent: int = 0
    gave_up: str | None = None


async def _accuracy_pass(state: RunState, stop: asyncio.Event, transport: Transport, codec: Codec, dataset: Dataset,
                         batch: int, concurrency: int, timeout_s: float) -> None:
    """Every sample once, closed loop: the reference predictions that accuracy is computed from.

    Each worker looks at `stop` before each request and each request is bounded by the timeout, so a stop
    ends the pass within the grace period; a model that leaves too many requests unanswered ends it too
    (ACCURACY_GIVE_UP). Either way the samples not sent are counted and the pass is marked incomplete.
    """
    assert state.predictions is not None
    predictions = state.predictions
    n = len(dataset.samples)
    queue = iter(range(0, n, batch))
    tally = _AccuracyTally()

    async def worker() -> None:
        for first in queue:
            if stop.is_set() or tally.gave_up is not None:
                return
            chunk = dataset.samples[first:first + batch]
            tally.sent += 1
            tally.samples_sent += len(chunk)
            try:
                async with asyncio.timeout(timeout_s + ACCURACY_TIMEOUT_SLACK_S):
                    body = await transport.send(codec.infer_path, codec.encode(chunk))
                values = codec.decode(body, len(chunk), codec.request_id(chunk))
            except (TransportError, TimeoutError, DecodeError) as exc:
                state.accuracy_errors += 1
                if isinstance(exc, TimeoutError) or (isinstance(exc, TransportError) and exc.kind in UNANSWERED):
                    tally.unanswered += 1
                    if (tally.gave_up is None and tally.unanswered >= ACCURACY_GIVE_UP
                            and 2 * tally.unanswered >= tally.sent):
                        tally.gave_up = (f"gave up: {tally.unanswered} of {tally.sent} requests sent went "
                                         f"unanswered (timeout {timeout_s:g} s, or connection errors)")
                continue
            predictions.add(Prediction(first, len(chunk), OK, values))

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        # Also when cancelled at the end of the grace period: the report says what the pass did not do.
        state.accuracy_unsent = n - tally.samples_sent
        if tally.gave_up is not None:
            state.accuracy_incomplete = tally.gave_up
        elif state.accuracy_unsent or stop.is_set():
            state.accuracy_incomplete = "the run was stopped during the accuracy pass"


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
            # A daemon thread: a read of a hung process's /proc files or a scrape that never answers must not
            # hold the process's exit (the loop's shutdown joins asyncio.to_thread's threads).
            reading = await aio.in_thread(state.sampler.read, name="profiler-sampler")
            if reading is not None:
                gpu = reading.gpu
                state.series.add(ResourcePoint(t_s, reading.rss_bytes, reading.cpu_s, reading.processes,
                                               SERIES_PHASES.get(phase, STARTING), requests, reading.memory_bytes,
                                               boundary=boundary,
                                               gpu_memory_bytes=gpu.memory_bytes if gpu is not None else None,
                                               gpu_utilisation_pct=gpu.utilisation_pct if gpu is not None else None))


def run_once(config: Config, quiet: bool = False, progress: bool = False, ci: CiOutputs | None = None) -> int:
    """Execute the profile, write the report, print the table; the exit code carries the verdict.

    The run is saved to the history before the report file is written, and the table is
    printed whether or not the file could be: when it cannot (a read-only or full folder, ...) what was
    measured is still shown, one `profiler: error:` line names the path, and the exit code is 3.
    `progress` prints each phase on stderr as the run enters it (log lines, written off the event loop); unless
    `quiet`, the live progress (app.progress) shows while the run goes (on a terminal's stderr, else stdout).
    `ci` names the JUnit file and Markdown summaries to write once the report is (record.cioutput).
    """
    handler = logs.configure() if progress else None
    freeze_baseline()  # the modules and libraries: no collection between stages walks them (core.heap)
    try:
        state = new_state(config)
        report, lines, written, problems = aio.run(_execute_until_signal(state, show_progress=not quiet))
    finally:
        logs.unconfigure(handler)
    if quiet:
        print(f"verdict {report['verdict']['status'].upper()}: {report['verdict']['reason']}")
    else:
        print(render_text(report), end="")
    print("\n".join(lines), flush=True)
    if ci is not None:
        problems += write_ci_outputs(report, written, ci)
    for problem in problems:
        print(error_line(problem), file=sys.stderr)
    return exit_code_for(report, problems)


async def _execute_until_signal(state: RunState, show_progress: bool = False
                                ) -> tuple[dict[str, Any], list[str], str, list[str]]:
    """Run the profile and write its report and its HTML page (in threads); SIGINT/SIGTERM stop the run in any
    phase, and the report records it as aborted. The handlers stay until the files are written, so a signal
    then is not the default one that would kill the process half-way through a write. Returns the report,
    the lines saying where each file went (or why not), where report.json went (or why not) and what the
    profiler could not do (see run_once)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _stopper(state, stop, sig))
    # The live progress (app.progress) reads the state; the engine knows nothing of it.
    watching = asyncio.create_task(progress_display(state)) if show_progress else None
    try:
        try:
            report = await execute(state, stop)
        finally:
            if watching is not None:
                watching.cancel()
                await asyncio.wait({watching})
        lines, written, problems = await write_report_files(report, state.config)
        return report, lines, written, [*problems, *history_problems(report, state.config)]
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def write_report_files(report: dict[str, Any], config: Config) -> tuple[list[str], str, list[str]]:
    """Write report.json and report.html (report.html is optional: `report.html: null`), each in a thread.
    Returns the summary lines ("report   PATH", "html     PATH"), where report.json went (or "NOT WRITTEN
    ...") and the problems (files not written)."""
    lines: list[str] = []
    problems: list[str] = []
    try:
        written = str(await aio.in_thread(write_json, report, config.report.path, name="profiler-report-file"))
    except ReportError as exc:
        written = "NOT WRITTEN (see the error below)"
        problems.append(str(exc))
    lines.append(f"report   {written}")
    html_path = config.report.html_file()
    if html_path is not None and problems and html_path.parent == config.report.path.parent:
        # The folder the report could not be written to: one error says so, not one per file.
        lines.append("html     NOT WRITTEN (the report's folder cannot be written)")
    elif html_path is not None:
        lookup = history_lookup(config.history.path if config.history.enabled else None,
                                config.history.lock_timeout_s)
        try:
            page = await aio.in_thread(write_html, report, html_path, lookup, name="profiler-report-page")
            lines.append(f"html     {page}  (open it in a browser: charts, no network needed)")
        except ReportError as exc:
            lines.append("html     NOT WRITTEN (see the error below)")
            problems.append(str(exc))
    return lines, written, problems


def _stopper(state: RunState, stop: asyncio.Event, sig: signal.Signals) -> Callable[[], None]:
    def handle() -> None:
        if not stop.is_set():
            log.info("run %s: %s received while %s: stopping", state.run_id, sig.name, state.phase)
        stop.set()
    return handle


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
        gpu=make_gpu_source(config),
    )


def make_gpu_source(config: ResourcesConfig) -> Nvml | GpuEndpoint | None:
    """NVML when resources.gpu.nvml is set; else the GPU section's endpoint, else the target's own metrics_url
    read for Triton's or DCGM's GPU names (quietly dropped when it has none: a CPU model); else None."""
    gpu = config.gpu
    timeout_s = min(2.0, config.interval_s * 2)
    if gpu is not None and gpu.nvml:
        return Nvml()
    url = gpu.metrics_url if gpu is not None and gpu.metrics_url else config.metrics_url
    if url is None:
        return None
    if gpu is None:
        return GpuEndpoint(url, timeout_s=timeout_s, implicit=True)
    names = gpu_names(gpu.memory_metric, gpu.memory_unit_bytes, gpu.total_metric, gpu.utilisation_metric,
                      gpu.utilisation_unit_pct)
    return GpuEndpoint(url, names, dict(gpu.labels), timeout_s=timeout_s)
