"""What both gRPC transports share: the target URL, the error kind of a status code, and the V2 control calls.

The control calls (readiness, model metadata) are plain functions over a transport's own unary `send`,
so each transport makes them on its own connection: the lean client over its HTTP/2 connection, the
grpc.aio one over its channel.
"""

from __future__ import annotations

from typing import Any

import grpc

from profiler._proto import grpc_predict_v2_pb2 as pb
from profiler.codecs.v2_grpc import MODEL_METADATA_METHOD, MODEL_READY_METHOD, SERVER_READY_METHOD, metadata_dict
from profiler.core.errors import TargetError, TransportError
from profiler.transports.base import Send

STATUS_KINDS = {grpc.StatusCode.DEADLINE_EXCEEDED: "timeout", grpc.StatusCode.UNAVAILABLE: "connection"}
"""The TransportError kind of a gRPC status code; any code not here is grpc_status."""


def grpc_target(url: str) -> tuple[str, bool]:
    """host:port and whether TLS is on, from a grpc:// or grpcs:// URL."""
    for scheme, tls in (("grpcs://", True), ("grpc://", False)):
        if url.startswith(scheme):
            return url[len(scheme):].rstrip("/"), tls
    raise ValueError(f"not a grpc:// or grpcs:// URL: {url!r}")


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
    ready = pb.ServerReadyResponse.FromString(raw).ready  # both responses hold `bool ready = 1`
    return 200 if ready else 503


async def fetch_model_metadata(send: Send, url: str, model: str, version: str) -> dict[str, Any]:
    """The ModelMetadata of `model` (`version`; "" for the latest) over `send`, in the REST document's shape.

    Raises TargetError naming `url` and the model when the call fails.
    """
    body = pb.ModelMetadataRequest(name=model, version=version).SerializeToString()
    try:
        raw = await send(MODEL_METADATA_METHOD, body)
    except TransportError as exc:
        raise TargetError(f"{url}: ModelMetadata for model {model!r} failed: {exc}") from None
    return metadata_dict(pb.ModelMetadataResponse.FromString(raw))
