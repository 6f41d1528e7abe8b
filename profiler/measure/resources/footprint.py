"""The model's footprint: artifact size, memory per replica, and how many replicas fit a node. Pure."""

from __future__ import annotations

import math
from typing import Any


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def replicas_per_node(memory_per_replica_bytes: float | None, cores_per_replica: float | None,
                      node_memory_bytes: float | None, node_cpu_cores: float | None) -> tuple[int | None, str | None]:
    """How many replicas fit a node, and what limits it ('memory' or 'cpu'); (None, None) if unknown.

    Each known resource gives floor(node / per replica); the smaller one wins.
    """
    fits: dict[str, int] = {}
    if _positive(memory_per_replica_bytes) and _positive(node_memory_bytes):
        assert memory_per_replica_bytes is not None and node_memory_bytes is not None
        fits["memory"] = math.floor(node_memory_bytes / memory_per_replica_bytes)
    if _positive(cores_per_replica) and _positive(node_cpu_cores):
        assert cores_per_replica is not None and node_cpu_cores is not None
        fits["cpu"] = math.floor(node_cpu_cores / cores_per_replica)
    if not fits:
        return None, None
    limit = min(fits, key=lambda k: fits[k])
    return fits[limit], limit


def footprint(*, artifact_bytes: int | None, steady_bytes: float | None, peak_bytes: float | None,
              cpu_s_per_request: float | None, max_sustained_rps: float | None, node_memory_bytes: float | None,
              node_cpu_cores: float | None) -> dict[str, Any]:
    """The footprint section: memory per replica (steady state), CPU at capacity, replicas and rate per node.

    A replica's CPU is what it burns at its highest sustained rate (CPU seconds per request x that
    rate); its memory is the steady state under load. `replicas_per_node_at_peak` is the count if
    every replica sat at its peak memory at once.
    """
    cores = None
    if _positive(cpu_s_per_request) and _positive(max_sustained_rps):
        assert cpu_s_per_request is not None and max_sustained_rps is not None
        cores = cpu_s_per_request * max_sustained_rps
    replicas, limited_by = replicas_per_node(steady_bytes, cores, node_memory_bytes, node_cpu_cores)
    at_peak, _ = replicas_per_node(peak_bytes, cores, node_memory_bytes, node_cpu_cores)
    node_rps = replicas * max_sustained_rps if replicas is not None and max_sustained_rps is not None else None
    return {
        "artifact_bytes": artifact_bytes,
        "memory_per_replica_bytes": steady_bytes,
        "peak_memory_bytes": peak_bytes,
        "cores_per_replica_at_capacity": cores,
        "max_sustained_rps_per_replica": max_sustained_rps,
        "node_memory_bytes": node_memory_bytes,
        "node_cpu_cores": node_cpu_cores,
        "replicas_per_node": replicas,
        "replicas_limited_by": limited_by,
        "replicas_per_node_at_peak": at_peak,
        "max_sustained_rps_per_node": node_rps,
    }
