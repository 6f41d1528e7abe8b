"""Open Inference Protocol V2 over gRPC: samples as a serialized ModelInferRequest, responses read back.

Requests are serialized once, before the load starts; the transport sends the bytes as they are,
so the hot path does no protobuf work except parsing the response.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.message import DecodeError as ProtobufDecodeError

from profiler._proto import grpc_predict_v2_pb2 as pb
from profiler.codecs.base import TensorCodec, check_answer_id, request_id_of
from profiler.codecs.predictions import PredictionReader
from profiler.codecs.tensors import TensorSpec, batch_columns, decode_raw
from profiler.core.errors import DecodeError
from profiler.dataset import Sample

SERVICE = "/inference.GRPCInferenceService"
INFER_METHOD = f"{SERVICE}/ModelInfer"
SERVER_READY_METHOD = f"{SERVICE}/ServerReady"
MODEL_READY_METHOD = f"{SERVICE}/ModelReady"
MODEL_METADATA_METHOD = f"{SERVICE}/ModelMetadata"

CONTENTS_FIELD = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT32": "int_contents",
                  "INT64": "int64_contents", "BOOL": "bool_contents", "BYTES": "bytes_contents",
                  "INT8": "int_contents", "INT16": "int_contents", "UINT8": "uint_contents",
                  "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents"}
"""Which InferTensorContents field carries each datatype (the specification's mapping)."""


class V2GrpcCodec(TensorCodec):
    """ModelInferRequest bytes in, predictions out of ModelInferResponse bytes."""

    name = "v2-grpc"
    content_type = "application/grpc"
    infer_path = INFER_METHOD
    ready_paths: tuple[str, ...] = (SERVER_READY_METHOD, MODEL_READY_METHOD)

    def __init__(
        self,
        model: str,
        version: str | None = None,
        input_name: str = "input-0",
        datatype: str = "FP32",
        *,
        inputs: Sequence[TensorSpec] | None = None,
        output_name: str | None = None,
        reader: PredictionReader | None = None,
    ) -> None:
        self.model = model
        self.version = version or ""
        super().__init__(input_name, datatype, inputs=inputs, output_name=output_name, reader=reader)

    def request(self, samples: Sequence[Sample]) -> pb.ModelInferRequest:
        """The request message for a batch: each tensor of shape [len(samples), *shape]."""
        columns = batch_columns(samples, self._resolved(samples))
        message = pb.ModelInferRequest(model_name=self.model, model_version=self.version,
                                       id=self.request_id(samples))
        for spec, data in zip(self.specs, columns, strict=True):
            tensor = message.inputs.add(name=spec.name, datatype=spec.datatype,
                                        shape=[len(samples), *(spec.shape or (len(data) // len(samples),))])
            values = [v.encode("utf-8") for v in data] if spec.datatype == "BYTES" else data
            getattr(tensor.contents, CONTENTS_FIELD[spec.datatype]).extend(values)
        return message

    def request_id(self, samples: Sequence[Sample]) -> str:
        """The request's `id`: the sample id, `first..last` for a batch (see codecs.base.request_id_of)."""
        return request_id_of(samples)

    def encode(self, samples: Sequence[Sample]) -> bytes:
        """The serialized ModelInferRequest."""
        body: bytes = self.request(samples).SerializeToString()
        return body

    def decode(self, body: bytes, count: int, request_id: str | None = None) -> list[Any]:
        """Predictions from a serialized ModelInferResponse (typed contents or raw_output_contents).

        An answer whose `id` (empty: none) is not `request_id` raises IdMismatchError.
        """
        try:
            response = pb.ModelInferResponse.FromString(body)
        except ProtobufDecodeError as exc:
            raise DecodeError(f"not a V2 ModelInferResponse: {exc}") from None
        check_answer_id(response.id, request_id)
        return self.reader.read(output_values(response, self.output_name), count)


def output_values(response: pb.ModelInferResponse, name: str | None) -> list[Any]:
    """The flat elements of the named (or first) output, whichever form the server used."""
    outputs = response.outputs
    if not outputs:
        raise DecodeError("the response has no outputs")
    index = 0
    if name is not None:
        names = [o.name for o in outputs]
        if name not in names:
            raise DecodeError(f"no output named {name!r} in the response (it has {', '.join(map(repr, names))})")
        index = names.index(name)
    output = outputs[index]
    datatype = output.datatype.upper()
    if response.raw_output_contents:
        if index >= len(response.raw_output_contents):
            raise DecodeError(f"raw_output_contents has no entry for output {output.name!r}")
        return decode_raw(response.raw_output_contents[index], datatype)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise DecodeError(f"cannot read an output of datatype {datatype!r}")
    values = list(getattr(output.contents, field))
    if datatype == "BYTES":
        return [_text(v) for v in values]
    return values


def _text(value: bytes) -> str | bytes:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def metadata_dict(response: pb.ModelMetadataResponse) -> dict[str, Any]:
    """A ModelMetadataResponse in the REST document's shape, for one metadata check."""
    def tensors(items: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    return {"name": response.name, "versions": list(response.versions), "platform": response.platform,
            "inputs": tensors(response.inputs), "outputs": tensors(response.outputs)}
