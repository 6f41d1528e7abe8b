"""The gateable metrics: their names, which way is better, and how each is read off a report. Pure.

A gate names one of `METRICS`, or a qualified family (`QUALIFIED_METRICS`: a class in brackets or an
offered rate after '@'). `flatten_metrics` reads every one of them off a report document, as a number or
None when it was not measured; the verdict, the comparison and the history all use these names.
"""

from __future__ import annotations

import re
from typing import Any

METRICS: dict[str, str] = {
    "accuracy": "share of hold-out samples predicted right",
    "precision_macro": "precision averaged over classes",
    "recall_macro": "recall averaged over classes",
    "f1_macro": "F1 averaged over classes",
    "precision_weighted": "precision averaged over classes, weighted by support",
    "recall_weighted": "recall averaged over classes, weighted by support",
    "f1_weighted": "F1 averaged over classes, weighted by support",
    "coverage": "share of hold-out samples that got a prediction",
    "inconsistent_rate": "share of repeated predictions that differed from the first for the same sample",
    "error_rate": "failed or unsent requests over all requests, measured stages",
    "latency_p50_ms": "worst stage's p50 latency from the intended send time",
    "latency_p90_ms": "worst stage's p90 latency",
    "latency_p95_ms": "worst stage's p95 latency",
    "latency_p99_ms": "worst stage's p99 latency",
    "latency_p999_ms": "worst stage's p99.9 latency",
    "latency_max_ms": "worst stage's maximum latency",
    "max_sustained_rps": "highest offered rate held within the latency objective",
    "generator_limited_stages": "measured stages where the load generator, not the model, was the limit",
    "memory_peak_bytes": "peak memory of the model (the figure resources.source names)",
    "memory_growth_bytes": "memory at rest after the load minus at rest before",
    "memory_growth_pct": "that growth in percent of the memory before",
    "cpu_cores": "CPU cores the model used under load",
    "memory_leak": "leak test: 1 leaked, 0 no leak; none when inconclusive, the check says why (gate with max: 0)",
    "memory_growth_bytes_per_request": "Theil-Sen growth of memory per request under load, after warm-up",
    "memory_growth_bytes_per_hour": "Theil-Sen growth of memory per hour at the tested load, after warm-up",
    "memory_steady_bytes": "memory under sustained load (median of the last third of the load)",
    "memory_before_bytes": "memory at rest before the load",
    "cpu_seconds_per_request": "CPU seconds the model spent per request under load",
    "replicas_per_node": "replicas that fit a node by memory, CPU, storage and GPU memory (node section, else "
                         "resources.node_*)",
    "gpu_memory_peak_bytes": "peak GPU memory of the model (the GPU source resources.gpu.source names)",
    "gpu_memory_steady_bytes": "GPU memory under sustained load (median of the last third of the load)",
    "gpu_memory_leak": "leak test on GPU memory: 1 leaked, 0 no leak; none when inconclusive (gate with max: 0)",
    "gpu_memory_growth_bytes_per_request": "Theil-Sen growth of GPU memory per request under load, after warm-up",
    "gpu_utilisation": "mean GPU utilisation under load, percent (0-100) of the devices the model uses",
    "model_artifact_bytes": "size of the model artifact on disk (resources.artifact_path)",
    "replica_rps": "one replica's sustained rate within the requirement's latency (requirements section)",
    "replicas_needed": "replicas needed for the required peak rate",
    "capacity_per_node_rps": "requests per second one node serves: replicas per node x replica rate",
    "nodes_needed": "nodes needed for the required peak rate",
    "cost_per_million": "node cost per million predictions at full node capacity (node.price_per_hour)",
}


QUALIFIED_METRICS: dict[str, str] = {
    "f1[CLASS]": "F1 of one class, e.g. f1[3]",
    "precision[CLASS]": "precision of one class",
    "recall[CLASS]": "recall of one class",
    "latency_pNN_ms@RATErps": "a latency percentile at one offered rate, e.g. latency_p99_ms@100rps",
    "error_rate@RATErps": "the error rate at one offered rate",
}
"""Metric families with a class or a rate in the name; the qualifier is checked against the report."""


