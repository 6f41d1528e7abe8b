"""A streaming server with exactly planned token timings, for the streaming bench (bench/streaming.py).

Raw asyncio on HTTP/1.1 keep-alive: each POST is answered with `--tokens` OpenAI chat-completion chunk events
as server-sent events (chunked), the first due `--first-ms` after the request arrived, then one every
`--gap-ms` (absolute due times: a late write does not push the next one back), then a usage event and
[DONE]. It keeps what it actually did, on the machine's monotonic clock: the first token's write after the
request arrived, and the gaps between writes; GET /stats returns them (ns) so the bench can tell the
profiler's error from the server's own lateness.

Run: python bench/sse_server.py --port 0 (prints "READY http://127.0.0.1:PORT")
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import uvloop


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(content: str) -> bytes:
    payload = {"id": "b", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}}]}
    return chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")


class Server:
    def __init__(self, args: argparse.Namespace) -> None:
        self.first_ns = int(args.first_ms * 1e6)
        self.gap_ns = int(args.gap_ms * 1e6)
        self.tokens = args.tokens
        self.ttft_ns: list[int] = []
        self.itl_ns: list[int] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.monotonic_ns()
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                if head.startswith(b"GET /stats"):
                    body = json.dumps({"ttft_ns": self.ttft_ns, "itl_ns": self.itl_ns}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    self.ttft_ns, self.itl_ns = [], []
                    continue
                if head.startswith(b"GET"):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                    continue
                await self.stream(writer, arrived)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stream(self, writer: asyncio.StreamWriter, arrived: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        last = 0
        for i in range(self.tokens):
            due = arrived + self.first_ns + i * self.gap_ns
            delay = due - time.monotonic_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            writer.write(event(" tok"))
            now = time.monotonic_ns()
            if i == 0:
                self.ttft_ns.append(now - arrived)
            else:
                self.itl_ns.append(now - last)
            last = now
        usage = {"id": "b", "choices": [], "usage": {"completion_tokens": self.tokens, "prompt_tokens": 4}}
        writer.write(chunk(b"data: " + json.dumps(usage).encode() + b"\n\n") + chunk(b"data: [DONE]\n\n")
                     + b"0\r\n\r\n")
        await writer.drain()


async def main(args: argparse.Namespace) -> None:
    server = Server(args)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", args.port)
    port = listener.sockets[0].getsockname()[1]
    print(f"READY http://127.0.0.1:{port}", flush=True)
    async with listener:
        await listener.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-ms", type=float, default=50.0)
    parser.add_argument("--gap-ms", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=32)
    uvloop.run(main(parser.parse_args()))
