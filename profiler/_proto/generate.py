"""Regenerate the committed protobuf stubs from protos/ with grpcio-tools (a dev dependency).

Only the message classes (`*_pb2.py` and its `.pyi`) are generated: the client and the example
server address the service by its method paths, so no `*_pb2_grpc.py` module is needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parents[2] / "protos"
OUT_DIR = Path(__file__).resolve().parent
PROTOS = ("grpc_predict_v2.proto",)


def generate(out_dir: Path = OUT_DIR, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Run protoc from grpcio-tools; returns the files written."""
    from grpc_tools import protoc  # dev dependency, imported only when regenerating

    out_dir.mkdir(parents=True, exist_ok=True)
    for proto in PROTOS:
        code = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
                            str(proto_dir / proto)])
        if code != 0:
            raise RuntimeError(f"protoc failed on {proto} (exit {code})")
    return sorted(p for p in out_dir.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi")))


if __name__ == "__main__":
    for path in generate():
        print(f"wrote {path}")
    sys.exit(0)
