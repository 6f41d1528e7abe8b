"""The report: one versioned JSON document assembled from a finished run's state, and its file.

`build_report` is pure over what it is given: no clock (the caller stamps the finish), no files (the
run measures the model artifact and keeps the figure on its state), no sockets. It runs statistics
(bootstrap), so callers run it in a thread, off the event loop. `write_json` is the only writer of
report files; `report_schema` reads the packaged JSON Schema.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.resources
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from profiler import __version__
from profiler.config import GENERATIVE, Config, NodeConfig, ObjectiveConfig, ResourcesConfig, SearchConfig
from profiler.core.errors import ReportError
from profiler.core.fit import NodeSize
from profiler.core.redact import redact_url
from profiler.judge.capacity import TOKEN_BOUNDS, capacity_summary, judge_stage, judge_window_stage
from profiler.judge.catalogue import flatten_metrics
from profiler.judge.requirements import Demand, Node, plan
from profiler.measure.accuracy import accuracy_metrics, text_metrics
from profiler.measure.latency import StageRecorder
from profiler.measure.resources.footprint import footprint
from profiler.measure.resources.leak import LeakSettings
from profiler.measure.resources.parse import GpuReading
from profiler.measure.resources.sampler import ResourceSampler
from profiler.measure.resources.series import BoundedSeries, gpu_summarise, summarise
from profiler.measure.text import TextRule
from profiler.record.assess import assess, candidate_evidence
from profiler.record.context import run_context
from profiler.state import PHASE_RUNNING, PHASE_STOPPED, PHASES, ArtifactSize, RunView

REPORT_SCHEMA_VERSION = 1


def build_report(run: RunView, status: str, finished_at: str, duration_s: float) -> dict[str, Any]:
    """The versioned JSON document: stages, capacity, accuracy, resources, metrics and verdict.

    `status` is how the run ended ('completed', 'aborted', ...), `finished_at` an ISO 8601 UTC stamp
    taken by the caller, `duration_s` the run's wall time in seconds.
    """
    config = run.config
    dataset = run.dataset
    stages = stage_summaries(run.recorders, config.objective, config.load.search)
    for stage in stages:
        view = run.server_views.get(stage["name"])
        if view is not None:
            stage["server"] = dict(view)
    method = "search" if config.load.search is not None else "concurrency" if config.load.concurrency else "stages"
    capacity = {**capacity_summary(stages), "method": method}
    report: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "profiler_version": __version__,
        "run": {"id": run.run_id, "status": status, "started_at": run.started_at,
                "finished_at": finished_at, "duration_s": round(duration_s, 3), "stopped_in": run.stopped_in,
                "phases": phase_summary(run.phases)},
        "target": {"url": redact_url(config.target.url), "protocol": config.target.protocol,
                   "model": config.target.model, "version": config.target.version,
                   "server_stats": None if config.server_stats is None else
                   {"kind": config.server_stats.kind, "url": redact_url(config.server_stats.url)}},
        # What the run held fixed; a predecessor that differs here is not comparable on performance figures.
        "context": run.context if run.context is not None else run_context(config, None),
        "dataset": {"path": str(dataset.path) if dataset else redact_url(str(config.dataset.path))
                    if isinstance(config.dataset.path, str) else str(config.dataset.path),
                    "fetched": (dataset.downloaded if dataset.cached is not None else None) if dataset else None,
                    "sha256": dataset.sha256 if dataset else None,
                    "samples": len(dataset.samples) if dataset else 0},
        "load": {"mode": "closed-loop" if config.load.concurrency is not None else "open-loop",
                 "arrival": config.load.arrival, "seed": config.load.seed, "batch_size": config.load.batch_size,
                 "max_in_flight": config.load.max_in_flight, "warmup_s": config.load.warmup_s,
                 "start_at": config.load.start_at,
                 "part": config.load.part.model_dump() if config.load.part is not None else None},
        "objective": config.objective.model_dump(),
        "stages": stages,
        "capacity": capacity,
        "accuracy": accuracy_section(run),
        "resources": resources_report(run.series, run.sampler, config.resources, capacity["max_sustained_rps"],
                                      run.artifact, config.node),
    }
    report["gates"] = [g.model_dump() for g in config.gates]
    report["requirements"] = requirements_section(config, report)
    report["metrics"] = flatten_metrics(report)
    baseline = run.baseline
    # The candidate's evidence encodes every histogram: only worth it when there is evidence to pair it with.
    candidate = candidate_evidence(run) if baseline is not None and baseline.evidence is not None else None
    verdict, report["predecessor"] = assess(report, [g.to_gate() for g in config.gates], baseline, candidate,
                                            first_run_blocks=config.baseline.required)
    report["verdict"] = unfinished_verdict(verdict.as_dict(), status)
    return report


def unfinished_verdict(verdict: dict[str, Any], status: str) -> dict[str, Any]:
    """A run that did not finish ('aborted', 'stopped') never passes: a pass becomes inconclusive; a fail
    (a gate that already failed) stands."""
    if status == "completed" or verdict["status"] != "pass":
        return verdict
    return {**verdict, "status": "inconclusive", "reason": f"the run was {status} before it finished"}


def aborted_report(report: dict[str, Any], phase: str) -> dict[str, Any]:
    """The report of a run stopped in `phase` after its report was built (while building it, or while saving
    it to the history): status aborted, and a pass verdict made inconclusive. A new document: the `run`
    and `verdict` sections are copies, so a thread still serialising the old one never sees them change."""
    return {**report, "run": {**report["run"], "status": "aborted", "stopped_in": phase},
            "verdict": unfinished_verdict(report["verdict"], "aborted")}


def phase_summary(phases: Mapping[str, str]) -> dict[str, str]:
    """report["run"]["phases"]: each measuring phase done, skipped, stopped (the run ended in it) or not reached."""
    summary = {}
    for phase in PHASES:
        state = phases.get(phase, "not reached")
        summary[phase] = PHASE_STOPPED if state == PHASE_RUNNING else state
    return summary


def stage_summaries(recorders: Sequence[StageRecorder], objective: ObjectiveConfig,
                    search: SearchConfig | None) -> list[dict[str, Any]]:
    """Each stage's summary; measured stages also judged against the objective (per window in a search)."""
    stages = []
    for recorder in recorders:
        summary = recorder.summary()
        if not recorder.stage.warmup and search is not None:
            summary["objective"] = judge_window_stage(summary, objective.percentile, objective.latency_ms,
                                                      objective.max_error_rate, search.windows, search.stability)
        elif not recorder.stage.warmup:
            bounds = {name: getattr(objective, name) for name in TOKEN_BOUNDS if getattr(objective, name) is not None}
            summary["objective"] = judge_stage(summary, objective.percentile, objective.latency_ms,
                                               objective.max_error_rate, bounds if "ttft_ms" in summary else None)
        stages.append(summary)
    return stages


