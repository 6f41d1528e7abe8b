"""A V2 REST model that misbehaves on purpose (never ready, never answers), served by threads of the test
process over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

METADATA = {"name": "digits", "versions": ["1"], "platform": "stub",
            "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 64]}],
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}]}


class StubModel:
    """A V2 REST model on 127.0.0.1 that misbehaves on purpose, served by threads of the test process.

    "unready": every readiness probe answers 503. "hang-metadata": ready, and the model metadata request
    never answers. "hang-infer": ready, metadata fine, and no inference request is ever answered.
    """

    def __init__(self, mode: str) -> None:
        release = self.release = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.endswith("/ready"):
                    self._answer(503 if mode == "unready" else 200, {"ready": mode != "unready"})
                elif self.path == "/v2/models/digits" and mode == "hang-metadata":
                    self._hang()
                elif self.path == "/v2/models/digits":
                    self._answer(200, METADATA)
                else:
                    self._answer(404, {"error": "not found"})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self._hang()

            def _hang(self) -> None:
                release.wait(120)
                self.close_connection = True

            def _answer(self, status: int, document: dict[str, Any]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        """Let the hung handlers go and stop serving."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
