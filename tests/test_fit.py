"""Replicas per node from every resource that limits them (profiler.core.fit), the footprint and the capacity
plan built on it, and the mission's example: a 3% better model that needs twice the storage halves a node's
throughput, and a change gate on capacity_per_node_rps fails it. Pure: tables, no I/O."""

from __future__ import annotations

import math

import pytest

from profiler.core.fit import (
    CPU,
    GPU_MEMORY,
    MEMORY,
    MIG_SLICES,
    STORAGE,
    NodeSize,
    ReplicaNeeds,
    describe_fits,
    fit_counts,
    limiting,
)
from profiler.judge.catalogue import flatten_metrics
from profiler.judge.requirements import Demand, Node, plan
from profiler.judge.verdict import ChangeBound, Gate, Predecessor, judge
from profiler.measure.resources.footprint import footprint, storage_per_replica

GB = 10**9
GiB = 2**30

# (node, replica, expected counts by resource, expected (replicas, limit))
CASES = [
    # The mission's example: 50 GB of storage holds ten 5 GB models, five 10 GB ones.
    (NodeSize(storage_bytes=50 * GB), ReplicaNeeds(storage_bytes=5 * GB), {STORAGE: 10}, (10, STORAGE)),
    (NodeSize(storage_bytes=50 * GB), ReplicaNeeds(storage_bytes=10 * GB), {STORAGE: 5}, (5, STORAGE)),
    # "memory allows 96, CPU 18, storage 10"
    (NodeSize(96 * GiB, 9.0, 50 * GB), ReplicaNeeds(GiB, 0.5, 5 * GB), {MEMORY: 96, CPU: 18, STORAGE: 10},
     (10, STORAGE)),
    (NodeSize(16 * GiB, 4.0, 500 * GB), ReplicaNeeds(2 * GiB, 0.25, 5 * GB), {MEMORY: 8, CPU: 16, STORAGE: 100},
     (8, MEMORY)),
    (NodeSize(16 * GiB, 4.0, 500 * GB), ReplicaNeeds(GiB, 1.0, 5 * GB), {MEMORY: 16, CPU: 4, STORAGE: 100},
     (4, CPU)),
    # GPU memory: a replica does not span GPUs; each GPU holds floor(its memory / the replica's).
    (NodeSize(gpus=2, gpu_memory_bytes=24 * GiB), ReplicaNeeds(gpu_memory_bytes=5 * GiB), {GPU_MEMORY: 8},
     (8, GPU_MEMORY)),
    (NodeSize(gpus=4, gpu_memory_bytes=16 * GiB), ReplicaNeeds(gpu_memory_bytes=20 * GiB), {GPU_MEMORY: 0},
     (0, GPU_MEMORY)),
    (NodeSize(64 * GiB, 32.0, gpus=1, gpu_memory_bytes=80 * GiB), ReplicaNeeds(2 * GiB, 1.0, None, 10 * GiB),
     {MEMORY: 32, CPU: 32, GPU_MEMORY: 8}, (8, GPU_MEMORY)),
    # MIG: each replica takes one slice, if its GPU memory fits one.
    (NodeSize(gpus=2, gpu_memory_bytes=80 * GiB, mig_slices_per_gpu=7, mig_slice_memory_bytes=10 * GiB),
     ReplicaNeeds(gpu_memory_bytes=5 * GiB), {MIG_SLICES: 14}, (14, MIG_SLICES)),
    (NodeSize(gpus=2, gpu_memory_bytes=80 * GiB, mig_slices_per_gpu=7, mig_slice_memory_bytes=10 * GiB),
     ReplicaNeeds(gpu_memory_bytes=12 * GiB), {MIG_SLICES: 0}, (0, MIG_SLICES)),
    # Ties name the first resource; unknown, zero, negative and NaN figures say nothing.
    (NodeSize(8 * GiB, 4.0), ReplicaNeeds(2 * GiB, 1.0), {MEMORY: 4, CPU: 4}, (4, MEMORY)),
    (NodeSize(storage_bytes=50 * GB), ReplicaNeeds(storage_bytes=0.0), {}, (None, None)),
    (NodeSize(storage_bytes=50 * GB, gpus=2, gpu_memory_bytes=math.nan), ReplicaNeeds(storage_bytes=-1.0,
                                                                                         gpu_memory_bytes=GiB),
     {}, (None, None)),
    (NodeSize(), ReplicaNeeds(GiB, 1.0, GB, GiB), {}, (None, None)),
    (NodeSize(storage_bytes=4 * GB), ReplicaNeeds(storage_bytes=5 * GB), {STORAGE: 0}, (0, STORAGE)),
]


@pytest.mark.parametrize(("node", "replica", "fits", "limit"), CASES)
def test_fit_counts(node: NodeSize, replica: ReplicaNeeds, fits: dict[str, int],
                    limit: tuple[int | None, str | None]) -> None:
    assert fit_counts(node, replica) == fits
    assert limiting(fits) == limit


def test_describe_names_each_resource_in_order() -> None:
    assert describe_fits({STORAGE: 10, MEMORY: 96, CPU: 18}) == "memory allows 96, CPU 18, storage 10"
    assert describe_fits({GPU_MEMORY: 8}) == "GPU memory allows 8"
    assert describe_fits({}) == ""


@pytest.mark.parametrize(("artifact", "overhead", "expected"), [
    (5 * GB, None, 5 * GB), (5 * GB, 2 * GB, 7 * GB), (None, 2 * GB, 2 * GB), (None, None, None),
])
def test_storage_per_replica(artifact: int | None, overhead: int | None, expected: int | None) -> None:
    assert storage_per_replica(artifact, overhead) == expected


