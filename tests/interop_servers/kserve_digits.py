"""KServe's Python model server (the `kserve` package) serving the interop digits model; run in .venv-kserve.

Usage: python tests/interop_servers/kserve_digits.py FOLDER --http_port N --grpc_port M
(PYTHONPATH at the repository root). Trains the model in FOLDER (see digits.py), then serves it as KServe
serves a custom model: V1 REST (`/v1/models/digits:predict`), V2 REST (`/v2/models/digits/infer`) and V2
gRPC on their ports, with KServe's own Prometheus metrics on the REST port's /metrics. KServe listens on
every address by default; here both front ends are bound to 127.0.0.1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kserve.protocol.grpc.server as kserve_grpc
import kserve.protocol.rest.server as kserve_rest
import numpy as np
import uvicorn
from grpc import aio
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server

from tests.interop_servers.digits import FEATURES, INPUT, OUTPUT, train_with_reference

NAME = "digits"


class Digits(Model):
    """The digits pipeline behind KServe's data plane: V1 dicts and V2 InferRequests (REST and gRPC)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(NAME)
        self.model = train_with_reference(folder)
        self.ready = True

    def get_input_types(self) -> list[dict[str, Any]]:
        """What V2 metadata declares, so the profiler's metadata check has something to check."""
        return [{"name": INPUT, "datatype": "FP32", "shape": [-1, FEATURES]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        """The one output: a class label per row."""
        return [{"name": OUTPUT, "datatype": "INT64", "shape": [-1]}]

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        """V2: the first input as rows of 64 pixels -> INT64 labels, under the request's id; V1: instances."""
        if isinstance(payload, InferRequest):
            rows = payload.inputs[0].as_numpy().reshape(-1, FEATURES)
            labels = self.model.predict(rows).astype(np.int64)
            output = InferOutput(name=OUTPUT, shape=[len(labels)], datatype="INT64", data=labels.tolist())
            return InferResponse(response_id=payload.id, model_name=NAME, infer_outputs=[output])
        rows = np.asarray(payload["instances"], dtype=np.float64).reshape(-1, FEATURES)
        return {"predictions": [int(v) for v in self.model.predict(rows)]}


def _loopback() -> None:
    """Bind KServe's REST (uvicorn) and gRPC front ends to 127.0.0.1 instead of every address."""
    def config(*args: Any, **kwargs: Any) -> uvicorn.Config:
        kwargs["host"] = "127.0.0.1"
        return uvicorn.Config(*args, **kwargs)

    def server(*args: Any, **kwargs: Any) -> aio.Server:
        made = aio.server(*args, **kwargs)
        add = made.add_insecure_port
        made.add_insecure_port = lambda address: add(address.replace("[::]", "127.0.0.1"))  # type: ignore[method-assign]
        return made

    kserve_rest.uvicorn = SimpleNamespace(Config=config, Server=uvicorn.Server)  # type: ignore[assignment]
    kserve_grpc.aio = SimpleNamespace(server=server)  # type: ignore[assignment]


def main() -> None:
    folder = Path(sys.argv[1])
    args = model_server.parser.parse_args(sys.argv[2:])
    _loopback()
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1).start([Digits(folder)])


if __name__ == "__main__":
    main()
