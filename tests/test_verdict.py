from __future__ import annotations

import math

import pytest

from profiler.verdict import FAIL, INCONCLUSIVE, PASS, decide, evaluate_gate


@pytest.mark.parametrize(
    ("value", "lo", "hi", "status"),
    [
        (0.95, 0.9, None, PASS),
        (0.9, 0.9, None, PASS),
        (0.85, 0.9, None, FAIL),
        (120.0, None, 100.0, FAIL),
        (100.0, None, 100.0, PASS),
        (5.0, 1.0, 10.0, PASS),
        (11.0, 1.0, 10.0, FAIL),
        (None, 0.9, None, INCONCLUSIVE),
        (math.nan, None, 100.0, INCONCLUSIVE),
        (math.nan, 0.0, None, INCONCLUSIVE),
    ],
)
def test_gate(value: float | None, lo: float | None, hi: float | None, status: str) -> None:
    check = evaluate_gate("m", value, lo, hi)
    assert check.status == status
    assert check.reason


@pytest.mark.parametrize(
    ("statuses", "required", "expected"),
    [
        ([PASS, PASS], [True, True], PASS),
        ([PASS, FAIL], [True, True], FAIL),
        ([INCONCLUSIVE, FAIL], [True, True], FAIL),
        ([PASS, INCONCLUSIVE], [True, True], INCONCLUSIVE),
        ([PASS, FAIL], [True, False], PASS),
        ([], [], INCONCLUSIVE),
    ],
)
def test_decide(statuses: list[str], required: list[bool], expected: str) -> None:
    values = {PASS: (1.0, 0.0, None), FAIL: (-1.0, 0.0, None), INCONCLUSIVE: (None, 0.0, None)}
    checks = [evaluate_gate(f"m{i}", *values[s], required=r) for i, (s, r) in enumerate(zip(statuses, required,
                                                                                            strict=True))]
    assert decide(checks).status == expected
