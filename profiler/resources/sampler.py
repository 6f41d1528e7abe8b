"""Reads the watched processes' memory and CPU with psutil. The only module that touches psutil."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import psutil


@dataclass
class Reading:
    """RSS summed over the process tree, cumulative CPU seconds, and how many processes were read."""

    rss_bytes: int
    cpu_s: float
    processes: int


@dataclass
class ProcessSampler:
    """Finds the model's processes (a PID or a command-line pattern, children included) and reads them.

    `problems` collects what could not be measured and why, for the report.
    """

    pid: int | None = None
    cmdline: str | None = None
    problems: list[str] = field(default_factory=list)
    _cpu_done_s: float = 0.0
    _cpu_seen: dict[int, float] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """What the report says was measured."""
        if self.pid is not None:
            return f"psutil rss of pid {self.pid} and children"
        if self.cmdline is not None:
            return f"psutil rss of processes matching {self.cmdline!r} and children"
        return "none"

    def _roots(self) -> list[psutil.Process]:
        if self.pid is not None:
            try:
                return [psutil.Process(self.pid)]
            except psutil.NoSuchProcess:
                self._problem(f"process {self.pid} does not exist (or has exited)")
                return []
        if self.cmdline is not None:
            pattern = re.compile(self.cmdline)
            me = os.getpid()
            found = []
            for proc in psutil.process_iter(["pid", "cmdline"]):
                line = " ".join(proc.info.get("cmdline") or [])
                if proc.info["pid"] != me and pattern.search(line):
                    found.append(proc)
            if not found:
                self._problem(f"no process matches the pattern {self.cmdline!r}")
            return _topmost(found)
        return []

    def read(self) -> Reading | None:
        """One reading, or None when no process could be read."""
        roots = self._roots()
        if not roots:
            return None
        rss = 0
        count = 0
        alive: dict[int, float] = {}
        seen: set[int] = set()
        for root in roots:
            try:
                tree = [root, *root.children(recursive=True)]
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except psutil.AccessDenied:
                self._problem(f"no permission to read the children of pid {root.pid}")
                tree = [root]
            for proc in tree:
                if proc.pid in seen:
                    continue
                seen.add(proc.pid)
                try:
                    with proc.oneshot():
                        rss += proc.memory_info().rss
                        times = proc.cpu_times()
                        alive[proc.pid] = times.user + times.system
                    count += 1
                except (psutil.NoSuchProcess, psutil.ZombieProcess):
                    continue
                except psutil.AccessDenied:
                    self._problem(f"no permission to read pid {proc.pid}")
        # CPU of processes that exited since the last reading stays counted.
        for pid, cpu in self._cpu_seen.items():
            if pid not in alive:
                self._cpu_done_s += cpu
        self._cpu_seen = alive
        if count == 0:
            self._problem("the watched processes exited")
            return None
        return Reading(rss_bytes=rss, cpu_s=self._cpu_done_s + sum(alive.values()), processes=count)

    def _problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)


def _topmost(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Drop matches whose parent also matched, so a tree is counted once."""
    pids = {p.pid for p in processes}
    roots = []
    for proc in processes:
        try:
            parents = {parent.pid for parent in proc.parents()}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            parents = set()
        if not parents & pids:
            roots.append(proc)
    return roots
