"""The model server's own view (server_stats): parsing each server's counters (pure, on text the real servers
wrote: tests/test_interop.py reads them live), the stage view, and a reading that fails mid-run, which is
noted in the report and never fails the run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from profiler.app.run import execute
from profiler.config import parse_config
from profiler.core.errors import ConfigError
from profiler.examples.holdout import write_holdout
from profiler.measure.server_stats import Snapshot, prometheus_counters, stage_view, triton_statistics
from profiler.record.render import render_text
from profiler.record.report import report_schema
from profiler.state import new_state

TRITON_STATS = {"model_stats": [{
    "name": "digits", "version": "1", "last_inference": 1796167100000, "inference_count": 130,
    "execution_count": 100,
    "inference_stats": {"success": {"count": 100, "ns": 400_000_000}, "fail": {"count": 0, "ns": 0},
                        "queue": {"count": 100, "ns": 20_000_000}, "compute_input": {"count": 100, "ns": 3_000_000},
                        "compute_infer": {"count": 100, "ns": 350_000_000},
                        "compute_output": {"count": 100, "ns": 7_000_000}, "cache_hit": {"count": 0, "ns": 0}},
    "batch_stats": []}]}

TRITON_METRICS = """# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="digits",version="1"} 10
nv_inference_request_success{model="other",version="1"} 99
# TYPE nv_inference_count counter
nv_inference_count{model="digits",version="1"} 12
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="digits",version="1"} 8
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="digits",version="1"} 50000
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="digits",version="1"} 2000
# TYPE nv_inference_compute_input_duration_us counter
nv_inference_compute_input_duration_us{model="digits",version="1"} 1000
# TYPE nv_inference_compute_infer_duration_us counter
nv_inference_compute_infer_duration_us{model="digits",version="1"} 40000
# TYPE nv_inference_compute_output_duration_us counter
nv_inference_compute_output_duration_us{model="digits",version="1"} 3000
"""

KSERVE_METRICS = """# TYPE request_preprocess_seconds histogram
request_preprocess_seconds_bucket{le="+Inf",model_name="digits"} 4.0
request_preprocess_seconds_count{model_name="digits"} 4.0
request_preprocess_seconds_sum{model_name="digits"} 0.0004
# TYPE request_predict_seconds histogram
request_predict_seconds_bucket{le="+Inf",model_name="digits"} 4.0
request_predict_seconds_count{model_name="digits"} 4.0
request_predict_seconds_sum{model_name="digits"} 0.008
request_predict_seconds_count{model_name="other"} 7.0
request_predict_seconds_sum{model_name="other"} 7.0
"""

MLSERVER_METRICS = """# TYPE model_infer_request_duration summary
model_infer_request_duration_count{model="digits",version="None"} 5.0
model_infer_request_duration_sum{model="digits",version="None"} 0.005
# TYPE rest_server_request_duration_seconds histogram
rest_server_request_duration_seconds_count{method="POST",path="/v2/models/{model_name}/infer",status_code="200"} 5.0
rest_server_request_duration_seconds_sum{method="POST",path="/v2/models/{model_name}/infer",status_code="200"} 0.01
rest_server_request_duration_seconds_count{method="GET",path="/v2/models/{model_name}",status_code="200"} 3.0
rest_server_request_duration_seconds_sum{method="GET",path="/v2/models/{model_name}",status_code="200"} 3.0
"""

BENTOML_METRICS = """# TYPE bentoml_service_request_duration_seconds histogram
bentoml_service_request_duration_seconds_count{endpoint="/classify",http_response_code="200",runner_name="Digits"} 6.0
bentoml_service_request_duration_seconds_sum{endpoint="/classify",http_response_code="200",runner_name="Digits"} 0.06
bentoml_service_request_duration_seconds_count{endpoint="/readyz",http_response_code="200",runner_name="Digits"} 9.0
bentoml_service_request_duration_seconds_sum{endpoint="/readyz",http_response_code="200",runner_name="Digits"} 9.0
"""


def test_triton_statistics_become_queue_and_compute_per_request() -> None:
    before = triton_statistics({"model_stats": [{"name": "digits", "inference_stats": {}}]}, "digits")
    view = stage_view(before, triton_statistics(TRITON_STATS, "digits"))
    assert view["phases"] == {"request": {"count": 100, "mean_ms": 4.0}, "queue": {"count": 100, "mean_ms": 0.2},
                              "compute_input": {"count": 100, "mean_ms": 0.03},
                              "compute_infer": {"count": 100, "mean_ms": 3.5},
                              "compute_output": {"count": 100, "mean_ms": 0.07}}
    assert view["mean_batch"] == 1.3
    with pytest.raises(ValueError, match="name no model 'other'"):
        triton_statistics(TRITON_STATS, "other")
    with pytest.raises(ValueError, match="not a statistics extension answer"):
        triton_statistics(["not", "it"], "digits")


@pytest.mark.parametrize(("kind", "text", "expected"), [
    ("triton-metrics", TRITON_METRICS, {"request": (10, 5.0), "queue": (10, 0.2), "compute_input": (10, 0.1),
                                        "compute_infer": (10, 4.0), "compute_output": (10, 0.3)}),
    ("kserve", KSERVE_METRICS, {"preprocess": (4, 0.1), "predict": (4, 2.0)}),
    ("mlserver", MLSERVER_METRICS, {"infer": (5, 1.0), "rest_request": (5, 2.0)}),
    ("bentoml", BENTOML_METRICS, {"request": (6, 10.0)}),
])
def test_prometheus_counters_of_each_server(kind: str, text: str, expected: dict[str, tuple[int, float]]) -> None:
    """Only the model's series (and, for MLServer and BentoML, only its infer path), counted from zero."""
    view = stage_view(prometheus_counters("", kind, "digits", "/classify"),
                      prometheus_counters(text, kind, "digits", "/classify"))
    assert {k: (v["count"], v["mean_ms"]) for k, v in view["phases"].items()} == expected


