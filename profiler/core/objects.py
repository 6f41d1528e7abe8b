"""A hold-out file from a URL (http(s)://, s3://, gs://), streamed into a local cache keyed by its SHA-256.

fsspec and its back ends (s3fs, gcsfs, and aiohttp for HTTP) do the reading: credentials come from where
those libraries look (AWS_* and ~/.aws, GOOGLE_APPLICATION_CREDENTIALS and gcloud's files, user:password in an
https URL); an S3-compatible store is reached with AWS_ENDPOINT_URL, a private CA with SSL_CERT_FILE (HTTPS)
or AWS_CA_BUNDLE (S3). Nothing here prints a credential: every message names the URL through redact_url.

The object is copied in blocks (memory bounded by the block size, not the object) into the cache folder under
the SHA-256 of the bytes read. An index entry keyed by the URL and the object's version tag (ETag, generation,
or size and modification time) remembers that SHA-256, so a later run of an unchanged object reads the cached
copy without downloading it again; the caller hashes what it parses, so a cached copy that changed on disk is
noticed (`forget`) and fetched anew.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from profiler.core.errors import DatasetError
from profiler.core.redact import redact_text, redact_url

URL_SCHEMES = ("http", "https", "s3", "gs", "gcs")
"""The URL schemes a hold-out path may have (anything else is a local path)."""
BLOCK_BYTES = 4 * 1024 * 1024
"""How much of the object is held in memory at once while it is copied into the cache."""
EXTRAS = {"http": "cloud", "https": "cloud", "s3": "cloud", "gs": "cloud", "gcs": "cloud"}
"""The optional extra that brings each scheme's library."""


def is_url(text: str) -> bool:
    """Whether a hold-out path is a URL of a scheme this module reads (else it is a local file)."""
    return urlsplit(text).scheme.lower() in URL_SCHEMES and "://" in text


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """$PROFILER_CACHE_DIR, else $XDG_CACHE_HOME/profiler, else ~/.cache/profiler (HOME is /tmp in the image)."""
    if environ.get("PROFILER_CACHE_DIR"):
        return Path(environ["PROFILER_CACHE_DIR"])
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or tempfile.gettempdir()) / ".cache")
    return Path(base) / "profiler"


@dataclass(frozen=True, slots=True)
class Fetched:
    """The cached copy of a remote hold-out file: where it is, the SHA-256 it is stored under, whether it
    was downloaded now (False: found in the cache), and the index entry that led to it."""

    path: Path
    sha256: str
    downloaded: bool
    index: Path | None

    def forget(self) -> None:
        """Drop the cached copy and its index entry (its bytes no longer match its name)."""
        self.path.unlink(missing_ok=True)
        if self.index is not None:
            self.index.unlink(missing_ok=True)


def fetch(url: str, cache_dir: Path, max_bytes: int, ca_file: Path | None = None) -> Fetched:
    """The object at `url` in the local cache: found there by its version tag, or copied in blocks now.
    `ca_file` (PEM) is whom an https:// server's certificate must be signed by, beside the system's CAs.

    DatasetError, one line naming the redacted URL, for a missing library, a bad URL, a missing object,
    refused credentials, an unreachable host, an object over `max_bytes`, or a cache folder it cannot write.
    """
    shown = redact_url(url)
    fs, path = _filesystem(url, shown, ca_file)
    info = _call(shown, fs.info, path)
    size = info.get("size")
    if isinstance(size, int) and size > max_bytes:
        raise DatasetError(f"{shown}: the object is {_amount(size)}, more than the {_amount(max_bytes)} a hold-out "
                           "set may hold")
    index = _index_path(cache_dir, url, info)
    sha256 = _remembered(index) if index is not None else None
    if sha256 is not None and (cache_dir / "objects" / sha256).is_file():
        return Fetched(cache_dir / "objects" / sha256, sha256, downloaded=False, index=index)
    return _download(fs, path, shown, cache_dir, index, max_bytes)


def _amount(size_bytes: int) -> str:
    """A size for a message: GiB from 1 GiB up, else MiB."""
    return f"{size_bytes / 2**30:.1f} GiB" if size_bytes >= 2**30 else f"{size_bytes / 2**20:.1f} MiB"


