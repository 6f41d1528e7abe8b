"""Resources end to end: a real example server profiled by run.execute, leaking, steady, or killed mid-run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from profiler.app.run import execute, measure_artifact
from profiler.config import parse_config
from profiler.core.errors import ConfigError
from profiler.examples.holdout import write_holdout
from profiler.record.exporter import RunCollector
from profiler.record.render import render_text
from profiler.state import ArtifactSize, new_state

pytestmark = pytest.mark.serial  # timing bounds: run alone after the parallel part (Makefile)

PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 2, ready_timeout_s: 30}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load:
  warmup_s: 0.3
  accuracy_pass: false
  stages: [{{rate_rps: {rate}, duration_s: {duration}}}]
gates: [{{metric: memory_leak, max: 0}}]
resources: {{pid: {pid}, interval_s: 0.1, settle_s: 0.3, artifact_path: holdout.jsonl,
            node_memory_bytes: 4Gi, node_cpu_cores: 2}}
"""


def profile(tmp_path: Path, url: str, pid: int, rate: float = 150, duration: float = 3) -> Any:
    write_holdout(tmp_path / "holdout.jsonl")
    path = tmp_path / "profile.yaml"
    text = PROFILE.format(url=url, pid=pid, rate=rate, duration=duration)
    path.write_text(text)
    return parse_config(text, path)


@pytest.mark.slow
async def test_leaking_server_is_flagged(tmp_path: Path, start_server: Callable[..., Any]) -> None:
    # 100 KB a request: well above the allocator's own noise (a few MB), so the rate is measured to a few
    # percent even on a starved machine, where 10 KB read anywhere from 6.5 to 91 KB a request.
    proc, url = start_server("--leak-kb-per-request=100")
    state = new_state(profile(tmp_path, url, proc.pid, rate=100))
    report = await execute(state)
    res = report["resources"]
    assert res["memory_figure"] == "pss" and res["source"].startswith("PSS from /proc/<pid>/smaps_rollup")
    assert res["complete"] and res["problems"] == []
    assert res["leak"]["status"] == "leaked", res["leak"]["reason"]
    assert res["leak"]["bytes_per_request"] == pytest.approx(100 * 1024, rel=0.2)
    assert report["metrics"]["memory_leak"] == 1.0
    assert report["verdict"]["status"] == "fail"
    # ~300 requests x 100 KB planted; the allocator reuses some freed pages, so ask for most of it, not all
    assert res["memory"]["after_bytes"] > res["memory"]["before_bytes"] + 20 * 2**20
    assert res["cpu"]["seconds_per_request"] > 0
    fit = res["footprint"]
    assert fit["artifact_bytes"] == (tmp_path / "holdout.jsonl").stat().st_size
    assert fit["replicas_per_node"] is not None and fit["replicas_limited_by"] in ("memory", "CPU")
    assert report["metrics"]["replicas_per_node"] == fit["replicas_per_node"]
    registry = CollectorRegistry()
    registry.register(RunCollector(lambda: state))
    exposition = generate_latest(registry).decode()
    assert 'profiler_memory_leak{model="digits"} 1.0' in exposition
    assert 'profiler_target_memory_bytes{figure="pss",model="digits"}' in exposition
    text = render_text(report)
    assert "leak     LEAKED" in text and "memory   PSS from" in text
    json.dumps(report, allow_nan=False)


@pytest.mark.slow
async def test_server_killed_mid_run(tmp_path: Path, start_server: Callable[..., Any]) -> None:
    proc, url = start_server()
    state = new_state(profile(tmp_path, url, proc.pid, rate=50, duration=3))

    async def kill_later() -> None:
        while state.phase != "load":
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        proc.kill()

    killer = asyncio.create_task(kill_later())
    report = await execute(state)
    await killer
    res = report["resources"]
    assert report["run"]["status"] == "completed"  # the run went on
    assert res["measured"] and not res["complete"]
    assert res["incomplete"] == f"pid {proc.pid} does not exist or has exited"
    assert f"pid {proc.pid} does not exist or has exited" in res["problems"]
    assert report["metrics"]["memory_leak"] is None and report["metrics"]["memory_peak_bytes"] is None
    checks = {c["metric"]: c["status"] for c in report["verdict"]["checks"]}
    assert checks["memory_leak"] == "inconclusive"
    assert checks["error_budget"] == "fail"  # a model that died mid-stage failed the rest of its requests
    assert "memory checks are inconclusive" in render_text(report)


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ("{pid: 5, pod: true}", "give at most one of pid, cmdline and pod"),
        ("{cmdline: '(unclosed'}", "cmdline is not a valid regular expression"),
        ("{metrics_url: 'localhost:9100'}", "metrics_url must be an http"),
        ("{node_memory_bytes: lots}", "must be a size like 512Mi"),
        ("{node_memory_bytes: 0}", "greater than 0"),
        ("{leak_warmup_fraction: 1}", "less than 1"),
    ],
)
def test_bad_resources_config(tmp_path: Path, resources: str, message: str) -> None:
    text = (f"target: {{url: 'http://127.0.0.1:1', model: m}}\ndataset: {{path: d.jsonl}}\n"
            f"load: {{stages: [{{rate_rps: 1, duration_s: 1}}]}}\nresources: {resources}\n")
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(text, tmp_path / "p.yaml")
    assert str(info.value).startswith(f"{tmp_path / 'p.yaml'}:4: resources")


def test_sizes_and_paths_in_config(tmp_path: Path) -> None:
    text = ("target: {url: 'http://127.0.0.1:1', model: m}\ndataset: {path: d.jsonl}\n"
            "load: {stages: [{rate_rps: 1, duration_s: 1}]}\n"
            "resources: {node_memory_bytes: 16Gi, memory_limit_bytes: 512Mi, artifact_path: model/}\n")
    config = parse_config(text, tmp_path / "p.yaml")
    assert config.resources.node_memory_bytes == 16 * 2**30
    assert config.resources.memory_limit_bytes == 512 * 2**20
    assert config.resources.artifact_path == tmp_path / "model"


def test_the_run_measures_the_model_artifact(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"x" * 1000)
    (tmp_path / "model" / "config.json").write_bytes(b"{}")
    assert measure_artifact(tmp_path / "model") == ArtifactSize(tmp_path / "model", 1002, 2)
    missing = measure_artifact(tmp_path / "gone")
    assert missing.size_bytes is None and missing.files is None
    assert missing.problem == f"model artifact: cannot read {tmp_path / 'gone'}: not found"
