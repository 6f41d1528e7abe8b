from __future__ import annotations

import json

import pytest

from profiler.codecs.factory import make_codec
from profiler.codecs.predictions import PredictionReader
from profiler.codecs.v2 import V2RestCodec
from profiler.core.errors import ConfigError, DatasetError, DecodeError
from profiler.dataset import Sample


def test_encode_batch_as_one_tensor() -> None:
    codec = V2RestCodec(model="m", input_name="x", datatype="FP32")
    body = json.loads(codec.encode([Sample("a", [1, 2], 0), Sample("b", [3, 4], 1)]))
    assert body == {"id": "a..b",
                    "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]}
    assert codec.infer_path == "/v2/models/m/infer"
    assert codec.ready_paths == ("/v2/health/ready", "/v2/models/m/ready")


def test_versioned_paths_and_int_datatype() -> None:
    codec = V2RestCodec(model="m", version="3", datatype="INT64")
    assert codec.infer_path == "/v2/models/m/versions/3/infer"
    assert json.loads(codec.encode([Sample("a", [1.0, 2.0], 0)]))["inputs"][0]["data"] == [1, 2]


def test_encode_rejects_ragged_batches() -> None:
    with pytest.raises(DatasetError, match="sample b: holds 1 input values, the declared inputs take 2"):
        V2RestCodec(model="m").encode([Sample("a", [1, 2], 0), Sample("b", [3], 1)])


@pytest.mark.parametrize(
    ("data", "shape", "count", "expected"),
    [
        ([3, 1], [2], 2, [3, 1]),
        ([0.1, 0.9, 0.8, 0.2], [2, 2], 2, [1, 0]),
        (["cat"], [1], 1, ["cat"]),
        ([0.2, 0.3, 0.5], [1, 3], 1, [2]),
    ],
)
def test_decode_tensor(data: list, shape: list, count: int, expected: list) -> None:
    assert PredictionReader().read(data, count) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not a V2 inference response"),
        (b'{"outputs": []}', "the response has no outputs"),
        (b'{"error": "x"}', "not a V2 inference response"),
        (b'{"outputs": [{"data": 5, "shape": [1]}]}', "must be a list"),
        (b'{"outputs": [{"data": [1, 2, 3], "shape": [3]}]}', "3 values, not 2 equal rows"),
        (b'{"outputs": [{"data": ["a", "b", "c", "d"], "shape": [2, 2]}]}', "not numeric"),
    ],
)
def test_decode_errors(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        V2RestCodec(model="m").decode(body, 2)


def test_unknown_protocol() -> None:
    with pytest.raises(ConfigError, match="unknown protocol"):
        make_codec("smoke-signals", model="m")
