"""A real OpenAI-compatible server this project did not write: llama-cpp-python's, on CPU, with a tiny model the
test builds itself (tests/tiny_gguf.py, random weights, no download), profiled over both endpoints, streamed and
whole, through the real run.

The server lives in its own virtual environment (`make test` builds it: the Makefile's .venv-llama target);
PROFILER_LLAMA_PYTHON names another interpreter that has llama-cpp-python[server] and gguf.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from profiler.app.demo import stop_process
from profiler.app.run import execute
from profiler.config import parse_config
from profiler.state import new_state
from tests.conftest import require

ROOT = Path(__file__).resolve().parent.parent
LLAMA_PYTHON = Path(os.environ.get("PROFILER_LLAMA_PYTHON", ROOT / ".venv-llama" / "bin" / "python"))
PROMPTS = ["the cat sat on the", "one two three", "is the dog red", "up down left", "a model is fast",
           "the answer is"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the llama.cpp server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the llama.cpp server did not answer within {timeout_s:g} s")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """llama-cpp-python's server on 127.0.0.1 with the tiny model; its URL and a folder with a hold-out file."""
    require(LLAMA_PYTHON.exists(), f"llama-cpp-python's server ({LLAMA_PYTHON})", "make .venv-llama/.installed")
    directory = tmp_path_factory.mktemp("llama")
    model = directory / "tiny.gguf"
    subprocess.run([str(LLAMA_PYTHON), str(ROOT / "tests" / "tiny_gguf.py"), str(model)], check=True, timeout=120)
    with (directory / "prompts.jsonl").open("w") as handle:
        for i, prompt in enumerate(PROMPTS):
            messages = [{"role": "system", "content": "answer briefly"}, {"role": "user", "content": prompt}]
            handle.write(orjson.dumps({"id": f"p{i}", "prompt": prompt, "messages": messages,
                                       "label": "cat"}).decode() + "\n")
    port = _free_port()
    log = (directory / "server.log").open("wb")
    proc = subprocess.Popen([str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", str(model), "--host",
                             "127.0.0.1", "--port", str(port), "--n_ctx", "512", "--chat_format", "chatml",
                             "--model_alias", "tiny", "--n_threads", "1",
                             # By default a new request ends the stream in progress ("[DONE]" and a dropped
                             # connection): the profiler counted those as connection errors at concurrency 2.
                             "--interrupt_requests", "False"], stdout=log, stderr=log)
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}", 60)
        yield f"http://127.0.0.1:{port}", directory
    finally:
        stop_process(proc)  # type: ignore[arg-type]
        log.close()


PROFILE = """
target:
  url: {url}
  protocol: {protocol}
  model: tiny
  timeout_s: 30
  ready_timeout_s: 30
  generation: {{stream: {stream}, max_tokens: 8, temperature: 0}}
dataset: {{path: prompts.jsonl, {field}, label: label, id: id, match: contains}}
load:
  concurrency: [1, 2]
  duration_s: 0.6
objective: {{latency_ms: 10000, ttft_ms: 10000, tpot_ms: 5000}}
resources: {{settle_s: 0}}
report: {{path: report-{protocol}-{stream}.json}}
history: {{enabled: false}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(("protocol", "field"), [("openai-chat", "messages: messages"),
                                                 ("openai-completions", "prompt: prompt")])
async def test_the_real_server_is_profiled_over_both_endpoints(llama: tuple[str, Path], protocol: str, field: str,
                                                               stream: bool) -> None:
    url, directory = llama
    text = PROFILE.format(url=url, protocol=protocol, stream=str(stream).lower(), field=field)
    report: dict[str, Any] = await execute(new_state(parse_config(text, directory / "profile.yaml")))
    assert report["run"]["status"] == "completed"
    stages = [s for s in report["stages"] if not s["warmup"]]
    assert [s["concurrency"] for s in stages] == [1, 2]
    for stage in stages:
        assert stage["errors"] == 0, stage["error_examples"]
        assert stage["completed"] > 0
        assert 0 < stage["output_tokens"] <= 8 * stage["completed"]
        assert stage["output_tokens_per_s"] > 0
        if stream:
            # llama-cpp-python 0.3.36 ignores stream_options.include_usage: its tokens are the events counted.
            assert stage["token_counts"] == "counted chunks"
            assert stage["timed_requests"] == stage["completed"]
            assert 0 < stage["ttft_ms"]["p50"] <= stage["latency_ms"]["p50"]
            assert stage["itl_ms"]["p50"] is not None
        else:
            assert stage["token_counts"] == "usage"
            assert stage["timed_requests"] == 0
    accuracy = report["accuracy"]
    assert accuracy["scored"] == len(PROMPTS) and accuracy["match"] == "contains"
    # Temperature 0: the same prompt gives the same answer under load as alone.
    assert accuracy["consistency"]["compared"] > 0
    assert accuracy["consistency"]["inconsistent"] == 0
