"""The text of /proc smaps_rollup, cgroup files and Prometheus exposition, turned into numbers. Pure.

The sampler reads the files; these functions only parse what it read, so they are tested on
fixture text.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

KIB = 1024


@dataclass(frozen=True, slots=True)
class SmapsRollup:
    """One process's memory from /proc/<pid>/smaps_rollup, in bytes."""

    rss_bytes: int
    pss_bytes: int
    uss_bytes: int
    swap_bytes: int


def parse_smaps_rollup(text: str) -> SmapsRollup:
    """Rss, Pss, USS (Private_Clean + Private_Dirty) and Swap; ValueError if a field is missing."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            fields[name.strip()] = int(parts[0]) * KIB
    missing = [f for f in ("Rss", "Pss", "Private_Clean", "Private_Dirty") if f not in fields]
    if missing:
        raise ValueError(f"smaps_rollup lacks {', '.join(missing)}")
    return SmapsRollup(fields["Rss"], fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"],
                       fields.get("Swap", 0))


def parse_flat_keyed(text: str) -> dict[str, int]:
    """A cgroup 'key value' file (memory.stat, cpu.stat, memory.events) as a dict of integers."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def parse_single_value(text: str) -> int | None:
    """A cgroup single-value file (memory.current, memory.max); 'max' (no limit) is None.

    cgroup v1 writes "no limit" as a huge number near 2**63; that is None too.
    """
    value = text.strip()
    if value == "max":
        return None
    number = int(value)
    return None if number >= 2**62 else number


@dataclass(frozen=True, slots=True)
class CgroupMemory:
    """A cgroup's memory in bytes: usage, anon and file pages, the working set and the limit."""

    current_bytes: int
    anon_bytes: int | None
    file_bytes: int | None
    working_set_bytes: int
    limit_bytes: int | None


def cgroup_memory(current_bytes: int, stat: dict[str, int], limit_bytes: int | None) -> CgroupMemory:
    """Working set = usage - inactive file pages (what the kubelet evicts on), v2 or v1 stat names."""
    # v1's own-cgroup counters leave out child cgroups that its usage includes: prefer its total_* ones.
    inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
    anon = stat.get("total_rss", stat.get("anon"))
    file = stat.get("total_cache", stat.get("file"))
    return CgroupMemory(current_bytes, anon, file, max(current_bytes - inactive, 0), limit_bytes)


@dataclass(frozen=True, slots=True)
class ScrapedProcess:
    """What a target's own /metrics says about its process (summed over every series)."""

    resident_bytes: int | None
    cpu_s: float | None
    series: int


def parse_process_metrics(text: str) -> ScrapedProcess:
    """process_resident_memory_bytes and process_cpu_seconds_total from Prometheus text format.

    Several series (one per worker, told apart by labels) are summed. Raises ValueError on text
    that is not the exposition format.
    """
    resident: float | None = None
    cpu: float | None = None
    series = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "process_resident_memory_bytes":
                resident = (resident or 0.0) + sample.value
                series += 1
            elif sample.name == "process_cpu_seconds_total":
                cpu = (cpu or 0.0) + sample.value
    return ScrapedProcess(int(resident) if resident is not None else None, cpu, series)



MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class GpuMetricNames:
    """Which exposition metrics carry GPU memory and utilisation, and their units."""

    exporter: str
    """Who exposes these names, in words ('Triton', 'DCGM exporter', 'configured')."""
    used: str
    used_unit_bytes: float = 1.0
    total: str | None = None
    free: str | None = None
    """Free memory: total = used + free (+ reserved), when no total metric is exposed."""
    reserved: str | None = None
    utilisation: str | None = None
    utilisation_unit_pct: float = 1.0


TRITON = GpuMetricNames("Triton", "nv_gpu_memory_used_bytes", total="nv_gpu_memory_total_bytes",
                        utilisation="nv_gpu_utilization", utilisation_unit_pct=100.0)
"""Triton's /metrics: bytes, and utilisation as a ratio 0..1 (its HELP: 'GPU utilization rate [0.0 - 1.0)')."""
DCGM = GpuMetricNames("DCGM exporter", "DCGM_FI_DEV_FB_USED", used_unit_bytes=MIB, total="DCGM_FI_DEV_FB_TOTAL",
                      free="DCGM_FI_DEV_FB_FREE", reserved="DCGM_FI_DEV_FB_RESERVED",
                      utilisation="DCGM_FI_DEV_GPU_UTIL")
