"""Capacity arithmetic: required rate, replicas, replicas per node, node capacity, cost."""

from __future__ import annotations

import pytest

from profiler.core.fit import NodeSize, ReplicaNeeds, fit_counts
from profiler.judge.requirements import (
    Demand,
    Node,
    objective_covers,
    percentile_key,
    plan,
    replica_rate,
    replicas_needed,
    required_rps,
    sustained_rate_within,
)

GiB = 2**30


def report(sustained=200.0, rss=GiB, cpu=None, stages=None, objective_ms=100.0, footprint=None):
    return {
        "objective": {"percentile": 99.0, "latency_ms": objective_ms},
        "capacity": {"max_sustained_rps": sustained},
        "resources": {"memory": {"peak_bytes": rss}, "cpu": {"cores_under_load": cpu}, "footprint": footprint or {}},
        "stages": stages if stages is not None else [
            {"warmup": False, "offered_rps": 100.0, "latency_ms": {"p99": 20.0}, "objective": {"sustained": True}},
            {"warmup": False, "offered_rps": 200.0, "latency_ms": {"p99": 80.0}, "objective": {"sustained": True}},
            {"warmup": False, "offered_rps": 400.0, "latency_ms": {"p99": 900.0}, "objective": {"sustained": False}},
        ],
    }


@pytest.mark.parametrize(("demand", "expected"), [
    (Demand(requests_per_day=86_400), 1.0),
    (Demand(requests_per_day=100_000, peak_factor=3), 100_000 / 86_400 * 3),
    (Demand(peak_rps=50, requests_per_day=1), 50.0),   # a stated peak rate wins
])
def test_required_rate(demand, expected):
    assert required_rps(demand) == pytest.approx(expected)


def test_required_rate_needs_a_demand():
    with pytest.raises(ValueError, match="requests_per_day or peak_rps"):
        required_rps(Demand())


@pytest.mark.parametrize(("latency_ms", "percentile", "expected"), [
    (None, None, 200.0),     # no latency stated: the run's figure
    (5000.0, None, 200.0),   # looser than the objective: the run's figure holds
    (50.0, None, 100.0),     # stricter: only stages that met 50 ms at p99
    (10.0, None, 0.0),       # no stage met it
    (5000.0, 99.9, None),    # the stages hold no p99.9: unmeasured, not zero
    (5000.0, 42.0, 200.0),   # implied by the objective (p99 <= 100 ms)
    (50.0, 42.0, None),      # stricter, and not a percentile the report holds
])
def test_replica_rate(latency_ms, percentile, expected):
    rate, source = replica_rate(report(), Demand(peak_rps=1, latency_ms=latency_ms, percentile=percentile))
    assert rate == expected
    assert source


# (demand, node, sustained, rss, cpu, expected figures)
CASES = [
    (Demand(requests_per_day=100_000, peak_factor=3, latency_ms=5000), Node(16 * GiB, price_per_hour=0.4), 200.0,
     GiB, None, {"one_replica_meets": True, "replicas_needed": 1, "replicas_per_node": 16,
                 "capacity_per_node_rps": 3200.0, "nodes_needed": 1,
                 "cost_per_million": 0.4 / (3200 * 3600) * 1e6, "cost_per_day": 0.4 * 24}),
    (Demand(peak_rps=1000), Node(16 * GiB), 200.0, 3 * GiB, None,
     {"one_replica_meets": False, "replicas_needed": 5, "replicas_per_node": 5, "capacity_per_node_rps": 1000.0,
      "nodes_needed": 1, "cost_per_million": None}),
    (Demand(peak_rps=1000, utilisation=0.5), Node(16 * GiB), 200.0, 3 * GiB, None,
     {"replica_rps": 100.0, "replicas_needed": 10, "nodes_needed": 2}),
    (Demand(peak_rps=1, min_replicas=3), Node(16 * GiB), 200.0, GiB, None, {"replicas_needed": 3}),
    (Demand(peak_rps=100), Node(16 * GiB, allocatable_cpu_cores=4), 200.0, GiB, 0.5,
     {"replicas_per_node": 8, "capacity_per_node_rps": 1600.0}),        # CPU binds before memory
    (Demand(peak_rps=100, replica_memory_bytes=4 * GiB), Node(16 * GiB), 200.0, GiB, None,
     {"replica_memory_bytes": 4 * GiB, "replicas_per_node": 4}),        # a stated memory request wins
    (Demand(peak_rps=100), Node(GiB), 200.0, 2 * GiB, None,
     {"replicas_per_node": 0, "capacity_per_node_rps": None, "nodes_needed": None}),   # does not fit
    (Demand(peak_rps=100), Node(16 * GiB), 0.0, GiB, None,
     {"one_replica_meets": False, "replicas_needed": None, "capacity_per_node_rps": 0.0}),  # nothing sustained
    (Demand(peak_rps=100), Node(16 * GiB), None, None, None,
     {"replica_rps": None, "replicas_needed": None, "replicas_per_node": None, "one_replica_meets": None}),
    (Demand(peak_rps=100), None, 200.0, GiB, None,
     {"replicas_needed": 1, "replicas_per_node": None, "cost_per_million": None}),
    (Demand(peak_rps=100), Node(allocatable_cpu_cores=2.0), 200.0, GiB, 0.25,
     {"replicas_per_node": 8, "replicas_limited_by": "CPU"}),            # a node known by its cores only
    (None, Node(8 * GiB, price_per_hour=1.0), 100.0, GiB, None,
     {"required_rps": None, "replicas_per_node": 8, "capacity_per_node_rps": 800.0, "replicas_needed": None,
      "cost_per_million": 1.0 / (800 * 3600) * 1e6}),
]


