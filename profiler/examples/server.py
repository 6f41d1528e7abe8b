"""The bundled example model: a scikit-learn digits classifier served over V2 REST, V2 gRPC and V1 REST.

It trains at start on scikit-learn's bundled digits data (no download) and serves
/v2/health/{live,ready}, /v2/models/{name}, /v2/models/{name}/ready and POST /v2/models/{name}/infer
(Open Inference Protocol V2 REST); GET /v1/models/{name} and POST /v1/models/{name}:predict (KServe V1 /
TF Serving: `instances` -> `predictions`, or columnar `inputs` -> `outputs`); GET /v1/models, POST
/v1/chat/completions and /v1/completions (OpenAI-compatible, streamed or whole, with exactly known token
timings: generate.py); and, with --grpc-port,
the V2 gRPC service (ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer).
Flags make it misbehave on purpose, so the profiler has something to catch: a weaker model,
added latency, a capacity limit, periodic stalls, a memory leak.

Run: python -m profiler.examples.server --port 8000  (port 0 picks a free port; the first line
printed is "READY http://127.0.0.1:PORT"; with --grpc-port the second is "GRPC grpc://127.0.0.1:PORT").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import joblib
import numpy as np
from aiohttp import web

from profiler.core import aio
from profiler.examples.generate import Timing, add_routes
from profiler.examples.grpc_server import start_grpc_server
from profiler.examples.model import FEATURES, MODEL_NAME, Behaviour, misbehave, predict, train


def make_app(model: Any, behaviour: Behaviour, name: str = MODEL_NAME, timing: Timing | None = None) -> web.Application:
    """The aiohttp application serving `model` under `name` (and its OpenAI-compatible face: generate.py)."""
    metadata = {
        "name": name, "versions": ["1"], "platform": "scikit-learn",
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, FEATURES]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
    }

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if behaviour.token is not None and request.headers.get("Authorization") != f"Bearer {behaviour.token}":
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def model_metadata(request: web.Request) -> web.Response:
        if request.match_info["name"] != name:
            return web.json_response({"error": f"unknown model {request.match_info['name']}"}, status=404)
        return web.json_response(metadata)

    async def model_ready(request: web.Request) -> web.Response:
        status = 200 if request.match_info["name"] == name else 404
        return web.json_response({"name": request.match_info["name"], "ready": status == 200}, status=status)

    async def infer(request: web.Request) -> web.Response:
        if request.match_info["name"] != name:
            return web.json_response({"error": f"unknown model {request.match_info['name']}"}, status=404)
        try:
            document = json.loads(await request.read())
            tensor = document["inputs"][0]
            rows = np.asarray(tensor["data"], dtype=np.float32).reshape(-1, FEATURES)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        await misbehave(behaviour)
        labels = predict(model, rows, behaviour)
        return web.json_response({
            "model_name": name, "model_version": "1", "id": document.get("id", ""),
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [len(labels)], "data": labels}],
        })

    async def v1_status(request: web.Request) -> web.Response:
        model_name = request.match_info["name"]
        if model_name != name:
            return web.json_response({"error": f"unknown model {model_name}"}, status=404)
        return web.json_response({"name": name, "ready": True,
                                  "model_version_status": [{"version": "1", "state": "AVAILABLE"}]})

    async def v1_predict(request: web.Request) -> web.Response:
        target = request.match_info["target"]
        model_name, _, verb = target.partition(":")
        if model_name != name or verb != "predict":
            return web.json_response({"error": f"unknown model or verb {target}"}, status=404)
        try:
            document = json.loads(await request.read())
            columnar = "inputs" in document
            values = document["inputs"] if columnar else document["instances"]
            if isinstance(values, dict):
                values = next(iter(values.values()))
            rows = np.asarray(values, dtype=np.float32).reshape(-1, FEATURES)
        except (ValueError, KeyError, IndexError, TypeError, StopIteration) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        await misbehave(behaviour)
        labels = predict(model, rows, behaviour)
        return web.json_response({"outputs": labels} if columnar else {"predictions": labels})

    app = web.Application(middlewares=[auth])
    app.router.add_get("/v2/health/live", ok)
    app.router.add_get("/v2/health/ready", ok)
    app.router.add_get("/v2/models/{name}", model_metadata)
    app.router.add_get("/v2/models/{name}/ready", model_ready)
    app.router.add_post("/v2/models/{name}/infer", infer)
    app.router.add_get("/v2/models/{name}/versions/{version}/ready", model_ready)
    app.router.add_post("/v2/models/{name}/versions/{version}/infer", infer)
    app.router.add_get("/v1/models/{name}", v1_status)
    app.router.add_post("/v1/models/{target}", v1_predict)
    add_routes(app, model, behaviour, name, timing or Timing())
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="profiler-example-server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--name", default=MODEL_NAME)
    parser.add_argument("--variant", choices=["good", "weak"], default="good")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="added latency, requests overlap")
    parser.add_argument("--service-ms", type=float, default=0.0,
                        help="serial service time: capacity is 1000/service-ms requests per second")
    parser.add_argument("--stall-every-s", type=float, default=0.0)
    parser.add_argument("--stall-s", type=float, default=0.0)
    parser.add_argument("--leak-kb-per-request", type=float, default=0.0)
    parser.add_argument("--grpc-port", type=int, default=None,
                        help="also serve V2 gRPC on this port (0 picks a free port)")
    parser.add_argument("--bad-output-every", type=int, default=0,
                        help="every Nth response has one prediction too few (a wrong-shape response)")
    parser.add_argument("--require-bearer-env", metavar="VAR", default=None,
                        help="require 'Authorization: Bearer <value of VAR>' on every request")
    parser.add_argument("--first-token-ms", type=float, default=50.0,
                        help="OpenAI API: the first token is due this long after the request arrives")
    parser.add_argument("--token-ms", type=float, default=10.0, help="OpenAI API: then one token every this long")
    parser.add_argument("--output-tokens", type=int, default=16, help="OpenAI API: at most this many tokens")
    parser.add_argument("--save-model", metavar="PATH", help="write the trained model here (joblib): its artifact")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    model = train(args.variant)
    if args.save_model:
        joblib.dump(model, args.save_model)
    token = None
    if args.require_bearer_env:
        token = os.environ.get(args.require_bearer_env)
        if not token:
            raise SystemExit(f"example server: environment variable {args.require_bearer_env} is not set")
    behaviour = Behaviour(args.delay_ms, args.service_ms, args.stall_every_s, args.stall_s,
                          args.leak_kb_per_request, args.bad_output_every, token)
    timing = Timing(args.first_token_ms, args.token_ms, args.output_tokens)
    runner = web.AppRunner(make_app(model, behaviour, args.name, timing), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1]
    grpc_server = None
    if args.grpc_port is not None:
        grpc_server, grpc_port = await start_grpc_server(model, behaviour, args.name, args.host, args.grpc_port)
    print(f"READY http://{args.host}:{port}", flush=True)
    if grpc_server is not None:
        print(f"GRPC grpc://{args.host}:{grpc_port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=None)
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Entry point: train, serve until interrupted."""
    args = parse_args(argv)
    try:
        aio.run(serve(args))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"example server: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
