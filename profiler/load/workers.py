"""Worker processes: rates beyond one core, each worker with its own event loop, merged exactly.

The parent (the sidecar) keeps the control plane and the accounting; each worker runs an Engine
on its share of every stage's timetable (arrivals k, k+N, k+2N... of the same timetable, so the
parts add up to exactly the planned stage) starting at a shared monotonic instant. At the end of
a stage a worker sends its recorder's figures with HDR-encoded histograms, which the parent adds
bucket by bucket into the stage's recorder: the merged percentiles are those of one histogram
holding every request. While a stage runs, workers stream (sample, predictions, outcome) batches
back as Prediction records (the times stay in the workers' histograms), so accuracy and consistency
see one prediction stream as in a single process.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from profiler.codecs.base import Codec
from profiler.config import Config
from profiler.core import aio
from profiler.core.errors import ProfilerError
from profiler.core.heap import freeze_baseline
from profiler.core.results import OK, Prediction, PredictionConsumer
from profiler.load.engine import Engine
from profiler.load.search import Driver, LocalDriver
from profiler.measure.latency import StageRecorder
from profiler.schedule import Stage, arrival_gap_ns, arrival_offsets_ns
from profiler.transports.factory import make_transport

PER_PROCESS_RPS = 10_000.0
"""Rate one generator process takes on before another is added (well under its measured ceiling)."""
START_DELAY_NS = 50_000_000
"""How far ahead of now a stage's shared start is set, so every worker has its orders in time."""
FLUSH_S = 0.05
"""How often a worker sends its batch of results to the parent."""
PARTIAL_EVERY = 10
"""Every this many flushes (0.5 s) a worker also sends its stage's figures so far: the live view."""
READY_TIMEOUT_S = 60.0
WORKER_NICE = 5
"""Workers run at a lower priority than the sidecar so /healthz, /report and /metrics answer at once."""


def choose_workers(configured: int | None, highest_rate_rps: float, cores: int) -> int:
    """The configured count, else one process per PER_PROCESS_RPS of the highest rate, at most one per core."""
    if configured is not None:
        return configured
    if not (highest_rate_rps > 0 and math.isfinite(highest_rate_rps)):
        return 1
    return max(1, min(max(cores, 1), math.ceil(highest_rate_rps / PER_PROCESS_RPS)))


def make_driver(config: Config, engine: Engine, bodies: Sequence[bytes], codec: Codec,
                consumers: list[PredictionConsumer]) -> Driver:
    """The in-process driver, or a pool of worker processes when the rate needs more than one core."""
    count = choose_workers(config.load.workers, config.load.highest_rate_rps(), os.cpu_count() or 1)
    if count <= 1:
        return LocalDriver(engine, config.load.arrival, config.load.seed)
    return WorkerPool(config, codec, bodies, engine.sample_count, count, consumers, ids=engine.ids)


