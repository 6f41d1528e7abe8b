"""The hold-out set: `Sample`s streamed from JSONL, CSV or Parquet, local or at a URL, and the SHA-256 of its bytes.

A URL (http(s)://, s3://, gs://) is first copied into the local cache (core.objects: in blocks, named by the
SHA-256 of its bytes, reused while the object is unchanged); the cached copy is then read like a local file,
and errors name the (redacted) URL.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from profiler.core.errors import DatasetError
from profiler.core.objects import default_cache_dir, fetch, is_url
from profiler.core.redact import redact_url

MAX_LINE_BYTES = 16 * 1024 * 1024
"""One hold-out line (one sample) may hold at most this many bytes: a longer one is a mistake, not a sample."""
MAX_HOLDOUT_BYTES = 1024 * 1024 * 1024
"""The whole hold-out file may hold at most this many bytes: every sample is kept in memory for the run."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled hold-out example. `inputs` is a flat list of numbers (or strings); `source` and `line`
    say where it was read (errors about it name them), "" and 0 for a sample made in code."""

    id: str
    inputs: list[Any]
    label: Any
    source: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)

    @property
    def where(self) -> str:
        """How errors name the sample: 'file:line: sample ID', or 'sample ID' for one made in code."""
        return f"{self.source}:{self.line}: sample {self.id}" if self.source else f"sample {self.id}"


PARQUET_BATCH_ROWS = 4096
"""Rows decoded from a Parquet file at a time: memory for decoding is bounded by a batch, not the file."""


@dataclass(frozen=True, slots=True)
class TextField:
    """Where a generative model's input is: the field's name, and whether it holds a prompt or chat messages."""

    name: str
    messages: bool = False


@dataclass(frozen=True, slots=True)
class Dataset:
    """A whole hold-out set and the SHA-256 of the file's bytes (the same data for every model). `path` is the
    local file, or the URL as the report shows it (redacted); `cached` the local copy of a URL's object, and
    `downloaded` whether this run fetched it (False: the cache had it)."""

    path: Path | str
    sha256: str
    samples: tuple[Sample, ...]
    cached: Path | None = None
    downloaded: bool = False


def load_dataset(
    path: Path | str, *, inputs: str | list[str], label: str, id_field: str | None = None, fmt: str = "jsonl",
    cache_dir: Path | None = None, ca_file: Path | None = None, text: TextField | None = None,
) -> Dataset:
    """Read every sample; raise DatasetError naming the file (or URL) and line (row) of the first bad one.

    `text` (generative models) names the field holding a prompt (a string) or chat messages (a list of
    {role, content} with string values): the sample's `inputs` is then that one value, and its label the text
    expected.

    A text file must be UTF-8 (a leading byte-order mark is skipped), each line at most MAX_LINE_BYTES; any file
    at most MAX_HOLDOUT_BYTES; a read that fails (EIO, EACCES) is a DatasetError too. A URL is fetched into
    `cache_dir` (default: objects.default_cache_dir) first; should the cached copy's bytes no longer match
    the SHA-256 it is named by, it is dropped and fetched again. `ca_file`: see objects.fetch.
    """
    if isinstance(path, Path) or not is_url(path):
        return _load_file(Path(path), str(path), inputs, label, id_field, fmt, text)
    where = redact_url(path)
    folder = cache_dir or default_cache_dir(os.environ)
    for _ in range(2):
        fetched = fetch(path, folder, MAX_HOLDOUT_BYTES, ca_file)
        dataset = _load_file(fetched.path, where, inputs, label, id_field, fmt, text)
        if dataset.sha256 == fetched.sha256:
            return replace(dataset, path=where, cached=fetched.path, downloaded=fetched.downloaded)
        fetched.forget()  # changed on disk since it was cached: fetch it again
    raise DatasetError(f"{where}: the cached copy keeps changing under {folder} (is another process writing it?)")


def _load_file(path: Path, where: str, inputs: str | list[str], label: str, id_field: str | None,
               fmt: str, text: TextField | None) -> Dataset:
    """Read a local file; errors name it `where` (its own path, or the URL it was fetched from)."""
    digest = hashlib.sha256()
    try:
        raw = path.open("rb")
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{where}: cannot read hold-out file: {_reason(exc)}") from None
    with raw:
        _check_size(where, raw)
        if fmt == "parquet":
            samples = _parquet_samples(where, raw, digest, inputs, label, id_field, text)
        else:
            reader = _LineReader(where, raw, digest)
            lines = iter(reader)
            rows = _jsonl_rows(where, lines) if fmt == "jsonl" else _csv_rows(where, lines)
            try:
                samples = tuple(_row_sample(where, n, row, inputs, label, id_field, text) for n, row in rows)
            except OSError as exc:
                raise DatasetError(f"{where}: cannot read hold-out file at line {reader.line + 1}: "
                                   f"{_reason(exc)}") from None
    if not samples:
        raise DatasetError(f"{where}: hold-out file has no samples")
    return Dataset(path=path, sha256=digest.hexdigest(), samples=samples)


def _parquet_samples(where: str, raw: io.BufferedReader, digest: Any, inputs: str | list[str], label: str,
                     id_field: str | None, text: TextField | None) -> tuple[Sample, ...]:
    """Every row of a Parquet file as a Sample (numbered from 1 like lines), read batch by batch; the hash is
    of the file's bytes, read once more in blocks (Parquet is read from its footer, not front to back)."""
    try:
        # Optional and heavy (pyarrow): imported only when a profile reads Parquet.
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(f"{where}: reading Parquet needs the 'parquet' extra: "
                           "pip install 'model-profiler[parquet]'") from None
    try:
        while block := raw.read(1024 * 1024):
            digest.update(block)
        raw.seek(0)
        table = pq.ParquetFile(raw)
        samples: list[Sample] = []
        for batch in table.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                samples.append(_row_sample(where, len(samples) + 1, row, inputs, label, id_field, text))
    except OSError as exc:
        raise DatasetError(f"{where}: cannot read hold-out file: {_reason(exc)}") from None
    except (pa.ArrowException, ValueError) as exc:  # not Parquet, a corrupt page, a type it cannot decode
        raise DatasetError(f"{where}: not a readable Parquet file: {' '.join(str(exc).split())[:300]}") from None
    return tuple(samples)


