"""Secrets at the edge: the bearer-token check of POST /runs, and URLs with their credentials removed. Pure."""

from __future__ import annotations

import hmac
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "REDACTED"


def bearer_matches(header: str | None, token: str | None) -> bool:
    """Whether an Authorization header carries exactly `token` as a bearer token.

    No token configured never matches (triggering is then disabled). The comparison takes the
    same time whatever the prefix in common, so the token cannot be guessed byte by byte.
    """
    if not token or not header:
        return False
    scheme, _, presented = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return False
    return hmac.compare_digest(presented.strip().encode("utf-8"), token.encode("utf-8"))


def redact_url(url: str) -> str:
    """The URL with user:password and every query value replaced, for reports, metrics and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return REDACTED
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None:
        netloc += f":{port}"
    if parts.username is not None or parts.password is not None:
        netloc = f"{REDACTED}@{netloc}"
    query = urlencode([(key, REDACTED) for key, _ in parse_qsl(parts.query, keep_blank_values=True)], safe=REDACTED)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
