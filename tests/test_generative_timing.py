"""The token timings read against a server whose timings are known: the example model's OpenAI face sends its
first token 50 ms after a request arrives, then one every 10 ms. Bounds on timing: run alone (serial)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from profiler.app.run import execute
from profiler.config import parse_config
from profiler.examples.holdout import write_text_holdout
from profiler.state import new_state

pytestmark = pytest.mark.serial

PROFILE = """
target:
  url: {url}
  protocol: openai-completions
  model: digits
  generation: {{max_tokens: 12}}
dataset: {{path: text.jsonl, prompt: prompt, label: label, match: regex, pattern: 'digit is (\\d)'}}
load: {{concurrency: [4], duration_s: 1.5}}
objective: {{latency_ms: 5000}}
resources: {{settle_s: 0}}
report: {{path: report.json}}
history: {{enabled: false}}
"""


@pytest.mark.slow
async def test_ttft_itl_and_tpot_read_the_planned_timings(tmp_path: Path, example_server: Any) -> None:
    write_text_holdout(tmp_path / "text.jsonl")
    config = parse_config(PROFILE.format(url=example_server[1]), tmp_path / "profile.yaml")
    report = await execute(new_state(config))
    stage = report["stages"][-1]
    assert stage["errors"] == 0, stage["error_examples"]
    assert stage["timed_requests"] == stage["completed"] > 10
    # The server cannot be early; a loaded machine can make it (or the read) a few milliseconds late.
    assert 49.5 <= stage["ttft_ms"]["p50"] <= 60
    assert 9.5 <= stage["tpot_ms"]["p50"] <= 12
    assert 8 <= stage["itl_ms"]["p50"] <= 12
    assert 49.5 + 11 * 9.5 <= stage["latency_ms"]["p50"] <= 60 + 11 * 12
