"""KServe V1 / TensorFlow Serving REST: `{"instances": rows}` -> `{"predictions": ...}` and the columnar
`{"inputs": ...}` -> `{"outputs": ...}` form."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from profiler.codecs.base import TensorCodec, loads, path_segment
from profiler.codecs.predictions import PredictionReader, nested_rows
from profiler.codecs.tensors import TensorSpec, split_sample
from profiler.core.errors import DecodeError
from profiler.dataset import Sample

FORMS = ("rows", "columns")


class V1RestCodec(TensorCodec):
    """Row form: one instance per sample; columnar form: one list per input tensor (TF Serving)."""

    content_type = "application/json"

    def __init__(
        self,
        model: str,
        version: str | None = None,
        input_name: str = "input-0",
        datatype: str = "FP32",
        *,
        form: str = "rows",
        inputs: Sequence[TensorSpec] | None = None,
        output_name: str | None = None,
        reader: PredictionReader | None = None,
    ) -> None:
        if form not in FORMS:
            raise ValueError(f"unknown V1 form {form!r}")
        base = f"/v1/models/{path_segment(model)}" + (f"/versions/{path_segment(version)}" if version else "")
        self.name = "v1-rest" if form == "rows" else "v1-rest-columnar"
        self.form = form
        self.infer_path = f"{base}:predict"
        self.ready_paths: tuple[str, ...] = (base,)
        super().__init__(input_name, datatype, inputs=inputs, output_name=output_name, reader=reader)

    def encode(self, samples: Sequence[Sample]) -> bytes:
        """Rows: each instance is the sample's inputs (a list, or an object by tensor name when there are
        several); columns: `inputs` is the list of rows, or an object of per-tensor lists."""
        specs = self._resolved(samples)
        parts = [split_sample(s, specs) for s in samples]
        named = len(self.specs) > 1
        if self.form == "rows":
            if named:
                instances: list[Any] = [{s.name: p for s, p in zip(self.specs, row, strict=True)} for row in parts]
            else:
                instances = [row[0] for row in parts]
            return json.dumps({"instances": instances}, separators=(",", ":")).encode()
        if named:
            document: Any = {s.name: [row[i] for row in parts] for i, s in enumerate(self.specs)}
        else:
            document = [row[0] for row in parts]
        return json.dumps({"inputs": document}, separators=(",", ":")).encode()

    def request_id(self, samples: Sequence[Sample]) -> str | None:
        """None: V1 has no request id, so answers are not checked against one."""
        return None

    def decode(self, body: bytes, count: int, request_id: str | None = None) -> list[Any]:
        """`predictions` (rows) or `outputs` (columns): a list per sample, or an object of such lists."""
        key = "predictions" if self.form == "rows" else "outputs"
        try:
            document = loads(body)
            values = document[key]
        except (ValueError, KeyError, TypeError) as exc:
            raise DecodeError(f"not a V1 response with {key!r}: {type(exc).__name__}: {exc}") from None
        if isinstance(values, dict):
            values = _pick(values, self.output_name)
        elif self.output_name is not None and isinstance(values, list) and values and isinstance(values[0], dict):
            try:
                values = [v[self.output_name] for v in values]
            except (KeyError, TypeError):
                raise DecodeError(f"a prediction has no field {self.output_name!r}") from None
        return self.reader.read(nested_rows(values, count), count)


def _pick(values: dict[str, Any], name: str | None) -> Any:
    if name is not None:
        if name not in values:
            raise DecodeError(f"no output named {name!r} in the response (it has {', '.join(map(repr, values))})")
        return values[name]
    if len(values) != 1:
        raise DecodeError(f"the response has outputs {', '.join(map(repr, values))}; set target.output_name")
    return next(iter(values.values()))
