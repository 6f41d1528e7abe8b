"""HTTP/1.1 transport on aiohttp with a bounded keep-alive connection pool."""

from __future__ import annotations

import aiohttp
from yarl import URL

from profiler.core.errors import TransportError
from profiler.core.redact import redact_text
from profiler.core.url import parse_target_url
from profiler.transports.base import Done, TaskSubmitter
from profiler.transports.http1 import MAX_BODY_BYTES


class HttpTransport:
    """POSTs pre-encoded bodies to one base URL; classifies failures as timeout, connection or status.

    The URL's credentials go as `Authorization: Basic` (never in the request URL), its query string after
    every path (core.url)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        max_connections: int = 64,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.endpoint = parse_target_url(base_url)
        if self.endpoint.grpc:
            raise ValueError(f"the HTTP client speaks http:// and https://, got {self.endpoint.redacted()!r}")
        self._urls: dict[str, URL] = {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = {"Content-Type": content_type, **self.endpoint.with_auth(headers)}
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._tasks = TaskSubmitter(self.send, timeout_s)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=self._headers, skip_auto_headers=("User-Agent",)
            )
        return self._session

    def _url(self, path: str) -> URL:
        """The request URL of `path`, built once: base path, path, query string, as written (encoded)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self.endpoint.url(path), encoded=True)
        return url

    def submit(self, path: str, body: bytes, done: Done) -> None:
        """The engine's path: one task per request, ended by the timeout."""
        self._tasks.submit(path, body, done)

    def set_polled(self, polled: bool) -> bool:
        """aiohttp reads its sockets itself: never polled."""
        return False

    def poll(self) -> None:
        """Nothing to read: aiohttp's own callbacks deliver the answers."""

    async def send(self, path: str, body: bytes) -> bytes:
        """POST and return the body of a 2xx response."""
        try:
            async with self._client().post(self._url(path), data=body) as response:
                payload = await _read_bounded(response)
                if response.status >= 300:
                    snippet = redact_text(payload[:200].decode("utf-8", errors="replace"))  # a server may echo the URL
                    raise TransportError("http_status", f"HTTP {response.status}: {snippet}", response.status)
                return payload
        except TransportError:
            raise
        except TimeoutError:
            raise TransportError("timeout", f"no answer within {self._timeout.total} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            # aiohttp's messages may quote the request URL, query key included.
            raise TransportError("connection", redact_text(f"{type(exc).__name__}: {exc}")) from None

    async def probe(self, path: str) -> int:
        """GET and return the status, 0 if the connection failed or timed out."""
        try:
            async with self._client().get(self._url(path)) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, OSError, TimeoutError):
            return 0

    async def close(self) -> None:
        """End open requests and close the pool."""
        await self._tasks.close()
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    """The body, at most MAX_BODY_BYTES (as the lean client): an answer announced or found to be bigger is a
    connection error, found before it is held in memory, not a timeout after reading it."""
    length = response.content_length
    if length is not None:
        if length > MAX_BODY_BYTES:
            raise TransportError("connection", f"an answer of {length} bytes is over the {MAX_BODY_BYTES >> 20} MiB "
                                               "limit")
        return await response.read()
    parts: list[bytes] = []
    size = 0
    async for part in response.content.iter_any():
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise TransportError("connection", f"an answer of more than {MAX_BODY_BYTES >> 20} MiB")
        parts.append(part)
    return b"".join(parts)
