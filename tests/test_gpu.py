"""GPU memory and utilisation: recorded real outputs of a DCGM exporter and of Triton served over HTTP and read
by the real scraper; a profile whose metrics_url serves DCGM output, run end to end; the GPU series, its
before/peak/steady/after and leak test (pure); NVML where it can run.

The recorded outputs are in tests/fixtures/gpu/, each citing where it was published. NVML needs an NVIDIA
GPU and driver: without them its tests skip and say why (no machine in CI has one)."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web

from profiler.app.run import execute, make_gpu_source
from profiler.config import ResourcesConfig, parse_config
from profiler.examples.holdout import write_holdout
from profiler.examples.model import Behaviour, train
from profiler.examples.server import make_app
from profiler.measure.resources.gpu import GpuEndpoint, Nvml, gpu_names, load_nvml
from profiler.measure.resources.leak import LeakSettings
from profiler.measure.resources.parse import DCGM, GpuReading, gpu_samples, parse_gpu_metrics
from profiler.measure.resources.series import AFTER, BEFORE, LOAD, BoundedSeries, ResourcePoint, gpu_summarise
from profiler.record.exporter import report_families
from profiler.record.render import render_text
from profiler.record.report import report_schema
from profiler.state import new_state

FIXTURES = Path(__file__).parent / "fixtures" / "gpu"
MiB = 2**20


class _Handler(BaseHTTPRequestHandler):
    """GET /<name> answers tests/fixtures/gpu/<name>.prom as Prometheus text; anything else 404."""

    def do_GET(self) -> None:
        path = FIXTURES / f"{self.path.strip('/')}.prom"
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the recorded outputs; its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# (fixture, exporter, used bytes, utilisation %, one GPU's memory in bytes)
RECORDED = [
    # Tesla T4 under load: FB_USED 5120 MiB, GPU_UTIL 91; its size is used + free + reserved (5120 + 9791 + 447 MiB)
    ("dcgm_t4", "DCGM exporter", 5120 * MiB, 91.0, (5120 + 9791 + 447) * MiB),
    # an idle L40S: nothing used, 0%; 0 + 45459 + 608 MiB
    ("dcgm_l40s", "DCGM exporter", 0, 0.0, (45459 + 608) * MiB),
    # Triton on a 40 GB GPU: bytes as such, utilisation a ratio (0.000000)
    ("triton_a100", "Triton", 33763098624, 0.0, 42949672960),
]


@pytest.mark.parametrize(("name", "who", "used", "utilisation", "total"), RECORDED)
def test_recorded_outputs_over_http(exporter: str, name: str, who: str, used: int, utilisation: float,
                                    total: int) -> None:
    source = GpuEndpoint(f"{exporter}/{name}")
    reading = source.read_gpu()
    assert reading == GpuReading(memory_bytes=used, utilisation_pct=utilisation, devices=1, gpu_total_bytes=total)
    assert source.exporter == who and source.problems == []
    assert who in source.describe() and "/" + name in source.describe()


def test_labels_select_devices_and_say_when_none_match(exporter: str) -> None:
    assert GpuEndpoint(f"{exporter}/dcgm_t4", labels={"gpu": "0", "modelName": "Tesla T4"}).read_gpu() is not None
    other = GpuEndpoint(f"{exporter}/dcgm_t4", labels={"gpu": "1"})
    assert other.read_gpu() is None
    assert other.problems == [f"GPU metrics endpoint {exporter}/dcgm_t4 exposes no DCGM_FI_DEV_FB_USED with "
                              "labels {'gpu': '1'}"]


def test_configured_names(exporter: str) -> None:
    # Another exporter's names: here DCGM's free memory read as if it were the used figure, in MiB.
    names = gpu_names("DCGM_FI_DEV_FB_FREE", MiB, None, "DCGM_FI_DEV_MEM_COPY_UTIL", 1.0)
    reading = GpuEndpoint(f"{exporter}/dcgm_t4", names).read_gpu()
    assert reading is not None and reading.memory_bytes == 9791 * MiB and reading.utilisation_pct == 73.0
    assert reading.gpu_total_bytes is None  # no total metric configured


def test_missing_endpoint_and_cpu_model(exporter: str) -> None:
    missing = GpuEndpoint(f"{exporter}/nothing-here")
    assert missing.read_gpu() is None and missing.problems == [
        f"GPU metrics endpoint {exporter}/nothing-here answered HTTP 404"]
    # The target's own endpoint, read without a GPU section: a CPU model's metrics end the scraping quietly.
    implicit = make_gpu_source(ResourcesConfig(metrics_url=f"{exporter}/dcgm_t4"))
    assert isinstance(implicit, GpuEndpoint) and implicit.implicit
    cpu_model = GpuEndpoint(f"{exporter}/nothing-here", implicit=True)
    assert cpu_model.read_gpu() is None and cpu_model.problems == []


def test_mig_instances_are_slices() -> None:
    # Constructed in DCGM's MIG labelling (GPU_I_PROFILE, GPU_I_ID per instance), not recorded: two 2g.20gb
    # instances on one GPU, sizes used + free in MiB.
    text = "".join(
        f'DCGM_FI_DEV_FB_{kind}{{gpu="0",UUID="GPU-x",GPU_I_PROFILE="2g.20gb",GPU_I_ID="{i}"}} {value}\n'
        for i, used in ((3, 10), (5, 4000)) for kind, value in (("USED", used), ("FREE", 19968 - used)))
    reading = parse_gpu_metrics(gpu_samples(text), DCGM)
    assert reading is not None
    assert (reading.memory_bytes, reading.devices) == (4010 * MiB, 2)
    assert (reading.mig_slices_per_gpu, reading.mig_slice_memory_bytes) == (2, 19968 * MiB)
    assert reading.gpu_total_bytes is None


def _series(gpu_bytes: Callable[[int], int], readings: int = 60, per_reading: int = 50) -> BoundedSeries:
    """Rest, a load of `readings` readings `per_reading` requests apart, rest; GPU memory as a function of
    requests served."""
    series = BoundedSeries()
    for i in range(5):
        series.add(ResourcePoint(i * 0.1, None, None, 1, BEFORE, 0, gpu_memory_bytes=gpu_bytes(0),
                                 gpu_utilisation_pct=0.0))
    for i in range(readings):
        requests = i * per_reading
        series.add(ResourcePoint(1 + i * 0.1, None, None, 1, LOAD, requests, gpu_memory_bytes=gpu_bytes(requests),
                                 gpu_utilisation_pct=40.0 + i % 3))
    done = readings * per_reading
    for i in range(5):
        series.add(ResourcePoint(8 + i * 0.1, None, None, 1, AFTER, done, gpu_memory_bytes=gpu_bytes(done),
                                 gpu_utilisation_pct=0.0))
    return series


BASE = 1200 * MiB


def test_gpu_memory_that_grows_per_request_is_a_leak() -> None:
    section = gpu_summarise(_series(lambda n: BASE + n * 64 * 1024), "test", limit_bytes=16 * 2**30)
    assert section["measured"] and section["leak"]["status"] == "leaked", section["leak"]["reason"]
    assert section["leak"]["bytes_per_request"] == pytest.approx(64 * 1024, rel=0.01)
    assert section["leak"]["hours_to_limit"] is not None
    memory = section["memory"]
    assert memory["before_bytes"] == BASE and memory["peak_bytes"] == BASE + 3000 * 64 * 1024
    assert memory["after_bytes"] == memory["peak_bytes"] and memory["growth_bytes"] == 3000 * 64 * 1024
    assert section["utilisation"] == {"before_pct": 0.0, "under_load_pct": pytest.approx(41.0, abs=0.05),
                                      "peak_pct": 42.0, "after_pct": 0.0}


def test_an_allocator_cache_that_plateaus_is_not_a_leak() -> None:
    # A caching allocator grows by 20 MiB blocks for the first 600 requests, then serves from its cache.
    section = gpu_summarise(_series(lambda n: BASE + min(n // 100, 6) * 20 * MiB), "test")
    assert section["leak"]["status"] == "no leak", section["leak"]["reason"]
    assert section["memory"]["steady_bytes"] == BASE + 120 * MiB


def test_flat_gpu_memory_is_not_a_leak() -> None:
    section = gpu_summarise(_series(lambda n: BASE), "test", settings=LeakSettings())
    assert section["leak"]["status"] == "no leak"


PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 2, ready_timeout_s: 30}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load:
  warmup_s: 0.2
  accuracy_pass: false
  stages: [{{rate_rps: 40, duration_s: 1}}]
gates:
  - {{metric: gpu_memory_peak_bytes, max: 8Gi}}
  - {{metric: gpu_utilisation, max: 95}}
  - {{metric: gpu_memory_leak, max: 0, required: false}}
node: {{allocatable_memory_bytes: 64Gi, allocatable_storage_bytes: 100G}}
resources: {{metrics_url: "{metrics}", interval_s: 0.1, settle_s: 0.3, artifact_path: holdout.jsonl,
            replica_storage_bytes: 10G}}
"""


