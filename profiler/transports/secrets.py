"""Request headers and bearer tokens, read from environment variables or mounted files at run time.

The config names where a secret lives, never the secret; the values only ever reach the transport's
headers, so they cannot end up in the report or the logs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from profiler.config import SecretSource, TargetConfig, check_header
from profiler.core.errors import ConfigError

MAX_SECRET_BYTES = 64 * 1024
"""A secret file larger than this is not a token or a key: refused, not read whole."""


def read_secret_file(path: Path) -> str:
    """A secret file's text: at most MAX_SECRET_BYTES of UTF-8 (OSError or ValueError otherwise)."""
    with path.open("rb") as file:
        data = file.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise ValueError(f"larger than {MAX_SECRET_BYTES // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None


def read_secret(source: SecretSource, field: str, environ: Mapping[str, str] | None = None,
                read_file: Callable[[Path], str] | None = None) -> str:
    """The secret's value, stripped of surrounding whitespace; ConfigError names the field and source only."""
    env = os.environ if environ is None else environ
    if source.env is not None:
        value = env.get(source.env)
        if not value:
            raise ConfigError(f"{field}: environment variable {source.env} is not set or empty")
        return value.strip()
    assert source.file is not None
    reader = read_file or read_secret_file
    try:
        value = reader(source.file)
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read secret file {source.file}: {exc.strerror or type(exc).__name__}")\
            from None
    except ValueError as exc:
        raise ConfigError(f"{field}: cannot read secret file {source.file}: {exc}") from None
    if not value.strip():
        raise ConfigError(f"{field}: secret file {source.file} is empty")
    return value.strip()


def resolve_headers(target: TargetConfig, environ: Mapping[str, str] | None = None,
                    read_file: Callable[[Path], str] | None = None) -> dict[str, str]:
    """Every extra header the target needs, with secrets read; Authorization from bearer_token."""
    headers: dict[str, str] = {}
    for name, value in target.headers.items():
        if isinstance(value, SecretSource):
            value = read_secret(value, f"target.headers.{name}", environ, read_file)
        if "\n" in value or "\r" in value:
            raise ConfigError(f"target.headers.{name}: a header value cannot hold a line break")
        try:
            check_header(name, value)
        except ValueError as exc:
            raise ConfigError(f"target.headers.{name}: {exc}") from None
        headers[name] = value
    if target.bearer_token is not None:
        token = read_secret(target.bearer_token, "target.bearer_token", environ, read_file)
        if "\n" in token or "\r" in token:
            raise ConfigError("target.bearer_token: the token cannot hold a line break")
        if not all(" " <= char <= "~" for char in token):
            raise ConfigError("target.bearer_token: the token must be printable ASCII")
        headers["Authorization"] = f"Bearer {token}"
    return headers
