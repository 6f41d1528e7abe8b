"""A model server that fails on purpose, one mode per fault, for the fault suite (tests/test_faults.py).

It serves the example model (profiler/examples/model.py: the digits classifier, right answers when not
faulting, so accuracy gates have something true to check) over V2 REST and, with --grpc-port, V2 gRPC.
The HTTP side is a small HTTP/1.1 server on asyncio streams, so a fault can be exact down to the byte:
a Content-Length that promises more than is sent, a reset (SO_LINGER 0), a close in the middle of a
chunked answer. The gRPC side is the example model's own handler behind an interceptor that answers
ModelInfer with a status instead, and behind a TCP relay that can drop every client connection.

Only inference requests fault; readiness and metadata always answer (except in `not_ready`), so a run
gets to its load. The mode is set with POST /_fault {"mode": ..., "every": N, "delay_s": S}, which also
resets the counters: with every=N the Nth, 2Nth, ... inference request faults (every=1: all of them),
counted over both protocols, so a partial fault is deterministic. GET /_fault says the mode and the
counts. Modes:

  ok            right answers
  status        HTTP 500 with a JSON error
  malformed     200 with a body that is not JSON
  truncated     200, Content-Length larger than the body sent, then close
  wrong_shape   200, one prediction too few
  wrong_id      200, the right predictions under another request's id
  oversized     200, a Content-Length of 1 GiB (beyond any client's limit); 16 MiB of it sent, then nothing
  reset         the connection reset (RST) instead of an answer
  close_mid     a chunked answer closed after its first chunk
  never         no answer, ever (the connection stays open)
  late          the right answer after delay_s
  not_ready     readiness endpoints answer 503 (nothing is inferred)
  unavailable, deadline, exhausted   gRPC status UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED
  drop          gRPC: every client connection is reset as the call arrives

Run: python tests/fault_server.py --port 0 [--grpc-port 0] [--mode ok] [--model PATH] [--wait-stdin]; it
prints "READY http://127.0.0.1:PORT" (and "GRPC grpc://127.0.0.1:PORT") once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import grpc
import joblib
import numpy as np
from grpc import aio

from profiler.examples.grpc_server import make_handler
from profiler.examples.model import FEATURES, MODEL_NAME, Behaviour, predict, train

HTTP_MODES = ("ok", "status", "malformed", "truncated", "wrong_shape", "wrong_id", "oversized", "reset", "close_mid",
              "never", "late", "not_ready")
GRPC_STATUS = {"unavailable": grpc.StatusCode.UNAVAILABLE, "deadline": grpc.StatusCode.DEADLINE_EXCEEDED,
               "exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED}
MODES = (*HTTP_MODES, *GRPC_STATUS, "drop")
OVERSIZED_BYTES = 1 << 30
"""What an oversized answer declares: 1 GiB, beyond the lean client's 256 MiB and any sane prediction."""
OVERSIZED_SENT_BYTES = 16 * 1024 * 1024
"""What an oversized answer sends before it stalls: enough to tell a client that reads on (it then waits for
the rest until its timeout) from one that refuses the head, without pushing a gigabyte through the machine."""
CHUNK_BYTES = 1024 * 1024
METADATA = {"name": MODEL_NAME, "versions": ["1"], "platform": "scikit-learn",
            "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, FEATURES]}],
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}]}


