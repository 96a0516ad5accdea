"""aws-chunked uploads through the proxy, built by hand as SDKs send them.

boto3 sends checksum trailers only over HTTPS and no Python client sends
signed chunks, so these requests are framed here. botocore's SigV4 signer
signs the headers, and the chunk signatures follow the SigV4 rules.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import os
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from awscrt import checksums as crt_checksums
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from crc32c import crc32c

from tests.conftest import Stack, Tenant

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def checksum(algorithm: str, data: bytes) -> str:
    if algorithm == "crc32":
        raw = zlib.crc32(data).to_bytes(4, "big")
    elif algorithm == "crc32c":
        raw = crc32c(data).to_bytes(4, "big")
    elif algorithm == "crc64nvme":
        raw = crt_checksums.crc64nvme(data).to_bytes(8, "big")
    else:
        raw = hashlib.new(algorithm, data).digest()
    return base64.b64encode(raw).decode()


def pieces(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


class StreamingAuth(S3SigV4Auth):  # type: ignore[misc]
    """botocore's S3 signer with a fixed x-amz-content-sha256 value."""

    def __init__(self, credentials: Credentials, payload_hash: str) -> None:
        super().__init__(credentials, "s3", "us-east-1")
        self._payload_hash = payload_hash

    def payload(self, request: AWSRequest) -> str:
        return self._payload_hash


def signed_headers(
    tenant: Tenant, url: str, headers: dict[str, str], payload_hash: str
) -> dict[str, str]:
    request = AWSRequest(method="PUT", url=url, headers=headers)
    credentials = Credentials(tenant.access_key_id, tenant.secret_access_key)
    StreamingAuth(credentials, payload_hash).add_auth(request)
    return dict(request.headers.items())


def signing_key(secret: str, date: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, "us-east-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def send(url: str, headers: dict[str, str], body: bytes) -> Answer:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port)
    try:
        connection.request("PUT", parts.path, body=body, headers=headers)
        response = connection.getresponse()
        return Answer(response.status, response.read())
    finally:
        connection.close()


def unsigned_trailer_put(
    tenant: Tenant, url: str, data: bytes, trailers: dict[str, str]
) -> Answer:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces(data))
    body += b"0\r\n" + "".join(f"{n}:{v}\r\n" for n, v in trailers.items()).encode()
    body += b"\r\n"
    headers = {
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": ",".join(trailers),
        "Content-Length": str(len(body)),
    }
    signed = signed_headers(tenant, url, headers, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    return send(url, signed, body)


def signed_chunks_put(
    tenant: Tenant, url: str, data: bytes, tamper: int | None = None
) -> Answer:
    frames = [*pieces(data), b""]
    overhead = sum(len(f"{len(f):x};chunk-signature=") + 64 + 4 for f in frames)
    headers = {
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "Content-Length": str(len(data) + overhead),
        "x-amz-date": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
    }
    signed = signed_headers(tenant, url, headers, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    amz_date = signed["X-Amz-Date"]
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    key = signing_key(tenant.secret_access_key, amz_date[:8])
    previous = signed["Authorization"].rsplit("Signature=", 1)[1]
    body = b""
    for index, frame in enumerate(frames):
        text = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz_date,
                scope,
                previous,
                EMPTY_SHA256,
                hashlib.sha256(frame).hexdigest(),
            ]
        )
        previous = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
        sent = frame
        if index == tamper:
            sent = bytes([frame[0] ^ 1]) + frame[1:]
        body += f"{len(frame):x};chunk-signature={previous}\r\n".encode()
        body += sent + b"\r\n"
    return send(url, signed, body)


def object_url(stack: Stack, bucket: str, key: str) -> str:
    return f"{stack.proxy.url}/{bucket}/{key}"


@pytest.mark.parametrize(
    "algorithm", ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"]
)
def test_streaming_unsigned_trailer(
    stack: Stack, tenant: Tenant, s3: Any, bucket: str, algorithm: str
) -> None:
    data = os.urandom(3 * CHUNK + 11)
    trailer = {f"x-amz-checksum-{algorithm}": checksum(algorithm, data)}
    answer = unsigned_trailer_put(
        tenant, object_url(stack, bucket, "trailer"), data, trailer
    )
    assert answer.status == 200, answer.body
    assert s3.get_object(Bucket=bucket, Key="trailer")["Body"].read() == data


@pytest.mark.parametrize("algorithm", ["crc32", "crc64nvme", "sha256"])
def test_streaming_unsigned_trailer_mismatch(
    stack: Stack, tenant: Tenant, backend_s3: Any, bucket: str, algorithm: str
) -> None:
    data = os.urandom(2 * CHUNK)
    trailer = {f"x-amz-checksum-{algorithm}": checksum(algorithm, data + b"!")}
    answer = unsigned_trailer_put(
        tenant, object_url(stack, bucket, "bad"), data, trailer
    )
    assert answer.status == 400
    assert b"<Code>BadDigest</Code>" in answer.body
    listed = backend_s3.list_objects_v2(Bucket=bucket)
    assert listed.get("KeyCount", 0) == 0


@pytest.mark.parametrize("size", [0, 1, CHUNK, 2 * CHUNK + 5])
def test_streaming_signed_chunks(
    stack: Stack, tenant: Tenant, s3: Any, bucket: str, size: int
) -> None:
    data = os.urandom(size)
    answer = signed_chunks_put(tenant, object_url(stack, bucket, "signed"), data)
    assert answer.status == 200, answer.body
    assert s3.get_object(Bucket=bucket, Key="signed")["Body"].read() == data


def test_streaming_signed_chunk_tampered(
    stack: Stack, tenant: Tenant, s3: Any, backend_s3: Any, bucket: str
) -> None:
    original = b"original"
    s3.put_object(Bucket=bucket, Key="kept", Body=original)
    data = os.urandom(3 * CHUNK)
    answer = signed_chunks_put(
        tenant, object_url(stack, bucket, "kept"), data, tamper=1
    )
    assert answer.status == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in answer.body
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == original
