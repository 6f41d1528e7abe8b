"""Triton Inference Server (the build bundled in PyTriton, `nvidia-pytriton`) serving the interop digits model
on the CPU; run in .venv-triton (made from Debian's /usr/bin/python3: the bundled server and its Python
backend stub are built against that interpreter's libpython).

Usage: python tests/interop_servers/triton_digits.py FOLDER --http-port N --grpc-port M --metrics-port K
(PYTHONPATH at the repository root). Trains the model in FOLDER (see digits.py) and serves it with dynamic
batching: V2 REST and V2 gRPC, the statistics extension (/v2/models/digits/stats: queue and compute time) and
Prometheus metrics, all on 127.0.0.1. Prints "READY" once the model is loaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig

from tests.interop_servers.digits import FEATURES, INPUT, OUTPUT, train_with_reference

NAME = "digits"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    args = parser.parse_args()
    model = train_with_reference(args.folder)

    @batch
    def infer(**inputs: Any) -> dict[str, Any]:
        rows = inputs[INPUT].reshape(-1, FEATURES)
        return {OUTPUT: model.predict(rows).astype(np.int64).reshape(-1, 1)}

    config = TritonConfig(http_address="127.0.0.1", http_port=args.http_port, grpc_address="127.0.0.1",
                          grpc_port=args.grpc_port, metrics_port=args.metrics_port, log_verbose=0)
    # PyTriton guards the statistics extension with a random token by default; Triton itself serves it openly,
    # as a deployment a user profiles would (the other guarded extensions stay guarded).
    security = TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    with Triton(config=config, workspace=str(args.folder / "workspace"), security_config=security) as triton:
        triton.bind(model_name=NAME, infer_func=infer,
                    inputs=[Tensor(name=INPUT, dtype=np.float32, shape=(FEATURES,))],
                    outputs=[Tensor(name=OUTPUT, dtype=np.int64, shape=(1,))],
                    config=ModelConfig(max_batch_size=64), strict=True)
        print("READY", flush=True)
        triton.serve()


if __name__ == "__main__":
    main()
