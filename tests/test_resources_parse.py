"""Parsing /proc smaps_rollup, cgroup files and Prometheus text: fixture files and broken input."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiler.measure.resources.parse import (
    cgroup_memory,
    parse_flat_keyed,
    parse_process_metrics,
    parse_single_value,
    parse_smaps_rollup,
)

FIXTURES = Path(__file__).parent / "fixtures" / "resources"


def test_smaps_rollup_fixture() -> None:
    rollup = parse_smaps_rollup((FIXTURES / "smaps_rollup.txt").read_text())
    # The fixture (a `cat` of its own smaps_rollup) says Rss 1644 kB, Pss 241 kB, Private 48 + 112 kB.
    assert rollup.rss_bytes == 1644 * 1024
    assert rollup.pss_bytes == 241 * 1024
    assert rollup.uss_bytes == (48 + 112) * 1024
    assert rollup.swap_bytes == 0


@pytest.mark.parametrize(
    "text",
    ["", "Rss: 10 kB\n", "garbage", "Rss: x kB\nPss: 1 kB\nPrivate_Clean: 1 kB\nPrivate_Dirty: 1 kB\n"],
)
def test_smaps_rollup_incomplete(text: str) -> None:
    with pytest.raises(ValueError, match="lacks"):
        parse_smaps_rollup(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("157286400\n", 157286400), ("max\n", None), ("9223372036854771712\n", None), ("0", 0)],
)
def test_single_value(text: str, expected: int | None) -> None:
    assert parse_single_value(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "1.5"])
def test_single_value_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_single_value(text)


def test_cgroup_v2_fixture() -> None:
    folder = FIXTURES / "cgroup_v2"
    stat = parse_flat_keyed((folder / "memory.stat").read_text())
    memory = cgroup_memory(int((folder / "memory.current").read_text()), stat,
                           parse_single_value((folder / "memory.max").read_text()))
    assert memory.current_bytes == 150 * 2**20
    assert memory.anon_bytes == 100 * 2**20 and memory.file_bytes == 40 * 2**20
    assert memory.working_set_bytes == 150 * 2**20 - 30 * 2**20
    assert memory.limit_bytes == 256 * 2**20
    assert parse_flat_keyed((folder / "cpu.stat").read_text())["usage_usec"] == 12_500_000
    assert parse_flat_keyed((folder / "memory.events").read_text())["oom_kill"] == 1


def test_cgroup_v1_fixture() -> None:
    stat = parse_flat_keyed((FIXTURES / "v1_memory.stat").read_text())
    usage = 2 * stat["total_inactive_file"]
    memory = cgroup_memory(usage, stat, None)
    assert memory.working_set_bytes == usage - stat["total_inactive_file"] > 0
    assert memory.anon_bytes == stat["total_rss"] and memory.file_bytes == stat["total_cache"]


@pytest.mark.parametrize(
    ("current", "stat", "working_set"),
    [
        (100, {"inactive_file": 30}, 70),
        (100, {}, 100),
        (10, {"inactive_file": 30}, 0),  # never negative
    ],
)
def test_working_set(current: int, stat: dict[str, int], working_set: int) -> None:
    assert cgroup_memory(current, stat, None).working_set_bytes == working_set


def test_flat_keyed_skips_malformed_lines() -> None:
    assert parse_flat_keyed("a 1\nb\nc x\nd -2\n e 3 4\n") == {"a": 1, "d": -2}


def test_process_metrics_fixture_sums_workers() -> None:
    scraped = parse_process_metrics((FIXTURES / "metrics.txt").read_text())
    assert scraped.resident_bytes == 100 * 2**20 + 50 * 2**20
    assert scraped.cpu_s == pytest.approx(15.0)
    assert scraped.series == 2


@pytest.mark.parametrize(
    ("text", "resident", "cpu"),
    [
        ("", None, None),
        ("# TYPE up gauge\nup 1\n", None, None),
        ("process_resident_memory_bytes 2.5e7\n", 25_000_000, None),
    ],
)
def test_process_metrics_partial(text: str, resident: int | None, cpu: float | None) -> None:
    scraped = parse_process_metrics(text)
    assert scraped.resident_bytes == resident and scraped.cpu_s == cpu


def test_process_metrics_not_prometheus() -> None:
    with pytest.raises(ValueError):
        parse_process_metrics("<html>not found</html>\n")
