"""How many replicas of a model fit one node, resource by resource, and which resource limits them. Pure.

One arithmetic for the footprint (measure) and the capacity plan (judge), which may not import each
other: each resource known on both sides gives floor(node / replica), and the smallest count wins.

  memory      floor(node memory / replica memory)
  CPU         floor(node cores / replica cores)
  storage     floor(node storage / (artifact + per-replica overhead))
  GPU memory  node GPUs x floor(memory per GPU / replica GPU memory)   (a replica does not span GPUs)
  MIG slices  node GPUs x slices per GPU, when a replica's GPU memory fits one slice, else 0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MEMORY = "memory"
CPU = "CPU"
STORAGE = "storage"
GPU_MEMORY = "GPU memory"
MIG_SLICES = "MIG slices"
RESOURCES = (MEMORY, CPU, STORAGE, GPU_MEMORY, MIG_SLICES)
"""Every resource that can limit replicas per node, in the order reports list them (a tie names the first)."""


@dataclass(frozen=True, slots=True)
class NodeSize:
    """What one node offers a model's pods; None where unknown. Sizes in bytes, CPU in cores."""

    memory_bytes: float | None = None
    cpu_cores: float | None = None
    storage_bytes: float | None = None
    gpus: int | None = None
    gpu_memory_bytes: float | None = None
    """Memory of one GPU."""
    mig_slices_per_gpu: int | None = None
    """MIG instances per GPU, when the devices are partitioned (each replica takes one)."""
    mig_slice_memory_bytes: float | None = None


@dataclass(frozen=True, slots=True)
class ReplicaNeeds:
    """What one replica uses; None where unknown. Sizes in bytes, CPU in cores."""

    memory_bytes: float | None = None
    cpu_cores: float | None = None
    storage_bytes: float | None = None
    """The artifact plus any per-replica overhead on disk (image layers, a cache)."""
    gpu_memory_bytes: float | None = None


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def _known(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value >= 0


def _ratio(node: float | None, replica: float | None) -> int | None:
    """floor(node / replica) when both are known and the replica uses something (zero use says nothing)."""
    if _known(node) and _positive(replica):
        assert node is not None and replica is not None
        return math.floor(node / replica)
    return None


def _gpu_count(node: NodeSize, replica: ReplicaNeeds) -> tuple[str, int] | None:
    """(resource, count) for the GPUs: by MIG slices when the node's GPUs are partitioned, else by GPU memory."""
    if not (node.gpus is not None and node.gpus >= 0 and _positive(replica.gpu_memory_bytes)):
        return None
    assert replica.gpu_memory_bytes is not None
    if node.mig_slices_per_gpu and _positive(node.mig_slice_memory_bytes):
        assert node.mig_slice_memory_bytes is not None
        fits_slice = replica.gpu_memory_bytes <= node.mig_slice_memory_bytes
        return MIG_SLICES, node.gpus * node.mig_slices_per_gpu if fits_slice else 0
    per_gpu = _ratio(node.gpu_memory_bytes, replica.gpu_memory_bytes)
    return (GPU_MEMORY, node.gpus * per_gpu) if per_gpu is not None else None


def fit_counts(node: NodeSize, replica: ReplicaNeeds) -> dict[str, int]:
    """Replicas that fit one node by each resource known on both sides, in RESOURCES' order; empty if none is."""
    fits: dict[str, int] = {}
    for name, count in ((MEMORY, _ratio(node.memory_bytes, replica.memory_bytes)),
                        (CPU, _ratio(node.cpu_cores, replica.cpu_cores)),
                        (STORAGE, _ratio(node.storage_bytes, replica.storage_bytes))):
        if count is not None:
            fits[name] = count
    gpu = _gpu_count(node, replica)
    if gpu is not None:
        fits[gpu[0]] = gpu[1]
    return fits


def limiting(fits: dict[str, int]) -> tuple[int, str] | tuple[None, None]:
    """(replicas per node, the resource that limits it); (None, None) when no resource is known.

    On a tie the resource listed first in RESOURCES is named.
    """
    if not fits:
        return None, None
    name = min(fits, key=lambda k: (fits[k], RESOURCES.index(k)))
    return fits[name], name


def describe_fits(fits: dict[str, int]) -> str:
    """'memory allows 96, CPU 18, storage 10': each resource's count, in RESOURCES' order."""
    parts = [f"{name} {fits[name]:,}" for name in RESOURCES if name in fits]
    if not parts:
        return ""
    first, *rest = parts
    name, count = first.rsplit(" ", 1)
    return ", ".join([f"{name} allows {count}", *rest])
