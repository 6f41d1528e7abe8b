"""Interoperability with independent V2 implementations from PyPI (the `interop` extra).

- Our V2 encodings against the reference client library's (tritonclient), REST and gRPC, both ways.
- A real MLServer (sklearn runtime) on 127.0.0.1, profiled over V2 REST and V2 gRPC.

Install: pip install -e '.[dev,interop]'. Each test skips, saying so, when its package is absent.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from profiler._proto import grpc_predict_v2_pb2 as pb
from profiler.app.run import execute
from profiler.codecs.tensors import TensorSpec, decode_raw
from profiler.codecs.v2 import V2RestCodec
from profiler.codecs.v2_grpc import V2GrpcCodec
from profiler.config import parse_config
from profiler.core.errors import TargetError
from profiler.dataset import Sample
from profiler.examples.holdout import write_holdout
from profiler.state import new_state

HERE = Path(__file__).parent
needs_tritonclient = pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None,
                                        reason="tritonclient is not installed (pip install -e '.[interop]')")
needs_mlserver = pytest.mark.skipif(importlib.util.find_spec("mlserver_sklearn") is None,
                                    reason="mlserver-sklearn is not installed (pip install -e '.[interop]')")

CASES = [
    ("FP32", [[0.5, 1.25, -2.0], [3.0, 0.0, 7.5]]),
    ("FP64", [[0.1, 1e-300, -2.5], [3.0, 0.0, 1e300]]),
    ("INT32", [[1, -2, 2**31 - 1], [0, 5, -(2**31)]]),
    ("INT64", [[1, -2, 2**40], [0, 5, -(2**62)]]),
    ("BOOL", [[True, False, True], [False, False, True]]),
    ("BYTES", [["cat", "", "naïve"], ["dog", "x y", "z"]]),
]


def reference(model: str, tensors: list[dict[str, Any]], ours_grpc: bytes) -> dict[str, Any]:
    """What tritonclient builds for the same tensors (run in its own process, see interop_reference.py)."""
    spec = {"model": model, "version": "", "inputs": tensors, "ours_grpc_hex": ours_grpc.hex()}
    done = subprocess.run([sys.executable, str(HERE / "interop_reference.py")], input=json.dumps(spec),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@needs_tritonclient
@pytest.mark.parametrize(("datatype", "rows"), CASES, ids=[c[0] for c in CASES])
def test_v2_encodings_match_the_reference_client(datatype: str, rows: list[list[Any]]) -> None:
    samples = [Sample(f"s{i}", row, 0) for i, row in enumerate(rows)]
    specs = [TensorSpec("input-0", datatype, (3,))]
    rest = json.loads(V2RestCodec("m", inputs=specs).encode(samples))
    ours = V2GrpcCodec("m", inputs=specs).encode(samples)
    flat = [v for row in rows for v in row]
    ref = reference("m", [{"name": "input-0", "datatype": datatype, "shape": [2, 3], "values": flat}], ours)

    # REST: the same input tensors, value for value (tritonclient also adds its own request-level
    # `parameters` extension, binary_data_output, which a plain V2 client does not send).
    assert rest["inputs"] == ref["http_body"]["inputs"]
    assert set(ref["http_body"]) - set(rest) <= {"parameters"}

    # gRPC, their bytes read with our message class: same name, datatype, shape and elements.
    theirs = pb.ModelInferRequest.FromString(bytes.fromhex(ref["grpc_hex"]))
    assert theirs.model_name == "m"
    [tensor] = theirs.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("input-0", datatype, [2, 3])
    assert len(theirs.raw_input_contents) == 1  # tritonclient sends the raw form
    values = decode_raw(theirs.raw_input_contents[0], datatype)
    if datatype == "FP32":
        assert values == pytest.approx(flat, rel=1e-7)
    else:
        assert values == flat

    # gRPC, our bytes read with their message class: the same fields at the same numbers.
    parsed = ref["ours_parsed"]
    assert parsed["model_name"] == "m"
    [their_view] = parsed["inputs"]
    assert their_view["name"] == "input-0" and their_view["datatype"] == datatype
    assert [int(d) for d in their_view["shape"]] == [2, 3]
    contents = their_view["contents"]
    assert len(contents) == 1  # exactly one typed field is set, the one the spec assigns to the datatype
    [(field, got)] = contents.items()
    expected_field = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT32": "int_contents",
                      "INT64": "int64_contents", "BOOL": "bool_contents", "BYTES": "bytes_contents"}[datatype]
    assert field == expected_field
    assert len(got) == 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """MLServer with its scikit-learn runtime serving a digits model; REST and gRPC on 127.0.0.1."""
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from profiler.examples.model import split

    root = tmp_path_factory.mktemp("mlserver")
    (root / "digits").mkdir()
    x_train, _, y_train, _ = split()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(x_train, y_train)
    joblib.dump(model, root / "digits" / "model.joblib")
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    (root / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
        "parallel_workers": 0, "debug": False}))
    (root / "digits" / "model-settings.json").write_text(json.dumps({
        "name": "digits", "implementation": "mlserver_sklearn.SKLearnModel",
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 64]}],
        "parameters": {"uri": "./model.joblib", "version": "1"}}))
    write_holdout(root / "holdout.jsonl")
    executable = Path(sys.executable).parent / "mlserver"
    log = (root / "mlserver.log").open("w")
    proc = subprocess.Popen([str(executable), "start", str(root)], stdout=log, stderr=subprocess.STDOUT, cwd=root)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/digits/ready", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"MLServer did not start: {(root / 'mlserver.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield root, f"http://127.0.0.1:{http_port}", f"grpc://127.0.0.1:{grpc_port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


PROFILE = """
target: {{url: "{url}", protocol: {protocol}, model: digits, timeout_s: 5, ready_timeout_s: 30{extra}}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load:
  stages: [{{rate_rps: 50, duration_s: 2}}]
  batch_size: {batch}
  client: {client}
resources: {{settle_s: 0}}
report: {{path: report-{protocol}.json}}
"""


@needs_mlserver
@pytest.mark.parametrize(("protocol", "client"), [("v2-rest", "lean"), ("v2-grpc", "lean"), ("v2-grpc", "library")])
@pytest.mark.parametrize("batch", [1, 8])
async def test_profiles_a_real_mlserver(mlserver: Any, protocol: str, client: str, batch: int) -> None:
    """lean: our HTTP/1.1 and HTTP/2 gRPC clients (the defaults); library: grpc.aio."""
    root, rest_url, grpc_url = mlserver
    text = PROFILE.format(url=grpc_url if protocol == "v2-grpc" else rest_url, protocol=protocol, extra="",
                          batch=batch, client=client)
    report = await execute(new_state(parse_config(text, root / "profile.yaml")))
    stage = report["stages"][-1]
    assert stage["errors"] == 0, stage["error_examples"]
    assert stage["completed"] == stage["sent"] >= 90
    assert report["accuracy"]["coverage"] == 1.0
    assert report["accuracy"]["accuracy"] > 0.9
    assert report["accuracy"]["consistency"]["inconsistent"] == 0
    print(f"\nMLServer {protocol} ({client} client) batch {batch}: p50 {stage['latency_ms']['p50']} ms, p99 "
          f"{stage['latency_ms']['p99']} ms, accuracy {report['accuracy']['accuracy']:.4f}, "
          f"generator {stage['generator_cpu_us_per_request']} us/request")


@needs_mlserver
@pytest.mark.parametrize("protocol", ["v2-rest", "v2-grpc"])
async def test_mlserver_metadata_mismatch_stops_before_load(mlserver: Any, protocol: str) -> None:
    root, rest_url, grpc_url = mlserver
    text = PROFILE.format(url=grpc_url if protocol == "v2-grpc" else rest_url, protocol=protocol,
                          extra=", datatype: INT64", batch=1, client="lean")
    with pytest.raises(TargetError, match=r"sample digits-0: input 'input-0': model 'digits' declares datatype "
                                          r"FP32, the config sends INT64"):
        await execute(new_state(parse_config(text, root / "profile.yaml")))
