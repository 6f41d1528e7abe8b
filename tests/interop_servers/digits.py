"""The interop matrix's model: a scikit-learn digits pipeline, trained where it is served, and its reference.

Each model server runs in its own virtual environment (they pin conflicting versions), so the model is
trained there, by the server's own scikit-learn, on the example model's fixed split
(profiler/examples/model.py, which imports nothing but scikit-learn). Beside it the server's process writes
scikit-learn's own predictions for the hold-out set (`reference.json`, one label per hold-out sample, in the
hold-out file's order): what the profiler's predictions over the wire must equal, sample by sample.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from profiler.examples.model import FEATURES, split

INPUT = "input-0"
OUTPUT = "label"


def train_with_reference(folder: Path) -> Any:
    """Fit the pipeline on the training split; write scikit-learn's hold-out predictions to folder/reference.json."""
    x_train, x_test, y_train, _ = split()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(x_train, y_train)
    predicted = [int(v) for v in model.predict(x_test)]
    (folder / "reference.json").write_text(json.dumps({"features": FEATURES, "predictions": predicted}))
    return model
