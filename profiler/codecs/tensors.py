"""Tensors: the declared inputs of a model, samples cast into them, and the model's metadata checked. Pure."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from profiler.core.errors import DatasetError, DecodeError, TargetError
from profiler.dataset import Sample

DATATYPES = ("FP32", "FP64", "INT32", "INT64", "BOOL", "BYTES")
"""Input datatypes the codecs encode (Open Inference Protocol names)."""

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FP32_MAX = 3.4028234663852886e38


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input tensor: its name, datatype and per-sample shape (no batch dimension; None = all inputs)."""

    name: str
    datatype: str = "FP32"
    shape: tuple[int, ...] | None = None

    @property
    def size(self) -> int | None:
        """Elements per sample, or None when the shape is taken from the data."""
        return math.prod(self.shape) if self.shape is not None else None


def cast_value(value: Any, datatype: str) -> Any:
    """`value` as the Python type the datatype's JSON/protobuf form holds; ValueError says why not."""
    if datatype in ("FP32", "FP64"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{_short(value)} is not a number")
        try:
            number = float(value)
        except OverflowError:
            raise ValueError(f"{_short(value)} is too large for {datatype}") from None
        if datatype == "FP32" and abs(number) > _FP32_MAX:
            raise ValueError(f"{_short(value)} is too large for FP32")
        return number
    if datatype in ("INT32", "INT64"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{_short(value)} is not an integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{_short(value)} is not an integer")
            value = int(value)
        low, high = (_INT32_MIN, _INT32_MAX) if datatype == "INT32" else (_INT64_MIN, _INT64_MAX)
        if not low <= value <= high:
            raise ValueError(f"{_short(value)} does not fit {datatype}")
        return value
    if datatype == "BOOL":
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{_short(value)} is not a boolean (true/false or 0/1)")
    if datatype == "BYTES":
        if not isinstance(value, str):
            raise ValueError(f"{_short(value)} is not a string")
        return value
    raise ValueError(f"unknown datatype {datatype!r}")


def _short(value: Any) -> str:
    """A value for an error message: its repr, cut to 40 characters (an input may be a huge number)."""
    if isinstance(value, int) and abs(value) >= 10**30:
        return f"an integer of {value.bit_length()} bits"  # repr() of a 5000-digit integer raises
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def resolve_specs(specs: Sequence[TensorSpec], first: Sample) -> tuple[TensorSpec, ...]:
    """Specs with every shape known: a single spec without a shape takes the first sample's input count."""
    if not specs:
        raise ValueError("at least one input tensor is needed")
    unknown = [s for s in specs if s.shape is None]
    if not unknown:
        return tuple(specs)
    if len(specs) > 1:
        raise ValueError(f"input {unknown[0].name!r} needs a shape when there are several inputs")
    return (TensorSpec(specs[0].name, specs[0].datatype, (len(first.inputs),)),)


def split_sample(sample: Sample, specs: Sequence[TensorSpec]) -> list[list[Any]]:
    """The sample's flat inputs cut into one cast list per tensor, in order; DatasetError names sample and input."""
    expected = sum(s.size or 0 for s in specs)
    if len(sample.inputs) != expected:
        layout = ", ".join(f"{s.name!r} {list(s.shape or ())}" for s in specs)
        raise DatasetError(f"{sample.where}: holds {len(sample.inputs)} input values, the declared inputs "
                           f"take {expected} ({layout})")
    parts: list[list[Any]] = []
    start = 0
    for spec in specs:
        size = spec.size or 0
        chunk = sample.inputs[start:start + size]
        start += size
        try:
            parts.append([cast_value(v, spec.datatype) for v in chunk])
        except ValueError as exc:
            raise DatasetError(f"{sample.where}: input {spec.name!r} ({spec.datatype}): {exc}") from None
    return parts


def batch_columns(samples: Sequence[Sample], specs: Sequence[TensorSpec]) -> list[list[Any]]:
    """For each tensor, the flat row-major data of all samples (shape [len(samples), *spec.shape])."""
    if not samples:
        raise ValueError("encode needs at least one sample")
    columns: list[list[Any]] = [[] for _ in specs]
    for sample in samples:
        for column, part in zip(columns, split_sample(sample, specs), strict=True):
            column.extend(part)
    return columns


def check_metadata(specs: Sequence[TensorSpec], metadata: dict[str, Any], model: str, sample: Sample) -> None:
    """Raise TargetError when the model's declared inputs do not take the configured tensors.

    `metadata` is the V2 model metadata document ({"inputs": [{"name", "datatype", "shape"}]}).
    A model that declares no inputs cannot be checked and passes. Shapes compare with the batch
    dimension: -1 in the model's shape matches any size. A document of another shape is a TargetError.
    """
    inputs = metadata.get("inputs") or []
    if not isinstance(inputs, list):
        raise TargetError(f"model {model!r}: its metadata's 'inputs' is not a list")
    declared = {str(t.get("name")): t for t in inputs if isinstance(t, dict)}
    if not declared:
        return
    for spec in specs:
        where = f"sample {sample.id}: input {spec.name!r}"
        tensor = declared.get(spec.name)
        if tensor is None:
            names = ", ".join(repr(n) for n in declared)
            raise TargetError(f"{where}: model {model!r} has no such input; it declares {names}")
        datatype = str(tensor.get("datatype", "")).upper()
        if datatype and datatype != spec.datatype:
            raise TargetError(f"{where}: model {model!r} declares datatype {datatype[:20]}, the config sends "
                              f"{spec.datatype}")
        shape = _declared_shape(tensor.get("shape"), model, spec.name)
        ours = [-1, *(spec.shape or ())]
        if shape and not _shape_fits(ours, shape):
            raise TargetError(f"{where}: model {model!r} declares shape {shape}, the config sends "
                              f"[N, {', '.join(str(d) for d in spec.shape or ())}]")


def _declared_shape(value: Any, model: str, name: str) -> list[int]:
    """A metadata shape as integers; TargetError when it is not a list of integers."""
    if not value:
        return []
    if not isinstance(value, list) or not all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in value):
        raise TargetError(f"model {model!r}: the metadata of input {name!r} has a shape that is not a list of integers")
    try:
        return [int(d) for d in value]
    except ValueError:
        raise TargetError(f"model {model!r}: the metadata of input {name!r} has a shape that is not a list of "
                          "integers") from None


def _shape_fits(ours: list[int], declared: list[int]) -> bool:
    if len(declared) == len(ours) - 1:  # a model that declares no batch dimension
        ours = ours[1:]
    if len(declared) != len(ours):
        return False
    return all(d == -1 or o == -1 or d == o for o, d in zip(ours, declared, strict=True))


_RAW_FORMATS = {"FP32": "f", "FP64": "d", "INT32": "i", "INT64": "q", "BOOL": "?", "INT8": "b", "INT16": "h",
                "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q"}


def decode_raw(raw: bytes, datatype: str) -> list[Any]:
    """Elements of a V2 raw (little-endian, row-major) tensor; BYTES elements are 4-byte length prefixed."""
    if datatype == "BYTES":
        values: list[Any] = []
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise DecodeError("raw BYTES tensor is truncated")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise DecodeError("raw BYTES tensor is truncated")
            values.append(_text(raw[offset:offset + length]))
            offset += length
        return values
    code = _RAW_FORMATS.get(datatype)
    if code is None:
        raise DecodeError(f"cannot read a raw {datatype} tensor")
    width = struct.calcsize(code)
    if len(raw) % width:
        raise DecodeError(f"raw {datatype} tensor of {len(raw)} bytes is not a whole number of elements")
    return list(struct.unpack(f"<{len(raw) // width}{code}", raw))


def _text(value: bytes) -> str | bytes:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value
