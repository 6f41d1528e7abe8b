"""Reads the model's memory and CPU: its process tree (psutil and /proc), its cgroup, or its /metrics.

The only module that touches psutil, procfs, cgroup files or the target's metrics endpoint. The
OS boundary is injected (the proc root, the cgroup directory, a file reader, a URL fetcher, a
PID lister), so the same code reads real processes in tests and fixture trees where the parsing,
not the OS, is under test.

Figures, in order of preference for the memory the analysis uses:
  cgroup working set (memory.current - inactive_file: what the kubelet and the OOM killer see),
  PSS summed over the process tree (shared pages counted once across forked workers),
  RSS summed over the tree (double-counts pages the workers share),
  the target's own process_resident_memory_bytes (when nothing local is visible).
The first figure that can be read is kept for the whole run, so the series is one figure.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import psutil

from profiler.core.redact import redact_text, redact_url
from profiler.measure.resources.parse import (
    CgroupMemory,
    GpuReading,
    ScrapedProcess,
    cgroup_memory,
    parse_flat_keyed,
    parse_process_metrics,
    parse_single_value,
    parse_smaps_rollup,
)

ReadText = Callable[[Path], str]
"""Reads a file's text; raises OSError (FileNotFoundError, PermissionError, ...) as open() does."""
Fetch = Callable[[str, float], str]
"""Fetches a URL's body as text within a timeout in seconds; raises OSError or ValueError."""
ListPids = Callable[[], Iterable[int]]

CGROUP_WORKING_SET = "cgroup working set"
PSS = "pss"
RSS = "rss"
SCRAPED_RSS = "scraped process_resident_memory_bytes"
MEMORY_FIGURES = (CGROUP_WORKING_SET, PSS, RSS, SCRAPED_RSS)
CPU_CGROUP = "cgroup cpu.stat usage_usec"
CPU_PROCESSES = "process tree cpu times"
CPU_SCRAPED = "scraped process_cpu_seconds_total"
MAX_SCRAPE_BYTES = 4 * 2**20


def read_text(path: Path) -> str:
    """The real file reader."""
    return path.read_text(encoding="utf-8", errors="replace")


def fetch_url(url: str, timeout_s: float) -> str:
    """The real fetcher: GET the URL, at most 4 MiB of body."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        body: bytes = response.read(MAX_SCRAPE_BYTES)
    return body.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class TreeFigures:
    """Memory summed over the watched processes (None where some process could not be read) and CPU."""

    rss_bytes: int
    pss_bytes: int | None
    uss_bytes: int | None
    cpu_s: float
    processes: int


@dataclass(frozen=True, slots=True)
class Reading:
    """One sample: the chosen memory figure, cumulative CPU seconds, and the other figures seen."""

    memory_bytes: int | None
    cpu_s: float | None
    processes: int = 0
    rss_bytes: int | None = None
    pss_bytes: int | None = None
    uss_bytes: int | None = None
    cgroup: CgroupMemory | None = None
    gpu: GpuReading | None = None


class _Problems:
    """What could not be measured and why, each said once."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def _problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def _forget(self, text: str) -> None:
        if text in self.problems:
            self.problems.remove(text)


