"""Before the load: fetch the model's V2 metadata and check the configured inputs against it."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from yarl import URL

from profiler.codecs.base import Codec
from profiler.codecs.tensors import check_metadata
from profiler.config import TargetConfig
from profiler.core.errors import TargetError
from profiler.core.url import TargetUrl
from profiler.dataset import Sample
from profiler.transports.base import Transport
from profiler.transports.secrets import resolve_headers


async def fetch_rest_metadata(endpoint: TargetUrl, path: str, headers: dict[str, str],
                              timeout_s: float) -> dict[str, Any]:
    """GET the V2 model metadata document at `path` of the target (credentials as Basic, its query string
    kept); TargetError names the redacted URL on any failure."""
    url = endpoint.redacted(path)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (aiohttp.ClientSession(timeout=timeout, headers=endpoint.with_auth(headers)) as session,
                    session.get(URL(endpoint.url(path), encoded=True)) as response):
            body = await response.read()
            if response.status != 200:
                raise TargetError(f"{url}: model metadata answered HTTP {response.status}")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise TargetError(f"{url}: cannot fetch model metadata: {type(exc).__name__}") from None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise TargetError(f"{url}: model metadata is not JSON") from None
    if not isinstance(document, dict):
        raise TargetError(f"{url}: model metadata is not a JSON object")
    return document


async def check_model_inputs(target: TargetConfig, codec: Codec, transport: Transport, first: Sample) -> bool:
    """Check the codec's input tensors against the model's declared inputs (V2 only).

    Returns whether a check was made; raises TargetError naming the sample and field on a mismatch.
    """
    specs = getattr(codec, "specs", None)
    if not target.check_metadata or specs is None:
        return False
    fetch = getattr(transport, "model_metadata", None)
    if fetch is not None:
        metadata = await fetch()
    elif hasattr(codec, "metadata_path"):
        metadata = await fetch_rest_metadata(target.endpoint, codec.metadata_path, resolve_headers(target),
                                             target.timeout_s)
    else:
        return False
    check_metadata(specs, metadata, target.model, first)
    return True
