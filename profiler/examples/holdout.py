"""Writes the example model's labelled hold-out set (the digits test split) as JSONL."""

from __future__ import annotations

import json
from pathlib import Path

from profiler.examples.generate import digit_prompt
from profiler.examples.model import split


def write_holdout(path: Path) -> int:
    """One line per held-out digit: {"id", "pixels": [64 numbers], "label"}; returns the count. A path ending in
    .parquet gets the same rows as Parquet (needs pyarrow, the 'parquet' extra)."""
    _, x_test, _, y_test = split()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        # Optional (pyarrow, the 'parquet' extra): only this format needs it.
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"id": [f"digits-{i}" for i in range(len(y_test))],
                                 "pixels": [[int(v) for v in pixels] for pixels in x_test],
                                 "label": [int(v) for v in y_test]}), path)
        return len(y_test)
    with path.open("w", encoding="utf-8") as handle:
        for i, (pixels, label) in enumerate(zip(x_test, y_test, strict=True)):
            row = {"id": f"digits-{i}", "pixels": [int(v) for v in pixels], "label": int(label)}
            handle.write(json.dumps(row, separators=(",", ":")) + "\n")
    return len(y_test)


def write_text_holdout(path: Path) -> int:
    """The same digits for the generative face: {"id", "prompt", "label": "N"}; returns the count."""
    _, x_test, _, y_test = split()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for i, (pixels, label) in enumerate(zip(x_test, y_test, strict=True)):
            row = {"id": f"digits-{i}", "prompt": digit_prompt([int(v) for v in pixels]), "label": str(int(label))}
            handle.write(json.dumps(row, separators=(",", ":")) + "\n")
    return len(y_test)
