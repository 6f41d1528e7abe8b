"""Tensors and predictions: casting, splitting samples into tensors, metadata checks, reading outputs."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest

from profiler.codecs.predictions import PredictionReader, nested_rows
from profiler.codecs.tensors import (
    TensorSpec,
    batch_columns,
    cast_value,
    check_metadata,
    decode_raw,
    resolve_specs,
    split_sample,
)
from profiler.core.errors import DatasetError, DecodeError, TargetError
from profiler.dataset import Sample


@pytest.mark.parametrize(("value", "datatype", "expected"), [
    (1, "FP32", 1.0), (2.5, "FP64", 2.5), (3.0, "INT32", 3), (-(2**31), "INT32", -(2**31)), (2**40, "INT64", 2**40),
    (True, "BOOL", True), (0, "BOOL", False), (1.0, "BOOL", True), ("héllo", "BYTES", "héllo"), ("", "BYTES", ""),
])
def test_cast_value_accepts(value: Any, datatype: str, expected: Any) -> None:
    got = cast_value(value, datatype)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("value", "datatype", "reason"), [
    ("1", "FP32", "not a number"), (True, "FP64", "not a number"), (None, "FP32", "not a number"),
    (2.5, "INT64", "not an integer"), (2**31, "INT32", "does not fit INT32"), (2**63, "INT64", "does not fit INT64"),
    (False, "INT32", "not an integer"), (2, "BOOL", "not a boolean"), ("true", "BOOL", "not a boolean"),
    (3, "BYTES", "not a string"), (1.0, "FP16", "unknown datatype"),
])
def test_cast_value_rejects(value: Any, datatype: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        cast_value(value, datatype)


def test_split_sample_cuts_inputs_into_tensors_in_order() -> None:
    specs = [TensorSpec("a", "FP32", (2,)), TensorSpec("b", "INT64", (1, 3)), TensorSpec("c", "BYTES", (1,))]
    parts = split_sample(Sample("s1", [1, 2, 3, 4, 5, "x"], 0), specs)
    assert parts == [[1.0, 2.0], [3, 4, 5], ["x"]]


@pytest.mark.parametrize(("inputs", "message"), [
    ([1, 2, 3], r"sample s7: holds 3 input values, the declared inputs take 4 \('a' \[2\], 'b' \[2\]\)"),
    ([], r"sample s7: holds 0 input values"),
    ([1, 2, 3.5, 4], r"sample s7: input 'b' \(INT32\): 3.5 is not an integer"),
    ([1, "x", 3, 4], r"sample s7: input 'a' \(FP32\): 'x' is not a number"),
])
def test_split_sample_names_the_sample_and_the_input(inputs: list[Any], message: str) -> None:
    specs = [TensorSpec("a", "FP32", (2,)), TensorSpec("b", "INT32", (2,))]
    with pytest.raises(DatasetError, match=message):
        split_sample(Sample("s7", inputs, 0), specs)


def test_batch_columns_are_row_major_over_samples() -> None:
    samples = [Sample("a", [1, 2, 3], 0), Sample("b", [4, 5, 6], 0)]
    specs = [TensorSpec("x", "INT64", (2,)), TensorSpec("y", "FP64", (1,))]
    assert batch_columns(samples, specs) == [[1, 2, 4, 5], [3.0, 6.0]]
    with pytest.raises(ValueError, match="at least one sample"):
        batch_columns([], specs)


def test_resolve_specs() -> None:
    first = Sample("a", [0] * 64, 0)
    assert resolve_specs([TensorSpec("x")], first) == (TensorSpec("x", "FP32", (64,)),)
    assert resolve_specs([TensorSpec("x", shape=(8, 8))], first) == (TensorSpec("x", "FP32", (8, 8)),)
    with pytest.raises(ValueError, match="'y' needs a shape"):
        resolve_specs([TensorSpec("x", shape=(2,)), TensorSpec("y")], first)
    with pytest.raises(ValueError, match="at least one"):
        resolve_specs([], first)


METADATA = {"name": "m", "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 64]}]}


@pytest.mark.parametrize(("spec", "metadata", "message"), [
    (TensorSpec("input-0", "FP32", (64,)), METADATA, None),
    (TensorSpec("input-0", "FP32", (64,)), {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [64]}]}, None),
    (TensorSpec("input-0", "FP32", (64,)), {"inputs": []}, None),  # nothing declared: nothing to check
    (TensorSpec("input-0", "FP32", (64,)), {}, None),
    (TensorSpec("input-0", "FP32", (64,)), {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 64]}]},
     None),  # a fixed batch of 1 declared by the model still takes [N, 64] at N=1
    (TensorSpec("pixels", "FP32", (64,)), METADATA,
     r"sample s0: input 'pixels': model 'm' has no such input; it declares 'input-0'"),
    (TensorSpec("input-0", "INT64", (64,)), METADATA,
     r"sample s0: input 'input-0': model 'm' declares datatype FP32, the config sends INT64"),
    (TensorSpec("input-0", "FP32", (63,)), METADATA,
     r"sample s0: input 'input-0': model 'm' declares shape \[-1, 64\], the config sends \[N, 63\]"),
    (TensorSpec("input-0", "FP32", (8, 8)), METADATA, r"declares shape \[-1, 64\], the config sends \[N, 8, 8\]"),
])
def test_check_metadata(spec: TensorSpec, metadata: dict[str, Any], message: str | None) -> None:
    sample = Sample("s0", [0] * 64, 0)
    if message is None:
        check_metadata([spec], metadata, "m", sample)
    else:
        with pytest.raises(TargetError, match=message):
            check_metadata([spec], metadata, "m", sample)


@pytest.mark.parametrize(("raw", "datatype", "expected"), [
    (struct.pack("<3f", 1.5, -2.0, 0.0), "FP32", [1.5, -2.0, 0.0]),
    (struct.pack("<2d", 1e300, -0.5), "FP64", [1e300, -0.5]),
    (struct.pack("<2q", 2**40, -1), "INT64", [2**40, -1]),
    (struct.pack("<2i", 7, -7), "INT32", [7, -7]),
    (bytes([1, 0, 1]), "BOOL", [True, False, True]),
    (struct.pack("<I", 3) + b"cat" + struct.pack("<I", 0), "BYTES", ["cat", ""]),
    (b"", "FP32", []),
])
def test_decode_raw(raw: bytes, datatype: str, expected: list[Any]) -> None:
    assert decode_raw(raw, datatype) == expected


@pytest.mark.parametrize(("raw", "datatype", "message"), [
    (b"\x00\x00\x00", "FP32", "not a whole number"),
    (struct.pack("<I", 10) + b"abc", "BYTES", "truncated"),
    (b"\x01\x00", "BYTES", "truncated"),
    (b"\x00\x00", "FP16", "cannot read a raw FP16"),
])
def test_decode_raw_rejects(raw: bytes, datatype: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_raw(raw, datatype)


@pytest.mark.parametrize(("mode", "labels", "data", "count", "expected"), [
    ("auto", None, [3, 1], 2, [3, 1]),
    ("auto", None, [0.1, 0.9, 0.8, 0.2], 2, [1, 0]),
    ("auto", None, [0.2, 0.5, 0.3], 1, [1]),
    ("auto", None, ["cat", "dog"], 2, ["cat", "dog"]),
    ("value", None, [7], 1, [7]),
    ("argmax", None, [0.9, 0.1], 2, [0, 0]),  # rows of one value: argmax is always 0
    ("argmax", None, [0.1, 0.9], 1, [1]),
    ("auto", ["zero", "one"], [1, 0], 2, ["one", "zero"]),
    ("auto", ["zero", "one"], [1.0], 1, ["one"]),
    ("auto", ["a", "b", "c"], [0.1, 0.2, 0.7], 1, ["c"]),
    ("auto", {0: "neg", "1": "pos"}, [1, 0, 2], 3, ["pos", "neg", 2]),
    ("auto", {"yes": "1"}, [b"yes"], 1, ["1"]),
])
def test_prediction_reader(mode: str, labels: Any, data: list[Any], count: int, expected: list[Any]) -> None:
    assert PredictionReader(mode, labels).read(data, count) == expected


@pytest.mark.parametrize(("mode", "labels", "data", "count", "message"), [
    ("auto", None, [1, 2, 3], 2, "3 values, not 2 equal rows"),
    ("auto", None, [], 1, "0 values, not 1 equal rows"),
    ("value", None, [1, 2], 1, "2 values for 1 samples"),
    ("auto", None, [1], 0, "for 0 samples"),
    ("auto", None, [1], -1, "for -1 samples"),
    ("argmax", None, ["a", None], 1, "row 0 is not numeric"),
    ("auto", ["a", "b"], [2], 1, r"class index 2 is outside the label map \(0..1\)"),
    ("auto", ["a", "b"], [-1], 1, "outside the label map"),
    ("auto", ["a", "b"], [0.5], 1, "not a class index"),
    ("auto", ["a", "b"], ["x"], 1, "not a class index"),
    ("auto", ["a", "b"], [math.nan], 1, "not a class index"),
])
def test_prediction_reader_rejects(mode: str, labels: Any, data: list[Any], count: int, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        PredictionReader(mode, labels).read(data, count)


def test_prediction_reader_rejects_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown prediction mode 'max'"):
        PredictionReader("max")


@pytest.mark.parametrize(("values", "count", "expected"), [
    ([1, 2], 2, [1, 2]), ([[0.1, 0.9], [0.8, 0.2]], 2, [0.1, 0.9, 0.8, 0.2]), ([[3]], 1, [3]),
])
def test_nested_rows(values: Any, count: int, expected: list[Any]) -> None:
    assert nested_rows(values, count) == expected


@pytest.mark.parametrize(("values", "count", "message"), [
    ({"a": 1}, 1, "expected a list of 1 predictions, got dict"), ([1], 2, "expected 2 predictions, got 1"),
    ([[1, 2], [3]], 2, "different lengths"), ([1, [2]], 2, "mix scalars and lists"),
    ([{"class": 1}], 1, "are objects"), (None, 1, "got NoneType"),
])
def test_nested_rows_rejects(values: Any, count: int, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        nested_rows(values, count)