def _row_sample(where: str, number: int, row: dict[str, Any], inputs: str | list[str], label: str,
                id_field: str | None, text: TextField | None) -> Sample:
    """One row as a Sample: a generative one when `text` names its prompt or messages field."""
    if text is not None:
        return _to_text_sample(where, number, row, text, label, id_field)
    return _to_sample(where, number, row, inputs, label, id_field)


def _reason(exc: OSError | ValueError) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__


def _check_size(path: Path | str, raw: io.BufferedReader) -> None:
    """Refuse a directory, and a regular file larger than MAX_HOLDOUT_BYTES before reading any of it."""
    try:
        info = os.fstat(raw.fileno())
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read hold-out file: {_reason(exc)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise DatasetError(f"{path}: cannot read hold-out file: it is a directory")
    if stat.S_ISREG(info.st_mode) and info.st_size > MAX_HOLDOUT_BYTES:
        raise DatasetError(f"{path}: hold-out file is {info.st_size / 2**30:.1f} GiB, more than the "
                           f"{MAX_HOLDOUT_BYTES // 2**30} GiB a hold-out set may hold")


class _LineReader:
    """The file's lines as (number, text), hashing every byte read; DatasetError for a line too long, bytes
    that are not UTF-8, or a file that grows past MAX_HOLDOUT_BYTES. OSError from a read passes through."""

    def __init__(self, path: Path | str, raw: io.BufferedReader, digest: Any) -> None:
        self.path = path
        self.raw = raw
        self.digest = digest
        self.line = 0
        self.total_bytes = 0

    def __iter__(self) -> Iterator[tuple[int, str]]:
        while True:
            chunk = self.raw.readline(MAX_LINE_BYTES + 1)
            if not chunk:
                return
            self.line += 1
            self.total_bytes += len(chunk)
            if len(chunk) > MAX_LINE_BYTES:
                raise DatasetError(f"{self.path}:{self.line}: line is longer than {MAX_LINE_BYTES // 2**20} MiB")
            if self.total_bytes > MAX_HOLDOUT_BYTES:
                raise DatasetError(f"{self.path}: hold-out file holds more than {MAX_HOLDOUT_BYTES // 2**30} GiB")
            self.digest.update(chunk)
            yield self.line, self._text(chunk)

    def _text(self, chunk: bytes) -> str:
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            column = len(chunk[:exc.start].decode("utf-8", errors="replace")) + 1
            raise DatasetError(f"{self.path}:{self.line}: not UTF-8 text (byte 0x{chunk[exc.start]:02x} at column "
                               f"{column})") from None
        return text.removeprefix("\ufeff") if self.line == 1 else text


def _jsonl_rows(path: Path | str, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not valid JSON: {exc.msg} (column {exc.colno})") from None
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise DatasetError(f"{path}:{number}: not valid JSON: {exc}") from None
        except RecursionError:
            raise DatasetError(f"{path}:{number}: not valid JSON: nested too deeply") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        yield number, row


def _csv_rows(path: Path | str, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, dict[str, Any]]]:
    header: list[str] | None = None
    for number, line in lines:
        if not line.strip():
            continue
        try:
            cells = next(csv.reader([line]))
        except csv.Error as exc:
            raise DatasetError(f"{path}:{number}: not valid CSV: {exc}") from None
        if header is None:
            duplicates = sorted({name for name in cells if cells.count(name) > 1})
            if duplicates:
                raise DatasetError(f"{path}:{number}: the header names column {duplicates[0]!r} twice")
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
    path: Path | str, number: int, row: dict[str, Any], inputs: str | list[str], label: str, id_field: str | None
) -> Sample:
    if label not in row:
        raise DatasetError(f"{path}:{number}: label field {label!r} is missing")
    _check_label(path, number, label, row[label])
    if isinstance(inputs, str):
        if inputs not in row:
            raise DatasetError(f"{path}:{number}: inputs field {inputs!r} is missing")
        values = row[inputs]
        if not isinstance(values, list):
            values = [values]
        values = _flatten(values)
        if not values:
            raise DatasetError(f"{path}:{number}: inputs field {inputs!r} is empty")
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
    return Sample(id=sample_id, inputs=values, label=row[label], source=str(path), line=number)


