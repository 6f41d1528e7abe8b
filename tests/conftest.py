"""Shared fixtures: the bundled example model server as a real subprocess on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator

import pytest

from profiler.app.demo import start_example_server, stop_process

ExampleServer = tuple[subprocess.Popen[str], str]

REQUIRE_ALL = os.environ.get("PROFILER_TESTS_REQUIRE_ALL") == "1"
"""Set by .ci/run: there, a test whose outside part (a system package, a model server) is missing fails."""


def require(present: bool, what: str, install: str) -> None:
    """Skip the test when `what` is missing on this machine, saying how to install it; fail instead in CI."""
    if present:
        return
    message = f"{what} is absent (CI installs it: {install})"
    if REQUIRE_ALL:
        pytest.fail(message + "; PROFILER_TESTS_REQUIRE_ALL=1 makes a missing part a failure", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def start_server() -> Iterator[Callable[..., ExampleServer]]:
    """Start example servers with extra flags; every one is stopped after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(*flags: str) -> ExampleServer:
        proc, url = start_example_server(list(flags))
        started.append(proc)
        return proc, url

    yield start
    for proc in started:
        stop_process(proc)


@pytest.fixture(scope="session")
def example_server() -> Iterator[ExampleServer]:
    """One well-behaved example model for the whole session (read-only use); also serves V2 gRPC."""
    proc, url = start_example_server(["--grpc-port", "0"])
    yield proc, url
    stop_process(proc)


@pytest.fixture(scope="session")
def example_grpc_url(example_server: ExampleServer) -> str:
    """The session example model's V2 gRPC address, grpc://127.0.0.1:PORT."""
    from profiler.app.demo import read_grpc_url

    return read_grpc_url(example_server[0])