@pytest.mark.parametrize(("demand", "node", "sustained", "rss", "cpu", "expected"), CASES)
def test_plan(demand, node, sustained, rss, cpu, expected):
    out = plan(report(sustained, rss, cpu, stages=[]), demand, node)
    for key, value in expected.items():
        assert out[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    if node is None:
        assert any("no node size" in note for note in out["notes"])


def test_plan_uses_the_resources_footprint():
    footprint = {"memory_per_replica_bytes": 2 * GiB, "cores_per_replica_at_capacity": 0.5,
                 "node_memory_bytes": 16 * GiB, "node_cpu_cores": 2.0}
    out = plan(report(rss=4 * GiB, cpu=0.1, footprint=footprint, stages=[]), Demand(peak_rps=100),
               Node(price_per_hour=1.0))
    assert out["replica_memory_bytes"] == 2 * GiB and out["replica_memory_source"] == "steady state under load"
    assert out["replicas_per_node"] == 4 and out["replicas_limited_by"] == "CPU"    # 2 cores / 0.5
    assert out["capacity_per_node_rps"] == 800.0
    own = plan(report(rss=4 * GiB, footprint=footprint, stages=[]), Demand(peak_rps=100), Node(32 * GiB))
    assert own["replicas_per_node"] == 16 and own["replicas_limited_by"] == "memory"   # the node section wins


def test_cost_counts_predictions_in_batches():
    one = plan(report(), None, Node(16 * GiB, price_per_hour=1.0), batch_size=1)
    four = plan(report(), None, Node(16 * GiB, price_per_hour=1.0), batch_size=4)
    assert four["cost_per_million"] == pytest.approx(one["cost_per_million"] / 4)


NAN = float("nan")


@pytest.mark.parametrize(("percentile", "key"), [
    (50.0, "p50"), (99.0, "p99"), (99.9, "p999"), (42.0, None), (100.0, None), (0.0, None), (NAN, None),
])
def test_percentile_key(percentile, key):
    assert percentile_key(percentile) == key


@pytest.mark.parametrize(("objective", "latency_ms", "percentile", "covers"), [
    ({"percentile": 99.0, "latency_ms": 100.0}, 100.0, 99.0, True),    # the same bound
    ({"percentile": 99.0, "latency_ms": 100.0}, 200.0, 50.0, True),    # looser on both
    ({"percentile": 99.0, "latency_ms": 100.0}, 50.0, 99.0, False),    # a tighter latency
    ({"percentile": 95.0, "latency_ms": 100.0}, 200.0, 99.0, False),   # a higher percentile
    ({"latency_ms": 100.0}, 200.0, 99.9, True),                        # no percentile: taken as the strictest
    ({"percentile": 99.0}, 5000.0, 50.0, False),                       # no objective latency
    ({}, 5000.0, 50.0, False),
    ({"percentile": 99.0, "latency_ms": 100.0}, NAN, 99.0, False),
])
def test_objective_covers(objective, latency_ms, percentile, covers):
    assert objective_covers(objective, latency_ms, percentile) is covers


def stage(rps, p99, sustained=True, warmup=False):
    return {"warmup": warmup, "offered_rps": rps, "latency_ms": {"p99": p99}, "objective": {"sustained": sustained}}


@pytest.mark.parametrize(("stages", "latency_ms", "rate"), [
    ([stage(100.0, 20.0), stage(200.0, 80.0), stage(400.0, 900.0, sustained=False)], 50.0, 100.0),
    ([stage(100.0, 20.0), stage(200.0, 80.0)], 80.0, 200.0),               # the bound is inclusive
    ([stage(100.0, 20.0)], 10.0, 0.0),                                     # measured, none within
    ([stage(100.0, 5.0, sustained=False), stage(50.0, 5.0, warmup=True)], 10.0, 0.0),   # nothing sustained
    ([], 10.0, 0.0),
    ([stage(100.0, None), stage(200.0, NAN)], 50.0, None),                # sustained, latency never measured
    ([stage(100.0, None), stage(50.0, 20.0)], 50.0, 50.0),
])
def test_sustained_rate_within(stages, latency_ms, rate):
    assert sustained_rate_within(stages, "p99", latency_ms) == rate


@pytest.mark.parametrize(("required", "rate", "min_replicas", "expected"), [
    (1000.0, 200.0, 1, 5),
    (1001.0, 200.0, 1, 6),
    (2.1, 0.3, 1, 7),              # 2.1 / 0.3 is 7.000000000000001 in floating point
    (1.0, 200.0, 3, 3),            # the minimum wins
    (0.0, 200.0, 1, 1),
    (100.0, 0.0, 1, None),         # a replica that sustains nothing: no number suffices
    (100.0, -1.0, 1, None),
    (100.0, NAN, 1, None),
])
def test_replicas_needed(required, rate, min_replicas, expected):
    assert replicas_needed(required, rate, min_replicas) == expected


@pytest.mark.parametrize(("node_memory", "memory", "node_cores", "cores", "fits"), [
    (16 * GiB, 3 * GiB, None, None, {"memory": 5}),
    (16 * GiB, 3 * GiB, 4.0, 0.5, {"memory": 5, "CPU": 8}),
    (None, 3 * GiB, 2.0, 0.25, {"CPU": 8}),
    (GiB, 2 * GiB, None, None, {"memory": 0}),       # does not fit
    (16 * GiB, 0.0, 4.0, 0.0, {}),                   # zero use says nothing about fit
    (16 * GiB, None, None, 0.5, {}),
    (None, None, None, None, {}),
])
def test_replicas_fit(node_memory, memory, node_cores, cores, fits):
    assert fit_counts(NodeSize(memory_bytes=node_memory, cpu_cores=node_cores),
                      ReplicaNeeds(memory_bytes=memory, cpu_cores=cores)) == fits
