"""The committed protobuf stubs are what grpcio-tools makes of protos/, and carry the spec's field numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from profiler._proto import grpc_predict_v2_pb2 as pb
from profiler._proto.generate import OUT_DIR, generate


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None,
                    reason="grpcio-tools is not installed (it is in the dev extra)")
def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    written = generate(out_dir=tmp_path)
    assert [p.name for p in written] == ["grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi"]
    for path in written:
        committed = (OUT_DIR / path.name).read_text(encoding="utf-8")
        assert path.read_text(encoding="utf-8") == committed, (
            f"profiler/_proto/{path.name} is stale: run `python -m profiler._proto.generate` and commit the result")


# (message, field, number) from the Open Inference Protocol specification.
FIELDS = [
    ("ServerLiveResponse", "live", 1), ("ServerReadyResponse", "ready", 1), ("ModelReadyRequest", "name", 1),
    ("ModelReadyRequest", "version", 2), ("ModelReadyResponse", "ready", 1),
    ("ServerMetadataResponse", "name", 1), ("ServerMetadataResponse", "version", 2),
    ("ServerMetadataResponse", "extensions", 3),
    ("ModelMetadataRequest", "name", 1), ("ModelMetadataRequest", "version", 2),
    ("ModelMetadataResponse", "name", 1), ("ModelMetadataResponse", "versions", 2),
    ("ModelMetadataResponse", "platform", 3), ("ModelMetadataResponse", "inputs", 4),
    ("ModelMetadataResponse", "outputs", 5),
    ("ModelMetadataResponse.TensorMetadata", "name", 1), ("ModelMetadataResponse.TensorMetadata", "datatype", 2),
    ("ModelMetadataResponse.TensorMetadata", "shape", 3),
    ("InferParameter", "bool_param", 1), ("InferParameter", "int64_param", 2), ("InferParameter", "string_param", 3),
    ("InferParameter", "double_param", 4), ("InferParameter", "uint64_param", 5),
    ("InferTensorContents", "bool_contents", 1), ("InferTensorContents", "int_contents", 2),
    ("InferTensorContents", "int64_contents", 3), ("InferTensorContents", "uint_contents", 4),
    ("InferTensorContents", "uint64_contents", 5), ("InferTensorContents", "fp32_contents", 6),
    ("InferTensorContents", "fp64_contents", 7), ("InferTensorContents", "bytes_contents", 8),
    ("ModelInferRequest", "model_name", 1), ("ModelInferRequest", "model_version", 2), ("ModelInferRequest", "id", 3),
    ("ModelInferRequest", "parameters", 4), ("ModelInferRequest", "inputs", 5), ("ModelInferRequest", "outputs", 6),
    ("ModelInferRequest", "raw_input_contents", 7),
    ("ModelInferRequest.InferInputTensor", "name", 1), ("ModelInferRequest.InferInputTensor", "datatype", 2),
    ("ModelInferRequest.InferInputTensor", "shape", 3), ("ModelInferRequest.InferInputTensor", "parameters", 4),
    ("ModelInferRequest.InferInputTensor", "contents", 5),
    ("ModelInferRequest.InferRequestedOutputTensor", "name", 1),
    ("ModelInferRequest.InferRequestedOutputTensor", "parameters", 2),
    ("ModelInferResponse", "model_name", 1), ("ModelInferResponse", "model_version", 2),
    ("ModelInferResponse", "id", 3),
    ("ModelInferResponse", "parameters", 4), ("ModelInferResponse", "outputs", 5),
    ("ModelInferResponse", "raw_output_contents", 6),
    ("ModelInferResponse.InferOutputTensor", "name", 1), ("ModelInferResponse.InferOutputTensor", "datatype", 2),
    ("ModelInferResponse.InferOutputTensor", "shape", 3), ("ModelInferResponse.InferOutputTensor", "parameters", 4),
    ("ModelInferResponse.InferOutputTensor", "contents", 5),
]


@pytest.mark.parametrize(("message", "field", "number"), FIELDS)
def test_field_numbers_follow_the_specification(message: str, field: str, number: int) -> None:
    descriptor = pb.DESCRIPTOR.message_types_by_name[message.split(".")[0]]
    for nested in message.split(".")[1:]:
        descriptor = descriptor.nested_types_by_name[nested]
    assert descriptor.fields_by_name[field].number == number


def test_the_service_has_the_six_methods_under_the_spec_names() -> None:
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert {m.name: (m.input_type.name, m.output_type.name) for m in service.methods} == {
        "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
        "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
        "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
        "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
        "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
        "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
    }
