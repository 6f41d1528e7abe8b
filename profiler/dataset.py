"""The hold-out set: `Sample`s streamed from JSONL or CSV, and the file's content hash."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.core.errors import DatasetError


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled hold-out example. `inputs` is a flat list of numbers (or strings)."""

    id: str
    inputs: list[Any]
    label: Any


@dataclass(frozen=True, slots=True)
class Dataset:
    """A whole hold-out set and the SHA-256 of the file's bytes (the same data for every model)."""

    path: Path
    sha256: str
    samples: tuple[Sample, ...]


def load_dataset(
    path: Path, *, inputs: str | list[str], label: str, id_field: str | None = None, fmt: str = "jsonl"
) -> Dataset:
    """Read every sample; raise DatasetError naming the file and line of the first bad one."""
    digest = hashlib.sha256()
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read hold-out file: {exc.strerror or exc}") from None
    with raw:
        lines = _hashed_lines(raw, digest)
        rows = _jsonl_rows(path, lines) if fmt == "jsonl" else _csv_rows(path, lines)
        samples = tuple(_to_sample(path, n, row, inputs, label, id_field) for n, row in rows)
    if not samples:
        raise DatasetError(f"{path}: hold-out file has no samples")
    return Dataset(path=path, sha256=digest.hexdigest(), samples=samples)


def _hashed_lines(raw: io.BufferedReader, digest: Any) -> Iterator[tuple[int, str]]:
    for number, chunk in enumerate(raw, start=1):
        digest.update(chunk)
        yield number, chunk.decode("utf-8", errors="replace")


def _jsonl_rows(path: Path, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not valid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        yield number, row


def _csv_rows(path: Path, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, dict[str, Any]]]:
    header: list[str] | None = None
    for number, line in lines:
        if not line.strip():
            continue
        cells = next(csv.reader([line]))
        if header is None:
            header = cells
            continue
        if len(cells) != len(header):
            raise DatasetError(f"{path}:{number}: expected {len(header)} columns, got {len(cells)}")
        yield number, {name: _number_or_text(cell) for name, cell in zip(header, cells, strict=True)}


def _number_or_text(cell: str) -> Any:
    try:
        value = float(cell)
    except ValueError:
        return cell
    return int(value) if value.is_integer() and "." not in cell and "e" not in cell.lower() else value


def _to_sample(
    path: Path, number: int, row: dict[str, Any], inputs: str | list[str], label: str, id_field: str | None
) -> Sample:
    if label not in row:
        raise DatasetError(f"{path}:{number}: label field {label!r} is missing")
    if isinstance(inputs, str):
        if inputs not in row:
            raise DatasetError(f"{path}:{number}: inputs field {inputs!r} is missing")
        values = row[inputs]
        if not isinstance(values, list):
            values = [values]
        values = _flatten(values)
    else:
        missing = [name for name in inputs if name not in row]
        if missing:
            raise DatasetError(f"{path}:{number}: inputs field {missing[0]!r} is missing")
        values = [row[name] for name in inputs]
    for value in values:
        if isinstance(value, float) and not math.isfinite(value):
            raise DatasetError(f"{path}:{number}: inputs hold a non-finite number ({value})")
        if not isinstance(value, (int, float, str, bool)):
            raise DatasetError(f"{path}:{number}: inputs must be numbers or strings, got {type(value).__name__}")
    if id_field is not None:
        if id_field not in row:
            raise DatasetError(f"{path}:{number}: id field {id_field!r} is missing")
        sample_id = str(row[id_field])
    else:
        sample_id = f"line-{number}"
    return Sample(id=sample_id, inputs=values, label=row[label])


def _flatten(values: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack: list[Any] = list(reversed(values))
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    return flat
