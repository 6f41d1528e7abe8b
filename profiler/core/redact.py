"""The one redaction of the project: URLs and config values as they may be printed, stored or exported. Pure.

Every URL, header and config value that leaves the process (report, history, metrics, logs, error
messages) goes through `redact_url`, `redact` or `redact_text` first. The target URL's own model
(`core.url.TargetUrl.redacted`) rebuilds the URL and hands it to `redact_url` too.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "REDACTED"


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


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>.,;:)!?]")
"""A URL in prose: up to a blank or a quote, less the punctuation that ends a sentence or a clause."""


def redact_text(text: str) -> str:
    """Free text (an error message, a library's exception) with every URL in it redacted by `redact_url`."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)


_SECRET = re.compile(r"token|secret|password|passwd|authorization|api[_-]?key|credential|cookie|headers?$",
                     re.IGNORECASE)


def redact(value: Any) -> Any:
    """A copy of plain config data with the values of secret-looking keys replaced by '***', and any
    URL's user:password and query values replaced (a URL can carry credentials too)."""
    if isinstance(value, dict):
        return {k: ("***" if _SECRET.search(str(k)) and v not in (None, "", {}, []) else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value
