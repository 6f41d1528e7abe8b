"""The report: one versioned JSON document assembled from a run's state, and written to a file.

`build_report` is pure over the state it is given (no clock but the finish stamp, no sockets); it runs
statistics, so the run calls it in a thread. `write_json` is the only writer of report files.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from profiler import __version__
from profiler.config import ResourcesConfig
from profiler.core.redact import redact_url
from profiler.judge.capacity import capacity_summary, judge_stage, judge_window_stage
from profiler.judge.catalogue import flatten_metrics
from profiler.measure.accuracy import accuracy_metrics
from profiler.measure.resources.footprint import footprint
from profiler.measure.resources.leak import LeakSettings
from profiler.measure.resources.sampler import ResourceSampler, artifact_size
from profiler.measure.resources.series import BoundedSeries, summarise
from profiler.record.history import assess, requirements_section
from profiler.state import RunState

REPORT_SCHEMA_VERSION = 1


def build_report(state: RunState, status: str, duration_s: float) -> dict[str, Any]:
    """The versioned JSON document: stages, capacity, accuracy, resources, metrics and verdict."""
    config = state.config
    objective = config.objective
    stages = []
    search = config.load.search
    for recorder in state.recorders:
        summary = recorder.summary()
        if not recorder.stage.warmup and search is not None:
            summary["objective"] = judge_window_stage(summary, objective.percentile, objective.latency_ms,
                                                      objective.max_error_rate, search.windows, search.stability)
        elif not recorder.stage.warmup:
            summary["objective"] = judge_stage(summary, objective.percentile, objective.latency_ms,
                                               objective.max_error_rate)
        stages.append(summary)
    dataset = state.dataset
    labels = [s.label for s in dataset.samples] if dataset else []
    accuracy: dict[str, Any] = {}
    if state.predictions is not None and dataset is not None:
        accuracy = accuracy_metrics(labels, state.predictions.reference)
        accuracy["errors"] = state.accuracy_errors
        accuracy["consistency"] = {"compared": state.predictions.compared,
                                   "inconsistent": state.predictions.inconsistent}
    capacity = {**capacity_summary(stages), "method": "search" if search is not None else "stages"}
    resources = resources_report(state.series, state.sampler, config.resources, capacity["max_sustained_rps"])
    report: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "profiler_version": __version__,
        "run": {"id": state.run_id, "status": status, "started_at": state.started_at,
                "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "duration_s": round(duration_s, 3)},
        "target": {"url": redact_url(config.target.url), "protocol": config.target.protocol,
                   "model": config.target.model, "version": config.target.version},
        "dataset": {"path": str(dataset.path) if dataset else str(config.dataset.path),
                    "sha256": dataset.sha256 if dataset else None,
                    "samples": len(dataset.samples) if dataset else 0},
        "load": {"arrival": config.load.arrival, "seed": config.load.seed, "batch_size": config.load.batch_size,
                 "max_in_flight": config.load.max_in_flight, "warmup_s": config.load.warmup_s},
        "objective": objective.model_dump(),
        "stages": stages,
        "capacity": capacity,
        "accuracy": accuracy,
        "resources": resources,
    }
    report["gates"] = [g.model_dump() for g in config.gates]
    report["requirements"] = requirements_section(config, report)
    report["metrics"] = flatten_metrics(report)
    verdict, report["predecessor"] = assess(state, report, state.baseline)
    if status != "completed" and verdict.status == "pass":
        report["verdict"] = {"status": "inconclusive", "reason": f"the run was {status} before it finished",
                             "checks": verdict.as_dict()["checks"]}
    else:
        report["verdict"] = verdict.as_dict()
    return report


def write_json(report: dict[str, Any], path: Path) -> Path:
    """Write atomically (temp file + rename), so a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, allow_nan=False, default=str)
        handle.write("\n")
    os.replace(tmp, path)
    return path


def report_schema() -> dict[str, Any]:
    """The JSON Schema of the report document (profiler/report.schema.json; $defs.progress for a live run)."""
    from importlib import resources

    schema: dict[str, Any] = json.loads(resources.files("profiler").joinpath("report.schema.json").read_text("utf-8"))
    return schema


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