def accuracy_section(run: RunView) -> dict[str, Any]:
    """report["accuracy"]: metrics of the reference predictions, failed requests, consistency; {} without
    an accuracy pass."""
    if run.predictions is None or run.dataset is None:
        return {}
    labels = [s.label for s in run.dataset.samples]
    config = run.config
    if config.target.protocol in GENERATIVE:
        rule = TextRule(config.dataset.match, config.dataset.pattern)
        accuracy = text_metrics(labels, run.predictions.reference, rule)
    else:
        accuracy = accuracy_metrics(labels, run.predictions.reference)
    accuracy["errors"] = run.accuracy_errors
    accuracy["unsent"] = run.accuracy_unsent
    accuracy["incomplete"] = run.accuracy_incomplete
    compared, inconsistent = run.predictions.compared, run.predictions.inconsistent
    accuracy["consistency"] = {"compared": compared, "inconsistent": inconsistent,
                               "changed_share": inconsistent / compared if compared else None}
    return accuracy


def requirements_section(config: Config, report: dict[str, Any]) -> dict[str, Any] | None:
    """The capacity plan (judge.requirements.plan) of the configured requirements and node for this
    report; None when neither section is configured."""
    if config.requirements is None and config.node is None:
        return None
    demand = None
    if config.requirements is not None:
        r = config.requirements
        demand = Demand(r.requests_per_day, r.peak_rps, r.peak_factor, r.latency_ms, r.percentile, r.utilisation,
                        r.min_replicas, r.replica_memory_bytes)
    node = None
    if config.node is not None:
        n = config.node
        node = Node(n.allocatable_memory_bytes, n.allocatable_cpu_cores, n.price_per_hour, n.currency,
                    n.allocatable_storage_bytes, n.gpus, n.gpu_memory_bytes)
    return plan(report, demand, node, config.load.batch_size)


