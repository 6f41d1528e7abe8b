"""Hold-out sets from object storage and HTTPS, as JSONL or Parquet, through real servers on 127.0.0.1.

moto's standalone server is a real S3-compatible endpoint (a subprocess, reached over HTTP with signed
requests); its IAM enforcement is switched on after the set-up, so wrong credentials are refused as AWS would.
The HTTPS server is Python's own, with a certificate the test makes.
"""

from __future__ import annotations

import datetime
import gc
import hashlib
import http.server
import importlib.util
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from profiler.cli import main
from profiler.config import parse_config
from profiler.core.errors import ConfigError, DatasetError
from profiler.core.objects import BLOCK_BYTES, fetch
from profiler.dataset import load_dataset
from profiler.examples.holdout import write_holdout
from tests.conftest import require

HAVE_MOTO = importlib.util.find_spec("moto") is not None and importlib.util.find_spec("boto3") is not None
HAVE_CLOUD = all(importlib.util.find_spec(m) is not None for m in ("fsspec", "s3fs", "pyarrow"))
FIELDS = {"inputs": "pixels", "label": "label", "id_field": "id"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def holdouts(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("holdouts")
    require(HAVE_CLOUD, "fsspec, s3fs and pyarrow", "pip install -e '.[cloud,parquet]'")
    files = {"jsonl": folder / "holdout.jsonl", "parquet": folder / "holdout.parquet"}
    for path in files.values():
        write_holdout(path)
    return files


@pytest.fixture(scope="module")
def s3(holdouts) -> Iterator[dict[str, str]]:
    """moto's S3 server with bucket 'holdout' (both files) and an IAM user allowed to read it; auth enforced."""
    require(HAVE_MOTO, "moto's standalone S3 server", "pip install 'moto[server]'")
    import boto3

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        setup = {"endpoint_url": endpoint, "aws_access_key_id": "setup", "aws_secret_access_key": "setup",
                 "region_name": "us-east-1"}
        client = boto3.client("s3", **setup)
        client.create_bucket(Bucket="holdout")
        for name, path in holdouts.items():
            client.put_object(Bucket="holdout", Key=f"holdout.{name}", Body=path.read_bytes())
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="profiler")
        key = iam.create_access_key(UserName="profiler")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}
        iam.put_user_policy(UserName="profiler", PolicyName="read", PolicyDocument=json.dumps(policy))
        # From here on every request must be signed by a known key with a policy that allows it.
        urllib.request.urlopen(urllib.request.Request(endpoint + "/moto-api/reset-auth", data=b"0", method="POST",
                                                      headers={"Content-Type": "text/plain"}), timeout=10).close()
        yield {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_DEFAULT_REGION": "us-east-1"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def aws(s3, monkeypatch, tmp_path) -> dict[str, str]:
    """The S3 server's credentials in this process's environment, where s3fs looks; a cache of the test's own."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    for name, value in s3.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PROFILER_CACHE_DIR", str(tmp_path / "cache"))
    return s3


PROFILE = """\
target: {{url: "{url}", model: digits, timeout_s: 10, ready_timeout_s: 60}}
dataset: {{path: "s3://holdout/holdout.parquet", inputs: pixels, label: label, id: id}}
load: {{stages: [{{rate_rps: 50, requests: 50}}]}}
resources: {{settle_s: 0}}
gates: [{{metric: accuracy, min: 0.9}}, {{metric: error_rate, max: 0.01}}]
report: {{path: report.json}}
"""


def test_the_example_profile_reads_its_holdout_from_s3_as_parquet(example_server, aws, holdouts, tmp_path):
    _, url = example_server
    (tmp_path / "profile.yaml").write_text(PROFILE.format(url=url))
    done = subprocess.run([sys.executable, "-m", "profiler.cli", "run", "-q", "-c", "profile.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    parquet = holdouts["parquet"].read_bytes()
    assert report["dataset"]["path"] == "s3://holdout/holdout.parquet"
    assert report["dataset"]["sha256"] == hashlib.sha256(parquet).hexdigest()
    assert report["dataset"]["fetched"] is True
    assert report["dataset"]["samples"] == len(load_dataset(holdouts["jsonl"], **FIELDS).samples)
    assert report["accuracy"]["coverage"] == 1.0
    assert aws["AWS_SECRET_ACCESS_KEY"] not in done.stdout + done.stderr + (tmp_path / "report.json").read_text()
    # The copy lies in the cache under its SHA-256; the next read of the unchanged object does not download it.
    cached = tmp_path / "cache" / "objects" / report["dataset"]["sha256"]
    assert cached.read_bytes() == parquet
    again = load_dataset("s3://holdout/holdout.parquet", **FIELDS, fmt="parquet")
    assert (again.downloaded, again.sha256, again.cached) == (False, report["dataset"]["sha256"], cached)


def test_jsonl_and_parquet_from_s3_hold_the_same_samples(aws, holdouts):
    local = load_dataset(holdouts["jsonl"], **FIELDS)
    remote = load_dataset("s3://holdout/holdout.jsonl", **FIELDS)
    parquet = load_dataset("s3://holdout/holdout.parquet", **FIELDS, fmt="parquet")
    assert remote.sha256 == local.sha256 == hashlib.sha256(holdouts["jsonl"].read_bytes()).hexdigest()
    assert remote.samples == local.samples == parquet.samples
    assert remote.downloaded and remote.path == "s3://holdout/holdout.jsonl"


def test_a_cached_copy_that_changed_on_disk_is_fetched_again(aws, holdouts, tmp_path):
    first = load_dataset("s3://holdout/holdout.jsonl", **FIELDS)
    assert first.cached is not None
    first.cached.write_bytes(b'{"id": "x", "pixels": [1], "label": 0}\n')
    again = load_dataset("s3://holdout/holdout.jsonl", **FIELDS)
    assert again.downloaded and again.sha256 == first.sha256 and len(again.samples) == len(first.samples)


@pytest.mark.parametrize(("url", "change", "message"), [
    ("s3://holdout/missing.parquet", {}, "s3://holdout/missing.parquet: no such object"),
    ("s3://no-such-bucket/holdout.jsonl", {}, "s3://no-such-bucket/holdout.jsonl: no such object"),
    ("s3://holdout/holdout.jsonl", {"AWS_SECRET_ACCESS_KEY": "wrong-secret"}, "access denied"),
    ("s3://holdout/holdout.jsonl", {"AWS_ACCESS_KEY_ID": "AKIANOSUCHKEY"}, "access denied"),
])
def test_missing_objects_and_wrong_credentials_are_one_line(aws, monkeypatch, url, change, message):
    for name, value in change.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DatasetError) as caught:
        load_dataset(url, **FIELDS)
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert aws["AWS_SECRET_ACCESS_KEY"] not in text and "wrong-secret" not in text


def test_the_cli_says_one_line_and_exits_3(aws, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    (tmp_path / "profile.yaml").write_text(PROFILE.format(url="http://127.0.0.1:9"))
    with pytest.raises(SystemExit) as done:
        main(["run", "-c", str(tmp_path / "profile.yaml")])
    gc.unfreeze()  # main freezes the heap for a fast exit; this process goes on
    err = capsys.readouterr().err
    assert done.value.code == 3
    assert err.startswith("profiler: error: s3://holdout/holdout.parquet: access denied") and err.count("\n") == 1


@pytest.mark.parametrize(("path", "message"), [
    ("ftp://host/holdout.jsonl", "'ftp' is not a scheme the hold-out set can be read from"),
    ("s3://bucket-only", "names no object"),
    ("https://user:secret@example.invalid/", "https://REDACTED@example.invalid/ names no object"),
])
def test_a_bad_url_is_a_config_error_naming_the_field(tmp_path, path, message):
    text = (f'target: {{url: "http://127.0.0.1:9", model: m}}\ndataset: {{path: "{path}"}}\n'
            'load: {stages: [{rate_rps: 1, requests: 1}]}\n')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "p.yaml")
    assert "p.yaml:2: dataset.path: " in str(caught.value) and message in str(caught.value)
    assert "secret" not in str(caught.value)


@pytest.fixture(scope="module")
def gcs(holdouts) -> Iterator[str]:
    """gcp-storage-emulator (a GCS JSON-API server, a subprocess on 127.0.0.1) with bucket 'holdout' and both
    files; its address, for STORAGE_EMULATOR_HOST (where gcsfs, like Google's own clients, looks)."""
    require(shutil.which("gcp-storage-emulator", path=str(Path(sys.executable).parent)) is not None,
            "gcp-storage-emulator", "pip install gcp-storage-emulator")
    port = _free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gcp-storage-emulator"), "start", "-H", "127.0.0.1",
                             "--port", str(port), "--default-bucket", "holdout", "--in-memory", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        for name, path in holdouts.items():
            upload = urllib.request.Request(f"{endpoint}/upload/storage/v1/b/holdout/o?uploadType=media&"
                                            f"name=holdout.{name}", data=path.read_bytes(), method="POST",
                                            headers={"Content-Type": "application/octet-stream"})
            while True:
                try:
                    urllib.request.urlopen(upload, timeout=5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_gcs_objects_are_read_and_cached_too(gcs, holdouts, monkeypatch, tmp_path):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs)
    first = load_dataset("gs://holdout/holdout.parquet", **FIELDS, fmt="parquet", cache_dir=tmp_path)
    assert first.sha256 == hashlib.sha256(holdouts["parquet"].read_bytes()).hexdigest() and first.downloaded
    assert first.samples == load_dataset(holdouts["jsonl"], **FIELDS).samples
    again = load_dataset("gs://holdout/holdout.parquet", **FIELDS, fmt="parquet", cache_dir=tmp_path)
    assert not again.downloaded and again.sha256 == first.sha256
    with pytest.raises(DatasetError, match=r"^gs://holdout/missing\.jsonl: no such object"):
        load_dataset("gs://holdout/missing.jsonl", **FIELDS, cache_dir=tmp_path)


def test_an_unreachable_host_is_one_line(tmp_path):
    with pytest.raises(DatasetError, match=r"^http://127\.0\.0\.1:9/holdout\.jsonl: cannot read: "):
        load_dataset("http://127.0.0.1:9/holdout.jsonl", **FIELDS, cache_dir=tmp_path)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key, made here (cryptography)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture(scope="module")
def https(holdouts, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """An HTTPS file server on 127.0.0.1 (port 0) serving the hold-out files; its base URL and certificate."""
    require(importlib.util.find_spec("cryptography") is not None, "cryptography", "pip install cryptography")
    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(holdouts["jsonl"].parent))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


def test_https_with_a_self_signed_certificate(https, holdouts, tmp_path):
    base, cert = https
    for name in ("jsonl", "parquet"):
        got = load_dataset(f"{base}/holdout.{name}", **FIELDS, fmt=name, cache_dir=tmp_path, ca_file=cert)
        assert got.sha256 == hashlib.sha256(holdouts[name].read_bytes()).hexdigest()
        assert got.samples == load_dataset(holdouts["jsonl"], **FIELDS).samples
    with pytest.raises(DatasetError, match="certificate verify failed") as caught:
        load_dataset(f"{base}/holdout.jsonl", **FIELDS, cache_dir=tmp_path / "other")
    assert "\n" not in str(caught.value)
    with pytest.raises(DatasetError, match="no such object"):
        load_dataset(f"{base}/missing.jsonl", **FIELDS, cache_dir=tmp_path, ca_file=cert)


def test_a_large_object_streams_from_a_server_without_range_requests(https, holdouts, tmp_path):
    """Python's file server answers whole files only (no Range): the copy is one streamed response, in blocks."""
    base, cert = https
    blob = os.urandom(3 * BLOCK_BYTES + 12345)
    (holdouts["jsonl"].parent / "blob.bin").write_bytes(blob)
    fetched = fetch(f"{base}/blob.bin", tmp_path, max_bytes=len(blob) + 1, ca_file=cert)
    assert fetched.sha256 == hashlib.sha256(blob).hexdigest() and fetched.path.read_bytes() == blob
    with pytest.raises(DatasetError, match=r"blob\.bin: the object is 12\.0 MiB, more than the 6\.0 MiB"):
        fetch(f"{base}/blob.bin", tmp_path / "small", max_bytes=len(blob) // 2, ca_file=cert)


def test_a_file_that_is_not_parquet_is_one_line(holdouts, tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match=r"bad\.parquet: not a readable Parquet file"):
        load_dataset(tmp_path / "bad.parquet", **FIELDS, fmt="parquet")
    (tmp_path / "nolabel.parquet").write_bytes(holdouts["parquet"].read_bytes())
    with pytest.raises(DatasetError, match=r"nolabel\.parquet:1: label field 'klass' is missing"):
        load_dataset(tmp_path / "nolabel.parquet", inputs="pixels", label="klass", fmt="parquet")
