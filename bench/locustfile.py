"""Locust FastHttpUser posting the benchmark's inference request with no wait (used by bench/run.py)."""

from __future__ import annotations

import os

from locust import FastHttpUser, constant, task

BODY = os.environ["BENCH_BODY"].encode()
PATH = os.environ.get("BENCH_PATH", "/v2/models/digits/infer")


class Inference(FastHttpUser):
    """One simulated client: POST, read the answer, repeat."""

    wait_time = constant(0)

    @task
    def infer(self) -> None:
        self.client.post(PATH, data=BODY, headers={"Content-Type": "application/json"})
