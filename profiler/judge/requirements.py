"""From a stated demand to replicas, nodes and cost: the capacity arithmetic of a run. Pure.

required rate = requests per day / 86,400 x peak factor (or a stated peak rate)
replica rate  = the highest measured rate one replica sustained within the requirement's latency,
                x the planned utilisation
replicas      = max(min replicas, ceil(required rate / replica rate))
per node      = the smallest of floor(node / replica) over memory, CPU, storage and GPU memory (or MIG
                slices), each where known on both sides (profiler.core.fit)
node capacity = replicas per node x replica rate;  nodes = ceil(replicas / replicas per node)
cost          = node price per hour / (node capacity x batch size x 3,600) x 1,000,000 predictions
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from profiler.core.fit import NodeSize, ReplicaNeeds, describe_fits, fit_counts, limiting

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True, slots=True)
class Demand:
    """What the model must serve: a daily volume with a peak factor, or a peak rate; a latency bound."""

    requests_per_day: float | None = None
    peak_rps: float | None = None
    peak_factor: float = 1.0
    latency_ms: float | None = None
    percentile: float | None = None
    utilisation: float = 1.0
    min_replicas: int = 1
    replica_memory_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Node:
    """What one node offers a model's pods, and its price per hour (any currency)."""

    allocatable_memory_bytes: int | None = None
    allocatable_cpu_cores: float | None = None
    price_per_hour: float | None = None
    currency: str = "USD"
    allocatable_storage_bytes: int | None = None
    gpus: int | None = None
    gpu_memory_bytes: int | None = None
    """Memory of one GPU."""


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def required_rps(demand: Demand) -> float:
    """The peak rate to plan for, in requests per second."""
    if demand.peak_rps is not None:
        return demand.peak_rps
    if demand.requests_per_day is None:
        raise ValueError("a demand needs requests_per_day or peak_rps")
    return demand.requests_per_day / SECONDS_PER_DAY * demand.peak_factor


_PERCENTILE_KEYS = ("p50", "p90", "p95", "p99", "p999")
"""The latency percentiles a report's stages hold."""


def percentile_key(percentile: float) -> str | None:
    """The stage latency key of a percentile ('p99' for 99, 'p999' for 99.9), None when stages do not hold it."""
    key = "p" + f"{percentile:g}".replace(".", "")
    return key if key in _PERCENTILE_KEYS else None


def objective_covers(objective: dict[str, Any], latency_ms: float, percentile: float) -> bool:
    """Whether the run's objective implies the requirement: its latency within `latency_ms` at a percentile
    at least as high. The run's sustained stages then meet the requirement too."""
    return (objective.get("latency_ms") is not None and latency_ms >= objective["latency_ms"]
            and percentile <= objective.get("percentile", 100.0))


def _sustained(stage: dict[str, Any]) -> bool:
    """A measured (not warm-up) stage that met the run's objective."""
    return not stage.get("warmup") and bool((stage.get("objective") or {}).get("sustained"))


def sustained_rate_within(stages: list[dict[str, Any]], key: str, latency_ms: float) -> float | None:
    """The highest offered rate (rps) of a sustained stage whose `key` latency is within `latency_ms`.

    0.0 when none is; None when some stage was sustained but none of them measured that latency.
    """
    rates = []
    measured = False
    for stage in stages:
        if not _sustained(stage):
            continue
        observed = _number(stage["latency_ms"].get(key))
        measured = measured or observed is not None
        if observed is not None and observed <= latency_ms:
            rates.append(float(stage["offered_rps"]))
    if not measured and any(_sustained(stage) for stage in stages):
        return None
    return max(rates) if rates else 0.0


