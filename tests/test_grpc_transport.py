"""The gRPC transport against real grpc.aio servers on 127.0.0.1: calls, readiness, metadata, errors, TLS, auth."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc import aio

from profiler._proto import grpc_predict_v2_pb2 as pb
from profiler.codecs.v2_grpc import INFER_METHOD, MODEL_READY_METHOD, SERVER_READY_METHOD, V2GrpcCodec
from profiler.core.errors import TargetError, TransportError
from profiler.dataset import Sample
from profiler.examples.grpc_server import make_handler
from profiler.examples.model import Behaviour, train
from profiler.transports.grpc import GrpcTransport
from profiler.transports.grpc_common import grpc_target
from profiler.transports.grpc_h2 import H2GrpcTransport

ZERO = Sample("z", [0] * 64, 0)
SEVEN = Sample("seven", [0, 0, 2, 13, 16, 9, 0, 0, 0, 0, 12, 12, 7, 16, 3, 0, 0, 1, 14, 3, 0, 16, 4, 0, 0, 0, 0, 4, 10,
                         16, 6, 0, 0, 0, 0, 13, 16, 16, 9, 0, 0, 0, 0, 5, 13, 1, 0, 0, 0, 0, 0, 11, 9, 0, 0, 0, 0, 0, 1,
                         16, 4, 0, 0, 0], 7)  # the first hold-out digit


@pytest.fixture
def grpc_server(example_grpc_url: str) -> str:
    return example_grpc_url


Client = type[GrpcTransport] | type[H2GrpcTransport]


@pytest.fixture(params=[GrpcTransport, H2GrpcTransport], ids=["grpc.aio", "lean-h2"])
def client(request: pytest.FixtureRequest) -> Client:
    """Both gRPC clients must behave the same: grpc.aio, and the lean HTTP/2 client the engine uses."""
    cls: Client = request.param
    return cls


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize(("url", "expected"), [
    ("grpc://127.0.0.1:8001", ("127.0.0.1:8001", False)), ("grpcs://model.svc:443/", ("model.svc:443", True)),
])
def test_grpc_target(url: str, expected: tuple[str, bool]) -> None:
    assert grpc_target(url) == expected


def test_grpc_target_rejects_http() -> None:
    with pytest.raises(ValueError, match="not a grpc"):
        grpc_target("http://h:1")


async def test_infer_readiness_and_metadata_over_one_channel(grpc_server: str, client: Client) -> None:
    codec = V2GrpcCodec("digits")
    transport = client(grpc_server, model="digits", timeout_s=5)
    try:
        assert await transport.probe(SERVER_READY_METHOD) == 200
        assert await transport.probe(MODEL_READY_METHOD) == 200
        channel = transport._channel if isinstance(transport, GrpcTransport) else None
        body = await transport.send(INFER_METHOD, codec.encode([SEVEN, SEVEN]))
        assert codec.decode(body, 2) == [7, 7]
        if isinstance(transport, GrpcTransport):
            assert transport._channel is channel  # the same long-lived channel
        else:
            assert transport.connections_opened == 1  # probes and calls on the one HTTP/2 connection
        metadata = await transport.model_metadata()
        assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 64]}]
    finally:
        await transport.close()


async def test_errors_map_to_transport_error_kinds(grpc_server: str, client: Client) -> None:
    body = V2GrpcCodec("digits").encode([ZERO])

    unknown = client(grpc_server, model="cats", timeout_s=5)
    with pytest.raises(TransportError) as status:
        await unknown.send(INFER_METHOD, V2GrpcCodec("cats").encode([ZERO]))
    assert status.value.kind == "grpc_status" and status.value.status == grpc.StatusCode.NOT_FOUND.value[0]
    assert await unknown.probe(MODEL_READY_METHOD) == 503  # the server answers: not ready
    with pytest.raises(TargetError, match=r"ModelMetadata for model 'cats' failed: gRPC NOT_FOUND"):
        await unknown.model_metadata()
    await unknown.close()

    nobody = client(f"grpc://127.0.0.1:{closed_port()}", model="digits", timeout_s=2)
    with pytest.raises(TransportError) as connection:
        await nobody.send(INFER_METHOD, body)
    assert connection.value.kind == "connection"
    assert "UNAVAILABLE" in str(connection.value) or "cannot connect" in str(connection.value)
    assert await nobody.probe(SERVER_READY_METHOD) == 0
    await nobody.close()


async def slow_server() -> tuple[aio.Server, int]:
    """A V2 gRPC server of a weak digits model that answers after 300 ms."""
    server = aio.server()
    server.add_generic_rpc_handlers((make_handler(train("weak"), Behaviour(delay_ms=300), "digits"),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_a_missed_deadline_is_a_timeout(client: Client) -> None:
    server, port = await slow_server()
    try:
        slow = client(f"grpc://127.0.0.1:{port}", model="digits", timeout_s=0.05)
        with pytest.raises(TransportError) as timeout:
            await slow.send(INFER_METHOD, V2GrpcCodec("digits").encode([ZERO]))
        assert timeout.value.kind == "timeout" and "DEADLINE_EXCEEDED" in str(timeout.value)
        await slow.close()
    finally:
        await server.stop(grace=None)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed (needed to make a test CA)")
async def test_tls_with_a_ca_file(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    server = aio.server()
    server.add_generic_rpc_handlers((make_handler(train("weak"), Behaviour(), "digits"),))
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        codec = V2GrpcCodec("digits")
        secure = GrpcTransport(f"grpcs://127.0.0.1:{port}", model="digits", timeout_s=5, tls_ca_file=cert)
        assert await secure.probe(SERVER_READY_METHOD) == 200
        assert len(codec.decode(await secure.send(INFER_METHOD, codec.encode([ZERO])), 1)) == 1
        await secure.close()
        plain = GrpcTransport(f"grpc://127.0.0.1:{port}", model="digits", timeout_s=2)
        with pytest.raises(TransportError):
            await plain.send(INFER_METHOD, codec.encode([ZERO]))
        await plain.close()
        missing = GrpcTransport(f"grpcs://127.0.0.1:{port}", model="digits", timeout_s=2,
                                tls_ca_file=tmp_path / "nope.pem")
        with pytest.raises(TargetError, match=r"target\.tls_ca_file: cannot read"):
            await missing.send(INFER_METHOD, codec.encode([ZERO]))
    finally:
        await server.stop(grace=None)


def test_metadata_request_round_trip() -> None:
    # The readiness probe reads either answer through ServerReadyResponse: both carry `bool ready = 1`.
    raw = pb.ModelReadyResponse(ready=True).SerializeToString()
    assert pb.ServerReadyResponse.FromString(raw).ready is True


async def submitted(transport: GrpcTransport | H2GrpcTransport, body: bytes) -> tuple[bytes, TransportError | None]:
    """The engine's callback path, awaited: what `done` was called with."""
    import asyncio

    outcome: asyncio.Future[tuple[bytes, TransportError | None]] = asyncio.get_running_loop().create_future()
    transport.submit(INFER_METHOD, body, lambda payload, error, _: outcome.set_result((payload, error)))
    return await asyncio.wait_for(outcome, 10)


async def test_submit_reports_answers_and_each_error_kind(grpc_server: str, client: Client) -> None:
    codec = V2GrpcCodec("digits")
    transport = client(grpc_server, model="digits", timeout_s=5)
    payload, error = await submitted(transport, codec.encode([SEVEN]))
    assert error is None and codec.decode(payload, 1) == [7]
    await transport.close()

    unknown = client(grpc_server, model="cats", timeout_s=5)
    _, error = await submitted(unknown, V2GrpcCodec("cats").encode([ZERO]))
    assert error is not None and error.kind == "grpc_status" and "NOT_FOUND" in str(error)
    await unknown.close()

    nobody = client(f"grpc://127.0.0.1:{closed_port()}", model="digits", timeout_s=2)
    _, error = await submitted(nobody, codec.encode([ZERO]))
    assert error is not None and error.kind == "connection"
    await nobody.close()

    server, port = await slow_server()
    try:
        slow = client(f"grpc://127.0.0.1:{port}", model="digits", timeout_s=0.05)
        _, error = await submitted(slow, codec.encode([ZERO]))
        assert error is not None and error.kind == "timeout" and "DEADLINE_EXCEEDED" in str(error)
        await slow.close()
    finally:
        await server.stop(grace=None)
