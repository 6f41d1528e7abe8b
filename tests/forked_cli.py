"""The client of tests/cli_forkserver.py: `python -m profiler ARGS` per case, forked from one import."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


@dataclass
class Outcome:
    """What one command line did: exit code, stdout, stderr."""

    rc: int
    stdout: str
    stderr: str


class ForkedCli:
    """One forkserver process; `run` a command line to its end, or `spawn` one and `finish` it later."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "cli_forkserver.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert json.loads(self._read()) == {"ready": True}

    def _read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the forkserver ended"
        return line

    def _ask(self, case: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self._read())
        return answer

    @staticmethod
    def _case(folder: Path, argv: list[str], options: dict[str, Any]) -> dict[str, Any]:
        return {"argv": argv, "cwd": str(folder), "stdout": str(folder / ".stdout"),
                "stderr": str(folder / ".stderr"), "timeout_s": 60, **options}

    def run(self, folder: Path, argv: list[str], **options: Any) -> Outcome:
        """`python -m profiler ARGV` in `folder` to its end (60 s at most); stdout and stderr are kept in
        folder/.stdout and folder/.stderr."""
        result = self._ask(self._case(folder, argv, options))
        assert not result["timed_out"], f"{argv} did not end within 60 s"
        return self.outcome(folder, result["rc"])

    def spawn(self, folder: Path, argv: list[str], **options: Any) -> int:
        """Start `python -m profiler ARGV` in `folder` and return its pid at once."""
        pid: int = self._ask(self._case(folder, argv, {**options, "detach": True}))["pid"]
        return pid

    def finish(self, folder: Path, pid: int, sig: int = signal.SIGTERM) -> Outcome:
        """Signal a spawned command line and wait for its end (30 s at most)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        result = self._ask({"wait": pid, "timeout_s": 30})
        assert not result["timed_out"], f"pid {pid} did not end within 30 s of signal {sig}"
        return self.outcome(folder, result["rc"])

    @staticmethod
    def outcome(folder: Path, rc: int) -> Outcome:
        return Outcome(rc, (folder / ".stdout").read_text(errors="replace"),
                       (folder / ".stderr").read_text(errors="replace"))

    def close(self) -> None:
        """End the forkserver."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()