def _filesystem(url: str, shown: str, ca_file: Path | None) -> tuple[Any, str]:
    """fsspec's file system for the URL, made anew (a cached instance would keep credentials since rotated)."""
    scheme = urlsplit(url).scheme.lower()
    options: dict[str, Any] = {"skip_instance_cache": True}
    if ca_file is not None and scheme == "https":
        try:
            options["ssl"] = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise DatasetError(f"{ca_file}: cannot use as a CA file for {shown}: {_reason(exc)}") from None
    try:
        # Optional and heavy (fsspec with s3fs/gcsfs): imported only when a profile names a URL.
        import fsspec
    except ImportError:
        raise DatasetError(f"{shown}: reading a hold-out set from {scheme}:// needs the '{EXTRAS[scheme]}' extra: "
                           f"pip install 'model-profiler[{EXTRAS[scheme]}]'") from None
    try:
        return fsspec.core.url_to_fs(url, **options)  # type: ignore[no-any-return]
    except ImportError as exc:  # the scheme's back end (s3fs, gcsfs, aiohttp) is missing
        raise DatasetError(f"{shown}: {scheme}:// needs a library that is not installed ({exc}): "
                           f"pip install 'model-profiler[{EXTRAS[scheme]}]'") from None
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"{shown}: not a usable URL: {exc}") from None


def _call(shown: str, function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call into fsspec; every failure becomes one DatasetError line naming the URL."""
    try:
        return function(*args, **kwargs)
    except FileNotFoundError as exc:
        # fsspec's HTTP back end says FileNotFoundError for every failure, the real one as its cause.
        cause = exc.__cause__
        status = getattr(cause, "status", None)
        if status in (401, 403):
            raise DatasetError(f"{shown}: access denied (HTTP {status}): check the credentials") from None
        if cause is not None and (isinstance(cause, OSError) or status not in (None, 404, 410)):
            raise DatasetError(f"{shown}: cannot read: {_reason(cause)}") from None
        raise DatasetError(f"{shown}: no such object (or no permission to list it)") from None
    except PermissionError as exc:
        raise DatasetError(f"{shown}: access denied: {_reason(exc)} (check the credentials: AWS_* for s3://, "
                           "GOOGLE_APPLICATION_CREDENTIALS for gs://)") from None
    except Exception as exc:  # each back end raises its own kinds (botocore, aiohttp, google-auth): all are one line
        raise DatasetError(f"{shown}: cannot read: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """The exception's message on one line, URLs redacted, at most 300 characters (a library's message can be
    a whole HTML page), or its type's name."""
    text = redact_text(" ".join(str(exc).split()))
    return (text if len(text) <= 300 else text[:297] + "...") or type(exc).__name__


def _index_path(cache_dir: Path, url: str, info: Mapping[str, Any]) -> Path | None:
    """Where the SHA-256 of this URL's current version is remembered; None when the store gives no version tag
    (then every run downloads)."""
    tag = next((str(info[key]) for key in ("ETag", "etag", "generation", "md5Hash", "VersionId") if info.get(key)),
               None)
    if tag is None and info.get("size") is not None and (info.get("LastModified") or info.get("mtime")):
        tag = f"{info['size']}:{info.get('LastModified') or info.get('mtime')}"
    if tag is None:
        return None
    key = hashlib.sha256(f"{url}\n{tag}".encode()).hexdigest()  # the URL as given: its credentials never show
    return cache_dir / "index" / key


def _remembered(index: Path) -> str | None:
    """The SHA-256 an index entry names, or None when there is no readable, well-formed entry (then: download)."""
    try:
        text = index.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else None


def _download(fs: Any, path: str, shown: str, cache_dir: Path, index: Path | None, max_bytes: int) -> Fetched:
    """Copy the object block by block into a temporary file in the cache, hashing it, then name it by hash."""
    objects = cache_dir / "objects"
    try:
        objects.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=objects, prefix=".partial-")
    except OSError as exc:
        raise DatasetError(f"{cache_dir}: cannot write the hold-out cache: {exc.strerror or exc} "
                           "(set PROFILER_CACHE_DIR or dataset.cache_dir)") from None
    digest = hashlib.sha256()
    total = 0
    try:
        with os.fdopen(handle, "wb") as out:
            # Read front to back: over HTTP as one streamed response (block_size 0), which needs no range requests
            # (a plain file server may not take them); elsewhere in ranged blocks of BLOCK_BYTES.
            protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
            streamed = "http" in protocols or "https" in protocols
            source = _call(shown, fs.open, path, "rb", block_size=0 if streamed else BLOCK_BYTES)
            with source:
                while block := _call(shown, source.read, BLOCK_BYTES):
                    total += len(block)
                    if total > max_bytes:
                        raise DatasetError(f"{shown}: the object holds more than the {_amount(max_bytes)} a "
                                           "hold-out set may hold")
                    digest.update(block)
                    out.write(block)
        sha256 = digest.hexdigest()
        final = objects / sha256
        os.replace(temporary, final)
        if index is not None:
            index.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(index, sha256)
    except OSError as exc:
        raise DatasetError(f"{cache_dir}: cannot write the hold-out cache: {exc.strerror or exc}") from None
    finally:
        Path(temporary).unlink(missing_ok=True)
    return Fetched(final, sha256, downloaded=True, index=index)


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
    with os.fdopen(handle, "w", encoding="ascii") as out:
        out.write(text)
    os.replace(temporary, path)
