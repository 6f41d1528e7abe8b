"""Run `python -m profiler ARGS` many times for the price of one start: a fork per case.

Importing the profiler (scikit-learn, scipy, grpc) takes 2-3 s of CPU; a table of forty command
lines would spend two minutes importing. This process imports the CLI once, then for each case
read from stdin (one JSON object a line) forks a child that is exactly `python -m profiler ARGS`
from there on: its own process, its own stdout and stderr (files), its own exit status; an
exception that escapes prints its traceback and exits 1, as the interpreter does.

A case may ask for the child to drop to another user first (`uid`: the tests run as root, for whom
a mode-000 file is readable; as uid 65534 the kernel really refuses it with EACCES), and may set
module constants (`patch`: e.g. a shorter wait for a FIFO nobody writes to).
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import signal
import sys
import threading
import time
import traceback
from typing import Any

import profiler.cli  # noqa: F401  (the import every case shares: the point of this process)


def child(case: dict[str, Any]) -> int:
    """The forked child: `python -m profiler ARGS` with the case's streams, directory, user and patches."""
    for stream, fd in ((case["stdout"], 1), (case["stderr"], 2)):
        target = os.open(stream, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        os.dup2(target, fd)
        os.close(target)
    os.chdir(case["cwd"])
    os.environ.update(case.get("env", {}))
    for dotted, value in case.get("patch", {}).items():
        module, _, name = dotted.rpartition(".")
        setattr(importlib.import_module(module), name, value)
    if case.get("uid") is not None:
        os.setgroups([])
        os.setgid(case["uid"])
        os.setuid(case["uid"])
    sys.argv = ["profiler", *case["argv"]]
    try:
        runpy.run_module("profiler", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def run(case: dict[str, Any]) -> dict[str, Any]:
    """Fork and run the case; wait for it (killing it after its timeout) and answer its exit code, or with
    `detach` answer its pid at once (a later case `{"wait": pid}` waits for it)."""
    if "wait" in case:
        return wait(case["wait"], case.get("timeout_s", 60))
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os._exit(child(case))
    if case.get("detach"):
        return {"pid": pid}
    return wait(pid, case.get("timeout_s", 60))


def wait(pid: int, timeout_s: float) -> dict[str, Any]:
    """The exit code of child `pid`, killed after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"rc": os.waitstatus_to_exitcode(status), "timed_out": False}
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"rc": -9, "timed_out": True}
        time.sleep(0.01)


def main() -> None:
    """One case per stdin line, one result per stdout line."""
    if threading.active_count() != 1:  # fork copies only the calling thread: none may run yet
        raise SystemExit(f"threads are running after the import: {threading.enumerate()}")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps(run(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
