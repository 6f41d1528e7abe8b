"""The sampler against real processes, real /proc and cgroup paths, and a real /metrics endpoint."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

from profiler.measure.resources.parse import CgroupMemory, ScrapedProcess
from profiler.measure.resources.sampler import (
    CGROUP_WORKING_SET,
    CPU_CGROUP,
    CPU_PROCESSES,
    CPU_SCRAPED,
    MEMORY_FIGURES,
    PSS,
    RSS,
    SCRAPED_RSS,
    Cgroup,
    ProcessTree,
    ResourceSampler,
    Scrape,
    TreeFigures,
    artifact_size,
    build_reading,
    cpu_figures,
    first_figure,
    memory_figures,
)

FIXTURES = Path(__file__).parent / "fixtures" / "resources"
MIB = 2**20

# A process that grows by the number of bytes written to its stdin, one line at a time.
GROWER = """
import sys
chunks = []
print("READY", flush=True)
for line in sys.stdin:
    chunks.append(bytearray(int(line)))  # zero-filled, so every page is resident
    print("OK", flush=True)
"""
# The same, as the child of a parent that does nothing itself (model servers fork workers).
PARENT = f"""
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", {GROWER!r}], stdin=sys.stdin, stdout=sys.stdout)
sys.exit(child.wait())
"""


class Grower:
    """A real process whose memory grows on command."""

    def __init__(self, code: str, *marker: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", code, *marker], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "READY"

    def grow(self, n_bytes: int) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{n_bytes}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "OK"

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def grower() -> Iterator[Callable[..., Grower]]:
    started: list[Grower] = []

    def start(code: str = GROWER, *marker: str) -> Grower:
        started.append(Grower(code, *marker))
        return started[-1]

    yield start
    for g in started:
        g.stop()


def test_pid_tree_memory_grows_with_the_process(grower: Callable[..., Grower]) -> None:
    g = grower()
    tree = ProcessTree(pid=g.proc.pid)
    before = tree.read_tree()
    g.grow(40 * MIB)
    after = tree.read_tree()
    assert before is not None and after is not None
    assert before.processes == after.processes == 1
    assert after.rss_bytes - before.rss_bytes >= 38 * MIB
    assert before.pss_bytes is not None and after.pss_bytes is not None
    assert after.pss_bytes - before.pss_bytes >= 38 * MIB
    assert after.uss_bytes is not None and after.uss_bytes <= after.pss_bytes <= after.rss_bytes
    assert after.cpu_s >= before.cpu_s > 0
    assert tree.problems == []


def test_children_are_counted(grower: Callable[..., Grower]) -> None:
    g = grower(PARENT)
    tree = ProcessTree(pid=g.proc.pid)
    before = tree.read_tree()
    g.grow(30 * MIB)  # the child grows, not the watched pid itself
    after = tree.read_tree()
    assert before is not None and after is not None
    assert after.processes == 2
    assert after.rss_bytes - before.rss_bytes >= 28 * MIB
    own = psutil.Process(g.proc.pid).memory_info().rss
    assert after.rss_bytes > own + 28 * MIB


def test_pattern_finds_the_process_and_its_children(grower: Callable[..., Grower]) -> None:
    marker = f"profiler-test-marker-{os.getpid()}"
    g = grower(PARENT, marker)
    tree = ProcessTree(pattern=marker)
    figures = tree.read_tree()
    assert figures is not None
    # The parent matches (the marker is its argument); its child does not, but is counted as a child.
    assert figures.processes == 2
    assert tree.describe() == f"processes matching {marker!r} and their children"
    g.stop()
    assert tree.read_tree() is None
    assert tree.lost == f"no process matches the pattern {marker!r}"


def test_pattern_that_matches_only_later(grower: Callable[..., Grower]) -> None:
    """A model that starts after the sidecar: the early misses are not reported once it is found."""
    marker = f"profiler-late-marker-{os.getpid()}"
    tree = ProcessTree(pattern=marker)
    assert tree.read_tree() is None and tree.problems == [f"no process matches the pattern {marker!r}"]
    grower(GROWER, marker)
    assert tree.read_tree() is not None
    assert tree.problems == [] and tree.lost is None


def test_pattern_matching_nothing() -> None:
    sampler = ResourceSampler(processes=ProcessTree(pattern="no-such-process-[0-9]{40}"))
    assert sampler.read() is None
    assert sampler.problems == ["no process matches the pattern 'no-such-process-[0-9]{40}'"]
    assert sampler.memory_figure is None and sampler.source == "none"
    assert sampler.incomplete is None  # nothing was ever measured: the report says "not measured"


def test_pid_that_does_not_exist() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a real pid, now certainly gone
    sampler = ResourceSampler(processes=ProcessTree(pid=proc.pid))
    assert sampler.read() is None
    assert sampler.problems == [f"pid {proc.pid} does not exist or has exited"]


def test_pid_that_exits_mid_run(grower: Callable[..., Grower]) -> None:
    g = grower()
    sampler = ResourceSampler(processes=ProcessTree(pid=g.proc.pid))
    first = sampler.read()
    assert first is not None and first.memory_bytes is not None
    assert sampler.memory_figure == PSS
    g.stop()
    assert sampler.read() is None
    assert sampler.incomplete == f"pid {g.proc.pid} does not exist or has exited"
    assert f"pid {g.proc.pid} does not exist or has exited" in sampler.problems


def test_pod_watches_everything_but_the_sidecar(grower: Callable[..., Grower]) -> None:
    own_child = grower()
    # An orphan: started by a shell that exits at once, so it is not in this process's tree.
    out = subprocess.run(["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(30)' >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    orphan = int(out.stdout.strip())
    try:
        candidates = [os.getpid(), own_child.proc.pid, orphan]
        tree = ProcessTree(pod=True, list_pids=lambda: candidates)
        # The orphan may still be starting (its RSS growing): read it on both sides of the tree's reading.
        before = psutil.Process(orphan).memory_info().rss
        figures = tree.read_tree()
        after = psutil.Process(orphan).memory_info().rss
        assert figures is not None and figures.processes == 1
        assert before - MIB < figures.rss_bytes < after + MIB  # the orphan, nothing else
        assert tree.describe() == "the other processes in this pod"
        empty = ProcessTree(pod=True, list_pids=lambda: [os.getpid(), own_child.proc.pid])
        assert empty.read_tree() is None
        assert "no other process is visible in this pod" in empty.problems[0]
    finally:
        psutil.Process(orphan).kill()


def _read_as(uid: int | None, pid: int) -> dict[str, object]:
    """Sample `pid` from a forked child that first drops to `uid` (a real unprivileged reader)."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)
            sampler = ResourceSampler(processes=ProcessTree(pid=pid))
            reading = sampler.read()
            result = {"figure": sampler.memory_figure, "rss": reading and reading.rss_bytes,
                      "pss": reading and reading.pss_bytes, "problems": sampler.problems}
            os.write(write_end, json.dumps(result).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return dict(json.loads(data))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_no_permission_to_read_smaps(grower: Callable[..., Grower]) -> None:
    """Read as another user, smaps_rollup is unreadable: RSS is used and the report says why."""
    if os.geteuid() == 0:
        target, uid = grower().proc.pid, 65534  # root's process, read as nobody
    else:
        target, uid = 1, None  # init, read as this unprivileged user
    result = _read_as(uid, target)
    assert result["figure"] == RSS
    assert isinstance(result["rss"], int) and result["rss"] > 0 and result["pss"] is None
    problems = result["problems"]
    assert isinstance(problems, list)
    assert any(p.startswith(f"PSS/USS: no permission to read /proc/{target}/smaps_rollup") for p in problems)


def test_cgroup_v2_fixture_directory() -> None:
    cgroup = Cgroup(FIXTURES / "cgroup_v2")
    sampler = ResourceSampler(cgroup=cgroup)
    reading = sampler.read()
    assert reading is not None
    assert sampler.memory_figure == CGROUP_WORKING_SET
    assert reading.memory_bytes == 120 * MIB and reading.cpu_s == pytest.approx(12.5)
    assert sampler.limit_bytes == 256 * MIB and cgroup.oom_kills == 1 and cgroup.version == 2
    assert sampler.source.startswith("cgroup v2 ")


def test_cgroup_path_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-cgroup"
    sampler = ResourceSampler(cgroup=Cgroup(missing))
    assert sampler.read() is None
    assert sampler.problems == [f"cgroup: {missing} does not exist"]


def test_cgroup_path_not_a_cgroup(tmp_path: Path) -> None:
    sampler = ResourceSampler(cgroup=Cgroup(tmp_path))
    assert sampler.read() is None
    assert "has neither memory.current (v2) nor memory.usage_in_bytes (v1)" in sampler.problems[0]


def _own_v1_memory_cgroup() -> Path | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            return folder if (folder / "memory.usage_in_bytes").exists() else None
    return None


def test_real_cgroup_of_this_process() -> None:
    """This machine's own cgroup (v1 memory controller here, v2 elsewhere)."""
    folder = _own_v1_memory_cgroup()
    if folder is None:
        text = Path("/proc/self/cgroup").read_text()
        v2 = next((line[3:] for line in text.splitlines() if line.startswith("0::")), None)
        folder = Path("/sys/fs/cgroup") / v2.lstrip("/") if v2 else None
        if folder is None or not (folder / "memory.current").exists():
            pytest.skip("no readable memory cgroup for this process")
    cgroup = Cgroup(folder)
    memory, _ = cgroup.read_cgroup()
    assert memory is not None, cgroup.problems
    own_rss = psutil.Process().memory_info().rss
    assert memory.current_bytes >= memory.working_set_bytes > 0
    assert memory.current_bytes >= own_rss // 2  # the cgroup holds at least this process


@pytest.fixture
def metrics_endpoint() -> Iterator[str]:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_scrape_a_real_endpoint(metrics_endpoint: str) -> None:
    sampler = ResourceSampler(processes=ProcessTree(pattern="no-such-process-[0-9]{40}"),
                              scrape=Scrape(metrics_endpoint))
    reading = sampler.read()
    assert reading is not None
    assert sampler.memory_figure == SCRAPED_RSS  # nothing local was visible
    own = psutil.Process().memory_info().rss
    assert reading.memory_bytes is not None and abs(reading.memory_bytes - own) < 64 * MIB
    assert reading.cpu_s is not None and reading.cpu_s > 0
    assert sampler.source == f"process_resident_memory_bytes scraped from {metrics_endpoint}"


def test_scrape_is_not_used_when_a_local_figure_exists(metrics_endpoint: str, grower: Callable[..., Grower]) -> None:
    g = grower()
    calls: list[str] = []
    scrape = Scrape(metrics_endpoint, fetch=lambda url, timeout: calls.append(url) or "")
    sampler = ResourceSampler(processes=ProcessTree(pid=g.proc.pid), scrape=scrape)
    assert sampler.read() is not None
    assert sampler.memory_figure == PSS and calls == []


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[str]:
    """A plain static file server over tmp_path: /metrics is whatever the test writes there."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (None, "answered HTTP 404"),
        ("<html><body>hello</body></html>\n", "is not Prometheus text format"),
        ("# TYPE up gauge\nup 1\n", "exposes no process_resident_memory_bytes"),
    ],
)
def test_scrape_failures(file_server: str, tmp_path: Path, body: str | None, problem: str) -> None:
    if body is not None:
        (tmp_path / "metrics").write_text(body)
    sampler = ResourceSampler(scrape=Scrape(f"{file_server}/metrics"))
    reading = sampler.read()
    assert reading is None or reading.memory_bytes is None
    assert problem in sampler.problems[0]


def test_scrape_nothing_listening() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    scrape = Scrape(f"http://127.0.0.1:{port}/metrics", timeout_s=2)
    assert scrape.read_scrape() is None
    assert "did not answer" in scrape.problems[0]


def test_cgroup_wins_over_processes(grower: Callable[..., Grower]) -> None:
    g = grower()
    sampler = ResourceSampler(processes=ProcessTree(pid=g.proc.pid), cgroup=Cgroup(FIXTURES / "cgroup_v2"))
    reading = sampler.read()
    assert reading is not None and sampler.memory_figure == CGROUP_WORKING_SET
    assert reading.pss_bytes is not None and reading.rss_bytes is not None  # the tree's figures come along


def test_artifact_size(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "weights").write_bytes(b"y" * 24)
    (tmp_path / "link").symlink_to(tmp_path / "model.bin")
    assert artifact_size(tmp_path) == (1024, 2)
    assert artifact_size(tmp_path / "model.bin") == (1000, 1)
    with pytest.raises(FileNotFoundError):
        artifact_size(tmp_path / "missing")


def test_sampler_in_a_thread_sees_growth(grower: Callable[..., Grower]) -> None:
    """The run samples from a worker thread (asyncio.to_thread); readings must work there too."""
    g = grower()
    sampler = ResourceSampler(processes=ProcessTree(pid=g.proc.pid))
    readings: list[int | None] = []

    def read() -> None:
        reading = sampler.read()
        readings.append(reading.memory_bytes if reading else None)

    for step in range(3):
        if step:
            g.grow(10 * MIB)
        worker = threading.Thread(target=read)
        worker.start()
        worker.join()
    assert all(r is not None for r in readings)
    assert readings[2] - readings[0] >= 18 * MIB  # type: ignore[operator]


TREE = TreeFigures(rss_bytes=300, pss_bytes=200, uss_bytes=100, cpu_s=1.5, processes=2)
TREE_NO_PSS = TreeFigures(rss_bytes=300, pss_bytes=None, uss_bytes=None, cpu_s=1.5, processes=2)
CGROUP = CgroupMemory(current_bytes=500, anon_bytes=350, file_bytes=150, working_set_bytes=400, limit_bytes=1000)
SCRAPED = ScrapedProcess(resident_bytes=700, cpu_s=4.0, series=3)
SCRAPED_EMPTY = ScrapedProcess(resident_bytes=None, cpu_s=None, series=0)


@pytest.mark.parametrize(("tree", "cg", "scraped", "memory", "first"), [
    (TREE, CGROUP, SCRAPED, [400, 200, 300, 700], CGROUP_WORKING_SET),
    (TREE, None, SCRAPED, [None, 200, 300, 700], PSS),
    (TREE_NO_PSS, None, None, [None, None, 300, None], RSS),
    (None, None, SCRAPED, [None, None, None, 700], SCRAPED_RSS),
    (None, None, SCRAPED_EMPTY, [None, None, None, None], None),
    (None, None, None, [None, None, None, None], None),
])
def test_memory_figures_in_order_of_preference(tree, cg, scraped, memory, first):
    figures = memory_figures(tree, cg, scraped)
    assert list(figures) == list(MEMORY_FIGURES)
    assert list(figures.values()) == memory
    assert first_figure(figures) == first


@pytest.mark.parametrize(("tree", "cg_cpu_s", "scraped", "cpu", "first"), [
    (TREE, 9.0, SCRAPED, [9.0, 1.5, 4.0], CPU_CGROUP),
    (TREE, None, SCRAPED, [None, 1.5, 4.0], CPU_PROCESSES),
    (None, None, SCRAPED, [None, None, 4.0], CPU_SCRAPED),
    (None, 0.0, None, [0.0, None, None], CPU_CGROUP),        # zero seconds is a reading
    (None, None, None, [None, None, None], None),
])
def test_cpu_figures_in_order_of_preference(tree, cg_cpu_s, scraped, cpu, first):
    figures = cpu_figures(tree, cg_cpu_s, scraped)
    assert list(figures.values()) == cpu
    assert first_figure(figures) == first


@pytest.mark.parametrize(("figures", "first"), [
    ({}, None),
    ({"a": None, "b": 0, "c": 5}, "b"),
    ({"a": float("nan"), "b": 1.0}, "a"),   # NaN was read (a figure, if an odd one): the parsers never give one
])
def test_first_figure(figures, first):
    assert first_figure(figures) == first


@pytest.mark.parametrize(("tree", "cg", "scraped", "processes", "rss", "pss", "uss"), [
    (TREE, CGROUP, SCRAPED, 2, 300, 200, 100),            # the tree's figures win over the scrape's
    (None, CGROUP, SCRAPED, 3, 700, None, None),
    (None, CGROUP, None, 0, None, None, None),
    (TREE_NO_PSS, None, None, 2, 300, None, None),
])
def test_build_reading(tree, cg, scraped, processes, rss, pss, uss):
    reading = build_reading(123, 4.5, tree, cg, scraped)
    assert (reading.memory_bytes, reading.cpu_s, reading.cgroup) == (123, 4.5, cg)
    assert (reading.processes, reading.rss_bytes, reading.pss_bytes, reading.uss_bytes) == (processes, rss, pss, uss)