def resources_report(series: BoundedSeries, sampler: ResourceSampler | None, config: ResourcesConfig,
                     max_sustained_rps: float | None, artifact: ArtifactSize | None,
                     node: NodeConfig | None = None) -> dict[str, Any]:
    """report["resources"]: source, problems, memory before/peak/after, CPU, leak test, GPU, footprint, series.

    `artifact` is the model artifact as the run measured it (None when resources.artifact_path is unset);
    `node` is the profile's node section, whose sizes the footprint prefers to resources.node_*.
    """
    problems = list(sampler.problems) if sampler is not None else []
    if sampler is None or not sampler.configured:
        problems.append("nothing to watch is configured (resources.pid, cmdline, pod, cgroup_path or metrics_url)")
    if artifact is not None and artifact.problem is not None:
        problems.append(artifact.problem)
    limit = (sampler.limit_bytes if sampler is not None else None) or config.memory_limit_bytes
    settings = LeakSettings(warmup_fraction=config.leak_warmup_fraction,
                            min_bytes_per_request=config.leak_min_bytes_per_request)
    section = summarise(series, sampler.source if sampler is not None else "none", problems,
                        incomplete=sampler.incomplete if sampler is not None else None,
                        limit_bytes=limit, settings=settings)
    section.update(_figures_section(sampler, artifact))
    gpu = gpu_section(series, sampler, settings)
    if gpu is not None:
        section["gpu"] = gpu
    memory, cpu = section["memory"], section["cpu"]
    gpu_memory = (gpu or {}).get("memory") or {}
    replica_gpu = config.gpu.replica_gpu_memory_bytes if config.gpu is not None else None
    section["footprint"] = footprint(
        artifact_bytes=artifact.size_bytes if artifact is not None else None,
        steady_bytes=memory["steady_bytes"], peak_bytes=memory["peak_bytes"],
        cpu_s_per_request=cpu["seconds_per_request"], max_sustained_rps=max_sustained_rps,
        node=node_size(config, node, gpu), replica_storage_bytes=config.replica_storage_bytes,
        gpu_steady_bytes=replica_gpu or gpu_memory.get("steady_bytes"),
        gpu_peak_bytes=replica_gpu or gpu_memory.get("peak_bytes"))
    return section


def _figures_section(sampler: ResourceSampler | None, artifact: ArtifactSize | None) -> dict[str, Any]:
    """Which memory and CPU figures the run used, the last cgroup reading, and the artifact as measured."""
    out: dict[str, Any] = {"memory_figure": sampler.memory_figure if sampler is not None else None,
                           # Why each better figure was not used (a model of another uid, a cgroup out of sight).
                           "memory_figure_unavailable": sampler.unavailable if sampler is not None else {},
                           "cpu_figure": sampler.cpu_figure if sampler is not None else None}
    out.update(_cgroup_section(sampler))
    if artifact is not None and artifact.problem is None:
        out["artifact"] = {"path": str(artifact.path), "bytes": artifact.size_bytes, "files": artifact.files}
    return out


def gpu_section(series: BoundedSeries, sampler: ResourceSampler | None,
                settings: LeakSettings) -> dict[str, Any] | None:
    """report["resources"]["gpu"]: GPU memory before/peak/steady/after, utilisation, the leak test, the devices;
    None when no GPU source is configured, or the target's own endpoint showed no GPU metrics (a CPU model)."""
    source = sampler.gpu if sampler is not None else None
    if source is None or (series.gpu_peak is None and not source.problems):
        return None
    last: GpuReading | None = getattr(source, "last", None)
    devices = last.devices if last is not None else 0
    # A leak is projected to the point the GPU is full: one GPU's memory when the model has one.
    limit = last.gpu_total_bytes if last is not None and devices == 1 else None
    section = gpu_summarise(series, source.describe(), settings=settings, limit_bytes=limit)
    section["devices"] = devices
    section["gpu_total_bytes"] = last.gpu_total_bytes if last is not None else None
    section["mig_slices_per_gpu"] = last.mig_slices_per_gpu if last is not None else None
    section["mig_slice_memory_bytes"] = last.mig_slice_memory_bytes if last is not None else None
    return section