HIGHER_IS_BETTER = frozenset({
    "accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted", "recall_weighted",
    "f1_weighted", "coverage", "max_sustained_rps", "replica_rps", "replicas_per_node", "capacity_per_node_rps",
    "f1", "precision", "recall",
})
"""Metrics (and per-class families) where more is better; every other metric is better when lower."""


_PER_CLASS = re.compile(r"^(f1|precision|recall)\[([^\[\]]+)\]$")


_AT_RATE = re.compile(r"^([a-z0-9_]+)@([0-9]+(?:\.[0-9]+)?)rps$")


_RATE_FAMILY = ("latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "latency_p999_ms",
                "latency_max_ms", "error_rate")


def normalise_metric(name: str) -> str:
    """The canonical name of a gateable metric, or ValueError naming the known ones."""
    if name in METRICS:
        return name
    if _PER_CLASS.match(name):
        return name
    at_rate = _AT_RATE.match(name)
    if at_rate and at_rate.group(1) in _RATE_FAMILY:
        rate = float(at_rate.group(2))
        if rate > 0:
            return f"{at_rate.group(1)}@{rate:g}rps"
    known = ", ".join([*sorted(METRICS), *QUALIFIED_METRICS])
    raise ValueError(f"unknown metric {name!r}; known: {known}")


def base_metric(name: str) -> str:
    """The family of a metric name: 'f1[3]' -> 'f1', 'latency_p99_ms@100rps' -> 'latency_p99_ms'."""
    per_class = _PER_CLASS.match(name)
    if per_class:
        return per_class.group(1)
    return name.split("@", 1)[0]


def greater_is_better(name: str) -> bool:
    """The direction that counts as better for a metric (lower is better unless listed)."""
    return base_metric(name) in HIGHER_IS_BETTER


def flatten_metrics(report: dict[str, Any]) -> dict[str, float | None]:
    """The gateable metrics of a report, each a number or None when not measured."""
    out: dict[str, float | None] = dict.fromkeys(METRICS)
    out.update(accuracy_metrics(report.get("accuracy") or {}))
    out.update(stage_metrics(report.get("stages", [])))
    out["max_sustained_rps"] = (report.get("capacity") or {}).get("max_sustained_rps")
    out.update(resource_metrics(report.get("resources") or {}))
    out.update(gpu_metrics((report.get("resources") or {}).get("gpu") or {}))
    out.update(plan_metrics(report.get("requirements") or {}))
    out.update(qualified_metrics(report))
    return out


_ACCURACY_KEYS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                  "recall_weighted", "f1_weighted", "coverage")


def accuracy_metrics(accuracy: dict[str, Any]) -> dict[str, float | None]:
    """The accuracy section's scores (shares, 0..1), and the inconsistent rate when predictions were repeated.

    The inconsistent rate is 0.0 for a scored run that repeated nothing, and absent when nothing was scored.
    """
    out: dict[str, float | None] = {key: accuracy.get(key) for key in _ACCURACY_KEYS}
    consistency = accuracy.get("consistency") or {}
    if consistency.get("compared"):
        out["inconsistent_rate"] = consistency["inconsistent"] / consistency["compared"]
    elif accuracy.get("scored"):
        out["inconsistent_rate"] = 0.0
    return out


def stage_metrics(stages: list[dict[str, Any]]) -> dict[str, float | None]:
    """Error rate, the worst stage's latency percentiles (ms) and generator-limited stages, over measured stages.

    The error rate is absent when no request was attempted, the generator count when no stage was
    measured (the report's defaults stand); a latency is None when no measured stage recorded it.
    """
    measured = [s for s in stages if not s["warmup"]]
    out: dict[str, float | None] = {}
    attempted = sum(s["sent"] + s["unsent"] for s in measured)
    if attempted:
        out["error_rate"] = sum(s["errors"] + s["unsent"] for s in measured) / attempted
    for key in ("p50", "p90", "p95", "p99", "p999", "max"):
        values = [s["latency_ms"][key] for s in measured if s["latency_ms"][key] is not None]
        out[f"latency_{key}_ms"] = max(values) if values else None
    if measured:
        out["generator_limited_stages"] = float(sum(1 for s in measured if (s.get("generator") or {}).get("limited")))
    return out


