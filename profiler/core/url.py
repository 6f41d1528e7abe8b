"""The target URL, parsed once: scheme, host, port, base path, query string and credentials. Pure.

Every client takes its address, its `Host:`/`:authority`, its request paths and its credentials from
one `TargetUrl`, so a URL means the same to all of them:

- credentials (`http://user:password@host/`) are percent-decoded and sent as
  `Authorization: Basic base64(user:password)` (over gRPC: the `authorization` call metadata); they
  never appear in `Host:`, `:authority` or a request path;
- a query string (`?key=...`) is kept and goes after every request path
  (`/v2/models/m/infer?key=...`);
- the base path (`http://host/prefix`) goes before every request path.

A URL that cannot be used is a `UrlError` whose message says what is wrong without repeating the URL
(it may hold a password); callers name the field.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import unquote

from profiler.core.redact import redact_url

DEFAULT_PORTS: dict[str, int | None] = {"http": 80, "https": 443, "grpc": None, "grpcs": 443}
"""The schemes a target may use and the port each implies; plaintext gRPC has no conventional port."""
MAX_URL_CHARS = 8192
"""Longer URLs are refused (servers refuse request lines much shorter than this)."""

_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_QUERY_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


class UrlError(ValueError):
    """A target URL that cannot be used; the message names the problem, never the URL's secrets."""


@dataclass(frozen=True, slots=True)
class TargetUrl:
    """A parsed target URL. `host` has no brackets (an IPv6 address is bare); `path` is the base path
    without a trailing slash ("" for none); `query` is the raw query string without its '?'."""

    scheme: str
    host: str
    port: int
    path: str = ""
    query: str = field(default="", repr=False)
    username: str | None = field(default=None, repr=False)
    """Percent-decoded; None when the URL carries no credentials."""
    password: str | None = field(default=None, repr=False)
    explicit_port: bool = True
    """Whether the URL spelled the port (then Host: carries it, as the URL did)."""
    userinfo: str = field(default="", repr=False)
    """The credentials as written (still percent-encoded), only to rebuild the URL for redaction."""

    @property
    def tls(self) -> bool:
        """Whether the scheme asks for TLS (https, grpcs)."""
        return self.scheme in ("https", "grpcs")

    @property
    def grpc(self) -> bool:
        """Whether this is a gRPC target (grpc, grpcs)."""
        return self.scheme in ("grpc", "grpcs")

    @property
    def has_credentials(self) -> bool:
        """Whether the URL carries user[:password]@."""
        return self.username is not None

    @property
    def authority(self) -> str:
        """host[:port] as `Host:` and `:authority` carry it: IPv6 in brackets, never credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.explicit_port else host

    @property
    def address(self) -> str:
        """host:port always (IPv6 in brackets): the gRPC channel target."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def request_target(self, path: str = "") -> str:
        """What goes on the request line: base path + `path` + the query string (joined with '&' when
        `path` has a query of its own)."""
        target = self.path + path
        if not self.query:
            return target or "/"
        return f"{target or '/'}{'&' if '?' in path else '?'}{self.query}"

    def url(self, path: str = "") -> str:
        """The full URL of `path` on this target, without credentials (a library client's request URL)."""
        return f"{self.scheme}://{self.authority}{self.request_target(path)}"

    def redacted(self, path: str = "") -> str:
        """The URL of `path` fit to print, store or export: credentials and query values replaced."""
        userinfo = f"{self.userinfo}@" if self.has_credentials else ""
        return redact_url(f"{self.scheme}://{userinfo}{self.authority}{self.request_target(path)}")

    def basic_authorization(self) -> str | None:
        """`Basic base64(user:password)` from the URL's credentials, or None without them."""
        if self.username is None:
            return None
        pair = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def with_auth(self, headers: Mapping[str, str] | None) -> dict[str, str]:
        """`headers` plus Authorization from the URL's credentials. An Authorization header given
        explicitly wins (the config refuses both at once, so only a direct caller can give both)."""
        out = dict(headers or {})
        basic = self.basic_authorization()
        if basic is not None and not any(name.lower() == "authorization" for name in out):
            out["Authorization"] = basic
        return out


