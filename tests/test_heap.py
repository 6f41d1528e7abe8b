"""The garbage collector's part (profiler.core.heap): a stage holds off full collections and freezes nothing, so a
finished stage's objects (its cyclic HDR histograms among them) are collected, in a sidecar that lives for years."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from pathlib import Path
from typing import Any

from sidecar_helpers import write_profile

from profiler.app.run import execute
from profiler.config import load_config
from profiler.core import heap
from profiler.examples.holdout import write_holdout
from profiler.load.engine import Engine
from profiler.measure.latency import StageRecorder
from profiler.schedule import Stage, arrival_offsets_ns
from profiler.state import new_state
from profiler.transports.base import FunctionTransport


def test_young_collections_only_holds_off_full_collections_and_restores_the_thresholds() -> None:
    before = gc.get_threshold()
    with heap.young_collections_only():
        assert gc.get_threshold() == (before[0], before[1], heap.NO_FULL_COLLECTION)
        with heap.young_collections_only():  # nested, or two engines' stages overlapping on one loop
            assert gc.get_threshold()[2] == heap.NO_FULL_COLLECTION
        assert gc.get_threshold()[2] == heap.NO_FULL_COLLECTION  # the outer block still holds
    assert gc.get_threshold() == before


def test_overlapping_blocks_restore_the_thresholds_when_the_last_one_ends() -> None:
    before = gc.get_threshold()
    first, second = heap.young_collections_only(), heap.young_collections_only()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # ends before the second: the second stage is still running
    assert gc.get_threshold()[2] == heap.NO_FULL_COLLECTION
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before


def test_the_baseline_is_frozen_once() -> None:
    heap.freeze_baseline()  # this process's first call (or a no-op after another test's)
    frozen = gc.get_freeze_count()
    assert heap.freeze_baseline() is False
    assert gc.get_freeze_count() == frozen


async def test_a_stage_freezes_nothing_and_its_histograms_are_collected_once_dropped() -> None:
    async def answer(path: str, body: bytes) -> bytes:
        return body

    engine = Engine(FunctionTransport(answer), "/p", [b"1"], lambda body, n: [1] * n, sample_count=1)
    stage = Stage(1, 200, 0.1)
    recorder = StageRecorder(stage)
    histogram = weakref.ref(recorder.latency)
    frozen = gc.get_freeze_count()
    before = gc.get_threshold()
    await engine.run_stage(stage, arrival_offsets_ns(stage), recorder)
    assert recorder.summary()["completed"] == 20
    assert gc.get_freeze_count() == frozen  # a freeze here would keep every object alive now for good
    assert gc.get_threshold() == before
    # An HDR histogram refers to its encoder and back: only the cyclic collector can free it, never a frozen one.
    del recorder
    await asyncio.sleep(0)
    gc.collect()
    assert histogram() is None


async def test_a_finished_runs_histograms_are_collected_after_the_next_run(
        tmp_path: Path, example_server: tuple[Any, str]) -> None:
    """The next run freezes its hold-out set (prepare_inputs): the runs before it must not be frozen with it."""
    proc, url = example_server
    holdout = tmp_path / "holdout.jsonl"
    write_holdout(holdout)
    config = load_config(write_profile(tmp_path, url, proc.pid, holdout, stages="{rate_rps: 40, duration_s: 0.3}",
                                       settle_s=0.1))
    first = new_state(config)
    await execute(first)
    histogram = weakref.ref(first.recorders[0].latency)
    del first
    # The run's helper threads hand back their results a moment before they end (and let go of the state); a
    # sidecar's next run starts on a request, never within that moment.
    for thread in threading.enumerate():
        if thread.name.startswith(("profiler-report", "profiler-history", "profiler-dataset", "profiler-blocking")):
            thread.join(10)
    await execute(new_state(config))
    gc.collect()
    assert histogram() is None
