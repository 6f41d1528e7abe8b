"""gRPC transport on grpc.aio: one long-lived channel, pre-serialized requests sent as raw bytes.

The unary call is made with no serializer and no deserializer, so a request body goes to the wire
as it was encoded before the load and the response comes back as bytes for the codec to read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from profiler.core.errors import TargetError, TransportError
from profiler.transports.base import Done
from profiler.transports.grpc_common import (
    STATUS_KINDS,
    call_metadata,
    fetch_model_metadata,
    grpc_endpoint,
    probe_ready,
)
from profiler.transports.sockets import MAX_MESSAGE_BYTES

MAX_CA_BYTES = 4 * 1024 * 1024
"""A CA bundle larger than this is not one (the system's whole bundle is about 200 KiB)."""


def _rpc_error(exc: aio.AioRpcError) -> TransportError:
    code = exc.code()
    kind = STATUS_KINDS.get(code, "grpc_status")
    return TransportError(kind, f"gRPC {code.name}: {exc.details() or ''}"[:300], code.value[0])


def _call_ended(call: Any, done: Done, _: Any) -> None:
    """Read a finished call's outcome through its public awaitable (it completes without suspending).

    grpc reads the sockets in its own threads, so no kernel receive time is known: the third argument is 0.
    """
    step = call.__await__()
    try:
        step.send(None)
    except StopIteration as stop:
        done(stop.value, None, 0)
        return
    except aio.AioRpcError as exc:
        done(b"", _rpc_error(exc), 0)
        return
    except asyncio.CancelledError:
        done(b"", TransportError("connection", "the call was cancelled"), 0)
        return
    step.close()  # not finished after all (cannot happen once its task is done)
    done(b"", TransportError("connection", "the call ended without an outcome"), 0)


class GrpcTransport:
    """Sends ModelInfer bytes over one channel; readiness and metadata through the V2 service."""

    def __init__(
        self,
        url: str,
        *,
        model: str,
        version: str | None = None,
        timeout_s: float,
        headers: dict[str, str] | None = None,
        tls_ca_file: Path | None = None,
        keepalive_s: float = 30.0,
    ) -> None:
        self.endpoint = grpc_endpoint(url)
        self._address, self._tls = self.endpoint.address, self.endpoint.tls
        self._model = model
        self._version = version or ""
        self._timeout_s = timeout_s
        # gRPC metadata keys are lower case; the values never leave this object.
        # None, not an empty tuple, when there is nothing to send: grpc skips the metadata work then.
        self._metadata: tuple[tuple[str, str], ...] | None = call_metadata(self.endpoint, headers) or None
        self._ca_file = tls_ca_file
        self._keepalive_ms = int(keepalive_s * 1000)
        self._channel: aio.Channel | None = None
        self._calls: dict[str, Any] = {}

    def _open(self) -> aio.Channel:
        # Created on first use, inside the running loop, and kept for the transport's life.
        if self._channel is None:
            options: Sequence[tuple[str, Any]] = (
                ("grpc.keepalive_time_ms", self._keepalive_ms),
                ("grpc.keepalive_timeout_ms", min(self._keepalive_ms, 20_000)),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            )
            if self._tls:
                root = self._read_ca() if self._ca_file is not None else None
                credentials = grpc.ssl_channel_credentials(root_certificates=root)
                self._channel = aio.secure_channel(self._address, credentials, options=options)
            else:
                self._channel = aio.insecure_channel(self._address, options=options)
        return self._channel

    def _read_ca(self) -> bytes:
        assert self._ca_file is not None
        try:
            with self._ca_file.open("rb") as file:
                pem = file.read(MAX_CA_BYTES + 1)
        except OSError as exc:
            raise TargetError(f"target.tls_ca_file: cannot read {self._ca_file}: {exc.strerror or exc}") from None
        # grpc takes any bytes here and only logs, call after call, that it could not load them.
        if len(pem) > MAX_CA_BYTES or b"-----BEGIN CERTIFICATE-----" not in pem:
            raise TargetError(f"target.tls_ca_file: {self._ca_file} holds no PEM certificate "
                              "(-----BEGIN CERTIFICATE-----)" if len(pem) <= MAX_CA_BYTES else
                              f"target.tls_ca_file: {self._ca_file} is larger than {MAX_CA_BYTES // 2**20} MiB")
        return pem

    def _call(self, method: str) -> Any:
        call = self._calls.get(method)
        if call is None:
            # No serializer or deserializer: bytes in, bytes out.
            call = self._open().unary_unary(method, request_serializer=None, response_deserializer=None)
            self._calls[method] = call
        return call

    def submit(self, path: str, body: bytes, done: Done) -> None:
        """The load engine's hot path: start the call and run `done(body, error, 0)` when it ends.

        grpc.aio runs every call as a task of its own; the engine hooks onto that task instead of
        wrapping the call in a second one (a bare client's `ensure_future(call)` makes two).
        """
        call = self._call(path)(body, timeout=self._timeout_s, metadata=self._metadata)
        # grpc.aio keeps the call's task private; if that ever changes, wrap the call (one more task).
        task = getattr(call, "_call_response", None)
        if not isinstance(task, asyncio.Future):
            task = asyncio.ensure_future(call)
        task.add_done_callback(partial(_call_ended, call, done))

    def set_polled(self, polled: bool) -> bool:
        """grpc.aio reads its sockets on its own: never polled."""
        return False

    def poll(self) -> None:
        """Nothing to read: grpc.aio's callbacks deliver the answers."""

    async def send(self, path: str, body: bytes) -> bytes:
        """One unary call of method `path` with the pre-serialized `body`; the response bytes."""
        try:
            response: bytes = await self._call(path)(body, timeout=self._timeout_s, metadata=self._metadata)
        except aio.AioRpcError as exc:
            raise _rpc_error(exc) from None
        return response

    async def probe(self, path: str) -> int:
        """ServerReady or ModelReady: 200 ready, 503 not ready, 0 no answer."""
        return await probe_ready(self.send, path, self._model, self._version)

    async def model_metadata(self) -> dict[str, Any]:
        """The model's ModelMetadata, in the REST document's shape."""
        return await fetch_model_metadata(self.send, self.endpoint.redacted(), self._model, self._version)

    async def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._calls.clear()
