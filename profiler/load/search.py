"""Drives the load: the configured stages one after another, or a capacity search that picks each next rate.

I/O shell around the pure schedule and capacity rules: it owns the stage loop, while a driver
(the in-process engine, or the worker pool) sends each stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from profiler.config import Config
from profiler.core.units import NS_PER_S
from profiler.judge.capacity import judge_window_stage, next_search_rate, windows_broken, windows_stable
from profiler.load.engine import Engine
from profiler.measure.latency import StageRecorder, TokenSlo
from profiler.schedule import Stage, arrival_gap_ns, arrival_offsets_ns, make_stage, stage_starts_s


class Driver(Protocol):
    """Sends one stage's timetable into a recorder (in this process, or through worker processes)."""

    @property
    def stopping(self) -> bool:
        """Whether stop() was called."""
        ...

    def stop(self) -> None:
        """Stop sending; what is in flight still finishes and is recorded."""
        ...

    async def run(self, stage: Stage, recorder: StageRecorder, until: Callable[[], bool] | None = None,
                  start_ns: int | None = None) -> None:
        """Send the stage and wait for its requests; `start_ns` (monotonic) is when it starts (None: now)."""
        ...

    async def close(self) -> None:
        """Release what the driver holds (worker processes)."""
        ...


class LocalDriver:
    """The engine in this process's own event loop."""

    def __init__(self, engine: Engine, arrival: str, seed: int, part: int = 0, parts: int = 1) -> None:
        self.engine = engine
        self._arrival = arrival
        self._seed = seed
        self._part = part
        self._parts = parts

    @property
    def stopping(self) -> bool:
        """Whether stop() was called."""
        return self.engine.stopping

    def stop(self) -> None:
        """Stop the engine."""
        self.engine.stop()

    async def run(self, stage: Stage, recorder: StageRecorder, until: Callable[[], bool] | None = None,
                  start_ns: int | None = None) -> None:
        """Send this process's share of the stage's timetable (all of it unless the load is split into parts)."""
        offsets = arrival_offsets_ns(stage, self._arrival, self._seed, part=self._part, parts=self._parts)
        gap_ns = None if stage.closed_loop else arrival_gap_ns(stage.rate_rps, self._arrival, self._parts)
        await self.engine.run_stage(stage, offsets, recorder, until, start_ns=start_ns, gap_ns=gap_ns,
                                    even=self._arrival == "constant")

    async def close(self) -> None:
        """Nothing to release: the transport belongs to the run."""


def token_slo(config: Config) -> TokenSlo:
    """Goodput's SLOs from the objective."""
    objective = config.objective
    return TokenSlo(objective.ttft_ms, objective.tpot_ms, objective.e2e_ms)


def stage_failed_budget(config: Config, recorder: StageRecorder) -> bool:
    """Whether load.on_error is stop and this measured stage's errors broke the objective's budget."""
    if config.load.on_error != "stop" or recorder.stage.warmup:
        return False
    rate = recorder.summary()["error_rate"]
    return rate is None or rate > config.objective.max_error_rate


async def run_stages(driver: Driver, stages: list[Stage], config: Config, recorders: list[StageRecorder]) -> str:
    """Each planned stage in turn, its recorder appended to `recorders` as it starts (the live view); returns
    the run's status (completed, stopped or aborted)."""
    starts = _shared_starts(stages, config)
    for position, stage in enumerate(stages):
        if driver.stopping:
            return "aborted"
        recorder = StageRecorder(stage, share=1 / config.load.part.count if config.load.part else 1.0,
                                 slo=token_slo(config))
        recorders.append(recorder)
        await driver.run(stage, recorder, start_ns=None if starts is None else starts[position])
        if stage_failed_budget(config, recorder):
            return "stopped"
    return "aborted" if driver.stopping else "completed"


def _shared_starts(stages: list[Stage], config: Config) -> list[int] | None:
    """Each stage's start on this process's monotonic clock when the profile gives a shared wall-clock start
    (load.start_at): every part computes the same wall-clock plan, so their stages start together. A start
    already past is kept: the engine then sends what is overdue at once, and the lag histogram shows it."""
    if config.load.start_at is None:
        return None
    offset_ns = time.monotonic_ns() - time.time_ns()  # monotonic = wall + offset, read once for the whole plan
    return [int(at * NS_PER_S) + offset_ns for at in stage_starts_s(stages, config.load.start_at)]


async def run_search(driver: Driver, config: Config, recorders: list[StageRecorder],
                     clock: Callable[[], int] = time.monotonic_ns) -> str:
    """Capacity search: rise by the factor until a stage breaks, then bisect to the precision.

    Each stage's recorder is appended to `recorders` as it starts. Each stage is cut into windows of
    window_s; it settles once the last `windows` windows are stable (perf_analyzer's rule) or all
    missed the objective, or after max_windows.
    """
    search = config.load.search
    assert search is not None
    objective = config.objective
    if config.load.warmup_s > 0:
        warmup = make_stage(0, search.start_rps, config.load.warmup_s, warmup=True)
        recorder = StageRecorder(warmup)
        recorders.append(recorder)
        await driver.run(warmup, recorder)
    history: list[tuple[float, bool]] = []
    window_ns = int(search.window_s * NS_PER_S)
    while len(history) < search.max_stages and not driver.stopping:
        rate = next_search_rate(history, search.start_rps, search.factor, search.max_rps, search.precision)
        if rate is None:
            break
        stage = make_stage(len(history) + 1, rate, search.window_s * search.max_windows)
        recorder = StageRecorder(stage, window_ns=window_ns, window_percentile=objective.percentile,
                                 slo=token_slo(config))
        recorders.append(recorder)
        await driver.run(stage, recorder, _settled(recorder, search.windows, search.stability,
                                                   objective.latency_ms, clock))
        if driver.stopping:
            return "aborted"
        summary = recorder.summary()
        verdict = judge_window_stage(summary, objective.percentile, objective.latency_ms,
                                     objective.max_error_rate, search.windows, search.stability)
        history.append((rate, bool(verdict["sustained"])))
        if stage_failed_budget(config, recorder):
            return "stopped"
    return "completed"


def _settled(recorder: StageRecorder, count: int, tolerance: float, latency_ms: float,
             clock: Callable[[], int]) -> Callable[[], bool]:
    seen = [0]

    def settled() -> bool:
        recorder.close_windows_until(clock())
        n = len(recorder.windows)
        if n == seen[0]:
            return False
        seen[0] = n
        return windows_stable(recorder.windows, count, tolerance, latency_ms) or windows_broken(
            recorder.windows, count, latency_ms)

    return settled
