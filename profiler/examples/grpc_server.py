"""The example model over Open Inference Protocol V2 gRPC (grpc.aio), beside its REST server."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
from grpc import aio

from profiler._proto import grpc_predict_v2_pb2 as pb
from profiler.examples.model import FEATURES, Behaviour, misbehave, predict

SERVICE = "inference.GRPCInferenceService"


def make_handler(model: Any, behaviour: Behaviour, name: str) -> grpc.GenericRpcHandler:
    """The V2 service's six methods, registered by name (no generated service stub needed)."""

    async def authorised(context: aio.ServicerContext[Any, Any]) -> None:
        if behaviour.token is None:
            return
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get("authorization") != f"Bearer {behaviour.token}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    async def server_live(_: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        await authorised(context)
        return pb.ServerLiveResponse(live=True)

    async def server_ready(_: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        await authorised(context)
        return pb.ServerReadyResponse(ready=True)

    async def model_ready(request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        await authorised(context)
        return pb.ModelReadyResponse(ready=request.name == name)

    async def server_metadata(_: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        await authorised(context)
        return pb.ServerMetadataResponse(name="profiler-example", version="1")

    async def model_metadata(request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        await authorised(context)
        if request.name != name:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name}")
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=name, versions=["1"], platform="scikit-learn",
            inputs=[tensor(name="input-0", datatype="FP32", shape=[-1, FEATURES])],
            outputs=[tensor(name="label", datatype="INT64", shape=[-1])])

    async def model_infer(request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        await authorised(context)
        if request.model_name != name:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model_name}")
        try:
            tensor = request.inputs[0]
            if request.raw_input_contents:
                flat = np.frombuffer(request.raw_input_contents[0], dtype="<f4")
            elif tensor.datatype == "FP64":
                flat = np.asarray(tensor.contents.fp64_contents, dtype=np.float32)
            else:
                flat = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
            rows = flat.reshape(-1, FEATURES)
        except (IndexError, ValueError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad request: {exc}")
        await misbehave(behaviour)
        labels = predict(model, rows, behaviour)
        output = pb.ModelInferResponse.InferOutputTensor(name="label", datatype="INT64", shape=[len(labels)])
        output.contents.int64_contents.extend(labels)
        return pb.ModelInferResponse(model_name=name, model_version="1", id=request.id, outputs=[output])

    def unary(fn: Any, request_type: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=request_type.FromString,
                                                   response_serializer=lambda m: m.SerializeToString())

    return grpc.method_handlers_generic_handler(SERVICE, {
        "ServerLive": unary(server_live, pb.ServerLiveRequest),
        "ServerReady": unary(server_ready, pb.ServerReadyRequest),
        "ModelReady": unary(model_ready, pb.ModelReadyRequest),
        "ServerMetadata": unary(server_metadata, pb.ServerMetadataRequest),
        "ModelMetadata": unary(model_metadata, pb.ModelMetadataRequest),
        "ModelInfer": unary(model_infer, pb.ModelInferRequest),
    })


async def start_grpc_server(model: Any, behaviour: Behaviour, name: str, host: str,
                            port: int) -> tuple[aio.Server, int]:
    """Start the gRPC server; returns it and the port it bound."""
    server = aio.server()
    server.add_generic_rpc_handlers((make_handler(model, behaviour, name),))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port} for gRPC")
    await server.start()
    return server, bound
