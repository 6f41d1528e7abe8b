"""Generated protobuf messages for the Open Inference Protocol V2 (from protos/grpc_predict_v2.proto).

The stubs are committed; `python -m profiler._proto.generate` rewrites them with grpcio-tools and
tests/test_proto_stubs.py fails when they are stale. Do not edit the *_pb2 files by hand.
"""
