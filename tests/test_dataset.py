from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from profiler.core.errors import DatasetError
from profiler.dataset import load_dataset


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_jsonl_samples_and_hash(tmp_path: Path) -> None:
    text = '{"id": "a", "x": [[1, 2], [3, 4]], "y": 1}\n\n{"id": "b", "x": [5, 6, 7, 8], "y": 0}\n'
    path = write(tmp_path, "h.jsonl", text)
    data = load_dataset(path, inputs="x", label="y", id_field="id")
    assert [s.id for s in data.samples] == ["a", "b"]
    assert data.samples[0].inputs == [1, 2, 3, 4]
    assert data.samples[1].label == 0
    assert data.sha256 == hashlib.sha256(text.encode()).hexdigest()


def test_csv_columns_as_inputs(tmp_path: Path) -> None:
    path = write(tmp_path, "h.csv", "f1,f2,label\n0.5,2,cat\n1.5,3,dog\n")
    data = load_dataset(path, inputs=["f1", "f2"], label="label", fmt="csv")
    assert data.samples[0].inputs == [0.5, 2]
    assert [s.label for s in data.samples] == ["cat", "dog"]
    assert data.samples[1].id == "line-3"


@pytest.mark.parametrize(
    ("name", "text", "kwargs", "expected"),
    [
        ("h.jsonl", '{"x": [1], "y": 1}\nnot json\n', {}, "h.jsonl:2: not valid JSON"),
        ("h.jsonl", '{"x": [1], "y": 1}\n{"x": [2]}\n', {}, "h.jsonl:2: label field 'y' is missing"),
        ("h.jsonl", '{"y": 1}\n', {}, "h.jsonl:1: inputs field 'x' is missing"),
        ("h.jsonl", '[1, 2]\n', {}, "h.jsonl:1: expected a JSON object"),
        ("h.jsonl", '{"x": [NaN], "y": 1}\n', {}, "h.jsonl:1: inputs hold a non-finite number"),
        ("h.jsonl", '{"x": [{"a": 1}], "y": 1}\n', {}, "h.jsonl:1: inputs must be numbers or strings"),
        ("h.jsonl", '{"x": [1], "y": 1}\n', {"id_field": "id"}, "h.jsonl:1: id field 'id' is missing"),
        ("h.jsonl", "\n\n", {}, "h.jsonl: hold-out file has no samples"),
        ("h.csv", "x,y\n1,2\n3\n", {"fmt": "csv"}, "h.csv:3: expected 2 columns, got 1"),
    ],
)
def test_bad_hold_out_names_file_and_line(tmp_path: Path, name: str, text: str, kwargs: dict, expected: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(DatasetError) as info:
        load_dataset(path, inputs="x", label="y", **kwargs)
    assert str(info.value).startswith(str(tmp_path))
    assert expected in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read hold-out file"):
        load_dataset(tmp_path / "none.jsonl", inputs="x", label="y")