def test_footprint_names_the_limit_and_every_count() -> None:
    out = footprint(artifact_bytes=4 * GB, steady_bytes=GiB, peak_bytes=2 * GiB, cpu_s_per_request=0.005,
                    max_sustained_rps=100.0, node=NodeSize(96 * GiB, 9.0, 50 * GB), replica_storage_bytes=GB)
    assert out["storage_per_replica_bytes"] == 5 * GB
    assert out["replicas_by_resource"] == {MEMORY: 96, CPU: 18, STORAGE: 10}
    assert (out["replicas_per_node"], out["replicas_limited_by"]) == (10, STORAGE)
    assert out["replicas_fit"] == "memory allows 96, CPU 18, storage 10"
    assert out["replicas_per_node_at_peak"] == 10  # memory at peak allows 48: storage still binds
    assert out["max_sustained_rps_per_node"] == 1000.0


def test_footprint_gpu_peak_fits_fewer() -> None:
    out = footprint(artifact_bytes=None, steady_bytes=None, peak_bytes=None, cpu_s_per_request=None,
                    max_sustained_rps=50.0, node=NodeSize(gpus=1, gpu_memory_bytes=16 * GiB),
                    gpu_steady_bytes=4 * GiB, gpu_peak_bytes=6 * GiB)
    assert (out["replicas_per_node"], out["replicas_limited_by"]) == (4, GPU_MEMORY)
    assert out["replicas_per_node_at_peak"] == 2


def _run(artifact_bytes: int, rate_rps: float, f1: float, node_storage_bytes: int = 50 * GB) -> dict[str, object]:
    """A report of one model: its artifact, its sustained rate, its F1; memory and CPU ample on the node."""
    footprint_section = footprint(artifact_bytes=artifact_bytes, steady_bytes=GiB, peak_bytes=GiB,
                                  cpu_s_per_request=0.001, max_sustained_rps=rate_rps,
                                  node=NodeSize(64 * GiB, 32.0, node_storage_bytes))
    report: dict[str, object] = {
        "objective": {"percentile": 99.0, "latency_ms": 100.0}, "capacity": {"max_sustained_rps": rate_rps},
        "stages": [], "accuracy": {"f1_macro": f1},
        "resources": {"memory": {"peak_bytes": GiB}, "cpu": {}, "footprint": footprint_section},
    }
    report["requirements"] = plan(report, Demand(peak_rps=1000.0), Node(price_per_hour=1.0))
    report["metrics"] = flatten_metrics(report)
    return report


def test_the_successor_scores_better_and_fails_the_node_throughput_gate() -> None:
    predecessor = _run(5 * GB, rate_rps=100.0, f1=0.90)
    successor = _run(10 * GB, rate_rps=100.0, f1=0.927)  # 3% better F1, twice the artifact
    assert predecessor["requirements"]["replicas_per_node"] == 10  # type: ignore[index]
    assert successor["requirements"]["replicas_per_node"] == 5  # type: ignore[index]
    assert successor["requirements"]["replicas_limited_by"] == STORAGE  # type: ignore[index]
    assert any("storage limits replicas per node to 5 (memory allows 64, CPU 320, storage 5)" in note
               for note in successor["requirements"]["notes"])  # type: ignore[index]
    assert predecessor["metrics"]["capacity_per_node_rps"] == 1000.0  # type: ignore[index]
    assert successor["metrics"]["capacity_per_node_rps"] == 500.0  # type: ignore[index]
    gates = [Gate("f1_macro", change=ChangeBound(max_worse=0.0)),
             Gate("capacity_per_node_rps", change=ChangeBound(max_worse=0.1, relative=True))]
    verdict = judge(successor, gates, Predecessor("r1", predecessor["metrics"]))  # type: ignore[arg-type]
    by_metric = {c.metric: c for c in verdict.checks if c.kind == "change"}
    assert by_metric["f1_macro"].status == "pass"
    assert by_metric["capacity_per_node_rps"].status == "fail"
    assert verdict.status == "fail"
    # The same successor on a node with 100 GB keeps its throughput: the gate passes.
    roomy = _run(10 * GB, rate_rps=100.0, f1=0.927, node_storage_bytes=100 * GB)
    checks = judge(roomy, gates[1:], Predecessor("r1", predecessor["metrics"])).checks  # type: ignore[arg-type]
    assert [c.status for c in checks if c.metric == "capacity_per_node_rps"] == ["pass"]


def test_plan_node_section_storage_and_gpus() -> None:
    fp = {"storage_per_replica_bytes": 10 * GB, "gpu_memory_per_replica_bytes": 6 * GiB,
          "memory_per_replica_bytes": GiB, "node_gpu_memory_bytes": 24 * GiB}
    report = {"objective": {"percentile": 99.0, "latency_ms": 100.0}, "capacity": {"max_sustained_rps": 40.0},
              "stages": [], "resources": {"memory": {}, "cpu": {}, "footprint": fp}}
    out = plan(report, None, Node(allocatable_memory_bytes=128 * GiB, allocatable_storage_bytes=100 * GB, gpus=2))
    assert out["replicas_by_resource"] == {MEMORY: 128, STORAGE: 10, GPU_MEMORY: 8}  # 2 x floor(24 / 6)
    assert (out["replicas_per_node"], out["replicas_limited_by"]) == (8, GPU_MEMORY)
    assert out["capacity_per_node_rps"] == 320.0
