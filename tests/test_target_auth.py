"""Credentials and query keys in the target URL, against real servers on 127.0.0.1 (and ::1) that demand
them: every client sends `Authorization: Basic`, keeps the query after every path, and never puts the
credentials in `Host:` or `:authority`. And the one lookup of the target's host before a run."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp import web
from grpc import aio

from profiler._proto import grpc_predict_v2_pb2 as pb
from profiler.codecs.v2_grpc import SERVER_READY_METHOD
from profiler.core.errors import TargetError, TransportError
from profiler.core.url import parse_target_url
from profiler.transports.grpc import GrpcTransport
from profiler.transports.grpc_h2 import H2GrpcTransport
from profiler.transports.http import HttpTransport
from profiler.transports.http1 import Http1Transport
from profiler.transports.metadata import fetch_rest_metadata
from profiler.transports.resolve import resolve_target

USER, PASSWORD = "al ice", "p@ss:w/rd-PLANTED"
USERINFO = "al%20ice:p%40ss%3Aw%2Frd-PLANTED"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
QUERY = "key=k%2B1-PLANTED&x=2"
METADATA = {"name": "m", "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 2]}]}


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture(params=["127.0.0.1", "::1"])
async def guarded(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A V2-ish server that answers only requests with the Basic credentials and the query key; it records
    the Host, Authorization and request target of every request."""
    host: str = request.param
    if host == "::1" and not ipv6_available():
        pytest.skip("no IPv6 loopback on this machine")
    seen: list[dict[str, str]] = []

    async def handle(req: web.Request) -> web.Response:
        seen.append({"host": req.headers.get("Host", ""), "authorization": req.headers.get("Authorization", ""),
                     "target": req.raw_path, "method": req.method})
        if req.headers.get("Authorization") != BASIC or req.query.get("key") != "k+1-PLANTED":
            return web.json_response({"error": "unauthorized"}, status=401)
        if req.path.endswith("/infer"):
            return web.json_response({"outputs": [{"name": "o", "datatype": "INT64", "shape": [1], "data": [1]}]})
        if req.path == "/base/v2/models/m":
            return web.json_response(METADATA)
        return web.json_response({"ready": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    yield f"http://{USERINFO}@{authority}/base/?{QUERY}", seen
    await runner.cleanup()


@pytest.mark.parametrize("client", [Http1Transport, HttpTransport])
async def test_http_clients_send_basic_auth_and_the_query(guarded: Any, client: Any) -> None:
    url, seen = guarded
    transport = client(url, timeout_s=5)
    try:
        assert await transport.probe("/v2/health/ready") == 200
        assert await transport.send("/v2/models/m/infer", b"{}") != b""
        done: asyncio.Future[tuple[bytes, Any]] = asyncio.get_running_loop().create_future()
        transport.submit("/v2/models/m/infer", b"{}", lambda body, error, _: done.set_result((body, error)))
        body, error = await asyncio.wait_for(done, 10)
        assert error is None and json.loads(body)["outputs"]
    finally:
        await transport.close()
    authority = parse_target_url(url).authority
    assert [r["target"] for r in seen] == [f"/base/v2/health/ready?{QUERY}", f"/base/v2/models/m/infer?{QUERY}",
                                           f"/base/v2/models/m/infer?{QUERY}"]
    for received in seen:
        assert received["authorization"] == BASIC
        assert received["host"] == authority  # host:port only, no user:password@
        assert "PLANTED" not in received["host"] and "@" not in received["host"]


async def test_rest_metadata_sends_basic_auth_and_the_query(guarded: Any) -> None:
    url, seen = guarded
    document = await fetch_rest_metadata(parse_target_url(url), "/v2/models/m", {}, 5)
    assert document == METADATA
    assert seen == [{"host": parse_target_url(url).authority, "authorization": BASIC,
                     "target": f"/base/v2/models/m?{QUERY}", "method": "GET"}]


@pytest.mark.parametrize("client", [Http1Transport, HttpTransport])
async def test_a_wrong_password_is_a_401_that_names_no_secret(guarded: Any, client: Any) -> None:
    url, _ = guarded
    transport = client(url.replace("PLANTED@", "WRONG@"), timeout_s=5)
    try:
        assert await transport.probe("/v2/health/ready") == 401
        with pytest.raises(TransportError) as denied:
            await transport.send("/v2/models/m/infer", b"{}")
    finally:
        await transport.close()
    assert denied.value.kind == "http_status" and denied.value.status == 401
    assert "PLANTED" not in str(denied.value) and "WRONG" not in str(denied.value)


async def test_metadata_errors_name_the_url_redacted(guarded: Any) -> None:
    url, _ = guarded
    with pytest.raises(TargetError) as failed:
        await fetch_rest_metadata(parse_target_url(url.replace("PLANTED@", "WRONG@")), "/v2/models/m", {}, 5)
    message = str(failed.value)
    assert "model metadata answered HTTP 401" in message
    assert "/base/v2/models/m?key=REDACTED&x=REDACTED" in message and "REDACTED@" in message
    assert "PLANTED" not in message and "WRONG" not in message and "al%20ice" not in message


@pytest.fixture
async def grpc_guarded() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A real grpc.aio server whose ServerReady and ModelMetadata record the call metadata, and answer
    UNAUTHENTICATED without the Basic credentials."""
    seen: list[dict[str, str]] = []

    def unary(response: bytes) -> Any:
        async def call(request: bytes, context: aio.ServicerContext) -> bytes:
            metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
            seen.append(metadata)
            if metadata.get("authorization") != BASIC:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no")
            return response
        return grpc.unary_unary_rpc_method_handler(call)

    handlers = {"ServerReady": unary(pb.ServerReadyResponse(ready=True).SerializeToString()),
                "ModelMetadata": unary(pb.ModelMetadataResponse(name="m").SerializeToString())}
    server = aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("inference.GRPCInferenceService",
                                                                          handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"grpc://{USERINFO}@127.0.0.1:{port}", seen
    await server.stop(None)


@pytest.mark.parametrize("client", [GrpcTransport, H2GrpcTransport])
async def test_grpc_clients_send_basic_auth_as_call_metadata(grpc_guarded: Any, client: Any) -> None:
    url, seen = grpc_guarded
    transport = client(url, model="m", timeout_s=5)
    try:
        assert await transport.probe(SERVER_READY_METHOD) == 200
        assert (await transport.model_metadata())["name"] == "m"
    finally:
        await transport.close()
    assert [m.get("authorization") for m in seen] == [BASIC, BASIC]
    wrong = client(url.replace("PLANTED@", "WRONG@"), model="m", timeout_s=5)
    try:
        with pytest.raises(TargetError) as denied:
            await wrong.model_metadata()
    finally:
        await wrong.close()
    assert "UNAUTHENTICATED" in str(denied.value) and "grpc://REDACTED@127.0.0.1" in str(denied.value)
    assert "PLANTED" not in str(denied.value) and "WRONG" not in str(denied.value)


async def test_an_unknown_host_is_said_to_be_one() -> None:
    with pytest.raises(TargetError, match=r"cannot resolve host no-such-host\.invalid: "):
        await resolve_target(parse_target_url("http://u:pw@no-such-host.invalid:8000/?key=k"))


async def test_a_resolver_that_never_answers_does_not_hang_the_run() -> None:
    """A DNS server that never answers, as a lookup function that blocks (a real one cannot be made without
    changing the machine's resolver): the run stops waiting after the timeout, the thread is left behind."""
    release = threading.Event()

    def never(*_: Any, **__: Any) -> list[Any]:
        release.wait(60)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    started = time.monotonic()
    try:
        with pytest.raises(TargetError, match=r"cannot resolve host model\.svc: no answer from the resolver within "
                                              r"0\.2 s"):
            await resolve_target(parse_target_url("http://model.svc:8000"), 0.2, never)
    finally:
        release.set()
    assert time.monotonic() - started < 30  # the timeout held (generous: a loaded machine)


async def test_an_ip_address_is_not_looked_up() -> None:
    def refuse(*_: Any, **__: Any) -> list[Any]:
        raise AssertionError("looked up an IP address")

    for url, family in (("http://127.0.0.1:8000", socket.AF_INET), ("http://[::1]:8000", socket.AF_INET6)):
        infos = await resolve_target(parse_target_url(url), 1, refuse)
        assert infos[0][0] == family
    assert (await resolve_target(parse_target_url("http://localhost:8000")))[0][4][1] == 8000
