"""BentoML (the `bentoml` package) serving the interop digits model; run in .venv-bentoml.

Usage: DIGITS_FOLDER=FOLDER bentoml serve tests.interop_servers.bentoml_digits:Digits --host 127.0.0.1 --port N
(from the repository root, PYTHONPATH there). The service trains the model in FOLDER (see digits.py) and
serves BentoML's own JSON API, which no Open Inference Protocol covers: `POST /classify` with
`{"pixels": [[64 numbers], ...]}` answers a JSON list of labels, one per row. The profiler speaks it with
its `json` template codec. BentoML's Prometheus metrics are on the same port's /metrics.
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml
import numpy as np

from tests.interop_servers.digits import FEATURES, train_with_reference


@bentoml.service(workers=1)
class Digits:
    """The digits pipeline as a BentoML service: one API, rows of pixels in, labels out."""

    def __init__(self) -> None:
        self.model = train_with_reference(Path(os.environ["DIGITS_FOLDER"]))

    @bentoml.api
    def classify(self, pixels: list[list[float]]) -> list[int]:
        """One label per row of 64 pixel values."""
        rows = np.asarray(pixels, dtype=np.float64).reshape(-1, FEATURES)
        return [int(v) for v in self.model.predict(rows)]
