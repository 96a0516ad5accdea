"""HTTPS on the proxy's listener, where boto3 sends checksum trailers."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import Stack, Tenant
from tests.stack import free_port, wait_for_port


def write_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1 and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_proxy(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = write_certificate(directory)
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "BYOK_PROXY_DATA_DIR": str(stack.data_dir),
            "BYOK_PROXY_UPSTREAM_URL": stack.backend.url,
            "BYOK_PROXY_UPSTREAM_ACCESS_KEY": stack.backend.access_key,
            "BYOK_PROXY_UPSTREAM_SECRET_KEY": stack.backend.secret_key,
            "BYOK_PROXY_LISTEN": f"127.0.0.1:{port}",
            "BYOK_PROXY_TLS_CERT": str(cert_path),
            "BYOK_PROXY_TLS_KEY": str(key_path),
        }
    )
    with (directory / "proxy.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for_port(port, process, timeout=30)
        yield f"https://127.0.0.1:{port}", cert_path
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def tls_s3(tls_proxy: tuple[str, Path], tenant: Tenant) -> Any:
    url, cert_path = tls_proxy
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=tenant.access_key_id,
        aws_secret_access_key=tenant.secret_access_key,
        region_name="us-east-1",
        verify=str(cert_path),
    )


def test_tls_put_get_with_trailers(tls_s3: Any, s3: Any) -> None:
    s3.create_bucket(Bucket="tls-objects")
    data = os.urandom(3 * 1024 * 1024 + 5)
    sent: dict[str, str] = {}

    def capture(request: Any, **_: Any) -> None:
        for name, value in request.headers.items():
            text = value.decode() if isinstance(value, bytes) else value
            sent[name.lower()] = text

    tls_s3.meta.events.register("before-send.s3.PutObject", capture)
    put = tls_s3.put_object(Bucket="tls-objects", Key="over-https", Body=data)
    assert sent["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert sent["x-amz-trailer"].startswith("x-amz-checksum-")
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = tls_s3.get_object(Bucket="tls-objects", Key="over-https")
    assert got["Body"].read() == data


def test_tls_upload_download_file(tls_s3: Any, s3: Any, tmp_path: Path) -> None:
    s3.create_bucket(Bucket="tls-files")
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(20 * 1024 * 1024 + 3))
    tls_s3.upload_file(str(source), "tls-files", "big.bin")
    target = tmp_path / "target.bin"
    tls_s3.download_file("tls-files", "big.bin", str(target))
    assert target.read_bytes() == source.read_bytes()


def test_tls_rejects_plain_http(tls_proxy: tuple[str, Path]) -> None:
    url, _ = tls_proxy
    plain = url.replace("https://", "http://")
    result = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", plain + "/"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout in ("000", "400")
