"""The model server's own view of a stage: where its time went (queue, compute), from what it exports. Pure.

The profiler reads the server's cumulative counters before and after each stage (app/server_stats.py does
the reading); the difference, divided by the requests the server counted, is its mean time per request in
each phase, shown beside the profiler's own latency. Which counters each server exports:

- Triton's statistics extension (`GET /v2/models/{model}/stats`): per model, `queue` (waiting for an
  instance or a batch), `compute_input`, `compute_infer`, `compute_output` (each a count and nanoseconds),
  and `inference_count` / `execution_count` (samples and batches executed: the mean batch size).
- Triton's `/metrics` (`triton-metrics`): the same phases as `nv_inference_*_duration_us` counters.
- KServe's `/metrics`: `request_preprocess_seconds`, `request_predict_seconds` and
  `request_postprocess_seconds` histograms per `model_name` (no queue: its Python server has none to time).
- MLServer's `/metrics`: `model_infer_request_duration` (a summary per model: the data plane's inference,
  codecs included) and its front ends' request durations, REST (`rest_server_request_duration_seconds` for
  the model's infer path) and gRPC (`grpc_server_handling_seconds` for ModelInfer).
- BentoML's `/metrics`: `bentoml_service_request_duration_seconds` for the API's endpoint (the profile's
  `infer_path`): the whole request inside the service, no queue or compute split.

These are the server's figures, not the profiler's: they leave out the network and the server's accept and
parse queue before it starts its clock, so the profiler's latency minus the server's total is time spent
outside the server's own accounting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

KINDS = ("triton", "triton-metrics", "kserve", "mlserver", "bentoml")
"""What `server_stats.kind` may name: where the counters come from (see the module's docstring)."""

Counters = dict[str, tuple[float, float]]
"""Phase name -> (count, seconds), cumulative since the server started."""

TRITON_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
"""Triton's phases, in the order a request goes through them."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The server's cumulative counters at one moment: per phase (count, seconds), and the work counts
    Triton gives (`inferences`: samples, `executions`: batches run), or the problem reading them."""

    phases: Counters
    inferences: float | None = None
    executions: float | None = None
    problem: str | None = None


def triton_statistics(document: Any, model: str) -> Snapshot:
    """Triton's statistics extension answer for `model` (every version summed); ValueError when it has none."""
    try:
        entries = [m for m in document["model_stats"] if m.get("name") == model]
    except (KeyError, TypeError, AttributeError):
        raise ValueError("not a statistics extension answer (no model_stats)") from None
    if not entries:
        raise ValueError(f"the statistics name no model {model!r}")
    phases: Counters = {}
    inferences = executions = 0.0
    for entry in entries:
        stats = entry.get("inference_stats") or {}
        for phase in ("success", *TRITON_PHASES):
            part = stats.get(phase) or {}
            count, seconds = phases.get(phase, (0.0, 0.0))
            phases[phase] = (count + float(part.get("count", 0)), seconds + float(part.get("ns", 0)) / 1e9)
        inferences += float(entry.get("inference_count", 0))
        executions += float(entry.get("execution_count", 0))
    return Snapshot(_rename(phases, {"success": "request"}), inferences, executions)


TRITON_METRICS = {"request": "nv_inference_request_duration_us", "queue": "nv_inference_queue_duration_us",
                  "compute_input": "nv_inference_compute_input_duration_us",
                  "compute_infer": "nv_inference_compute_infer_duration_us",
                  "compute_output": "nv_inference_compute_output_duration_us"}


def prometheus_counters(text: str, kind: str, model: str, infer_path: str = "") -> Snapshot:
    """The phases one server exports in Prometheus text (`kind`: triton-metrics, kserve, mlserver, bentoml;
    `infer_path`: the request path the profiler sends to, which BentoML labels its series with).

    ValueError when the text is not Prometheus exposition or names none of the model's phases yet (a
    server creates its series on the first request, so the first reading may have none: that is zero).
    """
    try:
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    except ValueError as exc:
        raise ValueError(f"not Prometheus text: {exc}") from None
    if kind == "triton-metrics":
        return _triton_metrics(samples, model)
    if kind == "kserve":
        labels = {"model_name": model}
        return Snapshot({phase: _sum_count(samples, f"request_{phase}_seconds", labels)
                         for phase in ("preprocess", "predict", "postprocess")})
    if kind == "mlserver":
        return Snapshot({
            "infer": _sum_count(samples, "model_infer_request_duration", {"model": model}),
            "rest_request": _sum_count(samples, "rest_server_request_duration_seconds", {}, path_of=model),
            "grpc_request": _sum_count(samples, "grpc_server_handling_seconds", {"grpc_method": "ModelInfer"}),
        })
    if kind == "bentoml":
        return Snapshot({"request": _sum_count(samples, "bentoml_service_request_duration_seconds",
                                               {"endpoint": infer_path})})
    raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")


def _triton_metrics(samples: list[Any], model: str) -> Snapshot:
    labels = {"model": model}
    count = _total(samples, "nv_inference_request_success", labels)
    phases = {phase: (count, _total(samples, name, labels) / 1e6) for phase, name in TRITON_METRICS.items()}
    return Snapshot(phases, _total(samples, "nv_inference_count", labels), _total(samples, "nv_inference_exec_count",
                                                                                 labels))


def _matches(sample: Any, labels: Mapping[str, str], path_of: str | None) -> bool:
    if any(sample.labels.get(k) != v for k, v in labels.items()):
        return False
    if path_of is None:
        return True
    # MLServer's REST metrics label the route, its parameters unfilled (/v2/models/{model_name}/infer), or
    # (with path grouping off) the path itself: either way an infer path, of this model or of any.
    path = str(sample.labels.get("path", ""))
    return path.endswith("/infer") and (f"/models/{path_of}/" in path or "{model_name}" in path)


def _total(samples: Iterable[Any], name: str, labels: Mapping[str, str], path_of: str | None = None) -> float:
    # prometheus_client's parser names a counter's samples `<name>_total` even where the text (Triton's) does not
    names = (name, f"{name}_total")
    return float(sum(s.value for s in samples if s.name in names and _matches(s, labels, path_of)))


def _sum_count(samples: list[Any], name: str, labels: Mapping[str, str], path_of: str | None = None
               ) -> tuple[float, float]:
    """(count, seconds) of a histogram or summary: its _count and _sum samples, over the matching series
    (`path_of`: only the series of a model's infer path)."""
    return (_total(samples, f"{name}_count", labels, path_of), _total(samples, f"{name}_sum", labels, path_of))


def _rename(phases: Counters, names: Mapping[str, str]) -> Counters:
    return {names.get(k, k): v for k, v in phases.items()}


def stage_view(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """What the server did between two snapshots: per phase its count and mean milliseconds per request.

    A phase the server did not count in the interval is left out (KServe's pre- and postprocess run for
    every request; MLServer's REST or gRPC front end only for its own protocol). `mean_batch` is samples
    per executed batch (Triton). A problem with either reading is the view's only content.
    """
    problem = after.problem or before.problem
    if problem is not None:
        return {"problem": problem}
    phases: dict[str, dict[str, float]] = {}
    for name, (count, seconds) in after.phases.items():
        old_count, old_seconds = before.phases.get(name, (0.0, 0.0))
        done = count - old_count
        if done > 0:
            phases[name] = {"count": int(done), "mean_ms": round((seconds - old_seconds) / done * 1e3, 4)}
    view: dict[str, Any] = {"phases": phases}
    if after.inferences is not None and after.executions is not None and before.inferences is not None:
        batches = after.executions - (before.executions or 0.0)
        if batches > 0:
            view["mean_batch"] = round((after.inferences - before.inferences) / batches, 3)
    return view
