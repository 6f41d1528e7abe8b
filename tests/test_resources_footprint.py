"""Replicas per node and the footprint section: tables including missing, zero and NaN figures."""

from __future__ import annotations

import math

import pytest

from profiler.core.fit import NodeSize
from profiler.measure.resources.footprint import footprint, replicas_per_node

GIB = 2**30


@pytest.mark.parametrize(
    ("memory", "cores", "node_memory", "node_cores", "expected"),
    [
        (2 * GIB, 0.5, 16 * GIB, 8.0, (8, "memory")),
        (2 * GIB, 2.0, 16 * GIB, 8.0, (4, "CPU")),
        (2 * GIB, None, 16 * GIB, None, (8, "memory")),
        (None, 0.5, None, 8.0, (16, "CPU")),
        (3 * GIB, None, 16 * GIB, None, (5, "memory")),
        (32 * GIB, None, 16 * GIB, None, (0, "memory")),
        (None, None, 16 * GIB, 8.0, (None, None)),
        (0.0, 0.0, 16 * GIB, 8.0, (None, None)),
        (-1.0, -1.0, 16 * GIB, 8.0, (None, None)),
        (math.nan, math.nan, 16 * GIB, 8.0, (None, None)),
        (2 * GIB, 0.5, None, None, (None, None)),
    ],
)
def test_replicas_per_node(memory: float | None, cores: float | None, node_memory: float | None,
                           node_cores: float | None, expected: tuple[int | None, str | None]) -> None:
    assert replicas_per_node(memory, cores, node_memory, node_cores) == expected


def test_footprint_section() -> None:
    out = footprint(artifact_bytes=12_345, steady_bytes=1 * GIB, peak_bytes=3 * GIB, cpu_s_per_request=0.002,
                    max_sustained_rps=250.0, node=NodeSize(16 * GIB, 4.0))
    assert out["cores_per_replica_at_capacity"] == pytest.approx(0.5)
    assert (out["replicas_per_node"], out["replicas_limited_by"]) == (8, "CPU")  # 4 / 0.5 < 16 / 1
    assert out["replicas_per_node_at_peak"] == 5  # 16 / 3
    assert out["max_sustained_rps_per_node"] == pytest.approx(2000.0)
    assert out["artifact_bytes"] == 12_345


def test_footprint_without_capacity() -> None:
    out = footprint(artifact_bytes=None, steady_bytes=1 * GIB, peak_bytes=None, cpu_s_per_request=0.002,
                    max_sustained_rps=None, node=NodeSize(16 * GIB, 4.0))
    assert out["cores_per_replica_at_capacity"] is None
    assert (out["replicas_per_node"], out["replicas_limited_by"]) == (16, "memory")
    assert out["max_sustained_rps_per_node"] is None