def replica_rate(report: dict[str, Any], demand: Demand) -> tuple[float | None, str]:
    """One replica's rate (rps) within the requirement's latency, and where it came from.

    The run's objective decided which stages were sustained. When the requirement is at least as
    loose as the objective (same or lower percentile, same or higher latency), the run's
    max_sustained_rps holds; otherwise only sustained stages that also meet the requirement count.
    """
    objective = report.get("objective") or {}
    sustained = _number((report.get("capacity") or {}).get("max_sustained_rps"))
    percentile = demand.percentile if demand.percentile is not None else objective.get("percentile", 99.0)
    if demand.latency_ms is None:
        return sustained, "the run's max_sustained_rps (no requirement latency given)"
    if objective_covers(objective, demand.latency_ms, percentile):
        return sustained, f"the run's max_sustained_rps (its objective is within {demand.latency_ms:g} ms)"
    key = percentile_key(percentile)
    if key is None:
        return None, f"the report holds no p{percentile:g} latency"
    if not report.get("stages"):
        return None, "no stage was measured"
    rate = sustained_rate_within(report["stages"], key, demand.latency_ms)
    if rate is None:
        return None, f"no sustained stage has a p{percentile:g} latency"
    return rate, f"the highest sustained stage with p{percentile:g} <= {demand.latency_ms:g} ms"


def _replica_memory(demand: Demand | None, resources: dict[str, Any]) -> tuple[float | None, str | None]:
    """A replica's memory: the stated request, else the steady state under load, else the measured peak."""
    if demand is not None and demand.replica_memory_bytes:
        return float(demand.replica_memory_bytes), "requirements.replica_memory_bytes"
    steady = _number((resources.get("footprint") or {}).get("memory_per_replica_bytes"))
    if steady is not None:
        return steady, "steady state under load"
    peak = _number((resources.get("memory") or {}).get("peak_bytes"))
    return (peak, "peak") if peak is not None else (None, None)


def _planned_rate(report: dict[str, Any], demand: Demand | None) -> tuple[float | None, str]:
    """The rate (rps) one replica is planned at, with its source: the requirement's rate x utilisation,
    or the run's max_sustained_rps when there is no requirements section."""
    if demand is None:
        return (_number((report.get("capacity") or {}).get("max_sustained_rps")),
                "the run's max_sustained_rps (no requirements section)")
    rate, source = replica_rate(report, demand)
    return (rate * demand.utilisation if rate is not None else None), source


def replicas_needed(required_rps: float, replica_rps: float, min_replicas: int) -> int | None:
    """Replicas for the required rate, at least `min_replicas`; None when a replica sustains nothing (rate <= 0)."""
    if not replica_rps > 0:
        return None
    # The 1e-9 absorbs float error: 2.1 / 0.3 is 7.000000000000001, and 7 replicas serve 2.1 rps.
    return max(min_replicas, math.ceil(required_rps / replica_rps - 1e-9))


def _replica_cores(resources: dict[str, Any]) -> float | None:
    """CPU a replica burns at its highest sustained rate (resources' footprint), else the average under load."""
    cores = _number((resources.get("footprint") or {}).get("cores_per_replica_at_capacity"))
    return cores if cores is not None else _number((resources.get("cpu") or {}).get("cores_under_load"))


def _node_size(node: Node | None, footprint: dict[str, Any]) -> NodeSize:
    """What a node offers: the node section when it gives any size (it may describe another node than the
    resources section), else what the resources section's footprint knows (resources.node_memory_bytes, ...)."""
    if node is not None and any(v is not None for v in (node.allocatable_memory_bytes, node.allocatable_cpu_cores,
                                                         node.allocatable_storage_bytes, node.gpus)):
        return NodeSize(memory_bytes=node.allocatable_memory_bytes, cpu_cores=node.allocatable_cpu_cores,
                        storage_bytes=node.allocatable_storage_bytes, gpus=node.gpus,
                        gpu_memory_bytes=node.gpu_memory_bytes or _number(footprint.get("node_gpu_memory_bytes")),
                        mig_slices_per_gpu=_whole(footprint.get("node_mig_slices_per_gpu")),
                        mig_slice_memory_bytes=_number(footprint.get("node_mig_slice_memory_bytes")))
    return NodeSize(memory_bytes=_number(footprint.get("node_memory_bytes")),
                    cpu_cores=_number(footprint.get("node_cpu_cores")),
                    storage_bytes=_number(footprint.get("node_storage_bytes")),
                    gpus=_whole(footprint.get("node_gpus")),
                    gpu_memory_bytes=_number(footprint.get("node_gpu_memory_bytes")),
                    mig_slices_per_gpu=_whole(footprint.get("node_mig_slices_per_gpu")),
                    mig_slice_memory_bytes=_number(footprint.get("node_mig_slice_memory_bytes")))


