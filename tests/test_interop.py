"""Interoperability with the model servers a user may point the profiler at, each a real server on 127.0.0.1.

- Our V2 encodings against the reference client library's (tritonclient), REST and gRPC, both ways.
- The matrix: MLServer (in our environment, the `interop` extra), KServe's Python model server, Triton
  (bundled in PyTriton, on the CPU) and BentoML (each in its own environment, made by `make interop-servers`,
  which `make test` depends on) serve the same scikit-learn digits pipeline, trained in the server's own
  process (tests/interop_servers/). The profiler profiles every protocol each server speaks; every cell must
  have no error and predictions equal to scikit-learn's on the hold-out set, sample by sample, and shows the
  server's own view of the stage (its statistics or /metrics) with the requests it counted.

Each server starts once for the module (the module is one xdist group, so one process starts them all) and
is stopped with its process group. A missing environment skips its cells here and fails them in CI.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import jsonschema
import pytest
from sklearn.metrics import accuracy_score

from profiler._proto import grpc_predict_v2_pb2 as pb
from profiler.app.run import execute
from profiler.codecs.tensors import TensorSpec, decode_raw
from profiler.codecs.v2 import V2RestCodec
from profiler.codecs.v2_grpc import V2GrpcCodec
from profiler.config import parse_config
from profiler.core.errors import TargetError
from profiler.dataset import Sample
from profiler.examples.holdout import write_holdout
from profiler.examples.model import split
from profiler.measure.accuracy import label_key
from profiler.record.render import render_text
from profiler.record.report import report_schema
from profiler.state import new_state
from tests.conftest import require
from tests.interop_servers.digits import train_with_reference

pytestmark = pytest.mark.xdist_group("interop")  # `make test` runs it in one process: each server starts once

HERE = Path(__file__).parent
REPO = HERE.parent
START_TIMEOUT_S = 120.0
needs_tritonclient = pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None,
                                        reason="tritonclient is not installed (pip install -e '.[interop]')")

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


@dataclass
class Served:
    """A model server up on 127.0.0.1: its addresses, where its own figures are, scikit-learn's predictions."""

    name: str
    folder: Path
    rest_url: str
    grpc_url: str
    stats: dict[str, str]
    """server_stats kind -> URL, for each way the server exports its own figures."""
    reference: list[int]
    """scikit-learn's prediction for each hold-out sample, made in the server's process (reference.json)."""


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def launch(argv: list[str], folder: Path, ready_url: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server in a process group of its own (its workers go with it); wait until `ready_url` says 200."""
    log = (folder / "server.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _ready(ready_url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            tail = (folder / "server.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"{argv[0]} did not become ready at {ready_url}: {tail}")
        time.sleep(0.5)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group; after it ends (20 s at most), SIGKILL to whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # a worker that outlived its parent
    proc.wait(timeout=10)


def _reference(folder: Path) -> list[int]:
    predictions: list[int] = json.loads((folder / "reference.json").read_text())["predictions"]
    return predictions


def _environment(name: str) -> Path:
    python = REPO / f".venv-{name}" / "bin" / "python"
    require(python.exists(), f"the {name} server's environment (.venv-{name})", "make interop-servers")
    return python


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """MLServer with its scikit-learn runtime; REST, gRPC and its metrics port on 127.0.0.1."""
    require(importlib.util.find_spec("mlserver_sklearn") is not None, "mlserver-sklearn",
            "pip install -e '.[interop]'")
    root = tmp_path_factory.mktemp("mlserver")
    (root / "digits").mkdir()
    joblib.dump(train_with_reference(root), root / "digits" / "model.joblib")
    write_holdout(root / "holdout.jsonl")
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    (root / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
        "parallel_workers": 0, "debug": False}))
    (root / "digits" / "model-settings.json").write_text(json.dumps({
        "name": "digits", "implementation": "mlserver_sklearn.SKLearnModel",
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 64]}],
        "parameters": {"uri": "./model.joblib", "version": "1"}}))
    proc = launch([str(Path(sys.executable).parent / "mlserver"), "start", str(root)], root,
                  f"http://127.0.0.1:{http_port}/v2/models/digits/ready")
    try:
        yield Served("mlserver", root, f"http://127.0.0.1:{http_port}", f"grpc://127.0.0.1:{grpc_port}",
                     {"mlserver": f"http://127.0.0.1:{metrics_port}/metrics"}, _reference(root))
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def kserve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """KServe's Python model server (tests/interop_servers/kserve_digits.py): V1 and V2 REST, V2 gRPC."""
    python = _environment("kserve")
    root = tmp_path_factory.mktemp("kserve")
    write_holdout(root / "holdout.jsonl")
    http_port, grpc_port = free_port(), free_port()
    proc = launch([str(python), str(HERE / "interop_servers" / "kserve_digits.py"), str(root),
                   "--http_port", str(http_port), "--grpc_port", str(grpc_port)], root,
                  f"http://127.0.0.1:{http_port}/v2/models/digits/ready")
    try:
        yield Served("kserve", root, f"http://127.0.0.1:{http_port}", f"grpc://127.0.0.1:{grpc_port}",
                     {"kserve": f"http://127.0.0.1:{http_port}/metrics"}, _reference(root))
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Triton, the build bundled in PyTriton, on the CPU (tests/interop_servers/triton_digits.py)."""
    python = _environment("triton")
    root = tmp_path_factory.mktemp("triton")
    write_holdout(root / "holdout.jsonl")
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    proc = launch([str(python), str(HERE / "interop_servers" / "triton_digits.py"), str(root),
                   "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)],
                  root, f"http://127.0.0.1:{http_port}/v2/models/digits/ready")
    try:
        yield Served("triton", root, f"http://127.0.0.1:{http_port}", f"grpc://127.0.0.1:{grpc_port}",
                     {"triton": f"http://127.0.0.1:{http_port}",
                      "triton-metrics": f"http://127.0.0.1:{metrics_port}/metrics"}, _reference(root))
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def bentoml(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """BentoML serving its own JSON API (tests/interop_servers/bentoml_digits.py)."""
    python = _environment("bentoml")
    root = tmp_path_factory.mktemp("bentoml")
    write_holdout(root / "holdout.jsonl")
    port = free_port()
    proc = launch([str(python), "-m", "bentoml", "serve", "tests.interop_servers.bentoml_digits:Digits",
                   "--host", "127.0.0.1", "--port", str(port)], root, f"http://127.0.0.1:{port}/readyz",
                  env={"DIGITS_FOLDER": str(root), "BENTOML_DO_NOT_TRACK": "true"})
    try:
        yield Served("bentoml", root, f"http://127.0.0.1:{port}", "", {"bentoml": f"http://127.0.0.1:{port}/metrics"},
                     _reference(root))
    finally:
        stop(proc)


MATRIX_PROFILE = """
target: {{url: "{url}", protocol: {protocol}, model: digits, timeout_s: 10, ready_timeout_s: 30{extra}}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load: {{stages: [{{rate_rps: 50, duration_s: 2}}]}}
resources: {{settle_s: 0}}
server_stats: {{kind: {stats_kind}, url: "{stats_url}"}}
history: {{enabled: false}}
report: {{path: report-{cell}.json}}
"""

BENTOML_TARGET = (', infer_path: /classify, ready_path: /readyz, request_template: {pixels: "{{rows}}"}, '
                  'response_path: "$"')

MATRIX = [
    # (server, protocol, server_stats kind, the phases the server counts once per request)
    ("mlserver", "v2-rest", "mlserver", ("infer", "rest_request")),
    ("mlserver", "v2-grpc", "mlserver", ("infer", "grpc_request")),
    ("kserve", "v1-rest", "kserve", ("predict",)),
    ("kserve", "v2-rest", "kserve", ("predict",)),
    ("kserve", "v2-grpc", "kserve", ("predict",)),
    ("triton", "v2-rest", "triton", ("request", "queue", "compute_infer")),
    ("triton", "v2-grpc", "triton-metrics", ("request", "queue", "compute_infer")),
    ("bentoml", "json", "bentoml", ("request",)),
]


@pytest.mark.parametrize(("server", "protocol", "stats_kind", "phases"), MATRIX,
                         ids=[f"{m[0]}-{m[1]}" for m in MATRIX])
async def test_matrix_cell(server: str, protocol: str, stats_kind: str, phases: tuple[str, ...],
                           request: pytest.FixtureRequest) -> None:
    """One server, one protocol: no error, scikit-learn's predictions to the sample, the server's own view."""
    served: Served = request.getfixturevalue(server)
    cell = f"{server}-{protocol}"
    text = MATRIX_PROFILE.format(url=served.grpc_url if protocol == "v2-grpc" else served.rest_url,
                                 protocol=protocol, extra=BENTOML_TARGET if protocol == "json" else "",
                                 stats_kind=stats_kind, stats_url=served.stats[stats_kind], cell=cell)
    state = new_state(parse_config(text, served.folder / f"profile-{cell}.yaml"))
    report = await execute(state)
    assert report["run"]["status"] == "completed", report["run"]
    [stage] = report["stages"]
    jsonschema.Draft202012Validator(report_schema()).validate(report)
    assert stage["errors"] == 0 and stage["unsent"] == 0, stage["error_examples"]
    assert stage["completed"] == stage["sent"] >= 90
    accuracy = report["accuracy"]
    assert accuracy["coverage"] == 1.0 and accuracy["errors"] == 0 and accuracy["incomplete"] is None
    assert accuracy["consistency"]["inconsistent"] == 0 and accuracy["consistency"]["compared"] >= 90
    # To the sample: every hold-out prediction that came over the wire is scikit-learn's own.
    assert state.predictions is not None
    assert state.predictions.reference == [label_key(p) for p in served.reference]
    _, _, _, labels = split()
    assert accuracy["accuracy"] == pytest.approx(accuracy_score(labels, served.reference), abs=0, rel=1e-12)
    # The server's own view: it counted every request of the stage, once, in each phase it times.
    view = stage["server"]
    assert view["kind"] == stats_kind and "problem" not in view, view
    for phase in phases:
        assert view["phases"].get(phase, {}).get("count") == stage["completed"], (phase, view)
        assert view["phases"][phase]["mean_ms"] >= 0
    if stats_kind.startswith("triton"):
        assert view["mean_batch"] >= 1.0
    means = view["profiler_mean_ms"]
    assert means["latency"] >= means["service"] > 0
    text = render_text(report)
    assert f"the server's own view ({stats_kind}), mean ms per request:" in text
    print("\n" + "\n".join(line for line in text.splitlines() if "own view" in line or "the profiler's mean" in line))
    print(f"\n{cell}: accuracy {accuracy['accuracy']:.4f} (scikit-learn's to the sample), p50 "
          f"{stage['latency_ms']['p50']} ms, p99 {stage['latency_ms']['p99']} ms; the profiler's mean latency "
          f"{means['latency']} ms, service {means['service']} ms; the server's own: "
          + ", ".join(f"{k} {v['mean_ms']} ms" for k, v in view["phases"].items()))


PROFILE = """
target: {{url: "{url}", protocol: {protocol}, model: digits, timeout_s: 5, ready_timeout_s: 30{extra}}}
dataset: {{path: holdout.jsonl, inputs: pixels, label: label, id: id}}
load:
  stages: [{{rate_rps: 50, duration_s: 2}}]
  batch_size: {batch}
  client: {client}
resources: {{settle_s: 0}}
history: {{enabled: false}}
report: {{path: report-{protocol}.json}}
"""


@pytest.mark.parametrize(("protocol", "client", "batch"), [
    ("v2-rest", "lean", 8), ("v2-grpc", "lean", 8), ("v2-grpc", "library", 1), ("v2-grpc", "library", 8)])
async def test_profiles_a_real_mlserver(mlserver: Served, protocol: str, client: str, batch: int) -> None:
    """Batches (the request id names the batch's first and last samples) and the grpc.aio client; the matrix
    has the lean clients at batch 1."""
    text = PROFILE.format(url=mlserver.grpc_url if protocol == "v2-grpc" else mlserver.rest_url, protocol=protocol,
                          extra="", batch=batch, client=client)
    state = new_state(parse_config(text, mlserver.folder / "profile.yaml"))
    report = await execute(state)
    stage = report["stages"][-1]
    assert stage["errors"] == 0, stage["error_examples"]
    assert stage["completed"] == stage["sent"] >= 90
    assert report["accuracy"]["coverage"] == 1.0
    assert state.predictions is not None
    assert state.predictions.reference == [label_key(p) for p in mlserver.reference]
    assert report["accuracy"]["consistency"]["inconsistent"] == 0
    print(f"\nMLServer {protocol} ({client} client) batch {batch}: p50 {stage['latency_ms']['p50']} ms, p99 "
          f"{stage['latency_ms']['p99']} ms, accuracy {report['accuracy']['accuracy']:.4f}, "
          f"generator {stage['generator_cpu_us_per_request']} us/request")


@pytest.mark.parametrize("protocol", ["v2-rest", "v2-grpc"])
async def test_mlserver_metadata_mismatch_stops_before_load(mlserver: Served, protocol: str) -> None:
    text = PROFILE.format(url=mlserver.grpc_url if protocol == "v2-grpc" else mlserver.rest_url, protocol=protocol,
                          extra=", datatype: INT64", batch=1, client="lean")
    with pytest.raises(TargetError, match=r"sample digits-0: input 'input-0': model 'digits' declares datatype "
                                          r"FP32, the config sends INT64"):
        await execute(new_state(parse_config(text, mlserver.folder / "profile.yaml")))
