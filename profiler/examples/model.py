"""The example model itself: the digits data and its fixed hold-out split, the classifier, and the
misbehaviour its flags switch on. Shared by the REST server, the gRPC server and the hold-out writer."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

MODEL_NAME = "digits"


FEATURES = 64


SPLIT_SEED = 0


TEST_SIZE = 0.2


def split() -> tuple[Any, Any, Any, Any]:
    """The fixed train/hold-out split of the digits data (the hold-out is what the profiler replays)."""
    digits = load_digits()
    parts: tuple[Any, Any, Any, Any] = train_test_split(
        digits.data, digits.target, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=digits.target
    )
    return parts


def train(variant: str) -> Any:
    """'good': logistic regression (~97% accurate); 'weak': a depth-4 tree (~60%)."""
    x_train, _, y_train, _ = split()
    if variant == "weak":
        model: Any = DecisionTreeClassifier(max_depth=4, random_state=0)
    else:
        model = LogisticRegression(max_iter=3000)
    model.fit(x_train / 16.0, y_train)
    return model


@dataclass
class Behaviour:
    """Deliberate misbehaviour: latency, a serial capacity limit, stalls and a leak."""

    delay_ms: float = 0.0
    service_ms: float = 0.0
    stall_every_s: float = 0.0
    stall_s: float = 0.0
    leak_kb_per_request: float = 0.0
    bad_output_every: int = 0
    """Every Nth response carries one value too few (a response of the wrong shape)."""
    token: str | None = None
    """When set, requests must carry 'Authorization: Bearer <token>'."""
    served: int = 0
    leaked: list[bytearray] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    started: float = field(default_factory=time.monotonic)


def predict(model: Any, rows: Any, behaviour: Behaviour) -> list[int]:
    """Class labels for the rows; every Nth call one short when --bad-output-every asks for it."""
    labels = [int(v) for v in model.predict(rows / 16.0)]
    behaviour.served += 1
    if behaviour.bad_output_every and behaviour.served % behaviour.bad_output_every == 0:
        return labels[:-1]
    return labels


async def misbehave(behaviour: Behaviour) -> None:
    """Apply the configured stall, capacity limit, delay and leak to one request."""
    if behaviour.leak_kb_per_request:
        chunk = bytearray(int(behaviour.leak_kb_per_request * 1024))
        chunk[::4096] = b"\x01" * len(chunk[::4096])  # touch every page so it is resident
        behaviour.leaked.append(chunk)
    if behaviour.stall_every_s and behaviour.stall_s:
        phase = (time.monotonic() - behaviour.started) % behaviour.stall_every_s
        if phase < behaviour.stall_s:
            await asyncio.sleep(behaviour.stall_s - phase)
    if behaviour.service_ms:
        async with behaviour.lock:
            await asyncio.sleep(behaviour.service_ms / 1000)
    if behaviour.delay_ms:
        await asyncio.sleep(behaviour.delay_ms / 1000)