def plan_metrics(plan: dict[str, Any]) -> dict[str, float | None]:
    """The capacity arithmetic's figures (requirements section); replicas_per_node only when it has one."""
    out = {key: plan.get(key) for key in ("replica_rps", "replicas_needed", "capacity_per_node_rps", "nodes_needed",
                                          "cost_per_million")}
    if plan.get("replicas_per_node") is not None:
        out["replicas_per_node"] = plan["replicas_per_node"]
    return out


def resource_metrics(resources: dict[str, Any]) -> dict[str, float | None]:
    """Memory, leak, CPU and footprint metrics; all None when memory was not measured over the whole run."""
    if not resources.get("complete"):
        artifact = (resources.get("footprint") or {}).get("artifact_bytes")
        return {"model_artifact_bytes": artifact}
    memory = resources.get("memory") or {}
    cpu = resources.get("cpu") or {}
    leak = resources.get("leak") or {}
    footprint = resources.get("footprint") or {}
    return {
        "memory_peak_bytes": memory.get("peak_bytes"),
        "memory_growth_bytes": memory.get("growth_bytes"),
        "memory_growth_pct": memory.get("growth_pct"),
        "memory_steady_bytes": memory.get("steady_bytes"),
        "memory_before_bytes": memory.get("before_bytes"),
        "cpu_cores": cpu.get("cores_under_load"),
        "cpu_seconds_per_request": cpu.get("seconds_per_request"),
        "memory_leak": {"leaked": 1.0, "no leak": 0.0}.get(str(leak.get("status"))),
        "memory_growth_bytes_per_request": leak.get("bytes_per_request"),
        "memory_growth_bytes_per_hour": leak.get("bytes_per_hour"),
        "replicas_per_node": footprint.get("replicas_per_node"),
        "model_artifact_bytes": footprint.get("artifact_bytes"),
    }


def gpu_metrics(gpu: dict[str, Any]) -> dict[str, float | None]:
    """GPU memory, its leak test and utilisation (resources.gpu); all None when no GPU memory was read."""
    if not gpu.get("measured"):
        return {}
    memory = gpu.get("memory") or {}
    leak = gpu.get("leak") or {}
    return {
        "gpu_memory_peak_bytes": memory.get("peak_bytes"),
        "gpu_memory_steady_bytes": memory.get("steady_bytes"),
        "gpu_memory_leak": {"leaked": 1.0, "no leak": 0.0}.get(str(leak.get("status"))),
        "gpu_memory_growth_bytes_per_request": leak.get("bytes_per_request"),
        "gpu_utilisation": (gpu.get("utilisation") or {}).get("under_load_pct"),
    }


GPU_METRICS = ("gpu_memory_peak_bytes", "gpu_memory_steady_bytes", "gpu_memory_leak",
               "gpu_memory_growth_bytes_per_request", "gpu_utilisation")
"""The metrics `gpu_metrics` reads; not measured when no GPU source is configured or none was read."""


RESOURCE_METRICS = ("memory_peak_bytes", "memory_growth_bytes", "memory_growth_pct", "memory_steady_bytes",
                    "memory_before_bytes", "cpu_cores", "cpu_seconds_per_request", "memory_leak",
                    "memory_growth_bytes_per_request", "memory_growth_bytes_per_hour", "replicas_per_node")
"""The metrics `resource_metrics` leaves unmeasured when the model's memory was not read over the whole run."""


