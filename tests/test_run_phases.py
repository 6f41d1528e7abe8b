"""A run's phases in process: the accuracy pass against a model that never answers, and the hold-out set
read, hashed and encoded off the event loop. Real HTTP servers on 127.0.0.1 (tests/test_durability.py
has the signals, in real processes)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sidecar_helpers import write_profile
from stub_model import StubModel

from profiler.app import run as run_module
from profiler.app.run import ACCURACY_CONCURRENCY, ACCURACY_GIVE_UP, execute
from profiler.config import load_config
from profiler.dataset import load_dataset
from profiler.examples.holdout import write_holdout
from profiler.load.engine import build_bodies
from profiler.state import new_state

pytestmark = pytest.mark.serial  # timing bounds: run alone after the parallel part (Makefile)


@pytest.fixture
def never_answers() -> Iterator[StubModel]:
    """Ready, metadata fine, and not one inference request ever answered."""
    stub = StubModel("hang-infer")
    yield stub
    stub.close()


def holdout_of(path: Path, copies: int) -> int:
    """The example hold-out set `copies` times over (ids kept unique); returns the sample count."""
    write_holdout(path)
    lines = path.read_text().splitlines()
    path.write_text("".join(line.replace('"id":"', f'"id":"{copy}-', 1) + "\n"
                            for copy in range(copies) for line in lines))
    return copies * len(lines)


async def test_the_accuracy_pass_gives_up_on_a_model_that_never_answers(
        tmp_path: Path, never_answers: StubModel) -> None:
    # 2,160 samples, 16 in flight, a 0.3 s timeout: sending them all would take 40 s of timeouts.
    samples = holdout_of(tmp_path / "holdout.jsonl", 6)
    profile = write_profile(tmp_path, never_answers.url, 1, tmp_path / "holdout.jsonl", settle_s=0,
                            stages="{rate_rps: 10, duration_s: 0.5}")
    profile.write_text(profile.read_text().replace("timeout_s: 5,", "timeout_s: 0.3,"))
    config = load_config(profile)
    report = await execute(new_state(config))

    accuracy = report["accuracy"]
    # It stops sending once the rule holds; only the requests already in flight still time out.
    assert ACCURACY_GIVE_UP <= accuracy["errors"] < ACCURACY_GIVE_UP + ACCURACY_CONCURRENCY, accuracy
    assert accuracy["incomplete"].startswith(f"gave up: {ACCURACY_GIVE_UP} of "), accuracy
    assert accuracy["unsent"] == samples - accuracy["errors"] and accuracy["scored"] == 0, accuracy
    assert report["run"]["status"] == "completed" and report["run"]["phases"]["accuracy"] == "done"
    # The load still runs, and its failures decide the verdict: a model that never answers fails.
    assert report["stages"][0]["errors"] == report["stages"][0]["sent"] > 0
    assert report["verdict"]["status"] == "fail"


async def test_the_hold_out_is_read_hashed_and_encoded_off_the_event_loop(
        tmp_path: Path, example_server: tuple[Any, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A 75 MB hold-out set is seconds of parsing and encoding: on the loop, /healthz would wait for them."""
    proc, url = example_server
    write_holdout(tmp_path / "holdout.jsonl")
    config = load_config(write_profile(tmp_path, url, proc.pid, tmp_path / "holdout.jsonl", settle_s=0,
                                       stages="{rate_rps: 20, duration_s: 0.2}"))
    threads: dict[str, list[int]] = {"load_dataset": [], "build_bodies": []}

    def spy_load(*args: Any, **kwargs: Any) -> Any:
        threads["load_dataset"].append(threading.get_ident())
        return load_dataset(*args, **kwargs)

    def spy_build(*args: Any) -> Any:
        threads["build_bodies"].append(threading.get_ident())
        return build_bodies(*args)

    monkeypatch.setattr(run_module, "load_dataset", spy_load)
    monkeypatch.setattr(run_module, "build_bodies", spy_build)
    report = await execute(new_state(config))
    assert [len(t) for t in threads.values()] == [1, 1], threads
    assert threading.get_ident() not in threads["load_dataset"] + threads["build_bodies"]
    assert report["dataset"]["samples"] == 360 and report["run"]["status"] == "completed"
    assert all(state == "done" for state in report["run"]["phases"].values()), report["run"]["phases"]