def _to_text_sample(path: Path | str, number: int, row: dict[str, Any], text: TextField, label: str,
                    id_field: str | None) -> Sample:
    """A generative sample: one prompt string, or one list of chat messages, and the expected text."""
    if label not in row:
        raise DatasetError(f"{path}:{number}: label field {label!r} is missing")
    _check_label(path, number, label, row[label])
    if text.name not in row:
        kind = "messages" if text.messages else "prompt"
        raise DatasetError(f"{path}:{number}: {kind} field {text.name!r} is missing")
    value = row[text.name]
    if text.messages:
        _check_messages(path, number, text.name, value)
    elif not isinstance(value, str) or not value:
        raise DatasetError(f"{path}:{number}: prompt field {text.name!r} must be a non-empty string")
    sample_id = str(row[id_field]) if id_field is not None and id_field in row else f"line-{number}"
    if id_field is not None and id_field not in row:
        raise DatasetError(f"{path}:{number}: id field {id_field!r} is missing")
    return Sample(id=sample_id, inputs=[value], label=row[label], source=str(path), line=number)


def _check_messages(path: Path | str, number: int, name: str, value: Any) -> None:
    """Chat messages: a non-empty list of objects, each with a string role and string content."""
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{path}:{number}: messages field {name!r} must be a non-empty list of "
                           "{role, content} objects")
    for position, message in enumerate(value):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise DatasetError(f"{path}:{number}: messages field {name!r}: message {position} needs a string "
                               "'role' and a string 'content'")


def _check_label(path: Path | str, number: int, name: str, value: Any) -> None:
    """A label is one class: a string, a number or a boolean (scikit-learn compares them; a list cannot be)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise DatasetError(f"{path}:{number}: label field {name!r} holds a non-finite number ({value})")
    if not isinstance(value, (str, int, float, bool)):
        kind = "null" if value is None else type(value).__name__
        raise DatasetError(f"{path}:{number}: label field {name!r} must be a string, number or boolean, got {kind}")


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
