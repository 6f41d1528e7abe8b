"""The dispatcher's sleep wakes at absolute monotonic deadlines, never before them."""

from __future__ import annotations

import asyncio
import time

import pytest

from profiler.load.timer import Sleeper


@pytest.mark.parametrize("precise", [True, False])
async def test_sleeper_never_wakes_early_and_passes_past_deadlines(precise):
    sleeper = Sleeper(precise=precise)
    try:
        for wait_ns in (0, -5_000_000, 300_000, 2_000_000, 7_000_000):
            deadline = time.monotonic_ns() + wait_ns
            await sleeper.until(deadline)
            now = time.monotonic_ns()
            assert now >= deadline
            # A correctness bound only (the loop may be busy on a shared machine): it did not hang.
            assert now - deadline < 1_000_000_000
    finally:
        sleeper.close()
    assert not sleeper.precise


async def test_sleeper_survives_a_cancelled_sleep():
    sleeper = Sleeper()
    task = asyncio.ensure_future(sleeper.until(time.monotonic_ns() + 10_000_000_000))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic_ns() + 1_000_000
    await sleeper.until(deadline)
    assert time.monotonic_ns() >= deadline
    sleeper.close()