@lru_cache(maxsize=64)
def parse_target_url(text: str) -> TargetUrl:
    """Parse and check a target URL (http, https, grpc, grpcs); UrlError says what is wrong."""
    if not isinstance(text, str) or not text:
        raise UrlError("is empty; give an http://, https://, grpc:// or grpcs:// URL")
    if len(text) > MAX_URL_CHARS:
        raise UrlError(f"is {len(text)} characters long; at most {MAX_URL_CHARS} are allowed")
    _check_characters(text)
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise UrlError("is not an absolute URL; write it as http://host:8000 (or https://, grpc://, grpcs://)")
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UrlError(f"has the unknown scheme {scheme[:20]!r}; use http://, https://, grpc:// or grpcs://")
    if "#" in rest:
        raise UrlError("has a #fragment, which is never sent to a server; remove it")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    userinfo, at, hostport = authority.rpartition("@")
    username = password = None
    if at:
        name, colon, secret = userinfo.partition(":")
        if not name:
            raise UrlError("has credentials without a user name before '@'")
        if _BAD_PERCENT.search(userinfo):
            raise UrlError("has a '%' in its credentials that is not a %XX escape")
        username, password = unquote(name), (unquote(secret) if colon else None)
    host, port, explicit = _host_and_port(hostport, scheme)
    path, _, query = tail.partition("?")
    _check_path_and_query(path, query, scheme)
    return TargetUrl(scheme, host, port, path.rstrip("/"), query, username, password, explicit,
                     userinfo if at else "")


def check_request_path(path: str) -> None:
    """A request path a profile names (infer_path, ready_path): '/' first, URL characters only, an optional
    query; UrlError says what is wrong."""
    if not path.startswith("/"):
        raise UrlError("must start with '/'")
    _check_characters(path)
    if "#" in path:
        raise UrlError("has a #fragment, which is never sent to a server; remove it")
    head, _, query = path.partition("?")
    _check_path_and_query(head, query, "http")


def _check_characters(text: str) -> None:
    for index, char in enumerate(text):
        if ord(char) <= 0x20 or ord(char) == 0x7F:
            raise UrlError(f"holds a space or control character at position {index + 1}; percent-encode it")
        if ord(char) > 0x7E:
            raise UrlError(f"holds the non-ASCII character {char!r} at position {index + 1}; percent-encode it "
                           "(a host name in its ASCII xn-- form)")


def _host_and_port(hostport: str, scheme: str) -> tuple[str, int, bool]:
    """(host without brackets, port, whether the port was written) of the URL's host[:port]."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise UrlError("has a malformed IPv6 address: '[' without its ']'")
        host, after = hostport[1:end], hostport[end + 1:]
        try:
            ipaddress.IPv6Address(unquote(host))
        except ValueError:
            raise UrlError("has a malformed IPv6 address between '[' and ']'") from None
        host = unquote(host)
        if after and not after.startswith(":"):
            raise UrlError("has text after the IPv6 address's ']' that is not a :port")
        port_text = after[1:] if after else None
    else:
        if "]" in hostport:
            raise UrlError("has a ']' without its '[' (an IPv6 address is written [::1])")
        if hostport.count(":") > 1:
            raise UrlError("has an IPv6 address without brackets; write it as http://[::1]:8000")
        host, colon, port_text_or_empty = hostport.partition(":")
        port_text = port_text_or_empty if colon else None
        if not host:
            raise UrlError("has no host; write it as http://host:8000")
        if not _HOST_NAME.fullmatch(host):
            raise UrlError("has an invalid host name (letters, digits, '-', '.' and '_' only)")
        host = host.lower()
    if not host:
        raise UrlError("has no host; write it as http://host:8000")
    return host, *_port(port_text, scheme)


def _port(text: str | None, scheme: str) -> tuple[int, bool]:
    default = DEFAULT_PORTS[scheme]
    if not text:  # absent, or an empty ':' (RFC 3986: the scheme's default)
        if default is None:
            raise UrlError(f"has no port; a {scheme}:// target needs one, e.g. {scheme}://host:8001")
        return default, False
    if not text.isascii() or not text.isdigit():
        raise UrlError("has a port that is not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise UrlError(f"has the port {port if len(text) < 8 else text[:8] + '...'}, out of range 1-65535")
    return port, True


def _check_path_and_query(path: str, query: str, scheme: str) -> None:
    if scheme in ("grpc", "grpcs"):
        if path.strip("/"):
            raise UrlError(f"has a path; a gRPC target is {scheme}://host:8001, nothing after the port")
        if query:
            raise UrlError(f"has a query string; a gRPC target is {scheme}://host:8001, nothing after the port "
                           "(send keys as target.headers)")
        return
    bad = _PATH_CHARS.fullmatch(path) is None or _QUERY_CHARS.fullmatch(query) is None
    if bad:
        char = next(c for c in path + query if not _QUERY_CHARS.fullmatch(c))
        raise UrlError(f"holds the character {char!r}, which a URL must percent-encode")
    if _BAD_PERCENT.search(path) or _BAD_PERCENT.search(query):
        raise UrlError("holds a '%' that is not a %XX escape")
