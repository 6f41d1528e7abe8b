"""Wiring for the resources part of a run: the sampler from the config, and the report section."""

from __future__ import annotations

from typing import Any

from profiler.config import ResourcesConfig
from profiler.resources.footprint import footprint
from profiler.resources.leak import LeakSettings
from profiler.resources.sampler import Cgroup, ProcessTree, ResourceSampler, Scrape, artifact_size
from profiler.resources.series import BoundedSeries, summarise


def make_sampler(config: ResourcesConfig) -> ResourceSampler:
    """The sampler for the configured pid / command-line pattern / pod, cgroup and metrics endpoint."""
    processes = None
    if config.pid is not None or config.cmdline is not None or config.pod:
        processes = ProcessTree(pid=config.pid, pattern=config.cmdline, pod=config.pod)
    return ResourceSampler(
        processes=processes,
        cgroup=Cgroup(config.cgroup_path) if config.cgroup_path is not None else None,
        scrape=Scrape(config.metrics_url, timeout_s=min(2.0, config.interval_s * 2))
        if config.metrics_url is not None else None,
    )


def resources_report(series: BoundedSeries, sampler: ResourceSampler | None, config: ResourcesConfig,
                     max_sustained_rps: float | None) -> dict[str, Any]:
    """report["resources"]: source, problems, memory before/peak/after, CPU, leak test, footprint, series."""
    problems = list(sampler.problems) if sampler is not None else []
    if sampler is None or not sampler.configured:
        problems.append("nothing to watch is configured (resources.pid, cmdline, pod, cgroup_path or metrics_url)")
    limit = (sampler.limit_bytes if sampler is not None else None) or config.memory_limit_bytes
    settings = LeakSettings(warmup_fraction=config.leak_warmup_fraction,
                            min_bytes_per_request=config.leak_min_bytes_per_request)
    section = summarise(series, sampler.source if sampler is not None else "none", problems,
                        incomplete=sampler.incomplete if sampler is not None else None,
                        limit_bytes=limit, settings=settings)
    section["memory_figure"] = sampler.memory_figure if sampler is not None else None
    section["cpu_figure"] = sampler.cpu_figure if sampler is not None else None
    if sampler is not None and sampler.last_cgroup is not None and sampler.cgroup is not None:
        cg = sampler.last_cgroup
        section["cgroup"] = {"path": str(sampler.cgroup.path), "version": sampler.cgroup.version,
                             "current_bytes": cg.current_bytes, "anon_bytes": cg.anon_bytes,
                             "file_bytes": cg.file_bytes, "working_set_bytes": cg.working_set_bytes,
                             "limit_bytes": cg.limit_bytes, "oom_kills": sampler.cgroup.oom_kills}
    artifact_bytes = None
    if config.artifact_path is not None:
        try:
            artifact_bytes, files = artifact_size(config.artifact_path)
            section["artifact"] = {"path": str(config.artifact_path), "bytes": artifact_bytes, "files": files}
        except OSError as exc:
            problems.append(f"model artifact: cannot read {config.artifact_path}: {exc.strerror or 'not found'}")
    memory, cpu = section["memory"], section["cpu"]
    section["footprint"] = footprint(
        artifact_bytes=artifact_bytes, steady_bytes=memory["steady_bytes"], peak_bytes=memory["peak_bytes"],
        cpu_s_per_request=cpu["seconds_per_request"], max_sustained_rps=max_sustained_rps,
        node_memory_bytes=config.node_memory_bytes, node_cpu_cores=config.node_cpu_cores)
    return section
