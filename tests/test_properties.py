"""Property tests (hypothesis): whatever a user or a model hands in, the profile loader, the hold-out
readers, every response decoder and the URL parser give a result or one of the project's own errors
(ConfigError, DatasetError, DecodeError, TargetError, UrlError), never another exception.

Examples are few per property and derandomized (the same on every run, so CI cannot turn red by luck);
the whole module stays within a few seconds on a loaded 2-core machine. Each crash hypothesis found
while this was written is a fixed bug with its own example below (@example), so it stays covered.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from profiler._proto import grpc_predict_v2_pb2 as pb
from profiler.codecs.base import Codec
from profiler.codecs.predictions import PredictionReader
from profiler.codecs.template import JsonTemplateCodec
from profiler.codecs.tensors import TensorSpec, check_metadata
from profiler.codecs.v1 import V1RestCodec
from profiler.codecs.v2 import V2RestCodec
from profiler.codecs.v2_grpc import V2GrpcCodec
from profiler.config import Config, parse_config
from profiler.core.errors import ConfigError, DatasetError, DecodeError, TargetError
from profiler.core.redact import redact, redact_text, redact_url
from profiler.core.url import TargetUrl, UrlError, parse_target_url
from profiler.dataset import Dataset, Sample, load_dataset

PROPERTY = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
FEW = settings(PROPERTY, max_examples=60)

VALID = {
    "target": {"url": "http://127.0.0.1:8000", "model": "m"},
    "dataset": {"path": "h.jsonl", "inputs": "x", "label": "y"},
    "load": {"stages": [{"rate_rps": 10, "duration_s": 1}]},
    "gates": [{"metric": "accuracy", "min": 0.9}],
    "resources": {"memory_limit_bytes": "512Mi"},
}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**20, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["", "http://u:p@h:70000", "http://[::1", "512Mi", "9" * 400 + "Gi", "1e999", "-1", "\x00",
                     "grpc://h", "$.label", "{{inputs}}", "accuracy", "v2-grpc", "json", "a\nb", "é"]),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def paths_of(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in nested dicts and lists (the places a near-valid profile can go wrong)."""
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found += paths_of(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += paths_of(value, (*prefix, index))
    return found


def replaced(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A deep copy of `data` with the value at `path` replaced."""
    copy = json.loads(json.dumps(data))
    node = copy
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return copy


def assert_config_or_error(text: str) -> None:
    try:
        config = parse_config(text, Path("/profiles/p.yaml"))
    except ConfigError as exc:
        assert str(exc).startswith("/profiles/p.yaml"), exc
        assert "\n" not in str(exc)
    else:
        assert isinstance(config, Config)


@PROPERTY
@given(st.text(max_size=300))
@example("target: !!python/object:os.system {}")
@example("a: &a [*a]")
@example("[" * 3000)
@example("target: {url: '\\x00'}")
def test_any_text_is_a_profile_or_a_config_error(text: str) -> None:
    assert_config_or_error(text)


@PROPERTY
@given(json_values)
@example({**VALID, "load": {"\n": None}})
@example({**VALID, "target": {**VALID["target"], "url": "http://u:p@h:1/\x00"}})
def test_any_yaml_document_is_a_profile_or_a_config_error(data: Any) -> None:
    assert_config_or_error(yaml.safe_dump(data))


def test_the_profile_the_near_valid_ones_start_from_is_valid() -> None:
    assert isinstance(parse_config(yaml.safe_dump(VALID), Path("/profiles/p.yaml")), Config)


@PROPERTY
@given(st.data())
def test_near_valid_profiles_are_profiles_or_config_errors(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(paths_of(VALID)))
    value = data.draw(json_values)
    text = yaml.safe_dump(replaced(VALID, path, value))
    assert_config_or_error(text)


@PROPERTY
@given(st.sampled_from(paths_of(VALID)), st.sampled_from([
    "9" * 400 + "Gi", float("inf"), float("nan"), -1, 0, 2**70, "http://u:p@[::1", "\x00", [], {}, None, True,
    "1e999", "a" * 5000,
]))
def test_near_valid_profiles_with_known_troublemakers(path: tuple[Any, ...], value: Any) -> None:
    assert_config_or_error(yaml.safe_dump(replaced(VALID, path, value)))


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="profiler-properties-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def read_holdout(folder: Path, raw: bytes, fmt: str, inputs: str | list[str]) -> None:
    path = folder / f"h.{fmt}"
    path.write_bytes(raw)
    try:
        dataset = load_dataset(path, inputs=inputs, label="y", id_field=None, fmt=fmt)
    except DatasetError as exc:
        assert str(exc).startswith(str(path)), exc
    else:
        assert isinstance(dataset, Dataset) and dataset.samples
        for sample in dataset.samples:
            assert sample.inputs and all(isinstance(v, (int, float, str, bool)) for v in sample.inputs)
            assert all(math.isfinite(v) for v in sample.inputs if isinstance(v, float))


@FEW
@given(st.binary(max_size=400))
@example(b'{"x": [1], "y": [2]}\n')
@example(b'\xef\xbb\xbf{"x": [1], "y": 2}\n')
@example(b'{"x": [' + b"9" * 5000 + b'], "y": 1}\n')
@example(b'{"x": ' + b"[" * 5000 + b"\n")
@example(b'{"x": [], "y": 1}\n')
def test_any_bytes_are_a_jsonl_holdout_or_a_dataset_error(scratch: Path, raw: bytes) -> None:
    read_holdout(scratch, raw, "jsonl", "x")


@FEW
@given(st.lists(st.dictionaries(st.sampled_from(["x", "y", "id", "z"]), json_values, max_size=4), min_size=1,
                max_size=4))
def test_any_json_rows_are_a_holdout_or_a_dataset_error(scratch: Path, rows: list[dict[str, Any]]) -> None:
    read_holdout(scratch, b"".join(json.dumps(row).encode() + b"\n" for row in rows), "jsonl", "x")


@FEW
@given(st.binary(max_size=400) | st.text(alphabet="xyz,\"\n\r\x00 0123456789.-eE", max_size=200).map(str.encode))
@example(b"x,y\n1,2\n")
@example(b"x,x,y\n1,2,3\n")
@example(b"x,y\n" + b"1" * 200_000 + b",2\n")
def test_any_bytes_are_a_csv_holdout_or_a_dataset_error(scratch: Path, raw: bytes) -> None:
    read_holdout(scratch, raw, "csv", ["x"])


FIRST = Sample("s0", [1.0, 2.0], 0)


def codecs() -> list[Codec]:
    """One codec of each kind and prediction mode, with and without a label map."""
    specs = [TensorSpec("input-0", "FP32", (2,))]
    readers = [PredictionReader(), PredictionReader("argmax", ["a", "b", "c"]), PredictionReader("value", {"1": "x"})]
    made: list[Codec] = []
    for reader in readers:
        made += [V2RestCodec("m", inputs=specs, reader=reader), V2RestCodec("m", inputs=specs, output_name="o",
                                                                            reader=reader),
                 V1RestCodec("m", form="rows", inputs=specs, reader=reader),
                 V1RestCodec("m", form="columns", inputs=specs, output_name="o", reader=reader),
                 JsonTemplateCodec({"x": "{{inputs}}"}, "$.predictions[*].label", "/p", reader=reader),
                 JsonTemplateCodec({"x": "{{inputs}}"}, "label", "/p", reader=reader),
                 V2GrpcCodec("m", inputs=specs, reader=reader)]
    return made


CODECS = codecs()


def assert_decoded_or_error(codec: Codec, body: bytes, count: int) -> None:
    try:
        predictions = codec.decode(body, count)
    except DecodeError as exc:
        assert str(exc)
    else:
        assert isinstance(predictions, list) and len(predictions) == count


@PROPERTY
@given(st.sampled_from(CODECS), st.binary(max_size=300), st.integers(min_value=1, max_value=4))
@example(CODECS[0], b"[" * 100_000, 1)
@example(CODECS[0], b'{"outputs": [{"data": [' + b"9" * 5000 + b"]}]}", 1)
@example(CODECS[0], b'{"outputs": [{"data": [NaN, Infinity]}]}', 2)
def test_any_bytes_decode_or_raise_decode_error(codec: Codec, body: bytes, count: int) -> None:
    assert_decoded_or_error(codec, body, count)


@PROPERTY
@given(st.sampled_from(CODECS), json_values, st.integers(min_value=1, max_value=4))
def test_any_json_decodes_or_raises_decode_error(codec: Codec, document: Any, count: int) -> None:
    assert_decoded_or_error(codec, json.dumps(document).encode(), count)


response_shapes = st.fixed_dictionaries({
    "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["o", "p", ""]),
                                               "datatype": st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "X"]),
                                               "shape": st.lists(st.integers(-2, 4), max_size=2),
                                               "data": json_values}), max_size=3)})


@PROPERTY
@given(st.sampled_from(CODECS), response_shapes, st.integers(min_value=1, max_value=4))
def test_v2_shaped_answers_decode_or_raise_decode_error(codec: Codec, document: Any, count: int) -> None:
    assert_decoded_or_error(codec, json.dumps(document).encode(), count)


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from(["o", "p"]), st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "UINT8",
                                                                        "FP16", ""]),
                          st.lists(st.integers(0, 3), max_size=4), st.binary(max_size=24)), max_size=3),
       st.booleans(), st.integers(min_value=1, max_value=4))
def test_any_grpc_answer_decodes_or_raises_decode_error(outputs: list[tuple[str, str, list[int], bytes]], raw: bool,
                                                        count: int) -> None:
    response = pb.ModelInferResponse(model_name="m")
    for name, datatype, values, payload in outputs:
        tensor = response.outputs.add(name=name, datatype=datatype, shape=[len(values)])
        tensor.contents.int64_contents.extend(values)
        if raw:
            response.raw_output_contents.append(payload)
    for codec in CODECS:
        if isinstance(codec, V2GrpcCodec):
            assert_decoded_or_error(codec, response.SerializeToString(), count)


@PROPERTY
@given(json_values)
@example({"inputs": 5})
@example({"inputs": [{"name": "input-0", "shape": ["x"]}]})
@example({"inputs": [{"name": "input-0", "shape": 3}]})
@example({"inputs": [{"name": "input-0", "shape": [10**400]}]})
def test_any_metadata_checks_or_raises_target_error(document: Any) -> None:
    if not isinstance(document, dict):
        document = {"inputs": document}
    try:
        check_metadata([TensorSpec("input-0", "FP32", (2,))], document, "m", FIRST)
    except TargetError as exc:
        assert str(exc)


@PROPERTY
@given(st.text(max_size=80) | st.from_regex(r"(https?|grpcs?)://[a-z0-9:@\[\]%.?#/=-]{0,40}", fullmatch=True))
@example("http://u:p@[::1")
@example("http://h:99999999999999999999999")
def test_any_text_is_a_target_url_or_a_url_error(text: str) -> None:
    try:
        parsed = parse_target_url(text)
    except UrlError as exc:
        assert str(exc)
    else:
        assert isinstance(parsed, TargetUrl) and 1 <= parsed.port <= 65535
        assert "@" not in parsed.authority
        if not parsed.grpc:
            assert parse_target_url(parsed.url("/x")).request_target() == parsed.request_target("/x")
    assert isinstance(redact_url(text), str) and isinstance(redact_text(text), str)


@PROPERTY
@given(json_values)
def test_redaction_takes_any_config_data(data: Any) -> None:
    redact(data)
