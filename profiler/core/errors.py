"""The project's own exception kinds: each carries what a user needs to fix the cause."""

from __future__ import annotations

ERROR_PREFIX = "profiler: error: "
"""How every user-facing error line starts on stderr (the CLI's and a run's own)."""


def error_line(message: str) -> str:
    """The one line a user error is printed as: `profiler: error: <message>`."""
    return f"{ERROR_PREFIX}{message}"


class ProfilerError(Exception):
    """An error the user can cause and fix; the CLI prints it as one line, no traceback."""


class ConfigError(ProfilerError):
    """The configuration is missing, malformed or invalid (names the file, line and field)."""


class DatasetError(ProfilerError):
    """The hold-out file cannot be read or a line in it is invalid (names the file and line)."""


class TargetError(ProfilerError):
    """The served model cannot be reached or never became ready (names the URL)."""


class ReportError(ProfilerError):
    """The report file cannot be written (names the path and the reason); what was measured is kept."""


class TransportError(Exception):
    """One request failed; `kind` classifies it for the report (timeout, connection, http_status, grpc_status)."""

    def __init__(self, kind: str, detail: str, status: int = 0) -> None:
        super().__init__(detail)
        self.kind = kind
        self.status = status


class DecodeError(ProfilerError):
    """A response body was not of the shape the codec expects (one request's outcome: the load engine counts
    it against the model; it ends a run only where a single answer is the whole question)."""


class IdMismatchError(DecodeError):
    """An answer names a request id other than the one its request carried (V2 `id`): counted as its own
    outcome (`id_mismatch`), since it means the server or a proxy handed back another request's answer."""


class StoreError(ProfilerError):
    """The run history cannot be read or written: locked, corrupt, newer schema, or no such run (names the file)."""
