"""The model's footprint: artifact size, memory, CPU, storage and GPU memory per replica, and how many replicas
fit a node by each of them (profiler.core.fit). Pure."""

from __future__ import annotations

import math
from typing import Any

from profiler.core.fit import NodeSize, ReplicaNeeds, describe_fits, fit_counts, limiting


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def replicas_per_node(memory_per_replica_bytes: float | None, cores_per_replica: float | None,
                      node_memory_bytes: float | None, node_cpu_cores: float | None) -> tuple[int | None, str | None]:
    """How many replicas fit a node by memory and CPU, and which limits it ('memory' or 'CPU'); (None, None)
    if unknown. See profiler.core.fit for every resource."""
    return limiting(fit_counts(NodeSize(memory_bytes=node_memory_bytes, cpu_cores=node_cpu_cores),
                               ReplicaNeeds(memory_bytes=memory_per_replica_bytes, cpu_cores=cores_per_replica)))


def storage_per_replica(artifact_bytes: float | None, replica_storage_bytes: float | None) -> float | None:
    """Bytes of node storage one replica takes: its artifact plus the per-replica overhead; None if neither is known."""
    if artifact_bytes is None and replica_storage_bytes is None:
        return None
    return float((artifact_bytes or 0) + (replica_storage_bytes or 0))


def footprint(*, artifact_bytes: int | None, steady_bytes: float | None, peak_bytes: float | None,
              cpu_s_per_request: float | None, max_sustained_rps: float | None, node: NodeSize,
              replica_storage_bytes: float | None = None, gpu_steady_bytes: float | None = None,
              gpu_peak_bytes: float | None = None) -> dict[str, Any]:
    """The footprint section: each resource per replica, replicas per node by each, the limiting one, rate per node.

    A replica's CPU is what it burns at its highest sustained rate (CPU seconds per request x that
    rate); its memory and GPU memory are the steady state under load; its storage is the artifact
    plus `replica_storage_bytes`. `replicas_per_node_at_peak` is the count if every replica sat at its
    peak memory and peak GPU memory at once.
    """
    cores = None
    if _positive(cpu_s_per_request) and _positive(max_sustained_rps):
        assert cpu_s_per_request is not None and max_sustained_rps is not None
        cores = cpu_s_per_request * max_sustained_rps
    storage = storage_per_replica(artifact_bytes, replica_storage_bytes)
    fits = fit_counts(node, ReplicaNeeds(steady_bytes, cores, storage, gpu_steady_bytes))
    replicas, limited_by = limiting(fits)
    at_peak, _ = limiting(fit_counts(node, ReplicaNeeds(peak_bytes, cores, storage,
                                                        gpu_peak_bytes or gpu_steady_bytes)))
    node_rps = replicas * max_sustained_rps if replicas is not None and max_sustained_rps is not None else None
    return {
        "artifact_bytes": artifact_bytes,
        "memory_per_replica_bytes": steady_bytes,
        "peak_memory_bytes": peak_bytes,
        "cores_per_replica_at_capacity": cores,
        "storage_per_replica_bytes": storage,
        "gpu_memory_per_replica_bytes": gpu_steady_bytes,
        "max_sustained_rps_per_replica": max_sustained_rps,
        "node_memory_bytes": node.memory_bytes,
        "node_cpu_cores": node.cpu_cores,
        "node_storage_bytes": node.storage_bytes,
        "node_gpus": node.gpus,
        "node_gpu_memory_bytes": node.gpu_memory_bytes,
        "node_mig_slices_per_gpu": node.mig_slices_per_gpu,
        "replicas_by_resource": fits,
        "replicas_fit": describe_fits(fits) or None,
        "replicas_per_node": replicas,
        "replicas_limited_by": limited_by,
        "replicas_per_node_at_peak": at_peak,
        "max_sustained_rps_per_node": node_rps,
    }