"""DCGM exporter: framebuffer memory in MiB (its HELP: 'Framebuffer memory used (in MiB)'), utilisation in %."""
KNOWN_GPU_NAMES = (TRITON, DCGM)


@dataclass(frozen=True, slots=True)
class GpuReading:
    """The GPU memory (bytes) and utilisation (percent) of the watched devices or processes at one moment.

    `memory_bytes` is summed over the devices (or the model's processes); `utilisation_pct` is the mean over
    the devices; `gpu_total_bytes` is one GPU's memory (the largest seen); `mig_slices_per_gpu` and
    `mig_slice_memory_bytes` are set when the devices are MIG-partitioned.
    """

    memory_bytes: int | None
    utilisation_pct: float | None = None
    devices: int = 0
    gpu_total_bytes: int | None = None
    mig_slices_per_gpu: int | None = None
    mig_slice_memory_bytes: int | None = None


_DEVICE_LABELS = ("gpu", "UUID", "gpu_uuid", "device", "Hostname", "pci_bus_id")
_MIG_LABELS = ("GPU_I_ID", "GPU_I_PROFILE")


def _device_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """A physical GPU's identity from a sample's labels (its index, UUID, host)."""
    return tuple((k, labels[k]) for k in _DEVICE_LABELS if k in labels)


def _instance_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """A GPU instance's identity: the physical GPU and, under MIG, its GPU instance."""
    return _device_key(labels) + tuple((k, labels[k]) for k in _MIG_LABELS if k in labels)


def gpu_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of the exposition text by metric name: (labels, value). ValueError on text that is not it."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def choose_gpu_names(samples: dict[str, list[tuple[dict[str, str], float]]],
                     candidates: tuple[GpuMetricNames, ...] = KNOWN_GPU_NAMES) -> GpuMetricNames | None:
    """The first set of names whose used-memory metric the endpoint exposes; None when none is."""
    return next((names for names in candidates if names.used in samples), None)


def _by_instance(samples: dict[str, list[tuple[dict[str, str], float]]], name: str | None,
                 labels: dict[str, str]) -> dict[tuple[tuple[str, str], ...], float]:
    """One metric's values keyed by GPU instance, only samples with every label in `labels`."""
    if name is None:
        return {}
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for sample_labels, value in samples.get(name, []):
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            out[_instance_key(sample_labels)] = value
    return out


def parse_gpu_metrics(samples: dict[str, list[tuple[dict[str, str], float]]], names: GpuMetricNames,
                      labels: dict[str, str] | None = None) -> GpuReading | None:
    """GPU memory and utilisation from exposition samples (see gpu_samples) with the given names.

    Memory is summed over the matching GPU instances; utilisation is their mean. Each instance's size is
    its total metric, else used + free (+ reserved). Instances that carry DCGM's GPU_I_ID label are MIG
    slices: their count per physical GPU and smallest size are reported. None when no sample matches.
    """
    wanted = labels or {}
    used = _by_instance(samples, names.used, wanted)
    if not used:
        return None
    unit = names.used_unit_bytes
    totals = _by_instance(samples, names.total, wanted)
    free = _by_instance(samples, names.free, wanted)
    reserved = _by_instance(samples, names.reserved, wanted)
    sizes = {k: totals[k] * unit if k in totals else (v + free[k] + reserved.get(k, 0.0)) * unit
             for k, v in used.items() if k in totals or k in free}
    utilisation = list(_by_instance(samples, names.utilisation, wanted).values())
    mig = [k for k in used if any(label == "GPU_I_ID" for label, _ in k)]
    slices: int | None = None
    slice_bytes: int | None = None
    gpu_total = int(max(sizes.values())) if sizes else None
    if mig:
        per_gpu: dict[tuple[tuple[str, str], ...], int] = {}
        for key in mig:
            device = tuple(item for item in key if item[0] in _DEVICE_LABELS)
            per_gpu[device] = per_gpu.get(device, 0) + 1
        slices = max(per_gpu.values())
        mig_sizes = [sizes[k] for k in mig if k in sizes]
        slice_bytes = int(min(mig_sizes)) if mig_sizes else None
        gpu_total = None  # an instance's size is a slice's, not the GPU's
    return GpuReading(
        memory_bytes=int(sum(used.values()) * unit),
        utilisation_pct=sum(utilisation) / len(utilisation) * names.utilisation_unit_pct if utilisation else None,
        devices=len(used),
        gpu_total_bytes=gpu_total,
        mig_slices_per_gpu=slices,
        mig_slice_memory_bytes=slice_bytes,
    )