def unmeasured_reasons(report: dict[str, Any]) -> dict[str, str]:
    """Why metrics this report has no value for were not measured, where the report says more than "not
    measured": the model's resources not read over the whole run (the reason), or a leak test that ran
    and could not decide (what it found, and why that does not decide). Keyed by metric name."""
    resources = report.get("resources") or {}
    if not resources:
        return {}
    gpu_reasons = _gpu_unmeasured(resources)
    if not resources.get("complete"):
        why = resources.get("incomplete") or "nothing to watch is configured"
        return {**gpu_reasons, **{name: f"{name} was not measured: the model's resources were not read over the "
                                        f"whole run ({why})" for name in RESOURCE_METRICS}}
    leak = resources.get("leak") or {}
    if leak.get("status") == "inconclusive":
        return {**gpu_reasons, "memory_leak": f"memory_leak: {leak_inconclusive_reason(leak)}"}
    return gpu_reasons


def _gpu_unmeasured(resources: dict[str, Any]) -> dict[str, str]:
    """Why the GPU metrics have no value: no GPU source, none read (the source's problem), or a leak test
    that could not decide."""
    gpu = resources.get("gpu")
    if not gpu:
        why = "no GPU source is configured (resources.gpu, or a metrics_url with Triton or DCGM GPU metrics)"
        return {name: f"{name} was not measured: {why}" for name in GPU_METRICS}
    if not gpu.get("measured"):
        problems = [p for p in resources.get("problems") or [] if "GPU" in p]
        why = problems[-1] if problems else "no GPU reading was taken"
        return {name: f"{name} was not measured: {why}" for name in GPU_METRICS}
    leak = gpu.get("leak") or {}
    if leak.get("status") == "inconclusive":
        return {"gpu_memory_leak": f"gpu_memory_leak: {leak_inconclusive_reason(leak)}"}
    return {}


def leak_inconclusive_reason(leak: dict[str, Any]) -> str:
    """'leak test inconclusive: <the test's reason> (growth 1,204 B per request, 95% interval -410 to 2,914,
    over 600 requests after warm-up)': what the test found, and why it does not decide."""
    found = ""
    slope, low, high = (leak.get(k) for k in ("bytes_per_request", "bytes_per_request_low", "bytes_per_request_high"))
    if all(isinstance(v, int | float) for v in (slope, low, high)):
        found = f"growth {slope:,.0f} B per request, 95% interval {low:,.0f} to {high:,.0f}"
    window = leak.get("window_requests")
    if isinstance(window, list | tuple) and len(window) == 2:
        span = f"{float(window[1]) - float(window[0]):,.0f} requests after warm-up, {leak.get('points', 0)} readings"
        found = f"{found}, over {span}" if found else f"over {span}"
    reason = str(leak.get("reason") or "no reason given")
    return f"leak test inconclusive: {reason}" + (f" ({found})" if found else "")


def qualified_metrics(report: dict[str, Any]) -> dict[str, float | None]:
    """Per-class precision/recall/F1 ('f1[3]') and per-rate latency and errors ('latency_p99_ms@100rps')."""
    out: dict[str, float | None] = {}
    per_class = (report.get("accuracy") or {}).get("per_class") or {}
    for cls, figures in per_class.items():
        for key in ("precision", "recall", "f1"):
            out[f"{key}[{cls}]"] = figures.get(key)
    by_rate: dict[str, list[dict[str, Any]]] = {}
    for stage in report.get("stages", []):
        if not stage["warmup"]:
            by_rate.setdefault(f"{float(stage['offered_rps']):g}", []).append(stage)
    for rate, stages in by_rate.items():
        # Two stages at one rate (a step down, a soak): the worse of them counts.
        for key in ("p50", "p90", "p95", "p99", "p999", "max"):
            values = [s["latency_ms"][key] for s in stages if s["latency_ms"][key] is not None]
            out[f"latency_{key}_ms@{rate}rps"] = max(values) if values else None
        rates = [s["error_rate"] for s in stages if s.get("error_rate") is not None]
        out[f"error_rate@{rate}rps"] = max(rates) if rates else None
    return out


CLASS_METRICS = frozenset({"accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                           "recall_weighted", "f1_weighted", "precision", "recall", "f1"})


LATENCY_METRICS = frozenset({"latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms",
                             "latency_p999_ms"})


def has_test(metric: str) -> bool:
    """Whether a paired significance test exists for a metric name."""
    return base_metric(metric) in CLASS_METRICS | LATENCY_METRICS
