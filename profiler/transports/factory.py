"""The transport for a profile: protocol, URL scheme and load.client decide which client sends."""

from __future__ import annotations

from profiler.codecs.base import Codec
from profiler.config import Config
from profiler.transports.base import Transport
from profiler.transports.grpc import GrpcTransport
from profiler.transports.grpc_h2 import H2GrpcTransport
from profiler.transports.http import HttpTransport
from profiler.transports.http1 import Http1Transport
from profiler.transports.secrets import resolve_headers


def make_transport(config: Config, codec: Codec) -> Transport:
    """The transport for the configured protocol (and HTTP client: load.client), with headers and secrets."""
    headers = resolve_headers(config.target)
    lean = config.load.client == "lean"
    if config.target.protocol == "v2-grpc":
        if lean and config.target.url.startswith("grpc://"):
            return H2GrpcTransport(config.target.url, model=config.target.model, version=config.target.version,
                                   timeout_s=config.target.timeout_s, headers=headers,
                                   keepalive_s=config.target.keepalive_s)
        return GrpcTransport(config.target.url, model=config.target.model, version=config.target.version,
                             timeout_s=config.target.timeout_s, headers=headers,
                             tls_ca_file=config.target.tls_ca_file, keepalive_s=config.target.keepalive_s)
    if lean and config.target.url.startswith("http://"):
        return Http1Transport(config.target.url, timeout_s=config.target.timeout_s,
                              max_connections=config.target.max_connections, content_type=codec.content_type,
                              headers=headers)
    return HttpTransport(
        config.target.url,
        timeout_s=config.target.timeout_s,
        max_connections=config.target.max_connections,
        content_type=codec.content_type,
        headers=headers,
    )