def node_size(config: ResourcesConfig, node: NodeConfig | None, gpu: dict[str, Any] | None) -> NodeSize:
    """The node the footprint fits replicas on: the node section's sizes, else resources.node_*; its GPUs as
    configured, else as the GPU source reported them (count, memory of one GPU, MIG slices)."""
    gpu = gpu or {}
    gpus = (node.gpus if node is not None and node.gpus is not None
            else config.gpu.node_gpus if config.gpu is not None and config.gpu.node_gpus is not None
            else gpu.get("devices") if gpu.get("measured") and gpu.get("mig_slices_per_gpu") is None
            else None)
    return NodeSize(
        memory_bytes=(node.allocatable_memory_bytes if node is not None else None) or config.node_memory_bytes,
        cpu_cores=(node.allocatable_cpu_cores if node is not None else None) or config.node_cpu_cores,
        storage_bytes=(node.allocatable_storage_bytes if node is not None else None) or config.node_storage_bytes,
        gpus=gpus,
        gpu_memory_bytes=(node.gpu_memory_bytes if node is not None else None) or gpu.get("gpu_total_bytes"),
        mig_slices_per_gpu=gpu.get("mig_slices_per_gpu"),
        mig_slice_memory_bytes=gpu.get("mig_slice_memory_bytes"),
    )


def _cgroup_section(sampler: ResourceSampler | None) -> dict[str, Any]:
    """{"cgroup": the last cgroup reading} when the sampler watches a cgroup and has read it, else {}."""
    if sampler is None or sampler.last_cgroup is None or sampler.cgroup is None:
        return {}
    cg = sampler.last_cgroup
    return {"cgroup": {"path": str(sampler.cgroup.path), "version": sampler.cgroup.version,
                       "current_bytes": cg.current_bytes, "anon_bytes": cg.anon_bytes, "file_bytes": cg.file_bytes,
                       "working_set_bytes": cg.working_set_bytes, "limit_bytes": cg.limit_bytes,
                       "oom_kills": sampler.cgroup.oom_kills}}


def write_json(report: dict[str, Any], path: Path) -> Path:
    """Write atomically (temp file + rename), so a reader never sees half a report.

    ReportError (naming `path` and the reason) when it cannot be written: a read-only or full folder, a
    path that is a directory, a parent that is a file or cannot be created. The temp file never stays
    behind, whatever failed.
    """
    text = json.dumps(report, indent=2, allow_nan=False, default=str) + "\n"
    return write_text(text, path)


def write_text(text: str, path: Path, suffix: str = ".json") -> Path:
    """Write a report file (the JSON document, or its HTML page) atomically: temp file + rename, errors as
    ReportError naming `path` (see write_json)."""
    try:
        _make_parent(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise ReportError(f"cannot write the report to {path}: {_why(exc, path)}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ReportError(f"cannot write the report to {path}: {_why(exc, path)}") from None
        raise
    return path


def _make_parent(parent: Path) -> None:
    """Create the report's folder when missing; a parent that exists but is no folder is ENOTDIR, not EEXIST."""
    if parent.is_dir():
        return
    if parent.exists():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
    parent.mkdir(parents=True, exist_ok=True)


def _why(exc: OSError, path: Path) -> str:
    """The reason in words ('No space left on device'), naming the culprit when it is not the report itself."""
    reason = exc.strerror or str(exc)
    culprit = exc.filename
    # The temp file's name means nothing to the user; a folder on the way to the report does.
    if culprit is not None and Path(culprit) != path and not Path(culprit).name.startswith(".report-"):
        return f"{reason}: {culprit}"
    return reason


def report_schema() -> dict[str, Any]:
    """The JSON Schema of the report document (profiler/report.schema.json; $defs.progress for a live run)."""
    text = importlib.resources.files("profiler").joinpath("report.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