async def test_a_profile_with_a_dcgm_metrics_url_reports_gpu_memory_and_utilisation(
        tmp_path: Path, exporter: str) -> None:
    # The example model served in this process (a depth-4 tree, quick to train) over real HTTP on 127.0.0.1.
    runner = web.AppRunner(make_app(train("weak"), Behaviour()), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        report = await _profile_with_dcgm(tmp_path, exporter, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
    _check_dcgm_report(report, exporter)


async def _profile_with_dcgm(tmp_path: Path, exporter: str, url: str) -> dict[str, Any]:
    write_holdout(tmp_path / "holdout.jsonl")
    text = PROFILE.format(url=url, metrics=f"{exporter}/dcgm_t4")
    text = text.replace("max: 8Gi", f"max: {8 * 2**30}")
    return await execute(new_state(parse_config(text, tmp_path / "profile.yaml")))


def _check_dcgm_report(report: dict[str, Any], exporter: str) -> None:
    jsonschema.validate(report, report_schema())
    gpu = report["resources"]["gpu"]
    assert gpu["measured"] and gpu["source"].startswith(f"DCGM exporter metrics scraped from {exporter}/dcgm_t4")
    assert gpu["memory"]["peak_bytes"] == gpu["memory"]["steady_bytes"] == 5120 * MiB
    assert gpu["utilisation"]["under_load_pct"] == 91.0 and gpu["devices"] == 1
    assert report["metrics"]["gpu_memory_peak_bytes"] == 5120 * MiB and report["metrics"]["gpu_utilisation"] == 91.0
    checks = {c["metric"]: c["status"] for c in report["verdict"]["checks"]}
    assert checks["gpu_memory_peak_bytes"] == "pass" and checks["gpu_utilisation"] == "pass"
    fit = report["resources"]["footprint"]
    # One GPU of 15,358 MiB holds two replicas of 5,120 MiB; storage (100 GB / (10 GB + the artifact)) 9.
    assert fit["replicas_by_resource"]["GPU memory"] == 2 and fit["replicas_by_resource"]["storage"] == 9
    assert (fit["replicas_per_node"], fit["replicas_limited_by"]) == (2, "GPU memory")
    text_report = render_text(report)
    assert "gpu      DCGM exporter metrics scraped from" in text_report
    assert "utilisation 91% under load" in text_report
    assert "(limited by GPU memory: storage allows 9, GPU memory 2)" in text_report
    families = {f.name: f for f in report_families(report, "digits")}
    assert families["profiler_gpu_memory_leak"].samples[0].value in (0.0, -1.0)  # flat: no leak or undecided
    assert families["profiler_gpu_utilisation_under_load_ratio"].samples[0].value == pytest.approx(0.91)
    by_resource = {s.labels["resource"]: s.value for s in families["profiler_replicas_per_node_by_resource"].samples}
    assert by_resource == {"storage": 9.0, "GPU memory": 2.0}


def _nvml_or_skip() -> Any:
    """nvidia-ml-py initialised on a GPU host; else skip, saying what is missing."""
    try:
        nvml = load_nvml()
    except ImportError:
        pytest.skip("NVML tests need nvidia-ml-py (pip install 'profiler[gpu]')")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        pytest.skip(f"NVML tests need an NVIDIA GPU and driver; NVML says: {exc}")
    return nvml


def test_nvml_without_a_gpu_says_why() -> None:
    try:
        nvml = load_nvml()
    except ImportError:
        pytest.skip("needs nvidia-ml-py (pip install 'profiler[gpu]')")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        pass
    else:
        nvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA GPU: the NVML tests below read it for real")
    source = Nvml()
    assert source.read_gpu({1}) is None and source.read_gpu({1}) is None
    assert len(source.problems) == 1 and source.problems[0].startswith("GPU: NVML could not start (")


def test_nvml_reads_a_process_that_holds_gpu_memory(start_gpu_holder: Callable[..., Any]) -> None:
    _nvml_or_skip()
    proc = start_gpu_holder("--hold-mib=256")
    reading = Nvml().read_gpu({proc.pid})
    assert reading is not None and reading.memory_bytes is not None and reading.memory_bytes >= 256 * MiB
    assert reading.gpu_total_bytes is not None and reading.devices >= 1
    assert Nvml().read_gpu({proc.pid + 10**6}).memory_bytes == 0  # type: ignore[union-attr]  # not its process


@pytest.fixture
def start_gpu_holder() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start tests/gpu_holder.py processes (GPU memory held through libcuda); each is killed after the test."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "gpu_holder.py"), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            pytest.fail(f"gpu_holder did not start: {proc.stderr.read() if proc.stderr else ''}")
        proc.port = int(line.split()[1])  # type: ignore[attr-defined]
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def _nvml_series(proc: subprocess.Popen[str], requests: int = 1500, every: int = 25) -> BoundedSeries:
    """Send `requests` requests to a gpu_holder, reading its GPU memory through NVML every `every` requests."""
    source = Nvml()
    series = BoundedSeries()
    base = f"http://127.0.0.1:{proc.port}/request"  # type: ignore[attr-defined]
    for phase, count in ((BEFORE, 0), (LOAD, requests), (AFTER, 0)):
        for sent in range(max(count, 5 * every)):
            if count:
                urllib.request.urlopen(base, timeout=10).read()
            if sent % every == 0:
                reading = source.read_gpu({proc.pid})
                assert reading is not None, source.problems
                series.add(ResourcePoint(float(len(series.points)), None, None, 1, phase,
                                         sent if phase == LOAD else (requests if phase == AFTER else 0),
                                         gpu_memory_bytes=reading.memory_bytes,
                                         gpu_utilisation_pct=reading.utilisation_pct))
    return series


def test_nvml_flags_gpu_memory_that_grows_per_request(start_gpu_holder: Callable[..., Any]) -> None:
    _nvml_or_skip()
    proc = start_gpu_holder("--hold-mib=64", "--grow-kib=2048")  # CUDA allocates in 2 MiB pages
    section = gpu_summarise(_nvml_series(proc), "NVML")
    assert section["leak"]["status"] == "leaked", section["leak"]["reason"]
    assert section["leak"]["bytes_per_request"] == pytest.approx(2 * MiB, rel=0.2)


def test_nvml_does_not_flag_a_cache_that_plateaus(start_gpu_holder: Callable[..., Any]) -> None:
    _nvml_or_skip()
    proc = start_gpu_holder("--hold-mib=64", "--grow-kib=2048", "--plateau-mib=200")  # full after 100 requests
    section = gpu_summarise(_nvml_series(proc), "NVML")
    assert section["leak"]["status"] == "no leak", section["leak"]["reason"]


class _FakeNvml:
    """A stand-in for the NVML library's interface (pure logic under test: which processes count, MIG, errors).
    Device 0: MIG on, two instances, the model's process on instance 1; device 1: no MIG, the model and another
    process. NVML itself is tested only on a GPU host (above)."""

    NVML_DEVICE_MIG_ENABLE = 1

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        self.devices = {"gpu0": {"total": 80 * 2**30, "mig": ["mig0", "mig1"], "util": None},
                        "gpu1": {"total": 16 * 2**30, "mig": None, "util": 40}}
        self.procs = {"gpu0": [], "mig0": [(99, 5 * MiB)], "mig1": [(7, 300 * MiB)],
                      "gpu1": [(7, 100 * MiB), (8, 50 * MiB), (99, 1000 * MiB)]}
        self.slices = {"mig0": 10 * 2**30, "mig1": 20 * 2**30}

    # NVML's own function names, answering as the library does.
    def nvmlInit(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: return 2
    def nvmlDeviceGetHandleByIndex(self, i: int) -> str: return f"gpu{i}"
    def nvmlDeviceGetName(self, h: str) -> str: return "Stand-in"

    def nvmlDeviceGetMemoryInfo(self, h: str) -> Any:
        total = self.slices[h] if h in self.slices else self.devices[h]["total"]
        return type("Memory", (), {"total": total})()

    def nvmlDeviceGetMigMode(self, h: str) -> tuple[int, int]:
        if self.devices[h]["mig"] is None:
            raise self.NVMLError("Not Supported")
        return 1, 1

    def nvmlDeviceGetMaxMigDeviceCount(self, h: str) -> int: return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: str, i: int) -> str:
        instances = self.devices[h]["mig"]
        if i >= len(instances):
            raise self.NVMLError("Not Found")
        return str(instances[i])

    def nvmlDeviceGetComputeRunningProcesses(self, h: str) -> list[Any]:
        return [type("Process", (), {"pid": pid, "usedGpuMemory": used})() for pid, used in self.procs[h]]

    def nvmlDeviceGetUtilizationRates(self, h: str) -> Any:
        if self.devices[h]["util"] is None:
            raise self.NVMLError("Not Supported")  # what a MIG-enabled GPU answers
        return type("Rates", (), {"gpu": self.devices[h]["util"]})()


def test_nvml_counts_only_the_watched_processes_and_reports_mig() -> None:
    fake = _FakeNvml()
    reading = Nvml(load=lambda: fake).read_gpu({7, 8})  # type: ignore[arg-type,return-value]
    assert reading == GpuReading(memory_bytes=450 * MiB, utilisation_pct=40.0, devices=2, gpu_total_bytes=80 * 2**30,
                                 mig_slices_per_gpu=2, mig_slice_memory_bytes=10 * 2**30)