@dataclass
class Faults:
    """The current mode and what it has done; shared by the HTTP and the gRPC side."""

    mode: str = "ok"
    every: int = 1
    delay_s: float = 2.0
    infer: int = 0
    faulted: int = 0
    drops: list[Callable[[], None]] = field(default_factory=list)

    def set(self, mode: str, every: int = 1, delay_s: float = 2.0) -> None:
        """A new mode; the counters start again."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode, self.every, self.delay_s = mode, max(1, every), delay_s
        self.infer = self.faulted = 0

    def next_infer(self) -> str:
        """Count one inference request; the mode it meets ("ok" unless it is one of the faulting ones)."""
        self.infer += 1
        if self.mode == "ok" or self.infer % self.every:
            return "ok"
        self.faulted += 1
        return self.mode

    def stats(self) -> dict[str, Any]:
        """The mode and the counts, for GET /_fault."""
        return {"mode": self.mode, "every": self.every, "infer": self.infer, "faulted": self.faulted}


def _head(status: int, length: int, content_type: str = "application/json", extra: str = "") -> bytes:
    reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "X")
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
            f"{extra}\r\n").encode("latin-1")


def _json(status: int, document: Any) -> bytes:
    body = json.dumps(document).encode()
    return _head(status, len(body)) + body


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


Handler = Callable[["HttpSide", bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
"""How one HTTP fault answers a request: True when the connection can carry the next one."""


class HttpSide:
    """V2 REST on asyncio streams: keep-alive HTTP/1.1, Content-Length requests, one answer per mode."""

    def __init__(self, model: Any, faults: Faults) -> None:
        self._model = model
        self._faults = faults
        self._behaviour = Behaviour()
        self._short = Behaviour(bad_output_every=1)

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection's requests in turn until either side closes it."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                if not await self.answer(method, path, body, reader, writer):
                    return
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def answer(self, method: str, path: str, body: bytes, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bool:
        """Write the answer to one request; False when the connection is done with (closed, reset)."""
        faults = self._faults
        if path == "/_fault":
            if method == "POST":
                setting = json.loads(body)
                faults.set(setting["mode"], int(setting.get("every", 1)), float(setting.get("delay_s", 2.0)))
            writer.write(_json(200, faults.stats()))
        elif path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL_NAME}/ready"):
            ready = faults.mode != "not_ready"
            writer.write(_json(200 if ready else 503, {"ready": ready}))
        elif path == f"/v2/models/{MODEL_NAME}" and method == "GET":
            writer.write(_json(200, METADATA))
        elif path == f"/v2/models/{MODEL_NAME}/infer" and method == "POST":
            return await self.infer(body, reader, writer)
        else:
            writer.write(_json(404, {"error": f"no route {method} {path}"}))
        await writer.drain()
        return True

    def _predict(self, body: bytes, short: bool = False, wrong_id: bool = False) -> bytes:
        document = json.loads(body)
        rows = np.asarray(document["inputs"][0]["data"], dtype=np.float32).reshape(-1, FEATURES)
        labels = predict(self._model, rows, self._short if short else self._behaviour)
        answer_id = document.get("id", "")
        return json.dumps({"model_name": MODEL_NAME, "model_version": "1",
                           "id": f"not-{answer_id}" if wrong_id else answer_id, "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [len(labels)], "data": labels}]}).encode()

    async def infer(self, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One inference request, in the mode it meets (gRPC-only modes leave REST answering right)."""
        handler = self._modes.get(self._faults.next_infer())
        if handler is not None:
            return await handler(self, body, reader, writer)
        answer = self._predict(body)
        writer.write(_head(200, len(answer)) + answer)
        await writer.drain()
        return True

    async def _status(self, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(_json(500, {"error": "injected fault: internal error"}))
        await writer.drain()
        return True

    async def _malformed(self, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        broken = b'{"model_name": "digits", "outputs": [{"name": "label", "data": [3'
        writer.write(_head(200, len(broken)) + broken)
        await writer.drain()
        return True

    async def _truncated(self, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        answer = self._predict(body)
        writer.write(_head(200, len(answer) + 100) + answer)
        await writer.drain()
        return False

    async def _wrong_shape(self, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        answer = self._predict(body, short=True)
        writer.write(_head(200, len(answer)) + answer)
        await writer.drain()
        return True

    async def _wrong_id(self, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        answer = self._predict(body, wrong_id=True)
        writer.write(_head(200, len(answer)) + answer)
        await writer.drain()
        return True

    async def _oversized(self, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(_head(200, OVERSIZED_BYTES))
        chunk = b"0" * CHUNK_BYTES
        for _ in range(OVERSIZED_SENT_BYTES // CHUNK_BYTES):
            writer.write(chunk)
            await writer.drain()
        await _hang_up(reader)  # never the rest of the promised gigabyte
        return False

    async def _reset(self, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        reset(writer)
        return False

    async def _close_mid(self, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        answer = self._predict(body)
        half = answer[:len(answer) // 2]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"%x\r\n%s\r\n" % (len(half), half))
        await writer.drain()
        return False

    async def _never(self, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await _hang_up(reader)
        return False

    async def _late(self, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(self._faults.delay_s)
        answer = self._predict(body)
        writer.write(_head(200, len(answer)) + answer)
        await writer.drain()
        return True

    _modes: ClassVar[dict[str, Handler]] = {
        "status": _status, "malformed": _malformed, "truncated": _truncated, "wrong_shape": _wrong_shape,
        "wrong_id": _wrong_id, "oversized": _oversized, "reset": _reset, "close_mid": _close_mid, "never": _never,
        "late": _late,
    }


async def _hang_up(reader: asyncio.StreamReader) -> None:
    """Wait, answering nothing, until the client closes the connection."""
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(65536):
            pass


class FaultInterceptor(aio.ServerInterceptor):
    """Answers ModelInfer with the mode's gRPC status, or drops every client connection, when its turn comes."""

    def __init__(self, faults: Faults) -> None:
        self._faults = faults

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if not details.method.endswith("/ModelInfer"):
            return handler
        mode = self._faults.next_infer()
        if mode in GRPC_STATUS:
            code = GRPC_STATUS[mode]

            async def refuse(_: Any, context: aio.ServicerContext[Any, Any]) -> None:
                await context.abort(code, f"injected fault: {code.name}")

            return grpc.unary_unary_rpc_method_handler(refuse, request_deserializer=lambda b: b)
        if mode == "drop":
            async def drop(_: Any, context: aio.ServicerContext[Any, Any]) -> None:
                for hang_up in list(self._faults.drops):
                    hang_up()
                await asyncio.sleep(3600)  # cancelled when the relay closes our side

            return grpc.unary_unary_rpc_method_handler(drop, request_deserializer=lambda b: b)
        return handler


class Relay:
    """A TCP relay in front of the gRPC server, so that a fault can reset every client connection at once."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay one client connection to the gRPC server and back."""
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            reset(writer)
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            up_writer.close()
            writer.close()

    def drop_all(self) -> None:
        """Reset every client connection (and close its upstream side)."""
        for client, upstream in list(self._pairs):
            reset(client)
            upstream.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError, RuntimeError):
        if not writer.is_closing() and writer.can_write_eof():
            writer.write_eof()


def load_model(path: Path | None) -> Any:
    """The example model: trained (and saved to `path`, when given), or loaded from `path` if it is there."""
    if path is not None and path.exists():
        return joblib.load(path)
    model = train("good")
    if path is not None:
        joblib.dump(model, path)
    return model


async def serve(args: argparse.Namespace) -> None:
    """Start both sides, print where they listen, serve until killed.

    With --wait-stdin it loads the model, prints LOADED and binds its port only once a line arrives on
    stdin: a replacement made ready beforehand takes over a dead server's port the moment it is told to.
    """
    model = load_model(args.model)
    if args.wait_stdin:
        print("LOADED", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    faults = Faults()
    faults.set(args.mode)
    http = HttpSide(model, faults)
    server = await asyncio.start_server(http.connection, "127.0.0.1", args.port)
    print(f"READY http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    if args.grpc_port is not None:
        grpc_server = aio.server(interceptors=[FaultInterceptor(faults)])
        grpc_server.add_generic_rpc_handlers((make_handler(model, Behaviour(), MODEL_NAME),))
        upstream = grpc_server.add_insecure_port("127.0.0.1:0")
        await grpc_server.start()
        relay = Relay(upstream)
        faults.drops.append(relay.drop_all)
        front = await asyncio.start_server(relay.connection, "127.0.0.1", args.grpc_port)
        print(f"GRPC grpc://127.0.0.1:{front.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    """Entry point: python tests/fault_server.py --port 0 [--grpc-port 0] [--mode MODE] [--model PATH]."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--grpc-port", type=int, default=None)
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--model", type=Path, help="load the trained model from here (train and save it if absent)")
    parser.add_argument("--wait-stdin", action="store_true", help="listen only once a line arrives on stdin")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        try:
            asyncio.run(serve(args))
        except OSError as exc:
            print(f"fault server: cannot listen: {exc}", file=sys.stderr)
            sys.exit(3)


if __name__ == "__main__":
    main()
