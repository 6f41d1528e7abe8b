"""The one target-URL model (core.url) and the one redaction (core.redact): pure tables."""

from __future__ import annotations

import base64

import pytest

from profiler.core.redact import redact_text, redact_url
from profiler.core.url import TargetUrl, UrlError, check_request_path, parse_target_url

PASSWORD = "p@ss:w/rd"


@pytest.mark.parametrize(("url", "fields"), [
    ("http://127.0.0.1:8000", ("http", "127.0.0.1", 8000, "", "", None, None, "127.0.0.1:8000")),
    ("http://Model.SVC", ("http", "model.svc", 80, "", "", None, None, "model.svc")),
    ("https://h/base/", ("https", "h", 443, "/base", "", None, None, "h")),
    ("http://h:", ("http", "h", 80, "", "", None, None, "h")),
    ("http://[::1]:9000/v?key=a%2Bb&x=1", ("http", "::1", 9000, "/v", "key=a%2Bb&x=1", None, None, "[::1]:9000")),
    ("http://h?key=k", ("http", "h", 80, "", "key=k", None, None, "h")),
    ("http://al%20ice:p%40ss%3Aw%2Frd@h:1/", ("http", "h", 1, "", "", "al ice", PASSWORD, "h:1")),
    ("http://token@h:1", ("http", "h", 1, "", "", "token", None, "h:1")),
    ("http://u:@h:1", ("http", "h", 1, "", "", "u", "", "h:1")),
    ("grpc://u:p@127.0.0.1:8001", ("grpc", "127.0.0.1", 8001, "", "", "u", "p", "127.0.0.1:8001")),
    ("grpcs://model.svc", ("grpcs", "model.svc", 443, "", "", None, None, "model.svc")),
    ("HTTP://h:65535", ("http", "h", 65535, "", "", None, None, "h:65535")),
])
def test_parse(url: str, fields: tuple[object, ...]) -> None:
    t = parse_target_url(url)
    assert (t.scheme, t.host, t.port, t.path, t.query, t.username, t.password, t.authority) == fields
    assert "@" not in t.authority and "@" not in t.address and "@" not in t.url("/x")


@pytest.mark.parametrize(("url", "message"), [
    ("", "is empty"),
    ("127.0.0.1:8000", "is not an absolute URL"),
    ("ftp://h", "unknown scheme 'ftp'"),
    ("http://h:70000", "port 70000, out of range 1-65535"),
    ("http://h:0", "port 0, out of range"),
    ("http://h:99999999999999999999", "port 99999999..., out of range"),
    ("http://h:-1", "a port that is not a number"),
    ("http://h:+80", "a port that is not a number"),
    ("http://h:٨٠", "non-ASCII character"),
    ("http://[::1", "'[' without its ']'"),
    ("http://[::1]]:80", "text after the IPv6 address's ']' that is not a :port"),
    ("http://[zz::1]:80", "malformed IPv6 address"),
    ("http://[]:80", "malformed IPv6 address"),
    ("http://::1:80", "IPv6 address without brackets"),
    ("http://h]:80", "a ']' without its '['"),
    ("http://:80", "has no host"),
    ("http://", "has no host"),
    ("http://@h", "credentials without a user name"),
    ("http://u:%zz@h", "'%' in its credentials"),
    ("http://-h:80", "invalid host name"),
    ("http://h_:80/a b", "space or control character at position 15"),
    ("http://h/a\tb", "space or control character"),
    ("http://h/\x7f", "space or control character"),
    ("http://h/é", "non-ASCII character 'é'"),
    ("http://h/a#b", "#fragment"),
    ("http://h/a%2", "not a %XX escape"),
    ("http://h/a\"b", "the character '\"'"),
    ("http://h/" + "a" * 9000, "at most 8192"),
    ("grpc://h", "has no port; a grpc:// target needs one"),
    ("grpc://h:1/v2", "has a path"),
    ("grpcs://h:1?k=v", "has a query string"),
])
def test_bad_urls_say_what_is_wrong_without_the_url(url: str, message: str) -> None:
    planted = url.replace("://", "://user:pw-PLANTED@", 1) if "@" not in url and "://" in url else url
    for text in (url, planted):
        with pytest.raises(UrlError) as error:
            parse_target_url(text)
        if text is url:
            assert message in str(error.value)
        assert "pw-PLANTED" not in str(error.value)


def test_request_targets_keep_base_path_and_query() -> None:
    t = parse_target_url("http://u:pw@h:8000/prefix/?key=k1&x=%2F")
    assert t.request_target("/v2/models/m/infer") == "/prefix/v2/models/m/infer?key=k1&x=%2F"
    assert t.request_target("/predict?a=1") == "/prefix/predict?a=1&key=k1&x=%2F"
    assert t.request_target() == "/prefix?key=k1&x=%2F"
    assert parse_target_url("http://h").request_target() == "/"
    assert parse_target_url("http://h?k=v").request_target("") == "/?k=v"
    assert t.url("/ready") == "http://h:8000/prefix/ready?key=k1&x=%2F"
    assert t.redacted("/ready") == "http://REDACTED@h:8000/prefix/ready?key=REDACTED&x=REDACTED"


def test_credentials_become_basic_auth_and_an_explicit_header_wins() -> None:
    t = parse_target_url("http://al%20ice:p%40ss%3Aw%2Frd@h")
    expected = "Basic " + base64.b64encode(f"al ice:{PASSWORD}".encode()).decode()
    assert t.basic_authorization() == expected
    assert t.with_auth({"X-A": "1"}) == {"X-A": "1", "Authorization": expected}
    assert t.with_auth({"authorization": "Bearer t"}) == {"authorization": "Bearer t"}
    assert parse_target_url("http://h").with_auth(None) == {}
    assert parse_target_url("http://tok@h").basic_authorization() == "Basic " + base64.b64encode(b"tok:").decode()


def test_secrets_stay_out_of_repr() -> None:
    t = parse_target_url("http://user:pw-PLANTED@h/?key=key-PLANTED")
    assert "PLANTED" not in repr(t) and "PLANTED" not in t.authority and "PLANTED" not in t.redacted("/x")
    assert isinstance(t, TargetUrl)


@pytest.mark.parametrize(("path", "ok"), [
    ("/predict", True), ("/v1/models/m:predict?x=1", True), ("predict", False), ("/a b", False), ("/a#b", False),
    ("/%zz", False), ("/é", False),
])
def test_request_paths(path: str, ok: bool) -> None:
    if ok:
        check_request_path(path)
    else:
        with pytest.raises(UrlError):
            check_request_path(path)


@pytest.mark.parametrize(("text", "expected"), [
    ("GET http://u:pw@h:1/x?key=abc failed", "GET http://REDACTED@h:1/x?key=REDACTED failed"),
    ("see (http://h:1/?token=abc), then", "see (http://h:1/?token=REDACTED), then"),
    ("url='https://u:pw@h/'", "url='https://REDACTED@h/'"),
    ("at http://[::1 broken", "at REDACTED broken"),
    ("no url here", "no url here"),
])
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_redacted_target_urls_are_what_redact_url_makes() -> None:
    url = "http://u:pw@h:1/b?key=abc"
    assert parse_target_url(url).redacted() == redact_url(url)
