"""Transports: send a request body, get the response body back. The only code that touches the target's sockets.

`base` declares the `Transport` protocol the engine drives; `http1` and `grpc_h2` are the project's own
lean clients (raw sockets, kernel receive times), `http` and `grpc` the library ones (aiohttp, grpc.aio,
for TLS); `factory` picks one from the profile.
"""
