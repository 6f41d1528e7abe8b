"""From a stated demand to replicas, nodes and cost: the capacity arithmetic of a run. Pure.

required rate = requests per day / 86,400 x peak factor (or a stated peak rate)
replica rate  = the highest measured rate one replica sustained within the requirement's latency,
                x the planned utilisation
replicas      = max(min replicas, ceil(required rate / replica rate))
per node      = floor(node memory / replica memory), and floor(node cores / replica cores) when known
node capacity = replicas per node x replica rate;  nodes = ceil(replicas / replicas per node)
cost          = node price per hour / (node capacity x batch size x 3,600) x 1,000,000 predictions
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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


def replica_rate(report: dict[str, Any], demand: Demand) -> tuple[float | None, str]:
    """One replica's rate within the requirement's latency, and where it came from.

    The run's objective decided which stages were sustained. When the requirement is at least as
    loose as the objective (same or lower percentile, same or higher latency), the run's
    max_sustained_rps holds; otherwise only sustained stages that also meet the requirement count.
    """
    objective = report.get("objective") or {}
    capacity = report.get("capacity") or {}
    sustained = _number(capacity.get("max_sustained_rps"))
    percentile = demand.percentile if demand.percentile is not None else objective.get("percentile", 99.0)
    if demand.latency_ms is None:
        return sustained, "the run's max_sustained_rps (no requirement latency given)"
    looser = (objective.get("latency_ms") is not None and demand.latency_ms >= objective["latency_ms"]
              and percentile <= objective.get("percentile", 100.0))
    if looser:
        return sustained, f"the run's max_sustained_rps (its objective is within {demand.latency_ms:g} ms)"
    key = "p" + f"{percentile:g}".replace(".", "")
    if key not in ("p50", "p90", "p95", "p99", "p999"):
        return None, f"the report holds no p{percentile:g} latency"
    if not report.get("stages"):
        return None, "no stage was measured"
    rates = []
    measured = False
    for stage in report.get("stages", []):
        if stage.get("warmup") or not (stage.get("objective") or {}).get("sustained"):
            continue
        observed = _number(stage["latency_ms"].get(key))
        measured = measured or observed is not None
        if observed is not None and observed <= demand.latency_ms:
            rates.append(float(stage["offered_rps"]))
    source = f"the highest sustained stage with p{percentile:g} <= {demand.latency_ms:g} ms"
    if not measured and any(not s.get("warmup") and (s.get("objective") or {}).get("sustained")
                            for s in report["stages"]):
        return None, f"no sustained stage has a p{percentile:g} latency"
    return (max(rates) if rates else 0.0), source


def _replica_memory(demand: Demand | None, resources: dict[str, Any]) -> tuple[float | None, str | None]:
    """A replica's memory: the stated request, else the steady state under load, else the measured peak."""
    if demand is not None and demand.replica_memory_bytes:
        return float(demand.replica_memory_bytes), "requirements.replica_memory_bytes"
    steady = _number((resources.get("footprint") or {}).get("memory_per_replica_bytes"))
    if steady is not None:
        return steady, "steady state under load"
    peak = _number((resources.get("memory") or {}).get("peak_bytes"))
    return (peak, "peak") if peak is not None else (None, None)


def plan(report: dict[str, Any], demand: Demand | None, node: Node | None, batch_size: int = 1) -> dict[str, Any]:
    """The requirements section of the report: every figure, None where it cannot be known, and why."""
    notes: list[str] = []
    out: dict[str, Any] = {
        "required_rps": None, "replica_rps": None, "replica_rps_source": None, "one_replica_meets": None,
        "replicas_needed": None, "replica_memory_bytes": None, "replicas_per_node": None,
        "capacity_per_node_rps": None, "nodes_needed": None, "cost_per_million": None,
        "cost_per_day": None, "currency": node.currency if node else None, "replica_memory_source": None,
        "replicas_limited_by": None, "notes": notes,
    }
    rate: float | None = None
    if demand is not None:
        out["required_rps"] = required_rps(demand)
        rate, out["replica_rps_source"] = replica_rate(report, demand)
        if rate is not None:
            rate *= demand.utilisation
    else:
        rate = _number((report.get("capacity") or {}).get("max_sustained_rps"))
        out["replica_rps_source"] = "the run's max_sustained_rps (no requirements section)"
    out["replica_rps"] = rate
    if rate is None:
        notes.append("the replica's sustainable rate was not measured")
    elif rate <= 0:
        notes.append("no stage was sustained within the latency bound, so no number of replicas suffices")
    if demand is not None and rate is not None:
        required = out["required_rps"]
        out["one_replica_meets"] = rate >= required
        if rate > 0:
            out["replicas_needed"] = max(demand.min_replicas, math.ceil(required / rate - 1e-9))
    resources = report.get("resources") or {}
    footprint = resources.get("footprint") or {}
    memory, out["replica_memory_source"] = _replica_memory(demand, resources)
    if memory is None:
        notes.append("the replica's memory was not measured (resources) nor given (replica_memory_bytes)")
    out["replica_memory_bytes"] = int(memory) if memory else None
    # CPU a replica burns at its highest sustained rate (resources' footprint), else the average under load.
    cores = _number(footprint.get("cores_per_replica_at_capacity"))
    if cores is None:
        cores = _number((resources.get("cpu") or {}).get("cores_under_load"))
    node_memory: float | None = node.allocatable_memory_bytes if node and node.allocatable_memory_bytes else None
    node_cores = node.allocatable_cpu_cores if node and node.allocatable_cpu_cores else None
    if node_memory is None and node_cores is None:
        # The resources section may know the node (resources.node_memory_bytes / node_cpu_cores).
        node_memory = _number(footprint.get("node_memory_bytes"))
        node_cores = _number(footprint.get("node_cpu_cores"))
    if node_memory is None and node_cores is None:
        notes.append("no node size (node.allocatable_memory_bytes or resources.node_memory_bytes): replicas per "
                     "node, node capacity and cost are not computed")
        return out
    fits: dict[str, int] = {}
    if node_memory is not None and memory is not None and memory > 0:
        fits["memory"] = math.floor(node_memory / memory)
    if node_cores is not None and cores is not None and cores > 0:
        fits["CPU"] = math.floor(node_cores / cores)
    if not fits:
        return out
    limit = min(fits, key=lambda k: fits[k])
    per_node = fits[limit]
    out["replicas_limited_by"] = limit
    if len(fits) > 1 and fits["memory"] != fits["CPU"]:
        notes.append(f"{limit} limits replicas per node to {per_node} (memory allows {fits['memory']}, "
                     f"CPU {fits['CPU']})")
    out["replicas_per_node"] = per_node
    if per_node == 0:
        notes.append("one replica does not fit on a node")
        return out
    if rate is not None:
        out["capacity_per_node_rps"] = per_node * rate
    if out["replicas_needed"] is not None:
        out["nodes_needed"] = math.ceil(out["replicas_needed"] / per_node)
    if node is not None and node.price_per_hour is not None and out["capacity_per_node_rps"]:
        predictions_per_hour = out["capacity_per_node_rps"] * max(batch_size, 1) * 3600
        out["cost_per_million"] = node.price_per_hour / predictions_per_hour * 1e6
        if out["nodes_needed"] is not None:
            out["cost_per_day"] = out["nodes_needed"] * node.price_per_hour * 24
    return out
