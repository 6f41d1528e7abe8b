"""Wire codecs: V2 REST, V2 gRPC, V1 / TF Serving REST and the JSON template, encode and decode tables."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from profiler._proto import grpc_predict_v2_pb2 as pb
from profiler.codecs.factory import codec_from_config, make_codec
from profiler.codecs.predictions import PredictionReader
from profiler.codecs.template import JsonTemplateCodec, TemplateError
from profiler.codecs.tensors import TensorSpec
from profiler.codecs.v1 import V1RestCodec
from profiler.codecs.v2 import V2RestCodec
from profiler.codecs.v2_grpc import V2GrpcCodec
from profiler.config import parse_config
from profiler.core.errors import ConfigError, DatasetError, DecodeError, IdMismatchError
from profiler.dataset import Sample

S1 = Sample("a", [1, 2, 3], 0)
S2 = Sample("b", [4, 5, 6], 1)


# --- V2 REST -----------------------------------------------------------------------------------------

def test_v2_rest_encodes_one_tensor_of_shape_batch_by_features() -> None:
    codec = V2RestCodec("digits", version="3")
    assert codec.infer_path == "/v2/models/digits/versions/3/infer"
    assert codec.ready_paths == ("/v2/health/ready", "/v2/models/digits/versions/3/ready")
    assert json.loads(codec.encode([S1, S2])) == {"id": "a..b", "inputs": [
        {"name": "input-0", "shape": [2, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}]}


def test_v2_rest_encodes_several_tensors_of_each_datatype() -> None:
    specs = [TensorSpec("ids", "INT64", (2,)), TensorSpec("flag", "BOOL", (1,)), TensorSpec("text", "BYTES", (1,))]
    body = V2RestCodec("m", inputs=specs).encode([Sample("x", [1, 2, 1, "hi"], 0), Sample("y", [3, 4, 0, "yo"], 0)])
    assert json.loads(body)["inputs"] == [
        {"name": "ids", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]},
        {"name": "flag", "shape": [2, 1], "datatype": "BOOL", "data": [True, False]},
        {"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": ["hi", "yo"]},
    ]


def test_v2_rest_encode_rejects_a_sample_of_another_width() -> None:
    codec = V2RestCodec("m")
    with pytest.raises(DatasetError, match="sample b: holds 2 input values, the declared inputs take 3"):
        codec.encode([S1, Sample("b", [1, 2], 0)])


V2_OUT = {"outputs": [{"name": "probs", "datatype": "FP32", "shape": [2, 2], "data": [0.1, 0.9, 0.7, 0.3]},
                      {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["dog", "cat"]}]}


@pytest.mark.parametrize(("output_name", "labels", "document", "expected"), [
    (None, None, V2_OUT, [1, 0]),
    ("label", None, V2_OUT, ["dog", "cat"]),
    (None, ["cat", "dog"], V2_OUT, ["dog", "cat"]),
    (None, None, {"outputs": [{"name": "y", "datatype": "INT64", "shape": [2, 1], "data": [[3], [4]]}]}, [3, 4]),
])
def test_v2_rest_decode(output_name: str | None, labels: Any, document: Any, expected: list[Any]) -> None:
    codec = V2RestCodec("m", output_name=output_name, reader=PredictionReader(labels=labels))
    assert codec.decode(json.dumps(document).encode(), 2) == expected


@pytest.mark.parametrize(("body", "message"), [
    (b"not json", "not a V2 inference response"),
    (b"{}", "not a V2 inference response: KeyError"),
    (b'{"outputs": []}', "no outputs"),
    (b'{"outputs": [{"name": "y"}]}', "KeyError"),
    (b'{"outputs": [{"name": "y", "data": 3}]}', "'data' must be a list"),
    (b'{"outputs": [{"name": "y", "data": [1, 2, 3]}]}', "3 values, not 2 equal rows"),
    (b'{"outputs": [{"name": "y", "data": [1, 2]}]}', None),
])
def test_v2_rest_decode_errors(body: bytes, message: str | None) -> None:
    codec = V2RestCodec("m", output_name=None)
    if message is None:
        assert codec.decode(body, 2) == [1, 2]
    else:
        with pytest.raises(DecodeError, match=message):
            codec.decode(body, 2)


def test_v2_rest_decode_names_a_missing_output() -> None:
    with pytest.raises(DecodeError, match=r"no output named 'score' in the response \(it has 'probs', 'label'\)"):
        V2RestCodec("m", output_name="score").decode(json.dumps(V2_OUT).encode(), 2)


# --- V2 gRPC -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("datatype", "inputs", "field", "expected"), [
    ("FP32", [0.5, 1, 2], "fp32_contents", [0.5, 1.0, 2.0]),
    ("FP64", [0.1, 1, 2], "fp64_contents", [0.1, 1.0, 2.0]),
    ("INT32", [1, -2, 3], "int_contents", [1, -2, 3]),
    ("INT64", [2**40, -2, 3], "int64_contents", [2**40, -2, 3]),
    ("BOOL", [True, 0, 1], "bool_contents", [True, False, True]),
    ("BYTES", ["a", "é", ""], "bytes_contents", [b"a", "é".encode(), b""]),
])
def test_v2_grpc_encodes_typed_contents(datatype: str, inputs: list[Any], field: str, expected: list[Any]) -> None:
    body = V2GrpcCodec("m", version="2", inputs=[TensorSpec("x", datatype)]).encode([Sample("s", inputs, 0)])
    request = pb.ModelInferRequest.FromString(body)
    assert (request.model_name, request.model_version) == ("m", "2")
    [tensor] = request.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("x", datatype, [1, 3])
    got = list(getattr(tensor.contents, field))
    assert got == (pytest.approx(expected) if datatype == "FP64" else expected)
    assert not request.raw_input_contents


def _response(datatype: str, values: list[Any], raw: bytes | None = None, name: str = "y") -> bytes:
    output = pb.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=[len(values)])
    response = pb.ModelInferResponse(model_name="m", outputs=[output])
    if raw is not None:
        response.raw_output_contents.append(raw)
    else:
        field = {"INT64": "int64_contents", "FP32": "fp32_contents", "BYTES": "bytes_contents"}[datatype]
        getattr(response.outputs[0].contents, field).extend(values)
    body: bytes = response.SerializeToString()
    return body


@pytest.mark.parametrize(("body", "count", "expected"), [
    (_response("INT64", [3, 4]), 2, [3, 4]),
    (_response("FP32", [0.25, 0.75]), 1, [1]),
    (_response("BYTES", [b"cat", b"dog"]), 2, ["cat", "dog"]),
    (_response("INT64", [5, 6], raw=struct.pack("<2q", 5, 6)), 2, [5, 6]),  # Triton answers in raw form
    (_response("FP32", [0, 0], raw=struct.pack("<4f", 0.9, 0.1, 0.2, 0.8)), 2, [0, 1]),
])
def test_v2_grpc_decode(body: bytes, count: int, expected: list[Any]) -> None:
    assert V2GrpcCodec("m").decode(body, count) == expected


@pytest.mark.parametrize(("body", "message"), [
    (b"\xff\xff\xff", "not a V2 ModelInferResponse"),
    (pb.ModelInferResponse().SerializeToString(), "no outputs"),
    (_response("INT64", [1, 2, 3]), "3 values, not 2 equal rows"),
    (_response("FP16", [], raw=b"\x00\x00"), "cannot read a raw FP16"),
])
def test_v2_grpc_decode_errors(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        V2GrpcCodec("m").decode(body, 2)


def test_v2_grpc_decode_picks_the_named_output() -> None:
    response = pb.ModelInferResponse.FromString(_response("INT64", [1, 2]))
    extra = response.outputs.add(name="label", datatype="BYTES", shape=[2])
    extra.contents.bytes_contents.extend([b"x", b"y"])
    body = response.SerializeToString()
    assert V2GrpcCodec("m", output_name="label").decode(body, 2) == ["x", "y"]
    with pytest.raises(DecodeError, match=r"no output named 'z' in the response \(it has 'y', 'label'\)"):
        V2GrpcCodec("m", output_name="z").decode(body, 2)


def test_v2_requests_carry_the_sample_id_and_answers_are_checked_against_it() -> None:
    """REST and gRPC: a sample's id (`first..last` for a batch) in the request; an answer under another id is an
    IdMismatchError (its own outcome), one under the same id or none at all is read."""
    rest, grpc_codec = V2RestCodec("m"), V2GrpcCodec("m")
    assert json.loads(rest.encode([S1]))["id"] == rest.request_id([S1]) == "a"
    assert pb.ModelInferRequest.FromString(grpc_codec.encode([S1, S2])).id == grpc_codec.request_id([S1, S2]) == "a..b"
    answer = {"outputs": [{"name": "y", "datatype": "INT64", "shape": [1], "data": [7]}]}
    for answer_id in (None, "", "a"):
        document = answer if answer_id is None else {**answer, "id": answer_id}
        assert rest.decode(json.dumps(document).encode(), 1, "a") == [7]
    with pytest.raises(IdMismatchError, match="the answer's id 'b' is not its request's 'a'"):
        rest.decode(json.dumps({**answer, "id": "b"}).encode(), 1, "a")
    assert rest.decode(json.dumps({**answer, "id": "b"}).encode(), 1) == [7]  # no id to check against
    response = pb.ModelInferResponse.FromString(_response("INT64", [7]))
    assert grpc_codec.decode(response.SerializeToString(), 1, "a") == [7]  # an empty id is none
    response.id = "a"
    assert grpc_codec.decode(response.SerializeToString(), 1, "a") == [7]
    response.id = "b"
    with pytest.raises(IdMismatchError, match="the answer's id 'b' is not its request's 'a'"):
        grpc_codec.decode(response.SerializeToString(), 1, "a")
    assert V1RestCodec("m").request_id([S1]) is None


# --- V1 / TF Serving REST ----------------------------------------------------------------------------

def test_v1_rows_and_columns_encode() -> None:
    rows = V1RestCodec("m", form="rows")
    assert rows.infer_path == "/v1/models/m:predict" and rows.ready_paths == ("/v1/models/m",)
    assert json.loads(rows.encode([S1, S2])) == {"instances": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}
    columns = V1RestCodec("m", version="7", form="columns")
    assert columns.infer_path == "/v1/models/m/versions/7:predict"
    assert json.loads(columns.encode([S1, S2])) == {"inputs": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}
    named = [TensorSpec("a", "INT64", (2,)), TensorSpec("b", "BYTES", (1,))]
    sample = Sample("n", [1, 2, "t"], 0)
    assert json.loads(V1RestCodec("m", form="rows", inputs=named).encode([sample])) == {
        "instances": [{"a": [1, 2], "b": ["t"]}]}
    assert json.loads(V1RestCodec("m", form="columns", inputs=named).encode([sample])) == {
        "inputs": {"a": [[1, 2]], "b": [["t"]]}}


@pytest.mark.parametrize(("form", "output_name", "document", "expected"), [
    ("rows", None, {"predictions": [3, 4]}, [3, 4]),
    ("rows", None, {"predictions": [[0.1, 0.9], [0.6, 0.4]]}, [1, 0]),
    ("rows", "class", {"predictions": [{"class": "cat"}, {"class": "dog"}]}, ["cat", "dog"]),
    ("columns", None, {"outputs": [5, 6]}, [5, 6]),
    ("columns", None, {"outputs": {"label": [5, 6]}}, [5, 6]),
    ("columns", "label", {"outputs": {"label": [5, 6], "scores": [[1, 0], [0, 1]]}}, [5, 6]),
])
def test_v1_decode(form: str, output_name: str | None, document: Any, expected: list[Any]) -> None:
    codec = V1RestCodec("m", form=form, output_name=output_name)
    assert codec.decode(json.dumps(document).encode(), 2) == expected


@pytest.mark.parametrize(("form", "output_name", "body", "message"), [
    ("rows", None, b'{"outputs": [1, 2]}', "not a V1 response with 'predictions'"),
    ("columns", None, b'{"predictions": [1, 2]}', "not a V1 response with 'outputs'"),
    ("rows", None, b"[1, 2]", "not a V1 response"),
    ("rows", None, b'{"predictions": [1]}', "expected 2 predictions, got 1"),
    ("rows", None, b'{"predictions": [{"class": 1}, {"class": 2}]}', "set target.output_name"),
    ("rows", "label", b'{"predictions": [{"class": 1}, {"class": 2}]}', "no field 'label'"),
    ("columns", None, b'{"outputs": {"a": [1, 2], "b": [3, 4]}}', "has outputs 'a', 'b'; set target.output_name"),
    ("columns", "c", b'{"outputs": {"a": [1, 2]}}', "no output named 'c'"),
])
def test_v1_decode_errors(form: str, output_name: str | None, body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        V1RestCodec("m", form=form, output_name=output_name).decode(body, 2)


# --- JSON template -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("template", "fields", "expected"), [
    ({"x": "{{inputs}}"}, None, {"x": [1, 2, 3]}),
    ({"x": "{{ inputs[1] }}", "id": "{{id}}"}, None, {"x": 2, "id": "a"}),
    ({"text": "sample {{id}} has {{inputs[0]}} and {{inputs}}"}, None, {"text": "sample a has 1 and [1,2,3]"}),
    ({"f": {"age": "{{age}}", "city": "{{city}}"}, "k": [1, True, None]}, ["age", "h", "city"],
     {"f": {"age": 1, "city": 3}, "k": [1, True, None]}),
    ("{{inputs}}", None, [1, 2, 3]),
])
def test_template_fills_placeholders(template: Any, fields: list[str] | None, expected: Any) -> None:
    codec = JsonTemplateCodec(template, "$.y", "/predict", fields=fields)
    assert json.loads(codec.encode([S1])) == expected


def test_template_batches_carry_rows_and_ids() -> None:
    codec = JsonTemplateCodec({"instances": "{{rows}}", "ids": "{{ids}}"}, "predictions[*]", "/p", batch_size=2)
    assert json.loads(codec.encode([S1, S2])) == {"instances": [[1, 2, 3], [4, 5, 6]], "ids": ["a", "b"]}


def test_template_casts_inputs_to_a_datatype() -> None:
    codec = JsonTemplateCodec({"x": "{{inputs}}"}, "$.y", "/p", datatype="FP32")
    assert json.loads(codec.encode([S1])) == {"x": [1.0, 2.0, 3.0]}
    with pytest.raises(DatasetError, match=r"sample t: input 'inputs' \(FP32\): 'no' is not a number"):
        codec.encode([Sample("t", ["no"], 0)])


def test_template_index_beyond_the_inputs_names_the_sample() -> None:
    codec = JsonTemplateCodec({"x": "{{inputs[5]}}"}, "$.y", "/p")
    with pytest.raises(DatasetError, match=r"sample a: the template asks for inputs\[5\], it has 3"):
        codec.encode([S1])


@pytest.mark.parametrize(("template", "path", "batch", "message"), [
    ({"x": "{{nope}}"}, "$.y", 1, r"unknown placeholder \{\{nope\}\}; known: inputs, inputs\[i\], id, rows, ids"),
    ({"x": "{{inputs"}, "$.y", 1, "unbalanced braces"),
    ({"x": "a {{id}} }}"}, "$.y", 1, "unbalanced braces"),
    ({"x": "{{in puts}}"}, "$.y", 1, "not a placeholder name"),
    ({"x": "{{}}"}, "$.y", 1, "not a placeholder name"),
    ({"x": 1}, "$.y", 1, "no placeholder"),
    ({"x": "{{inputs}}"}, "$.y", 4, r"batch_size > 1 the template needs \{\{rows\}\}"),
    ({"x": "{{inputs}}"}, "$..[", 1, "not a JSONPath expression"),
    ({"x": "{{inputs}}"}, "", 1, "not a JSONPath expression"),
])
def test_template_errors(template: Any, path: str, batch: int, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        JsonTemplateCodec(template, path, "/p", batch_size=batch)


@pytest.mark.parametrize(("path", "document", "count", "expected"), [
    ("$.label", {"label": 3}, 1, [3]),
    ("label", {"label": "cat"}, 1, ["cat"]),
    ("predictions[0].class", {"predictions": [{"class": "dog"}]}, 1, ["dog"]),
    ("$.probs", {"probs": [0.1, 0.7, 0.2]}, 1, [1]),
    ("$.predictions", {"predictions": [[0.1, 0.9]]}, 1, [1]),
    ("$.predictions", {"predictions": [4, 5]}, 2, [4, 5]),
    ("predictions[*].class", {"predictions": [{"class": 1}, {"class": 0}]}, 2, [1, 0]),
    ("$.predictions", {"predictions": [[0.9, 0.1], [0.2, 0.8]]}, 2, [0, 1]),
])
def test_template_decode(path: str, document: Any, count: int, expected: list[Any]) -> None:
    codec = JsonTemplateCodec({"x": "{{rows}}"}, path, "/p", batch_size=max(count, 1))
    assert codec.decode(json.dumps(document).encode(), count) == expected


@pytest.mark.parametrize(("body", "count", "message"), [
    (b"<html>", 1, "response is not JSON"),
    (b'{"other": 1}', 1, r"response path '\$.label' matched nothing"),
    (b'{"label": [1, 2, 3]}', 2, "3 values, not 2 equal rows"),
    (b'{"label": {"a": 1}}', 1, "are objects"),
])
def test_template_decode_errors(body: bytes, count: int, message: str) -> None:
    codec = JsonTemplateCodec({"x": "{{rows}}"}, "$.label", "/p", batch_size=2)
    with pytest.raises(DecodeError, match=message):
        codec.decode(body, count)


# --- from the config ---------------------------------------------------------------------------------

BASE = """
dataset: {path: data.jsonl, inputs: [age, height]}
load: {stages: [{rate_rps: 1, duration_s: 1}]}
"""


def target(text: str) -> Any:
    return parse_config("target: " + text + BASE, Path("/cfg/p.yaml")).target


@pytest.mark.parametrize(("text", "kind", "infer_path"), [
    ("{url: 'http://h', model: m}", V2RestCodec, "/v2/models/m/infer"),
    ("{url: 'grpc://h:1', protocol: v2-grpc, model: m}", V2GrpcCodec, "/inference.GRPCInferenceService/ModelInfer"),
    ("{url: 'http://h', protocol: v1-rest, model: m}", V1RestCodec, "/v1/models/m:predict"),
    ("{url: 'http://h', protocol: v1-rest-columnar, model: m}", V1RestCodec, "/v1/models/m:predict"),
    ("{url: 'http://h', protocol: json, model: m, request_template: {a: '{{age}}'}, response_path: $.y, "
     "infer_path: /go}", JsonTemplateCodec, "/go"),
])
def test_codec_from_config(text: str, kind: type, infer_path: str) -> None:
    codec = codec_from_config(target(text), ["age", "height"], 1, Sample("s", [30, 180], 0))
    assert isinstance(codec, kind)
    assert codec.infer_path == infer_path
    body = codec.encode([Sample("s", [30, 180], 0)])
    if kind is V2GrpcCodec:
        assert list(pb.ModelInferRequest.FromString(body).inputs[0].contents.fp32_contents) == [30.0, 180.0]
    else:
        assert "30" in json.loads(body).__repr__()


@pytest.mark.parametrize(("text", "message"), [
    ("{url: 'http://h', protocol: json, model: m, request_template: {a: '{{weight}}'}, response_path: $.y, "
     "infer_path: /go}", r"target.request_template: unknown placeholder \{\{weight\}\}; known: .*age, height"),
    ("{url: 'http://h', protocol: json, model: m, request_template: {a: '{{age}}'}, response_path: '$[', "
     "infer_path: /go}", "target.response_path: not a JSONPath expression"),
    ("{url: 'http://h', model: m, inputs: [{name: a, shape: [1]}, {name: b}]}",
     "target.inputs: input 'b' needs a shape"),
])
def test_codec_from_config_errors_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        codec_from_config(target(text), ["age", "height"], 1, Sample("s", [30, 180], 0))


def test_make_codec_rejects_an_unknown_protocol() -> None:
    with pytest.raises(ConfigError, match=r"target\.protocol: unknown protocol 'v3'"):
        make_codec("v3")


@pytest.mark.parametrize(("text", "message"), [
    ("{url: 'http://h', protocol: v3, model: m}", "target.protocol: Input should be 'v2-rest'"),
    ("{url: 'http://h', protocol: v2-grpc, model: m}", "protocol v2-grpc needs a grpc:// or grpcs:// url"),
    ("{url: 'grpc://h:1', model: m}", "a grpc:// url needs protocol v2-grpc, not v2-rest"),
    ("{url: 'ftp://h', model: m}", "target.url: the URL has the unknown scheme 'ftp'; use http://"),
    ("{url: 'http://h', protocol: json, model: m}", "protocol json needs request_template, response_path, infer_path"),
    ("{url: 'http://h', model: m, datatype: FP16}", "target.datatype: Input should be"),
    ("{url: 'http://h', model: m, bearer_token: {}}", "target.bearer_token: give exactly one of 'env'"),
    ("{url: 'http://h', model: m, bearer_token: 'abc'}", "target.bearer_token: Input should be"),
    ("{url: 'http://h', model: m, inputs: [{name: a, shape: [0]}]}", r"target.inputs.0.shape.0"),
    ("{url: 'http://h', model: m, prediction: max}", "target.prediction"),
])
def test_target_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        target(text)


def test_secret_and_ca_files_are_relative_to_the_config() -> None:
    t = target("{url: 'grpcs://h:1', protocol: v2-grpc, model: m, tls_ca_file: ca.pem, bearer_token: {file: tok}, "
               "headers: {X-Key: {file: key}, X-Env: {env: K}, X-Plain: v}}")
    assert t.tls_ca_file == Path("/cfg/ca.pem")
    assert t.bearer_token is not None and t.bearer_token.file == Path("/cfg/tok")
    assert t.headers["X-Key"].file == Path("/cfg/key")  # type: ignore[union-attr]
    assert t.headers["X-Env"].env == "K"  # type: ignore[union-attr]
    assert t.headers["X-Plain"] == "v"


@pytest.mark.parametrize("protocol", ["v2-rest", "v2-grpc", "v1-rest", "v1-rest-columnar", "json"])
def test_the_demo_profile_is_valid_for_every_protocol(protocol: str) -> None:
    from profiler.app.demo import demo_profile

    text = demo_profile("http://127.0.0.1:8000", "grpc://127.0.0.1:8001", protocol, 4242, 9090)
    config = parse_config(text, Path("/demo/profile.yaml"))
    assert config.target.protocol == protocol
    assert config.target.url == ("grpc://127.0.0.1:8001" if protocol == "v2-grpc" else "http://127.0.0.1:8000")
    sample = Sample("d", [0] * 64, 0)
    codec = codec_from_config(config.target, config.dataset.inputs, config.load.batch_size, sample)
    assert codec.encode([sample])