def test_a_failed_reading_is_the_view() -> None:
    assert stage_view(Snapshot({}, problem="http://x/metrics -> 503"), Snapshot({"a": (1.0, 1.0)})) == {
        "problem": "http://x/metrics -> 503"}
    with pytest.raises(ValueError, match="unknown kind"):
        prometheus_counters("", "torchserve", "digits")
    with pytest.raises(ValueError, match="not Prometheus text"):
        prometheus_counters("metric{ 1 2 3", "kserve", "digits")


PROFILE = """
target: {{url: "{url}", model: digits, timeout_s: 5, ready_timeout_s: 30}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load: {{stages: [{{rate_rps: 40, duration_s: 1}}], accuracy_pass: false}}
resources: {{settle_s: 0}}
server_stats: {{kind: {kind}, url: "{stats_url}", timeout_s: 1}}
history: {{enabled: false}}
report: {{path: report.json}}
"""


@pytest.mark.parametrize(("kind", "path", "problem"), [
    ("kserve", "/no-such-metrics?key=s3cret", r"http://127\.0\.0\.1:\d+/no-such-metrics\?key=REDACTED -> 404"),
    ("triton", "", r"/v2/models/digits/stats -> 404"),
], ids=["metrics-404", "triton-statistics-404"])
async def test_unreadable_server_stats_are_noted_not_fatal(tmp_path: Path, example_server: Any, kind: str, path: str,
                                                           problem: str) -> None:
    """The example model has no statistics: each stage's view says why (the URL redacted), the run completes."""
    _, url = example_server
    write_holdout(tmp_path / "holdout.jsonl")
    config = parse_config(PROFILE.format(url=url, kind=kind, stats_url=url + path), tmp_path / "profile.yaml")
    report = await execute(new_state(config))
    assert report["run"]["status"] == "completed"
    jsonschema.Draft202012Validator(report_schema()).validate(report)
    [stage] = report["stages"]
    assert stage["errors"] == 0 and stage["completed"] == stage["sent"] > 0
    assert stage["server"]["kind"] == kind
    assert "s3cret" not in json.dumps(report)
    assert re.search(problem, stage["server"]["problem"]), stage["server"]["problem"]
    assert "could not read it:" in render_text(report)
    assert report["target"]["server_stats"]["kind"] == kind


def test_server_stats_url_must_be_http(tmp_path: Path) -> None:
    text = PROFILE.format(url="http://127.0.0.1:1", kind="kserve", stats_url="ftp://127.0.0.1/metrics")
    with pytest.raises(ConfigError, match=r"server_stats: .*url must be an http:// or https:// URL"):
        parse_config(text, tmp_path / "profile.yaml")
