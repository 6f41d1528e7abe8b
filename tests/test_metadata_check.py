"""The pre-load metadata check: which protocols are checked, and REST metadata failures named by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from profiler.codecs.factory import codec_from_config
from profiler.config import parse_config
from profiler.core.errors import TargetError
from profiler.dataset import Sample
from profiler.transports.base import FunctionTransport
from profiler.transports.metadata import check_model_inputs

FIRST = Sample("s0", [0.0] * 4, 0)


async def _never(path: str, body: bytes) -> bytes:
    raise AssertionError("the check must not send inference requests")


def target(text: str) -> Any:
    base = "\ndataset: {path: d.jsonl}\nload: {stages: [{rate_rps: 1, duration_s: 1}]}\n"
    return parse_config("target: " + text + base, Path("/cfg/p.yaml")).target


@pytest.mark.parametrize("text", [
    "{url: 'http://127.0.0.1:9', protocol: v1-rest, model: m}",
    "{url: 'http://127.0.0.1:9', protocol: json, model: m, request_template: {x: '{{inputs}}'}, "
    "response_path: $.y, infer_path: /p}",
    "{url: 'http://127.0.0.1:9', model: m, check_metadata: false}",
])
async def test_protocols_without_v2_metadata_are_not_checked(text: str) -> None:
    config = target(text)
    codec = codec_from_config(config, "inputs", 1, FIRST)
    assert await check_model_inputs(config, codec, FunctionTransport(_never), FIRST) is False


@pytest.fixture
async def metadata_server() -> Any:
    documents: dict[str, tuple[int, bytes]] = {}

    async def handle(request: web.Request) -> web.Response:
        status, body = documents.get(request.path, (404, b"{}"))
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", documents
    await runner.cleanup()


@pytest.mark.parametrize(("status", "body", "result"), [
    (200, b'{"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]}', True),
    (200, b'{"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 5]}]}',
     r"sample s0: input 'input-0': model 'm' declares shape \[-1, 5\], the config sends \[N, 4\]"),
    (404, b"{}", r"/v2/models/m: model metadata answered HTTP 404"),
    (200, b"<html>", r"/v2/models/m: model metadata is not JSON"),
    (200, b"[1]", r"/v2/models/m: model metadata is not a JSON object"),
])
async def test_rest_metadata(metadata_server: Any, status: int, body: bytes, result: bool | str) -> None:
    url, documents = metadata_server
    documents["/v2/models/m"] = (status, body)
    config = target(f"{{url: '{url}', model: m}}")
    codec = codec_from_config(config, "inputs", 1, FIRST)
    if result is True:
        assert await check_model_inputs(config, codec, FunctionTransport(_never), FIRST) is True
    else:
        with pytest.raises(TargetError, match=str(result)):
            await check_model_inputs(config, codec, FunctionTransport(_never), FIRST)


async def test_rest_metadata_unreachable_names_the_url() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = target(f"{{url: 'http://127.0.0.1:{port}', model: m, timeout_s: 2}}")
    codec = codec_from_config(config, "inputs", 1, FIRST)
    with pytest.raises(TargetError, match=rf"http://127.0.0.1:{port}/v2/models/m: cannot fetch model metadata"):
        await check_model_inputs(config, codec, FunctionTransport(_never), FIRST)
