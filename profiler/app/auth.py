"""The sidecar's access control: the bearer token that guards POST /runs, read and checked."""

from __future__ import annotations

import hmac
import os

from profiler.config import ServerConfig
from profiler.core.errors import ConfigError
from profiler.transports.secrets import read_secret_file


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


def load_token(server: ServerConfig) -> str | None:
    """The bearer token for POST /runs from server.token_file or server.token_env (None: triggering is off)."""
    if server.token_file is not None:
        try:
            token = read_secret_file(server.token_file).strip()
        except OSError as exc:
            raise ConfigError(f"server.token_file: cannot read {server.token_file}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ConfigError(f"server.token_file: cannot read {server.token_file}: {exc}") from None
        if not token:
            raise ConfigError(f"server.token_file: {server.token_file} is empty")
        return token
    if server.token_env is not None:
        token = os.environ.get(server.token_env, "").strip()
        if not token:
            raise ConfigError(f"server.token_env: the environment variable {server.token_env} is unset or empty")
        return token
    return None
