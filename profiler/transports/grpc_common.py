"""What both gRPC transports share: the target URL, the error kind of a status code, and the V2 control calls.

The control calls (readiness, model metadata) are plain functions over a transport's own unary `send`,
so each transport makes them on its own connection: the lean client over its HTTP/2 connection, the
grpc.aio one over its channel.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import DecodeError as ProtobufDecodeError

from profiler._proto import grpc_predict_v2_pb2 as pb
from profiler.codecs.v2_grpc import MODEL_METADATA_METHOD, MODEL_READY_METHOD, SERVER_READY_METHOD, metadata_dict
from profiler.core.errors import TargetError, TransportError
from profiler.core.url import TargetUrl, parse_target_url
from profiler.transports.base import Send

STATUS_KINDS = {grpc.StatusCode.DEADLINE_EXCEEDED: "timeout", grpc.StatusCode.UNAVAILABLE: "connection"}
"""The TransportError kind of a gRPC status code; any code not here is grpc_status."""


def grpc_endpoint(url: str) -> TargetUrl:
    """The parsed grpc:// or grpcs:// URL (core.url); ValueError for any other, or a malformed one."""
    endpoint = parse_target_url(url)
    if not endpoint.grpc:
        raise ValueError(f"not a grpc:// or grpcs:// URL: {endpoint.redacted()!r}")
    return endpoint


def grpc_target(url: str) -> tuple[str, bool]:
    """host:port (the channel target, IPv6 in brackets) and whether TLS is on, from a grpc:// or grpcs:// URL."""
    endpoint = grpc_endpoint(url)
    return endpoint.address, endpoint.tls


def call_metadata(endpoint: TargetUrl, headers: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
    """Every call's metadata: the headers with lower-case keys, and the URL's credentials as
    `authorization: Basic ...` (gRPC over HTTP/2 carries Authorization like any other header)."""
    return tuple((k.lower(), v) for k, v in endpoint.with_auth(headers).items())


async def probe_ready(send: Send, path: str, model: str, version: str) -> int:
    """ServerReady or ModelReady (of `model`, `version`; "" for the latest) over `send`:
    200 ready, 503 not ready, 0 no answer (a connection error or a timeout)."""
    if path == SERVER_READY_METHOD:
        body = pb.ServerReadyRequest().SerializeToString()
    elif path == MODEL_READY_METHOD:
        body = pb.ModelReadyRequest(name=model, version=version).SerializeToString()
    else:
        raise ValueError(f"not a readiness method: {path}")
    try:
        raw = await send(path, body)
    except TransportError as exc:
        return 0 if exc.kind in ("connection", "timeout") else 503
    try:
        ready = pb.ServerReadyResponse.FromString(raw).ready  # both responses hold `bool ready = 1`
    except ProtobufDecodeError:
        return 503  # it answered, with something else than a readiness response
    return 200 if ready else 503


async def fetch_model_metadata(send: Send, url: str, model: str, version: str) -> dict[str, Any]:
    """The ModelMetadata of `model` (`version`; "" for the latest) over `send`, in the REST document's shape.

    Raises TargetError naming `url` (give it redacted) and the model when the call fails.
    """
    body = pb.ModelMetadataRequest(name=model, version=version).SerializeToString()
    try:
        raw = await send(MODEL_METADATA_METHOD, body)
    except TransportError as exc:
        raise TargetError(f"{url}: ModelMetadata for model {model!r} failed: {exc}") from None
    try:
        return metadata_dict(pb.ModelMetadataResponse.FromString(raw))
    except ProtobufDecodeError:
        raise TargetError(f"{url}: ModelMetadata for model {model!r} is not a ModelMetadataResponse") from None
