"""A small HTTP server whose memory behaves in a known way per request, for bench/leak_detection.py.

Behaviours (one per process): a leak of N bytes per request, a cache that fills to a size and
stops, a garbage-collector sawtooth, or a steady server with noisy temporary allocations.
Run: python bench/leak_target.py --behaviour leak --bytes 10240 --port 0
(prints "READY http://127.0.0.1:PORT" first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import random
from collections import deque
from collections.abc import Callable

from aiohttp import web


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0), so freed memory goes back to the OS as a collector's would; else a no-op."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    trim = getattr(libc, "malloc_trim", None)
    return (lambda: trim(0)) if trim is not None else (lambda: None)


def make_behaviour(args: argparse.Namespace) -> Callable[[], None]:
    """The per-request memory behaviour."""
    rng = random.Random(args.seed)
    kept: list[bytearray] = []
    trim = _malloc_trim()
    if args.behaviour == "leak":
        return lambda: kept.append(bytearray(args.bytes))
    if args.behaviour == "cache":
        cache: dict[int, bytearray] = {}
        limit = args.cache_total // args.bytes

        def fill() -> None:
            if len(cache) < limit:  # a bounded cache: new entries until it is full, then hits
                cache[len(cache)] = bytearray(args.bytes)
        return fill
    if args.behaviour == "sawtooth":
        count = [0]

        def saw() -> None:
            kept.append(bytearray(args.bytes))
            count[0] += 1
            if count[0] % args.every == 0:  # a collection: everything since the last one is freed
                kept.clear()
                trim()
        return saw
    pool: deque[bytearray] = deque(maxlen=args.every)

    def noise() -> None:
        # Temporaries of random size (some above the mmap threshold) live for a few requests.
        pool.append(bytearray(rng.randrange(1, args.bytes)))
    return noise


async def serve(args: argparse.Namespace) -> None:
    behave = make_behaviour(args)

    async def infer(_: web.Request) -> web.Response:
        behave()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/infer", infer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    print(f"READY http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--behaviour", choices=["leak", "cache", "sawtooth", "noise"], required=True)
    parser.add_argument("--bytes", type=int, default=10_240, help="bytes per request (noise: the largest)")
    parser.add_argument("--cache-total", type=int, default=50 * 2**20, help="cache: size when full")
    parser.add_argument("--every", type=int, default=1500, help="sawtooth: requests per cycle; noise: pool size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
