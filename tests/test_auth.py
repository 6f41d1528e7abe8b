"""The bearer-token check and URL redaction: pure tables, failure cases included."""

from __future__ import annotations

import pytest

from profiler.app.auth import bearer_matches
from profiler.core.redact import redact_url


@pytest.mark.parametrize(
    ("header", "token", "expected"),
    [
        ("Bearer s3cret", "s3cret", True),
        ("bearer s3cret", "s3cret", True),
        ("Bearer   s3cret  ", "s3cret", True),
        ("Bearer s3cre", "s3cret", False),
        ("Bearer s3cretX", "s3cret", False),
        ("Basic s3cret", "s3cret", False),
        ("s3cret", "s3cret", False),
        ("Bearer ", "s3cret", False),
        ("", "s3cret", False),
        (None, "s3cret", False),
        ("Bearer s3cret", None, False),
        ("Bearer ", "", False),
        ("Bearer héllo", "héllo", True),
    ],
)
def test_bearer_matches(header: str | None, token: str | None, expected: bool) -> None:
    assert bearer_matches(header, token) is expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("https://model.svc/v2", "https://model.svc/v2"),
        ("http://user:pw@127.0.0.1:8000", "http://REDACTED@127.0.0.1:8000"),
        ("http://user@host", "http://REDACTED@host"),
        ("http://host/p?api_key=abc&x=1", "http://host/p?api_key=REDACTED&x=REDACTED"),
        ("http://[::1]:9000/", "http://[::1]:9000/"),
        ("http://host:99999", "REDACTED"),
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert "pw" not in redact_url(url) and "abc" not in redact_url(url)