class _Batcher:
    """A worker's consumer: keeps (first sample, batch, predictions, outcome) until the next flush.

    Plain tuples, not the records: they cross the pipe in bulk and pickle smaller.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.items: list[tuple[int, int, list[Any] | None, str]] = []
        self.stage = 0

    def add(self, prediction: Prediction) -> None:
        self.items.append((prediction.first_sample, prediction.batch, prediction.predictions, prediction.outcome))

    def flush(self) -> None:
        if self.items:
            self._conn.send(("results", self.stage, self.items))
            self.items = []


def worker_main(conn: Connection, config: Config, codec: Codec, bodies: Sequence[bytes],
                ids: Sequence[str | None] | None, sample_count: int,
                index: int, count: int) -> None:
    """Entry point of a worker process: serve stage orders from the parent until told to exit."""
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICE)  # the control plane (and the model) win a contended core; the self-check shows the cost
    freeze_baseline()  # the modules, the config and the bodies live as long as the worker (core.heap)
    with contextlib.suppress(KeyboardInterrupt):
        aio.run(_serve(conn, config, codec, bodies, ids, sample_count, index, count))


async def _serve(conn: Connection, config: Config, codec: Codec, bodies: Sequence[bytes],
                 ids: Sequence[str | None] | None, sample_count: int, index: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    transport = make_transport(config, codec)
    batcher = _Batcher(conn)
    engine = Engine(transport, codec.infer_path, bodies, codec.decode, batch=config.load.batch_size,
                    sample_count=sample_count,
                    max_in_flight=max(1, math.ceil(config.load.max_in_flight / count)),
                    timeout_s=config.target.timeout_s, consumers=[batcher],
                    lag_budget_ns=round(config.load.lag_budget_ms * 1e6), ids=ids)
    inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    current: list[StageRecorder | None] = [None]
    ending = [False]

    def readable() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = ("exit",)
        if message[0] == "stop":
            engine.stop()
        elif message[0] == "end":
            ending[0] = True
        else:
            inbox.put_nowait(message)

    async def flusher() -> None:
        ticks = 0
        while True:
            await asyncio.sleep(FLUSH_S)
            batcher.flush()
            ticks += 1
            recorder = current[0]
            if recorder is not None and ticks % PARTIAL_EVERY == 0:
                recorder.close_windows_until(time.monotonic_ns())
                conn.send(("partial", recorder.stage.index, recorder.to_wire()))

    loop.add_reader(conn.fileno(), readable)
    # The loop's poller made the pipe non-blocking; a message must go (and come) whole, so it is
    # blocking again: a full pipe then holds this worker until the parent reads (back-pressure),
    # instead of failing the send halfway through a message.
    os.set_blocking(conn.fileno(), True)
    flushing = loop.create_task(flusher())
    conn.send(("ready", index, os.getpid()))
    try:
        while True:
            message = await inbox.get()
            if message[0] == "exit":
                break
            _, fields, start_ns, window_ns, percentile = message
            stage = Stage(**fields)
            batcher.stage = stage.index
            recorder = StageRecorder(stage, window_ns=window_ns, window_percentile=percentile)
            offsets = arrival_offsets_ns(stage, config.load.arrival, config.load.seed, part=index, parts=count)
            ending[0] = False
            current[0] = recorder
            await engine.run_stage(stage, offsets, recorder, until=lambda: ending[0], start_ns=start_ns,
                                   gap_ns=arrival_gap_ns(stage.rate_rps, config.load.arrival, count),
                                   even=config.load.arrival == "constant")
            current[0] = None
            batcher.flush()
            conn.send(("stage", recorder.to_wire()))
    finally:
        flushing.cancel()
        loop.remove_reader(conn.fileno())
        await transport.close()
        conn.close()


class WorkerPool:
    """N worker processes driven stage by stage; implements the Driver protocol of profiler.load.search."""

    def __init__(self, config: Config, codec: Codec, bodies: Sequence[bytes], sample_count: int, count: int,
                 consumers: list[PredictionConsumer], clock: Callable[[], int] = time.monotonic_ns,
                 ids: Sequence[str | None] | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        self._clock = clock
        self._consumers = consumers
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self._ready: list[asyncio.Future[int]] = []
        self._stage_results: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._stopping = False
        self._failed: str | None = None
        self.count = count
        self._partials: dict[int, dict[str, Any]] = {}
        self._live: StageRecorder | None = None
        self._until: Callable[[], bool] | None = None
        self._ending = False
        self._args = (config, codec, list(bodies), None if ids is None else list(ids), sample_count)
        self._context = context
        self._started = False

    async def _start(self) -> None:
        """Spawn the workers. Process.start() writes the pickled arguments into a pipe and blocks until
        the child reads them, so it runs in a thread: the control plane must not wait on a child's start."""
        self._started = True
        loop = asyncio.get_running_loop()
        config, codec, bodies, ids, sample_count = self._args
        for index in range(self.count):
            parent, child = self._context.Pipe()
            process = self._context.Process(target=worker_main, name=f"profiler-worker-{index}", daemon=True,
                                            args=(child, config, codec, bodies, ids, sample_count, index, self.count))
            self._conns.append(parent)
            self._procs.append(process)
            self._ready.append(loop.create_future())
            await asyncio.to_thread(process.start)
            child.close()
            loop.add_reader(parent.fileno(), self._readable, index)
            os.set_blocking(parent.fileno(), True)  # read whole messages (the poller made it non-blocking)

    @property
    def stopping(self) -> bool:
        """Whether stop() was called."""
        return self._stopping

    def stop(self) -> None:
        """Tell every worker to stop sending; their stages end and report what they measured."""
        self._stopping = True
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(("stop",))

    def _readable(self, index: int) -> None:
        conn = self._conns[index]
        try:
            message = conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(conn.fileno())
            self._fail(f"load worker {index} (pid {self._procs[index].pid}) died "
                       f"(exit code {self._procs[index].exitcode})")
            return
        kind = message[0]
        if kind == "results":
            self._predictions(message[2])
        elif kind == "partial":
            self._partial(index, message[1], message[2])
        elif kind == "stage":
            future = self._stage_results.pop(index, None)
            if future is not None and not future.done():
                future.set_result(message[1])
        elif kind == "ready" and not self._ready[index].done():
            self._ready[index].set_result(message[2])

    def _predictions(self, items: list[tuple[int, int, list[Any] | None, str]]) -> None:
        """A worker's batch of (first sample, batch, predictions, outcome): one Prediction each, to every consumer."""
        consumers = self._consumers
        for first, batch, predictions, outcome in items:
            prediction = Prediction(first, batch, outcome, predictions if outcome == OK else None)
            for consumer in consumers:
                consumer.add(prediction)

    def _partial(self, index: int, stage_index: int, wire: dict[str, Any]) -> None:
        """A worker's figures so far: rebuild the live recorder, and ask `until` whether the stage should end."""
        self._partials[index] = wire
        live = self._live
        if live is None or live.stage.index != stage_index:
            return
        live.rebuild([self._partials[k] for k in sorted(self._partials)])
        if self._until is not None and not self._ending and self._until():
            self._ending = True
            for other in self._conns:
                with contextlib.suppress(OSError):
                    other.send(("end",))

    def _fail(self, reason: str) -> None:
        self._failed = reason
        futures: list[asyncio.Future[Any]] = [*self._ready, *self._stage_results.values()]
        for future in futures:
            if not future.done():
                future.set_exception(ProfilerError(reason))

    async def run(self, stage: Stage, recorder: StageRecorder, until: Callable[[], bool] | None = None) -> None:
        """Every worker sends its share of the stage from one shared start; their figures are merged exactly.

        Every 0.5 s the workers' figures so far rebuild `recorder` (the live view for /report and
        /metrics), and `until` is asked then; when it says so, every worker ends the stage.
        """
        if self._failed:
            raise ProfilerError(self._failed)
        if not self._started:
            await self._start()
        async with asyncio.timeout(READY_TIMEOUT_S):
            await asyncio.gather(*self._ready)
        loop = asyncio.get_running_loop()
        start_ns = self._clock() + START_DELAY_NS
        recorder.open(start_ns)
        fields = {"index": stage.index, "rate_rps": stage.rate_rps, "duration_s": stage.duration_s,
                  "warmup": stage.warmup, "requests": stage.requests}
        futures = []
        for index, conn in enumerate(self._conns):
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._stage_results[index] = future
            futures.append(future)
            conn.send(("stage", fields, start_ns, recorder.window_ns, recorder.window_percentile))
        self._partials = {}
        self._live = recorder
        self._until = until
        self._ending = False
        try:
            wires = await asyncio.gather(*futures)
        finally:
            self._live = None
            self._until = None
        recorder.rebuild(list(wires))

    async def close(self) -> None:
        """Tell the workers to exit and wait for them (terminating any that hang)."""
        loop = asyncio.get_running_loop()
        for conn in self._conns:
            try:
                loop.remove_reader(conn.fileno())
                conn.send(("exit",))
            except (OSError, ValueError):
                pass
        for process in self._procs:
            # Daemon threads (aio.in_thread), not asyncio.to_thread: when a stopped run's grace period ends
            # during this wait, the run is cancelled, and the event loop's shutdown would otherwise wait
            # out each join (5 s, then 5 s more) before the process could exit.
            await aio.in_thread(process.join, 5.0, name="profiler-worker-join")
            if process.is_alive():
                process.terminate()
                await aio.in_thread(process.join, 5.0, name="profiler-worker-join")
        for conn in self._conns:
            conn.close()
