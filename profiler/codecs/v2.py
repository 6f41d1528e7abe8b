"""Open Inference Protocol V2 over REST (KServe V2, Triton, MLServer): tensors in, tensors out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from profiler.codecs.base import TensorCodec, check_answer_id, loads, path_segment, request_id_of
from profiler.codecs.predictions import PredictionReader
from profiler.codecs.tensors import TensorSpec, batch_columns
from profiler.core.errors import DecodeError
from profiler.dataset import Sample


def v2_base_path(model: str, version: str | None) -> str:
    """/v2/models/{model}[/versions/{version}], each name percent-encoded as a path segment."""
    return f"/v2/models/{path_segment(model)}" + (f"/versions/{path_segment(version)}" if version else "")


class V2RestCodec(TensorCodec):
    """Encodes a batch of N samples as tensors of shape [N, *shape]; reads one output per sample."""

    name = "v2-rest"
    content_type = "application/json"

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
        base = v2_base_path(model, version)
        self.model = model
        self.infer_path = f"{base}/infer"
        self.ready_paths: tuple[str, ...] = ("/v2/health/ready", f"{base}/ready")
        self.metadata_path = base
        super().__init__(input_name, datatype, inputs=inputs, output_name=output_name, reader=reader)

    def request_id(self, samples: Sequence[Sample]) -> str:
        """The request's `id`: the sample id, `first..last` for a batch (see codecs.base.request_id_of)."""
        return request_id_of(samples)

    def encode(self, samples: Sequence[Sample]) -> bytes:
        """One JSON document with the request's `id` (KServe's REST front end rejects a request without one);
        each tensor's data is flat row-major with shape [len(samples), *shape]."""
        columns = batch_columns(samples, self._resolved(samples))
        tensors = [
            {"name": spec.name, "shape": [len(samples), *(spec.shape or (len(data) // len(samples),))],
             "datatype": spec.datatype, "data": data}
            for spec, data in zip(self.specs, columns, strict=True)
        ]
        return json.dumps({"id": self.request_id(samples), "inputs": tensors}, separators=(",", ":")).encode()

    def decode(self, body: bytes, count: int, request_id: str | None = None) -> list[Any]:
        """The configured output (or the first): one class per sample, or the argmax of each row.

        An answer whose `id` is not `request_id` (the one its request carried) raises IdMismatchError.
        """
        try:
            document = loads(body)
            check_answer_id(document.get("id"), request_id)
            outputs = document["outputs"]
            output = pick_output(outputs, self.output_name)
            data = output["data"]
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise DecodeError(f"not a V2 inference response: {type(exc).__name__}: {exc}") from None
        if not isinstance(data, list):
            raise DecodeError("V2 output 'data' must be a list")
        if data and isinstance(data[0], list):  # some servers nest rows instead of flattening
            data = [x for row in data for x in (row if isinstance(row, list) else [row])]
        return self.reader.read(data, count)


def pick_output(outputs: Any, name: str | None) -> Any:
    """The output tensor named `name`, or the first one; DecodeError when absent."""
    if not isinstance(outputs, list) or not outputs:
        raise DecodeError("the response has no outputs")
    if name is None:
        return outputs[0]
    for output in outputs:
        if isinstance(output, dict) and output.get("name") == name:
            return output
    names = ", ".join(repr(o.get("name")) for o in outputs if isinstance(o, dict))
    raise DecodeError(f"no output named {name!r} in the response (it has {names})")