def _whole(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def replica_needs(memory_bytes: float | None, cores: float | None, footprint: dict[str, Any]) -> ReplicaNeeds:
    """What one replica uses: the memory and cores given, storage and GPU memory as the footprint measured them."""
    return ReplicaNeeds(memory_bytes=memory_bytes, cpu_cores=cores,
                        storage_bytes=_number(footprint.get("storage_per_replica_bytes")),
                        gpu_memory_bytes=_number(footprint.get("gpu_memory_per_replica_bytes")))


def _pack(out: dict[str, Any], fits: dict[str, int], rate: float | None, node: Node | None,
          batch_size: int) -> None:
    """Fill in replicas per node, node capacity, nodes and cost from what fits a node; notes say what binds."""
    notes: list[str] = out["notes"]
    per_node, limit = limiting(fits)
    assert per_node is not None
    out["replicas_limited_by"] = limit
    out["replicas_by_resource"] = fits
    if len(set(fits.values())) > 1:
        notes.append(f"{limit} limits replicas per node to {per_node} ({describe_fits(fits)})")
    out["replicas_per_node"] = per_node
    if per_node == 0:
        notes.append("one replica does not fit on a node")
        return
    if rate is not None:
        out["capacity_per_node_rps"] = per_node * rate
    if out["replicas_needed"] is not None:
        out["nodes_needed"] = math.ceil(out["replicas_needed"] / per_node)
    if node is not None and node.price_per_hour is not None and out["capacity_per_node_rps"]:
        predictions_per_hour = out["capacity_per_node_rps"] * max(batch_size, 1) * 3600
        out["cost_per_million"] = node.price_per_hour / predictions_per_hour * 1e6
        if out["nodes_needed"] is not None:
            out["cost_per_day"] = out["nodes_needed"] * node.price_per_hour * 24


def plan(report: dict[str, Any], demand: Demand | None, node: Node | None, batch_size: int = 1) -> dict[str, Any]:
    """The requirements section of the report: every figure, None where it cannot be known, and why."""
    notes: list[str] = []
    out: dict[str, Any] = {
        "required_rps": None, "replica_rps": None, "replica_rps_source": None, "one_replica_meets": None,
        "replicas_needed": None, "replica_memory_bytes": None, "replicas_per_node": None,
        "capacity_per_node_rps": None, "nodes_needed": None, "cost_per_million": None,
        "cost_per_day": None, "currency": node.currency if node else None, "replica_memory_source": None,
        "replicas_limited_by": None, "replicas_by_resource": {}, "notes": notes,
    }
    if demand is not None:
        out["required_rps"] = required_rps(demand)
    rate, out["replica_rps_source"] = _planned_rate(report, demand)
    out["replica_rps"] = rate
    if rate is None:
        notes.append("the replica's sustainable rate was not measured")
    elif rate <= 0:
        notes.append("no stage was sustained within the latency bound, so no number of replicas suffices")
    if demand is not None and rate is not None:
        out["one_replica_meets"] = rate >= out["required_rps"]
        out["replicas_needed"] = replicas_needed(out["required_rps"], rate, demand.min_replicas)
    resources = report.get("resources") or {}
    memory, out["replica_memory_source"] = _replica_memory(demand, resources)
    if memory is None:
        notes.append("the replica's memory was not measured (resources) nor given (replica_memory_bytes)")
    out["replica_memory_bytes"] = int(memory) if memory else None
    footprint = resources.get("footprint") or {}
    size = _node_size(node, footprint)
    if all(v is None for v in (size.memory_bytes, size.cpu_cores, size.storage_bytes, size.gpus)):
        notes.append("no node size (node.allocatable_memory_bytes, allocatable_cpu_cores, allocatable_storage_bytes "
                     "or gpus, or resources.node_memory_bytes): replicas per node, node capacity and cost are not "
                     "computed")
        return out
    fits = fit_counts(size, replica_needs(memory, _replica_cores(resources), footprint))
    if fits:
        _pack(out, fits, rate, node, batch_size)
    return out