class ProcessTree(_Problems):
    """The model's processes with all their children: by PID, by command-line pattern, or the pod's others.

    `pod=True` watches every process that is not the sidecar, its ancestors or its children (a pod
    with a shared process namespace).
    """

    def __init__(self, pid: int | None = None, pattern: str | None = None, pod: bool = False, *,
                 proc_root: Path = Path("/proc"), read: ReadText = read_text,
                 list_pids: ListPids = psutil.pids, own_pid: int | None = None) -> None:
        super().__init__()
        if sum((pid is not None, pattern is not None, pod)) != 1:
            raise ValueError("watch exactly one of: a pid, a command-line pattern, the pod")
        self.pid = pid
        self.pattern = re.compile(pattern) if pattern is not None else None
        self.pod = pod
        self.proc_root = proc_root
        self.read = read
        self.list_pids = list_pids
        self.own_pid = os.getpid() if own_pid is None else own_pid
        self.lost: str | None = None
        """Set when the watched processes vanished or were replaced after they had been read."""
        self._roots_seen: set[int] | None = None
        self._cpu_done_s = 0.0
        self._cpu_seen: dict[int, float] = {}
        self._smaps_ok = True
        self.pids: set[int] = set()
        """The PIDs of the last reading (what NVML's per-process figures are matched against)."""

    def describe(self) -> str:
        """The watched processes, in words."""
        if self.pid is not None:
            return f"pid {self.pid} and its children"
        if self.pattern is not None:
            return f"processes matching {self.pattern.pattern!r} and their children"
        return "the other processes in this pod"

    def _own(self) -> tuple[set[int], set[int]]:
        """The sidecar's ancestors (with itself) and its descendants."""
        ancestors = {self.own_pid}
        descendants: set[int] = set()
        try:
            me = psutil.Process(self.own_pid)
            ancestors |= {p.pid for p in me.parents()}
            descendants = {p.pid for p in me.children(recursive=True)}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
        return ancestors, descendants

    def _members(self) -> list[psutil.Process]:
        """Every watched process now: the roots and their children, each once."""
        if self.pid is not None:
            return self._pid_members(self.pid)
        ancestors, descendants = self._own()
        if self.pattern is not None:
            return self._pattern_members(self.pattern, ancestors)
        return self._pod_members(ancestors | descendants)

    def _pid_members(self, pid: int) -> list[psutil.Process]:
        """The process `pid` and its children; none, and the tree lost, once it has exited."""
        try:
            roots = [psutil.Process(pid)]
            exited = roots[0].status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            exited = True
        if exited:
            self._lose(f"pid {pid} does not exist or has exited")
            return []
        return self._with_children(roots)

    def _matching(self, pattern: re.Pattern[str], ancestors: set[int]) -> list[psutil.Process]:
        """Processes whose command line matches, the sidecar's ancestors (whose lines may match too) left out."""
        found = []
        for pid in self.list_pids():
            if pid in ancestors:
                continue
            try:
                proc = psutil.Process(pid)
                line = " ".join(proc.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if pattern.search(line):
                found.append(proc)
        return found

    def _pattern_members(self, pattern: re.Pattern[str], ancestors: set[int]) -> list[psutil.Process]:
        """The topmost matching processes and their children; a change of those roots is a restart."""
        roots = _topmost(self._matching(pattern, ancestors))
        if not roots:
            self._lose(f"no process matches the pattern {pattern.pattern!r}")
            return []
        pids = {p.pid for p in roots}
        if self._roots_seen is None:  # found at last: not finding it while it started is no problem
            self._forget(f"no process matches the pattern {pattern.pattern!r}")
        elif pids != self._roots_seen:
            self._lose(f"the processes matching {pattern.pattern!r} changed from pids "
                       f"{sorted(self._roots_seen)} to {sorted(pids)} (a restart?)")
        self._roots_seen = pids
        return self._with_children(roots)

    def _pod_members(self, own: set[int]) -> list[psutil.Process]:
        """Every visible process but the sidecar's own (`own`: ancestors, itself, descendants) and kernel threads."""
        members = []
        for pid in self.list_pids():
            if pid in own or pid <= 0:
                continue
            try:
                proc = psutil.Process(pid)
                if proc.ppid() == 2 or pid == 2:  # kernel threads (children of kthreadd)
                    continue
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except psutil.AccessDenied:
                self._problem(f"no permission to inspect pid {pid}")
                continue
            members.append(proc)
        why = "no other process is visible in this pod (is shareProcessNamespace set?)"
        if not members:
            self._lose(why)
        elif not self._cpu_seen:
            self._forget(why)
        return members

    def _with_children(self, roots: list[psutil.Process]) -> list[psutil.Process]:
        members: dict[int, psutil.Process] = {}
        for root in roots:
            members.setdefault(root.pid, root)
            try:
                for child in root.children(recursive=True):
                    members.setdefault(child.pid, child)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except psutil.AccessDenied:
                self._problem(f"no permission to list the children of pid {root.pid}; they are not counted")
        return list(members.values())

    def _lose(self, why: str) -> None:
        self._problem(why)
        if self._cpu_seen or self._roots_seen is not None:
            self.lost = self.lost or why

    def _smaps(self, proc: psutil.Process) -> tuple[int | None, int | None]:
        """(PSS, USS) of one process from smaps_rollup, or psutil's smaps reading where there is none."""
        path = self.proc_root / str(proc.pid) / "smaps_rollup"
        try:
            rollup = parse_smaps_rollup(self.read(path))
            return rollup.pss_bytes, rollup.uss_bytes
        except PermissionError as exc:
            self._smaps_ok = False
            self._problem(f"PSS/USS: no permission to read {path} ({exc.strerror}); run the sidecar as the "
                          "model's user or with CAP_SYS_PTRACE; RSS is used instead")
            return None, None
        except ProcessLookupError:  # exited between listing and reading
            return None, None
        except (FileNotFoundError, ValueError):
            pass
        except OSError as exc:
            self._problem(f"PSS/USS: cannot read {path}: {exc.strerror or exc}")
            return None, None
        try:
            full = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return None, None
        except psutil.AccessDenied:
            self._smaps_ok = False
            self._problem(f"PSS/USS: no permission to read the memory maps of pid {proc.pid}; RSS is used instead")
            return None, None
        pss = getattr(full, "pss", None)
        if pss is None:
            self._problem("PSS: this platform has no PSS; RSS is used instead")
        return (int(pss) if pss is not None else None), int(full.uss)

    def read_tree(self) -> TreeFigures | None:
        """Sum RSS, PSS, USS and CPU over the watched processes; None when none could be read."""
        rss = 0
        pss: int | None = 0
        uss: int | None = 0
        alive: dict[int, float] = {}
        for proc in self._members():
            try:
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped: nothing left to measure
                        continue
                    rss_one = proc.memory_info().rss
                    times = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except psutil.AccessDenied:
                self._problem(f"no permission to read pid {proc.pid}; it is not counted")
                continue
            pss_one, uss_one = self._smaps(proc) if self._smaps_ok else (None, None)
            rss += rss_one
            pss = pss + pss_one if pss is not None and pss_one is not None else None
            uss = uss + uss_one if uss is not None and uss_one is not None else None
            alive[proc.pid] = times.user + times.system
        # CPU of processes that exited since the last reading stays counted.
        self._cpu_done_s += sum(cpu for pid, cpu in self._cpu_seen.items() if pid not in alive)
        had_read = bool(self._cpu_seen) or self._roots_seen is not None
        self._cpu_seen = alive
        self.pids = set(alive)
        if not alive:
            if had_read:
                self.lost = self.lost or f"the watched processes ({self.describe()}) exited"
            return None
        return TreeFigures(rss, pss, uss, self._cpu_done_s + sum(alive.values()), len(alive))


class Cgroup(_Problems):
    """A cgroup directory (v2, or v1's memory controller): memory usage, working set, limit and CPU."""

    def __init__(self, path: Path, read: ReadText = read_text) -> None:
        super().__init__()
        self.path = path
        self.read = read
        self.version: int | None = None
        self.oom_kills: int | None = None

    def _value(self, name: str) -> str | None:
        try:
            return self.read(self.path / name)
        except FileNotFoundError:
            return None

    def read_cgroup(self) -> tuple[CgroupMemory | None, float | None]:
        """(memory, cumulative CPU seconds); (None, None) with a problem when the cgroup cannot be read."""
        try:
            current = self._value("memory.current")
            if current is not None:
                self.version = 2
                stat = parse_flat_keyed(self._value("memory.stat") or "")
                limit_text = self._value("memory.max")
                cpu_text = self._value("cpu.stat")
                events = parse_flat_keyed(self._value("memory.events") or "")
                self.oom_kills = events.get("oom_kill")
                cpu = parse_flat_keyed(cpu_text).get("usage_usec") if cpu_text is not None else None
                memory = cgroup_memory(int(current), stat,
                                       parse_single_value(limit_text) if limit_text is not None else None)
                return memory, cpu / 1e6 if cpu is not None else None
            usage = self._value("memory.usage_in_bytes")
            if usage is not None:
                self.version = 1
                stat = parse_flat_keyed(self._value("memory.stat") or "")
                limit_text = self._value("memory.limit_in_bytes")
                memory = cgroup_memory(int(usage), stat,
                                       parse_single_value(limit_text) if limit_text is not None else None)
                return memory, None
        except PermissionError as exc:
            self._problem(f"cgroup: no permission to read {exc.filename} ({exc.strerror})")
            return None, None
        except (OSError, ValueError) as exc:
            self._problem(f"cgroup: cannot read {self.path}: {exc}")
            return None, None
        if not self.path.exists():
            self._problem(f"cgroup: {self.path} does not exist")
        else:
            self._problem(f"cgroup: {self.path} has neither memory.current (v2) nor memory.usage_in_bytes (v1); "
                          "is it a cgroup directory with the memory controller?")
        return None, None


class Scrape(_Problems):
    """The target's own Prometheus endpoint: process_resident_memory_bytes and process_cpu_seconds_total."""

    def __init__(self, url: str, fetch: Fetch = fetch_url, timeout_s: float = 2.0) -> None:
        super().__init__()
        self.url = url
        self.shown_url = redact_url(url)
        """The URL as the report shows it: credentials and query values redacted."""
        self.fetch = fetch
        self.timeout_s = timeout_s

    def read_scrape(self) -> ScrapedProcess | None:
        """One scrape; None with a problem when the endpoint does not answer or lacks the figures."""
        try:
            scraped = parse_process_metrics(self.fetch(self.url, self.timeout_s))
        except urllib.error.HTTPError as exc:
            self._problem(f"metrics endpoint {self.shown_url} answered HTTP {exc.code}")
            return None
        except urllib.error.URLError as exc:
            self._problem(f"metrics endpoint {self.shown_url} did not answer: {redact_text(str(exc.reason))}")
            return None
        except OSError as exc:
            self._problem(f"metrics endpoint {self.shown_url} did not answer: {redact_text(str(exc))}")
            return None
        except ValueError as exc:
            self._problem(f"metrics endpoint {self.shown_url} is not Prometheus text format: {exc}")
            return None
        if scraped.resident_bytes is None:
            self._problem(f"metrics endpoint {self.shown_url} exposes no process_resident_memory_bytes")
        return scraped


class GpuSource(Protocol):
    """A source of the model's GPU memory and utilisation (profiler.measure.resources.gpu: NVML, an endpoint)."""

    @property
    def problems(self) -> list[str]:
        """What could not be measured and why."""

    def read_gpu(self, pids: set[int] | None = None) -> GpuReading | None:
        """One reading; `pids` are the watched processes (for per-process sources). Never raises."""

    def describe(self) -> str:
        """Where the figures come from, in words."""


@dataclass
class ResourceSampler:
    """Reads every configured source and keeps one memory figure and one CPU figure for the whole run.

    `problems` says what could not be measured and why; `incomplete` says why the series does not
    cover the run (the process exited or restarted), in which case memory checks are inconclusive.
    """

    processes: ProcessTree | None = None
    cgroup: Cgroup | None = None
    scrape: Scrape | None = None
    gpu: GpuSource | None = None
    memory_figure: str | None = None
    cpu_figure: str | None = None
    limit_bytes: int | None = None
    last_cgroup: CgroupMemory | None = None
    readings: int = 0
    _own_problems: list[str] = field(default_factory=list)
    _gap: str | None = None

    @property
    def configured(self) -> bool:
        """Whether anything is configured to watch."""
        return any(s is not None for s in (self.processes, self.cgroup, self.scrape, self.gpu))

    @property
    def problems(self) -> list[str]:
        """What could not be measured and why, from every source."""
        out = list(self._own_problems)
        for source in (self.processes, self.cgroup, self.scrape, self.gpu):
            if source is not None:
                out += [p for p in source.problems if p not in out]
        return out

    @property
    def incomplete(self) -> str | None:
        """Why the memory series does not cover the run, or None."""
        if self.processes is not None and self.processes.lost and self.memory_figure in (PSS, RSS):
            return self.processes.lost
        return self._gap

    @property
    def source(self) -> str:
        """Where the memory figure came from, in words."""
        tree = self.processes.describe() if self.processes is not None else ""
        if self.memory_figure == CGROUP_WORKING_SET and self.cgroup is not None:
            return (f"cgroup v{self.cgroup.version} {self.cgroup.path}: working set "
                    "(usage - inactive_file)")
        if self.memory_figure == PSS:
            return f"PSS from /proc/<pid>/smaps_rollup, summed over {tree}"
        if self.memory_figure == RSS:
            return f"RSS (psutil), summed over {tree}"
        if self.memory_figure == SCRAPED_RSS and self.scrape is not None:
            return f"process_resident_memory_bytes scraped from {self.scrape.shown_url}"
        return "none"

    def read(self) -> Reading | None:
        """One sample of every source; None when nothing at all could be read. Never raises."""
        try:
            return self._read()
        except (psutil.Error, OSError, ValueError) as exc:
            # An OS surprise must not end the sampling task: record it and let the run go on.
            problem = f"a reading failed: {type(exc).__name__}: {exc}"
            if problem not in self._own_problems:
                self._own_problems.append(problem)
            return None

    def _read(self) -> Reading | None:
        tree = self.processes.read_tree() if self.processes is not None else None
        cg_memory, cg_cpu = self.cgroup.read_cgroup() if self.cgroup is not None else (None, None)
        if cg_memory is not None:
            self.last_cgroup = cg_memory
            self.limit_bytes = cg_memory.limit_bytes
        scraped = self._scrape(local=tree is not None or cg_memory is not None)
        memory = memory_figures(tree, cg_memory, scraped)
        cpu = cpu_figures(tree, cg_cpu, scraped)
        # The first figure seen is kept for the whole run, so the series is one figure.
        self.memory_figure = self.memory_figure or first_figure(memory)
        self.cpu_figure = self.cpu_figure or first_figure(cpu)
        memory_bytes = memory[self.memory_figure] if self.memory_figure else None
        if memory_bytes is None:
            self._note_gap()
        gpu = self.gpu.read_gpu(self.processes.pids if self.processes is not None else None) if self.gpu else None
        if tree is None and cg_memory is None and scraped is None and gpu is None:
            return None
        self.readings += 1
        reading = build_reading(memory_bytes, cpu[self.cpu_figure] if self.cpu_figure else None, tree, cg_memory,
                                scraped)
        return replace(reading, gpu=gpu) if gpu is not None else reading

    def _scrape(self, local: bool) -> ScrapedProcess | None:
        """A scrape when the run's memory figure is the scraped one, or before a figure is chosen with nothing
        local (process tree, cgroup) readable; else None, sparing the target a request."""
        if self.scrape is None:
            return None
        if self.memory_figure == SCRAPED_RSS or (self.memory_figure is None and not local):
            return self.scrape.read_scrape()
        return None

    def _note_gap(self) -> None:
        """The run's memory figure could not be read: after a first reading, the series has a gap (said once)."""
        if self.memory_figure is not None and self.readings and self._gap is None:
            causes = self.problems
            self._gap = (f"the memory figure ({self.memory_figure}) could not be read after {self.readings} readings"
                         + (f": {causes[-1]}" if causes else ""))


def memory_figures(tree: TreeFigures | None, cg_memory: CgroupMemory | None,
                   scraped: ScrapedProcess | None) -> dict[str, int | None]:
    """Every memory figure (bytes) one reading offers, None where unread, in MEMORY_FIGURES' order of preference."""
    return {
        CGROUP_WORKING_SET: cg_memory.working_set_bytes if cg_memory else None,
        PSS: tree.pss_bytes if tree else None,
        RSS: tree.rss_bytes if tree else None,
        SCRAPED_RSS: scraped.resident_bytes if scraped else None,
    }


def cpu_figures(tree: TreeFigures | None, cg_cpu_s: float | None,
                scraped: ScrapedProcess | None) -> dict[str, float | None]:
    """Every cumulative CPU figure (seconds) one reading offers, None where unread, in order of preference."""
    return {CPU_CGROUP: cg_cpu_s, CPU_PROCESSES: tree.cpu_s if tree else None,
            CPU_SCRAPED: scraped.cpu_s if scraped else None}


def first_figure(figures: Mapping[str, float | None]) -> str | None:
    """The name of the first figure (in the mapping's order) that was read, or None when none was."""
    return next((name for name, value in figures.items() if value is not None), None)


def build_reading(memory_bytes: int | None, cpu_s: float | None, tree: TreeFigures | None,
                  cg_memory: CgroupMemory | None, scraped: ScrapedProcess | None) -> Reading:
    """One Reading: the chosen figures, and the others seen (the process tree's, else the scrape's)."""
    return Reading(
        memory_bytes=memory_bytes,
        cpu_s=cpu_s,
        processes=tree.processes if tree else (scraped.series if scraped else 0),
        rss_bytes=tree.rss_bytes if tree else (scraped.resident_bytes if scraped else None),
        pss_bytes=tree.pss_bytes if tree else None,
        uss_bytes=tree.uss_bytes if tree else None,
        cgroup=cg_memory,
    )


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


def artifact_size(path: Path) -> tuple[int, int]:
    """(bytes, files) of a model artifact: one file, or every file under a directory (links not followed)."""
    if path.is_file():
        return path.stat().st_size, 1
    if not path.is_dir():
        raise FileNotFoundError(path)
    total = files = 0
    for folder, _, names in os.walk(path):
        for name in names:
            item = Path(folder) / name
            if item.is_symlink():
                continue
            total += item.stat().st_size
            files += 1
    return total, files
