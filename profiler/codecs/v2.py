"""Open Inference Protocol V2 over REST (KServe V2, Triton, MLServer): tensors in, tensors out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from profiler.dataset import Sample
from profiler.errors import DecodeError

_PY_TYPES = {"FP32": float, "FP64": float, "INT32": int, "INT64": int}


class V2RestCodec:
    """Encodes a batch of samples as one [N, F] input tensor; reads a class index, name or argmax."""

    name = "v2-rest"
    content_type = "application/json"

    def __init__(
        self, model: str, version: str | None = None, input_name: str = "input-0", datatype: str = "FP32"
    ) -> None:
        base = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
        self.infer_path = f"{base}/infer"
        self.ready_paths: tuple[str, ...] = ("/v2/health/ready", f"{base}/ready")
        self.metadata_path = base
        self.input_name = input_name
        self.datatype = datatype
        self._cast = _PY_TYPES[datatype]

    def encode(self, samples: Sequence[Sample]) -> bytes:
        """One tensor of shape [len(samples), features], row-major."""
        if not samples:
            raise ValueError("encode needs at least one sample")
        width = len(samples[0].inputs)
        data: list[Any] = []
        for sample in samples:
            if len(sample.inputs) != width:
                raise ValueError(f"sample {sample.id} has {len(sample.inputs)} inputs, expected {width}")
            data.extend(self._cast(v) for v in sample.inputs)
        tensor = {"name": self.input_name, "shape": [len(samples), width], "datatype": self.datatype, "data": data}
        return json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode()

    def decode(self, body: bytes, count: int) -> list[Any]:
        """The first output tensor: shape [N] or [N, 1] is one class per sample, [N, K] is argmax."""
        try:
            document = json.loads(body)
            output = document["outputs"][0]
            data = output["data"]
            shape = output.get("shape") or [len(data)]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise DecodeError(f"not a V2 inference response: {type(exc).__name__}: {exc}") from None
        if not isinstance(data, list) or not isinstance(shape, list):
            raise DecodeError("V2 output 'data' and 'shape' must be lists")
        return decode_tensor(data, shape, count)


def decode_tensor(data: list[Any], shape: list[int], count: int) -> list[Any]:
    """Predictions from a flat row-major tensor: one value per row, or the argmax of each row."""
    if len(data) == count:
        return list(data)
    if count <= 0 or len(data) % count:
        raise DecodeError(f"output holds {len(data)} values for {count} samples (shape {shape})")
    width = len(data) // count
    predictions = []
    for row in range(count):
        chunk = data[row * width : (row + 1) * width]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in chunk):
            raise DecodeError(f"output row {row} is not numeric, cannot take its argmax")
        predictions.append(max(range(width), key=chunk.__getitem__))
    return predictions
