"""Every protocol end to end: the bundled example model (a real subprocess) profiled over each one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from profiler.app.demo import read_grpc_url
from profiler.app.run import execute
from profiler.config import parse_config
from profiler.core.errors import TargetError
from profiler.examples.holdout import write_holdout
from profiler.state import new_state

PROFILE = """
target:
  url: {url}
  protocol: {protocol}
  model: digits
  timeout_s: 5
  ready_timeout_s: 30
{extra}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load:
  stages: [{{rate_rps: 40, duration_s: 1}}]
  batch_size: {batch}
resources: {{settle_s: 0}}
report: {{path: report.json}}
"""

JSON_EXTRA = """  request_template: {instances: "{{rows}}"}
  response_path: $.predictions
  infer_path: /v1/models/digits:predict
  ready_path: /v1/models/digits"""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, example_server: Any, example_grpc_url: str) -> Any:
    """The session's example server (REST and gRPC) and a hold-out file."""
    directory = tmp_path_factory.mktemp("e2e")
    write_holdout(directory / "holdout.jsonl")
    return directory, example_server[1], example_grpc_url


async def profile(directory: Path, url: str, protocol: str, extra: str = "", batch: int = 1) -> dict[str, Any]:
    text = PROFILE.format(url=url, protocol=protocol, extra=extra, batch=batch)
    config = parse_config(text, directory / "profile.yaml")
    return await execute(new_state(config))


@pytest.mark.parametrize("protocol", ["v2-rest", "v2-grpc", "v1-rest", "v1-rest-columnar", "json"])
@pytest.mark.parametrize("batch", [1, 4])
async def test_each_protocol_profiles_the_example_model(servers: Any, protocol: str, batch: int) -> None:
    directory, url, grpc_url = servers
    target = grpc_url if protocol == "v2-grpc" else url
    report = await profile(directory, target, protocol, JSON_EXTRA if protocol == "json" else "", batch)
    stage = report["stages"][-1]
    assert report["run"]["status"] == "completed"
    assert report["target"]["protocol"] == protocol
    assert stage["errors"] == 0, stage["error_examples"]
    assert stage["completed"] == stage["sent"] > 0
    accuracy = report["accuracy"]
    assert accuracy["coverage"] == 1.0  # every hold-out sample got a prediction in the accuracy pass
    assert accuracy["scored"] == accuracy["samples"] == 360
    assert accuracy["accuracy"] > 0.9
    assert accuracy["consistency"]["inconsistent"] == 0


async def test_inputs_the_model_does_not_declare_stop_the_run_before_load(servers: Any) -> None:
    directory, url, grpc_url = servers
    for target, protocol in ((url, "v2-rest"), (grpc_url, "v2-grpc")):
        with pytest.raises(TargetError, match=r"sample digits-0: input 'pixels': model 'digits' has no such input"):
            await profile(directory, target, protocol, "  input_name: pixels")
        with pytest.raises(TargetError, match=r"sample digits-0: input 'input-0': model 'digits' declares datatype "
                                              r"FP32, the config sends FP64"):
            await profile(directory, target, protocol, "  datatype: FP64")


async def test_a_sample_of_the_wrong_width_stops_the_run_before_load(servers: Any, tmp_path: Path) -> None:
    from profiler.core.errors import DatasetError

    _, url, _ = servers
    lines = [json.dumps({"id": "a", "pixels": [0.0] * 64, "label": 0}), json.dumps({"id": "b", "pixels": [0.0] * 63,
                                                                                  "label": 0})]
    (tmp_path / "holdout.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"sample b: holds 63 input values, the declared inputs take 64"):
        await profile(tmp_path, url, "v2-rest")


async def test_wrong_shape_responses_are_decode_errors_and_the_run_goes_on(start_server, tmp_path: Path) -> None:
    proc, url = start_server("--bad-output-every", "3", "--grpc-port", "0")
    grpc_url = read_grpc_url(proc)
    write_holdout(tmp_path / "holdout.jsonl")
    for target, protocol in ((url, "v2-rest"), (grpc_url, "v2-grpc")):
        report = await profile(tmp_path, target, protocol, batch=2)
        stage = report["stages"][-1]
        assert report["run"]["status"] == "completed"
        assert stage["errors_by_kind"].get("decode", 0) >= stage["sent"] // 3 - 1 > 0
        assert stage["completed"] > 0
        assert 0 < len(stage["error_examples"]) <= 5
        assert stage["error_examples"][0].startswith("decode: output holds 1 values, not 2 equal rows")

