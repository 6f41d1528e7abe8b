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

