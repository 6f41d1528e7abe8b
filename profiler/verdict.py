"""Gates on the report's metrics, turned into one verdict with a reason per check. Pure."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"

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
    "memory_peak_bytes": "peak memory of the model (the figure resources.source names)",
    "memory_growth_bytes": "memory at rest after the load minus at rest before",
    "memory_growth_pct": "that growth in percent of the memory before",
    "cpu_cores": "CPU cores the model used under load",
    "memory_leak": "leak test: 1 leaked, 0 no leak; not measured when inconclusive (gate with max: 0)",
    "memory_growth_bytes_per_request": "Theil-Sen growth of memory per request under load, after warm-up",
    "memory_growth_bytes_per_hour": "Theil-Sen growth of memory per hour at the tested load, after warm-up",
    "memory_steady_bytes": "memory under sustained load (median of the last third of the load)",
    "memory_before_bytes": "memory at rest before the load",
    "cpu_seconds_per_request": "CPU seconds the model spent per request under load",
    "replicas_per_node": "replicas that fit a node of resources.node_memory_bytes / node_cpu_cores",
    "model_artifact_bytes": "size of the model artifact on disk (resources.artifact_path)",
}


@dataclass(frozen=True, slots=True)
class Check:
    """One gate's outcome: status, the value seen, the bound, and why."""

    metric: str
    status: str
    value: float | None
    bound: str
    reason: str
    required: bool = True


@dataclass(frozen=True, slots=True)
class Verdict:
    """pass only if every required check passes; fail if any fails; else inconclusive."""

    status: str
    checks: tuple[Check, ...]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the report."""
        return {"status": self.status, "reason": self.reason, "checks": [asdict(c) for c in self.checks]}


def evaluate_gate(metric: str, value: float | None, lower: float | None, upper: float | None,
                  required: bool = True) -> Check:
    """Compare one value with its bounds. Missing or NaN never passes."""
    bound = " and ".join(part for part in (
        f">= {lower:g}" if lower is not None else "",
        f"<= {upper:g}" if upper is not None else "",
    ) if part)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Check(metric, INCONCLUSIVE, None, bound, f"{metric} was not measured", required)
    if lower is not None and value < lower:
        return Check(metric, FAIL, value, bound, f"{metric} {value:.6g} is below the minimum {lower:g}", required)
    if upper is not None and value > upper:
        return Check(metric, FAIL, value, bound, f"{metric} {value:.6g} is above the maximum {upper:g}", required)
    return Check(metric, PASS, value, bound, f"{metric} {value:.6g} is within {bound}", required)


def decide(checks: list[Check]) -> Verdict:
    """Combine checks: any required fail -> fail; any required inconclusive -> inconclusive."""
    required = [c for c in checks if c.required]
    failed = [c for c in required if c.status == FAIL]
    unsure = [c for c in required if c.status == INCONCLUSIVE]
    if not checks:
        return Verdict(INCONCLUSIVE, (), "no gates are configured, so nothing was judged")
    if failed:
        return Verdict(FAIL, tuple(checks), "; ".join(c.reason for c in failed))
    if unsure:
        return Verdict(INCONCLUSIVE, tuple(checks), "; ".join(c.reason for c in unsure))
    return Verdict(PASS, tuple(checks), f"all {len(required)} required checks passed")


def flatten_metrics(report: dict[str, Any]) -> dict[str, float | None]:
    """The gateable metrics of a report, each a number or None when not measured."""
    out: dict[str, float | None] = dict.fromkeys(METRICS)
    accuracy = report.get("accuracy") or {}
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                "recall_weighted", "f1_weighted", "coverage"):
        out[key] = accuracy.get(key)
    consistency = accuracy.get("consistency") or {}
    if consistency.get("compared"):
        out["inconsistent_rate"] = consistency["inconsistent"] / consistency["compared"]
    elif accuracy.get("scored"):
        out["inconsistent_rate"] = 0.0
    measured = [s for s in report.get("stages", []) if not s["warmup"]]
    attempted = sum(s["sent"] + s["unsent"] for s in measured)
    if attempted:
        out["error_rate"] = sum(s["errors"] + s["unsent"] for s in measured) / attempted
    for key in ("p50", "p90", "p95", "p99", "p999", "max"):
        values = [s["latency_ms"][key] for s in measured if s["latency_ms"][key] is not None]
        out[f"latency_{key}_ms"] = max(values) if values else None
    out["max_sustained_rps"] = (report.get("capacity") or {}).get("max_sustained_rps")
    out.update(resource_metrics(report.get("resources") or {}))
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


def judge(report: dict[str, Any], gates: list[tuple[str, float | None, float | None, bool]]) -> Verdict:
    """Apply (metric, min, max, required) gates to a report."""
    metrics = flatten_metrics(report)
    return decide([evaluate_gate(m, metrics.get(m), lo, hi, req) for m, lo, hi, req in gates])
