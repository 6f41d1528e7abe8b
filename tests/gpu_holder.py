"""A process that holds GPU memory through the CUDA driver API (libcuda via ctypes, no framework needed), for the
NVML tests on a machine with an NVIDIA GPU.

    python tests/gpu_holder.py --hold-mib=256 [--grow-kib=N | --plateau-mib=M --grow-kib=N]

It allocates --hold-mib at start, prints "READY <port>", then serves GET /request on 127.0.0.1: each request
allocates --grow-kib more and keeps it (a leak), or, with --plateau-mib, only until that much was added (an
allocator cache that fills and stops). Exits with status 3 and a message when no CUDA driver is usable.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Cuda:
    """The few driver calls needed: a context on device 0 and device memory allocations kept alive."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libcuda.so.1")
        self._check(self.lib.cuInit(0), "cuInit")
        device = ctypes.c_int()
        self._check(self.lib.cuDeviceGet(ctypes.byref(device), 0), "cuDeviceGet")
        self.context = ctypes.c_void_p()
        self._check(self.lib.cuCtxCreate_v2(ctypes.byref(self.context), 0, device), "cuCtxCreate")
        self.kept: list[ctypes.c_uint64] = []
        self.lock = threading.Lock()

    @staticmethod
    def _check(status: int, call: str) -> None:
        if status != 0:
            raise OSError(f"{call} failed with CUDA error {status}")

    def allocate(self, size_bytes: int) -> None:
        """Allocate `size_bytes` of device memory and keep it until exit."""
        with self.lock:
            self._check(self.lib.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")
            pointer = ctypes.c_uint64()
            self._check(self.lib.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(size_bytes)), "cuMemAlloc")
            self.kept.append(pointer)


def main() -> int:
    """Hold, then grow per request; see the module docstring."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--hold-mib", type=int, default=256)
    parser.add_argument("--grow-kib", type=int, default=0)
    parser.add_argument("--plateau-mib", type=int, default=0)
    args = parser.parse_args()
    try:
        cuda = Cuda()
        cuda.allocate(args.hold_mib * 2**20)
    except OSError as exc:
        print(f"gpu_holder: no usable CUDA driver: {exc}", file=sys.stderr)
        return 3
    added = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            grow = args.grow_kib * 1024
            if grow and (not args.plateau_mib or added[0] + grow <= args.plateau_mib * 2**20):
                cuda.allocate(grow)
                added[0] += grow
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *rest: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
