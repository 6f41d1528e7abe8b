"""Predictions out of a decoded output: a class index, a class name, or the argmax of a probability row. Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from profiler.core.errors import DecodeError

MODES = ("auto", "value", "argmax")
"""auto: one value per sample is the class, several are a probability row; value / argmax force one."""


@dataclass(frozen=True)
class PredictionReader:
    """Reads `count` predictions from a flat output and maps them through an optional label map.

    `labels` maps a class index (or value) to a class name: a list is indexed by the prediction,
    a mapping is looked up by the prediction's text form (unmapped values pass unchanged).
    """

    mode: str = "auto"
    labels: Sequence[str] | Mapping[str, str] | None = None
    _lookup: dict[str, str] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown prediction mode {self.mode!r}; use one of {', '.join(MODES)}")
        if isinstance(self.labels, Mapping):
            self._lookup.update({_key(k): str(v) for k, v in self.labels.items()})

    def read(self, data: Sequence[Any], count: int) -> list[Any]:
        """`count` predictions from the flat row-major output `data`; raises DecodeError."""
        if count <= 0:
            raise DecodeError(f"cannot read predictions for {count} samples")
        n = len(data)
        if self.mode == "value" or (self.mode == "auto" and n == count):
            if n != count:
                raise DecodeError(f"output holds {n} values for {count} samples")
            values = list(data)
        else:
            if n == 0 or n % count:
                raise DecodeError(f"output holds {n} values, not {count} equal rows")
            width = n // count
            values = []
            for row in range(count):
                chunk = data[row * width:(row + 1) * width]
                if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in chunk):
                    raise DecodeError(f"output row {row} is not numeric, cannot take its argmax")
                values.append(max(range(width), key=chunk.__getitem__))
        return [self._name(v) for v in values] if self.labels is not None else values

    def _name(self, value: Any) -> Any:
        if isinstance(self.labels, Mapping):
            return self._lookup.get(_key(value), value)
        assert self.labels is not None
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or float(value) != int(value)):
            raise DecodeError(f"prediction {value!r} is not a class index for the label map")
        index = int(value)
        if not 0 <= index < len(self.labels):
            raise DecodeError(f"class index {index} is outside the label map (0..{len(self.labels) - 1})")
        return self.labels[index]


def _key(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def nested_rows(values: Any, count: int) -> list[Any]:
    """Flatten a per-sample list (scalars or equal-length rows) into row-major data; DecodeError if ragged."""
    if not isinstance(values, list):
        raise DecodeError(f"expected a list of {count} predictions, got {type(values).__name__}")
    if len(values) != count:
        raise DecodeError(f"expected {count} predictions, got {len(values)}")
    if values and all(isinstance(v, list) for v in values):
        width = len(values[0])
        if any(len(v) != width for v in values):
            raise DecodeError("prediction rows have different lengths")
        return [x for row in values for x in row]
    if any(isinstance(v, (list, dict)) for v in values):
        raise DecodeError("predictions mix scalars and lists, or are objects (set target.output_name)")
    return values
