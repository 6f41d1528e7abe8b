"""The bare baseline: N aiohttp+uvloop coroutines POSTing in a closed loop for D seconds; prints the count.

Run: python bench/bare_aiohttp.py URL --duration 5 --connections 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_load import request_body


async def main(url: str, duration_s: float, connections: int) -> dict[str, float]:
    body = request_body(1)
    count = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, headers={"Content-Type": "application/json"}) as session:
        deadline = time.perf_counter() + duration_s
        cpu0 = time.process_time()

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                async with session.post(url, data=body) as response:
                    await response.read()
                count += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
        cpu_s = time.process_time() - cpu0
    return {"requests": count, "cpu_s": cpu_s}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(uvloop.run(main(args.url, args.duration, args.connections))))
