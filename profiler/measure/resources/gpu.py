"""Reads the model's GPU memory and utilisation: per process through NVML, or from a Prometheus endpoint.

Beside the sampler (sampler.py reads host memory and CPU), the only code that touches NVML or scrapes a
GPU exporter. The parsing is pure (parse.py); the URL fetcher is injected, and NVML (nvidia-ml-py, the
'gpu' extra) is imported only when a profile asks for it, so hosts without a GPU never load it.

NVML gives what the model's own processes hold: the used GPU memory of every compute process in the
watched tree, summed over devices, the utilisation of the devices they run on, each device's total
memory and its MIG instances. An endpoint (Triton's /metrics, a DCGM exporter) gives device figures:
the used memory of the matching GPUs, whoever holds it, and their utilisation.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Callable
from types import ModuleType
from typing import Any

from profiler.core.redact import redact_text, redact_url
from profiler.measure.resources.parse import (
    KNOWN_GPU_NAMES,
    GpuMetricNames,
    GpuReading,
    choose_gpu_names,
    gpu_samples,
    parse_gpu_metrics,
)
from profiler.measure.resources.sampler import Fetch, _Problems, fetch_url

NVML = "NVML"


class GpuEndpoint(_Problems):
    """GPU memory and utilisation from a Prometheus endpoint, by Triton's or DCGM's names or configured ones.

    `implicit` is for the target's own endpoint (resources.metrics_url) read without a GPU section: it
    stops scraping, and says nothing, once the endpoint shows no GPU metrics (a CPU model).
    """

    def __init__(self, url: str, names: GpuMetricNames | None = None, labels: dict[str, str] | None = None, *,
                 fetch: Fetch = fetch_url, timeout_s: float = 2.0, implicit: bool = False) -> None:
        super().__init__()
        self.url = url
        self.shown_url = redact_url(url)
        self.names = names
        self.labels = labels or {}
        self.fetch = fetch
        self.timeout_s = timeout_s
        self.implicit = implicit
        self.exporter: str | None = None
        """Whose names were found ('Triton', 'DCGM exporter', 'configured'), once a reading was taken."""
        self.gave_up = False
        self.last: GpuReading | None = None

    def describe(self) -> str:
        """Where the GPU figures come from, in words."""
        who = f"{self.exporter} metrics" if self.exporter else "GPU metrics"
        where = f" matching {self.labels}" if self.labels else ""
        return f"{who}{where} scraped from {self.shown_url} (device memory, whoever holds it)"

    def read_gpu(self, pids: set[int] | None = None) -> GpuReading | None:
        """One scrape; None (with a problem, unless implicit) when it fails or shows no GPU metrics."""
        del pids  # an endpoint reports devices, not processes
        if self.gave_up:
            return None
        try:
            samples = gpu_samples(self.fetch(self.url, self.timeout_s))
        except urllib.error.HTTPError as exc:
            return self._fail(f"GPU metrics endpoint {self.shown_url} answered HTTP {exc.code}")
        except urllib.error.URLError as exc:
            return self._fail(f"GPU metrics endpoint {self.shown_url} did not answer: {redact_text(str(exc.reason))}")
        except OSError as exc:
            return self._fail(f"GPU metrics endpoint {self.shown_url} did not answer: {redact_text(str(exc))}")
        except ValueError as exc:
            return self._fail(f"GPU metrics endpoint {self.shown_url} is not Prometheus text format: {exc}")
        names = self.names or choose_gpu_names(samples)
        reading = parse_gpu_metrics(samples, names, self.labels) if names is not None else None
        if reading is None:
            if self.implicit:
                self.gave_up = True  # the target's own endpoint has no GPU metrics: a CPU model
                return None
            known = names.used if names is not None else " or ".join(n.used for n in KNOWN_GPU_NAMES)
            where = f" with labels {self.labels}" if self.labels else ""
            return self._fail(f"GPU metrics endpoint {self.shown_url} exposes no {known}{where}")
        assert names is not None
        self.exporter = names.exporter
        self.last = reading
        return reading

    def _fail(self, problem: str) -> GpuReading | None:
        """Say why this scrape gave nothing (for the target's own endpoint, only once it has shown GPU metrics)."""
        if not self.implicit or self.exporter is not None:
            self._problem(problem)
        return None


def load_nvml() -> ModuleType:
    """nvidia-ml-py's module, imported here and only when a profile asks for NVML (the optional 'gpu' extra)."""
    # An optional dependency, imported lazily: only GPU hosts have it (and the library it binds).
    import pynvml

    module: ModuleType = pynvml
    return module


class Nvml(_Problems):
    """The watched processes' GPU memory through NVML, with the utilisation and size of the devices they use.

    Per process: the used GPU memory of each compute process whose PID is in the watched tree, summed over
    every device (and MIG instance). Utilisation is the device's (NVML's per-device rate over its last
    sample period), averaged over the devices the model uses. PIDs are the host's: the sidecar must share
    the model's PID namespace (a pod with shareProcessNamespace, or the same host).
    """

    def __init__(self, load: Callable[[], ModuleType] = load_nvml) -> None:
        super().__init__()
        self._load = load
        self._nvml: Any = None
        self._failed = False
        self.last: GpuReading | None = None
        self.device_names: list[str] = []

    def describe(self) -> str:
        """Where the GPU figures come from, in words."""
        names = f" on {', '.join(sorted(set(self.device_names)))}" if self.device_names else ""
        return f"NVML: used GPU memory of the watched processes{names}"

    def _init(self) -> Any:
        """NVML, initialised once; None (with the reason, said once) when it cannot be."""
        if self._nvml is not None or self._failed:
            return self._nvml
        try:
            nvml = self._load()
        except ImportError as exc:
            self._failed = True
            self._problem(f"GPU: NVML needs nvidia-ml-py (pip install 'profiler[gpu]'): {exc}")
            return None
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            self._failed = True
            self._problem(f"GPU: NVML could not start ({exc}); is this a host with an NVIDIA driver?")
            return None
        self._nvml = nvml
        return nvml

    def read_gpu(self, pids: set[int] | None = None) -> GpuReading | None:
        """One reading of the processes `pids` (the watched tree); None when NVML is unavailable."""
        nvml = self._init()
        if nvml is None:
            return None
        try:
            reading = self._read(nvml, pids or set())
        except nvml.NVMLError as exc:
            self._problem(f"GPU: an NVML reading failed: {exc}")
            return None
        self.last = reading
        return reading

    def _read(self, nvml: Any, pids: set[int]) -> GpuReading:
        used = 0
        utilisation: list[float] = []
        totals: list[int] = []
        slices: list[int] = []
        slice_sizes: list[int] = []
        names: list[str] = []
        for index in range(nvml.nvmlDeviceGetCount()):
            device = nvml.nvmlDeviceGetHandleByIndex(index)
            totals.append(int(nvml.nvmlDeviceGetMemoryInfo(device).total))
            names.append(str(nvml.nvmlDeviceGetName(device)))
            instances = self._mig_instances(nvml, device)
            if instances:
                slices.append(len(instances))
                slice_sizes += [int(nvml.nvmlDeviceGetMemoryInfo(h).total) for h in instances]
            mine = sum(self._process_memory(nvml, handle, pids) for handle in [device, *instances])
            if mine:
                used += mine
                rate = self._utilisation(nvml, device)
                if rate is not None:
                    utilisation.append(rate)
        self.device_names = names
        return GpuReading(
            memory_bytes=used,
            utilisation_pct=sum(utilisation) / len(utilisation) if utilisation else None,
            devices=len(totals),
            gpu_total_bytes=max(totals) if totals else None,
            mig_slices_per_gpu=max(slices) if slices else None,
            mig_slice_memory_bytes=min(slice_sizes) if slice_sizes else None,
        )

    @staticmethod
    def _utilisation(nvml: Any, device: Any) -> float | None:
        """The device's utilisation in percent; None where NVML has none (a MIG-enabled GPU reports none)."""
        try:
            return float(nvml.nvmlDeviceGetUtilizationRates(device).gpu)
        except nvml.NVMLError:
            return None

    @staticmethod
    def _mig_instances(nvml: Any, device: Any) -> list[Any]:
        """The device's MIG instances when MIG is on; [] when it is off or the device has no MIG."""
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(device)
        except nvml.NVMLError:  # NOT_SUPPORTED on GPUs without MIG
            return []
        if current != nvml.NVML_DEVICE_MIG_ENABLE:
            return []
        handles = []
        for i in range(nvml.nvmlDeviceGetMaxMigDeviceCount(device)):
            try:
                handles.append(nvml.nvmlDeviceGetMigDeviceHandleByIndex(device, i))
            except nvml.NVMLError:  # an index with no instance created
                continue
        return handles

    @staticmethod
    def _process_memory(nvml: Any, handle: Any, pids: set[int]) -> int:
        """Used GPU memory (bytes) of the compute processes in `pids` on one device or MIG instance."""
        total = 0
        for process in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
            memory = getattr(process, "usedGpuMemory", None)
            if process.pid in pids and isinstance(memory, int):  # None where the driver hides it (Windows WDDM)
                total += memory
        return total


def gpu_names(memory_metric: str | None, memory_unit_bytes: float, total_metric: str | None,
              utilisation_metric: str | None, utilisation_unit_pct: float) -> GpuMetricNames | None:
    """Configured metric names; None (Triton's and DCGM's names, found by the endpoint) when none is given."""
    if memory_metric is None:
        return None
    return GpuMetricNames("configured", memory_metric, used_unit_bytes=memory_unit_bytes, total=total_metric,
                          utilisation=utilisation_metric, utilisation_unit_pct=utilisation_unit_pct)
