"""Malformed, hostile and interrupted requests, and a failing object store.

Most requests here go over raw HTTP (http.client or a socket) because boto3
would refuse to build them. Where a valid signature is needed, botocore's
S3SigV4Auth signs an AWSRequest. Every error body is checked to be S3 XML
whose RequestId matches the x-amz-request-id header, and to contain no
secret and no plaintext. The last test scans the proxy log for secrets and
plaintext.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import secrets
import signal
import socket
import time
import urllib.request
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import Stack, Tenant, remove_bucket
from tests.stack import Backend, ProxyProcess, byok, start_backend, start_proxy

CANARY = b"BAD-INPUT-CANARY-plaintext "
NO_RETRIES = Config(retries={"total_max_attempts": 1})
UNSIGNED = "UNSIGNED-PAYLOAD"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Answer:
    """A raw HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes


class _PayloadHashAuth(S3SigV4Auth):  # type: ignore[misc]
    """SigV4 with a chosen x-amz-content-sha256 value instead of the body's."""

    def __init__(self, credentials: Credentials, payload_hash: str | None) -> None:
        super().__init__(credentials, "s3", "us-east-1")
        self._payload_hash = payload_hash

    def payload(self, request: AWSRequest) -> str:
        if self._payload_hash is not None:
            return self._payload_hash
        return str(super().payload(request))


def _sign(
    tenant: Tenant,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    payload_hash: str | None = None,
    secret: str | None = None,
) -> dict[str, str]:
    """Return `headers` with a SigV4 signature for the request added."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    credentials = Credentials(tenant.access_key_id, secret or tenant.secret_access_key)
    _PayloadHashAuth(credentials, payload_hash).add_auth(request)
    return dict(request.headers.items())


def _send(
    base_url: str,
    method: str,
    target: str,
    *,
    tenant: Tenant | None = None,
    headers: Mapping[str, str | bytes] | None = None,
    body: bytes = b"",
    payload_hash: str | None = None,
    secret: str | None = None,
) -> Answer:
    """Send one request over http.client, signed when `tenant` is given."""
    headers = dict(headers or {})
    if tenant is not None:
        text_headers = {name: str(value) for name, value in headers.items()}
        headers = dict(
            _sign(
                tenant,
                method,
                base_url + target,
                text_headers,
                body,
                payload_hash,
                secret,
            )
        )
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, 60)
    try:
        connection.request(method, target, body=body or None, headers=headers)
        response = connection.getresponse()
        return Answer(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        connection.close()


def _error_code(answer: Answer, *secrets_: str) -> str:
    """Check that `answer` is an S3 XML error and return its Code."""
    root = ElementTree.fromstring(answer.body)
    request_id = root.findtext("RequestId")
    assert root.tag == "Error"
    assert root.findtext("Message")
    assert request_id
    assert request_id == answer.headers.get("x-amz-request-id")
    assert CANARY not in answer.body
    for secret in secrets_:
        assert secret.encode() not in answer.body
    return root.findtext("Code") or ""


def _put(s3: Any, bucket: str, key: str, data: bytes) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=data)


def _keys_in_backend(backend_s3: Any, bucket: str) -> list[str]:
    listed = backend_s3.list_objects_v2(Bucket=bucket)
    return [entry["Key"] for entry in listed.get("Contents", [])]


def _assert_still_serving(s3: Any, bucket: str) -> None:
    data = os.urandom(1000)
    s3.put_object(Bucket=bucket, Key="control", Body=data)
    assert s3.get_object(Bucket=bucket, Key="control")["Body"].read() == data


# authentication


def test_auth_bad_signature(stack: Stack, tenant: Tenant, bucket: str) -> None:
    wrong = "x" * 40
    answer = _send(stack.proxy.url, "GET", f"/{bucket}", tenant=tenant, secret=wrong)
    assert answer.status == 403
    assert _error_code(answer, wrong, tenant.secret_access_key) == (
        "SignatureDoesNotMatch"
    )


@pytest.mark.parametrize(
    "access_key_id", ["BYOKAAAAAAAAAAAAAAAA", "AKIAIOSFODNN7EXAMPLE", "BYOK"]
)
def test_auth_unknown_access_key(stack: Stack, bucket: str, access_key_id: str) -> None:
    stranger = Tenant("stranger", access_key_id, "y" * 40)
    answer = _send(stack.proxy.url, "GET", f"/{bucket}", tenant=stranger)
    assert answer.status == 403
    assert _error_code(answer) == "InvalidAccessKeyId"


@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD"])
def test_auth_anonymous(stack: Stack, bucket: str, method: str) -> None:
    answer = _send(stack.proxy.url, method, f"/{bucket}/key", body=b"")
    assert answer.status == 403
    if method != "HEAD":
        assert _error_code(answer) == "AccessDenied"


MALFORMED_AUTHORIZATION = {
    "no_fields": "AWS4-HMAC-SHA256",
    "garbage_fields": "AWS4-HMAC-SHA256 garbage",
    "credential_only": "AWS4-HMAC-SHA256 Credential=BYOKAAAAAAAAAAAAAAAA",
    "short_scope": (
        "AWS4-HMAC-SHA256 Credential=BYOKAAAAAAAAAAAAAAAA/20240101/us-east-1, "
        "SignedHeaders=host, Signature=" + "0" * 64
    ),
    "empty_signature": (
        "AWS4-HMAC-SHA256 Credential=BYOKAAAAAAAAAAAAAAAA/20240101/us-east-1/s3/"
        "aws4_request, SignedHeaders=host, Signature="
    ),
}


@pytest.mark.parametrize(
    "value", MALFORMED_AUTHORIZATION.values(), ids=MALFORMED_AUTHORIZATION.keys()
)
def test_auth_malformed_header(stack: Stack, bucket: str, value: str) -> None:
    headers = {
        "Authorization": value,
        "x-amz-date": "20240101T000000Z",
        "x-amz-content-sha256": UNSIGNED,
    }
    answer = _send(stack.proxy.url, "GET", f"/{bucket}", headers=headers)
    assert answer.status == 400
    assert _error_code(answer) == "AuthorizationHeaderMalformed"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("Bearer abc", "InvalidArgument"),
        ("AWS HAHAHA", "InvalidArgument"),
    ],
)
def test_auth_unsupported_scheme(
    stack: Stack, bucket: str, value: str, code: str
) -> None:
    answer = _send(
        stack.proxy.url, "GET", f"/{bucket}", headers={"Authorization": value}
    )
    assert answer.status == 400
    assert _error_code(answer) == code


def test_auth_missing_content_sha256(stack: Stack, tenant: Tenant, bucket: str) -> None:
    headers = _sign(tenant, "GET", f"{stack.proxy.url}/{bucket}")
    del headers["X-Amz-Content-SHA256"]
    answer = _send(stack.proxy.url, "GET", f"/{bucket}", headers=headers)
    assert answer.status == 400
    assert _error_code(answer) == "InvalidRequest"


# bodies that do not match what the request declared


def test_put_content_sha256_mismatch(
    stack: Stack, tenant: Tenant, s3: Any, backend_s3: Any, bucket: str
) -> None:
    _put(s3, bucket, "kept", b"old content")
    for size in (100, 5 * 65536 + 7):
        body = CANARY * (size // len(CANARY) + 1)
        answer = _send(
            stack.proxy.url,
            "PUT",
            f"/{bucket}/kept",
            tenant=tenant,
            body=body,
            payload_hash=hashlib.sha256(b"something else").hexdigest(),
        )
        assert answer.status == 400
        assert _error_code(answer) == "XAmzContentSHA256Mismatch"
        answer = _send(
            stack.proxy.url,
            "PUT",
            f"/{bucket}/fresh",
            tenant=tenant,
            body=body,
            payload_hash=hashlib.sha256(b"something else").hexdigest(),
        )
        assert _error_code(answer) == "XAmzContentSHA256Mismatch"
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"old content"
    assert _keys_in_backend(backend_s3, bucket) == ["kept"]


@pytest.mark.parametrize(
    ("content_md5", "code"),
    [
        (base64.b64encode(hashlib.md5(b"other").digest()).decode(), "BadDigest"),
        ("not base64 at all", "InvalidDigest"),
        (base64.b64encode(b"short").decode(), "InvalidDigest"),
    ],
)
def test_put_bad_content_md5(
    stack: Stack,
    tenant: Tenant,
    s3: Any,
    backend_s3: Any,
    bucket: str,
    content_md5: str,
    code: str,
) -> None:
    _put(s3, bucket, "kept", b"old content")
    body = CANARY * 10000
    for key in ("kept", "fresh"):
        answer = _send(
            stack.proxy.url,
            "PUT",
            f"/{bucket}/{key}",
            tenant=tenant,
            headers={"Content-MD5": content_md5},
            body=body,
        )
        assert answer.status == 400
        assert _error_code(answer) == code
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"old content"
    assert _keys_in_backend(backend_s3, bucket) == ["kept"]


def _put_overlong(
    connection: http.client.HTTPConnection,
    stack: Stack,
    tenant: Tenant,
    target: str,
    body: bytes,
    declared: int,
    signed: bool,
) -> Answer:
    """PUT `body` behind a Content-Length of only `declared` bytes.

    The bytes after `declared` reach the proxy as the start of another
    request, which aiohttp rejects as malformed HTTP.
    """
    headers = _sign(
        tenant,
        "PUT",
        stack.proxy.url + target,
        {"Content-Length": str(declared)},
        body,
        payload_hash=None if signed else UNSIGNED,
    )
    connection.putrequest("PUT", target, skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(body)
    response = connection.getresponse()
    return Answer(
        response.status,
        {name.lower(): value for name, value in response.getheaders()},
        response.read(),
    )


def _connection(base_url: str) -> http.client.HTTPConnection:
    parts = urlsplit(base_url)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, 60)


@pytest.mark.parametrize("key", ["kept", "fresh"])
def test_put_overlong_body_signed(
    stack: Stack, tenant: Tenant, s3: Any, backend_s3: Any, bucket: str, key: str
) -> None:
    _put(s3, bucket, "kept", b"old content")
    connection = _connection(stack.proxy.url)
    try:
        answer = _put_overlong(
            connection, stack, tenant, f"/{bucket}/{key}", CANARY * 8, 100, True
        )
    finally:
        connection.close()
    # either the payload hash of the first 100 bytes fails, or the framing
    # error of the rest ends the connection first
    assert answer.status == 400
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"old content"
    assert _keys_in_backend(backend_s3, bucket) == ["kept"]
    _assert_still_serving(s3, bucket)


def test_put_overlong_body_unsigned(
    stack: Stack, tenant: Tenant, s3: Any, backend_s3: Any, bucket: str
) -> None:
    body = CANARY * 8
    connection = _connection(stack.proxy.url)
    try:
        answer = _put_overlong(
            connection, stack, tenant, f"/{bucket}/cut", body, 100, False
        )
    finally:
        connection.close()
    stored = _keys_in_backend(backend_s3, bucket)
    # HTTP framing ends the body at Content-Length, so the object, if the
    # PUT ran before the framing error closed the connection, is 100 bytes
    assert answer.status in (200, 400)
    assert stored in ([], ["cut"])
    if stored:
        assert s3.get_object(Bucket=bucket, Key="cut")["Body"].read() == body[:100]
    _assert_still_serving(s3, bucket)


def _chunked_put(
    stack: Stack, tenant: Tenant, bucket: str, key: str, data: bytes, declared: int
) -> Answer:
    """PUT `data` as one unsigned aws-chunked chunk, declaring `declared` bytes."""
    body = f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"
    headers = {
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(declared),
        "Content-Length": str(len(body)),
    }
    return _send(
        stack.proxy.url,
        "PUT",
        f"/{bucket}/{key}",
        tenant=tenant,
        headers=headers,
        body=body,
        payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    )


@pytest.mark.parametrize(("size", "declared"), [(200, 100), (70000, 1000), (50, 100)])
def test_put_decoded_length_mismatch(
    stack: Stack,
    tenant: Tenant,
    s3: Any,
    backend_s3: Any,
    bucket: str,
    size: int,
    declared: int,
) -> None:
    _put(s3, bucket, "kept", b"old content")
    data = (CANARY * (size // len(CANARY) + 1))[:size]
    for key in ("kept", "fresh"):
        answer = _chunked_put(stack, tenant, bucket, key, data, declared)
        assert answer.status == 400
        assert _error_code(answer) in ("IncompleteBody", "InvalidRequest")
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"old content"
    assert _keys_in_backend(backend_s3, bucket) == ["kept"]
    _assert_still_serving(s3, bucket)


def test_put_chunked_round_trip(
    stack: Stack, tenant: Tenant, s3: Any, bucket: str
) -> None:
    # the raw aws-chunked request of the test above, with a correct length
    data = os.urandom(70000)
    answer = _chunked_put(stack, tenant, bucket, "chunked", data, len(data))
    assert answer.status == 200
    assert s3.get_object(Bucket=bucket, Key="chunked")["Body"].read() == data


def _raw_request_head(
    tenant: Tenant, base_url: str, method: str, target: str, headers: dict[str, str]
) -> bytes:
    signed = _sign(tenant, method, base_url + target, headers, payload_hash=UNSIGNED)
    host = urlsplit(base_url).netloc
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in signed.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _connect(base_url: str) -> socket.socket:
    parts = urlsplit(base_url)
    return socket.create_connection((parts.hostname, parts.port), timeout=60)


def _wait_for_log(
    log: Path, start: int, needle: bytes, count: int = 1, timeout: float = 60
) -> bytes:
    """Wait until the log from offset `start` contains `needle` `count` times."""
    deadline = time.monotonic() + timeout
    while True:
        with log.open("rb") as file:
            file.seek(start)
            text = file.read()
        if text.count(needle) >= count or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_put_client_disconnects_early(
    stack: Stack, tenant: Tenant, s3: Any, backend_s3: Any, bucket: str
) -> None:
    _put(s3, bucket, "kept", b"old content")
    for key in ("kept", "fresh"):
        log_start = stack.proxy.log.stat().st_size
        head = _raw_request_head(
            tenant,
            stack.proxy.url,
            "PUT",
            f"/{bucket}/{key}",
            {"Content-Length": str(4 * MIB)},
        )
        with _connect(stack.proxy.url) as client:
            client.sendall(head + CANARY * (MIB // len(CANARY)))
        # the access log line shows the proxy finished the request
        access_line = f"PUT /{bucket}/{key} ".encode()
        logged = _wait_for_log(stack.proxy.log, log_start, access_line)
        assert access_line in logged
        assert b"Traceback" not in logged
    assert _keys_in_backend(backend_s3, bucket) == ["kept"]
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"old content"
    _assert_still_serving(s3, bucket)


# multipart uploads


def _signed_post(stack: Stack, tenant: Tenant, target: str, body: bytes) -> Answer:
    return _send(
        stack.proxy.url,
        "POST",
        target,
        tenant=tenant,
        headers={"Content-Type": "application/xml"},
        body=body,
    )


MALFORMED_XML = {
    "not_xml": b"this is not xml",
    "unclosed": b"<CompleteMultipartUpload><Part>",
    "entity_expansion": (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;">]><CompleteMultipartUpload>&b;'
        b"</CompleteMultipartUpload>"
    ),
    "empty": b"",
}


@pytest.mark.parametrize("body", MALFORMED_XML.values(), ids=MALFORMED_XML.keys())
def test_complete_malformed_xml(
    stack: Stack, tenant: Tenant, s3: Any, bucket: str, body: bytes
) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")
    target = f"/{bucket}/mp?uploadId={upload['UploadId']}"
    answer = _signed_post(stack, tenant, target, body)
    assert answer.status == 400
    assert _error_code(answer) == "MalformedXML"


@pytest.mark.parametrize("body", MALFORMED_XML.values(), ids=MALFORMED_XML.keys())
def test_delete_objects_malformed_xml(
    stack: Stack, tenant: Tenant, s3: Any, bucket: str, body: bytes
) -> None:
    _put(s3, bucket, "kept", b"kept")
    digest = base64.b64encode(hashlib.md5(body).digest()).decode()
    answer = _send(
        stack.proxy.url,
        "POST",
        f"/{bucket}?delete",
        tenant=tenant,
        headers={"Content-Type": "application/xml", "Content-MD5": digest},
        body=body,
    )
    assert answer.status == 400
    assert _error_code(answer) == "MalformedXML"
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"kept"


def _upload_parts(
    s3: Any, bucket: str, key: str, sizes: list[int]
) -> tuple[str, list[str]]:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etags = [
        s3.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=os.urandom(size),
        )["ETag"]
        for number, size in enumerate(sizes, start=1)
    ]
    return upload_id, etags


def _complete(
    s3: Any, bucket: str, key: str, upload_id: str, parts: list[tuple[int, str]]
) -> ClientError:
    with pytest.raises(ClientError) as raised:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]
            },
        )
    return raised.value


def test_complete_parts_out_of_order(s3: Any, backend_s3: Any, bucket: str) -> None:
    upload_id, etags = _upload_parts(s3, bucket, "mp", [5 * MIB, 1000])
    error = _complete(s3, bucket, "mp", upload_id, [(2, etags[1]), (1, etags[0])])
    assert error.response["Error"]["Code"] == "InvalidPartOrder"
    assert _keys_in_backend(backend_s3, bucket) == []


def test_complete_duplicate_part_needs_its_last_etag(
    s3: Any, backend_s3: Any, bucket: str
) -> None:
    # a number listed twice keeps its last entry, whose ETag must be current
    upload_id, etags = _upload_parts(s3, bucket, "mp", [5 * MIB, 1000])
    error = _complete(s3, bucket, "mp", upload_id, [(1, etags[0]), (1, etags[1])])
    assert error.response["Error"]["Code"] == "InvalidPart"
    assert _keys_in_backend(backend_s3, bucket) == []


@pytest.mark.parametrize(
    "etag", ['"00000000000000000000000000000000"', "", '"not hex"']
)
def test_complete_wrong_etag(s3: Any, backend_s3: Any, bucket: str, etag: str) -> None:
    upload_id, etags = _upload_parts(s3, bucket, "mp", [5 * MIB, 1000])
    error = _complete(s3, bucket, "mp", upload_id, [(1, etags[0]), (2, etag)])
    assert error.response["Error"]["Code"] == "InvalidPart"
    assert _keys_in_backend(backend_s3, bucket) == []


def test_complete_missing_part(s3: Any, backend_s3: Any, bucket: str) -> None:
    upload_id, etags = _upload_parts(s3, bucket, "mp", [5 * MIB])
    error = _complete(s3, bucket, "mp", upload_id, [(1, etags[0]), (2, etags[0])])
    assert error.response["Error"]["Code"] == "InvalidPart"
    assert _keys_in_backend(backend_s3, bucket) == []


def test_complete_backend_etag_rejected(s3: Any, backend_s3: Any, bucket: str) -> None:
    # the object store's ETag of the ciphertext is not the part's ETag
    upload_id, etags = _upload_parts(s3, bucket, "mp", [1000])
    listed = backend_s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id)
    backend_etag = listed["Parts"][0]["ETag"]
    error = _complete(s3, bucket, "mp", upload_id, [(1, backend_etag)])
    assert backend_etag != etags[0]
    assert error.response["Error"]["Code"] == "InvalidPart"


def test_complete_part_too_small(s3: Any, backend_s3: Any, bucket: str) -> None:
    upload_id, etags = _upload_parts(s3, bucket, "mp", [1024, 1024])
    error = _complete(s3, bucket, "mp", upload_id, [(1, etags[0]), (2, etags[1])])
    assert error.response["Error"]["Code"] == "EntityTooSmall"
    assert _keys_in_backend(backend_s3, bucket) == []


# "%C2%B2" is "²", a digit to str.isdigit that int() rejects
@pytest.mark.parametrize("number", ["0", "10001", "-1", "abc", "", "%C2%B2", "1.0"])
def test_upload_part_bad_number(
    stack: Stack, tenant: Tenant, s3: Any, bucket: str, number: str
) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    answer = _send(
        stack.proxy.url,
        "PUT",
        f"/{bucket}/mp?partNumber={number}&uploadId={upload_id}",
        tenant=tenant,
        body=b"part",
    )
    assert answer.status == 400
    assert _error_code(answer) == "InvalidArgument"


def test_complete_part_number_not_ascii(
    stack: Stack, tenant: Tenant, s3: Any, bucket: str
) -> None:
    upload_id, etags = _upload_parts(s3, bucket, "mp", [1000])
    body = (
        "<CompleteMultipartUpload><Part><PartNumber>\u00b2</PartNumber>"
        f"<ETag>{etags[0]}</ETag></Part></CompleteMultipartUpload>"
    ).encode()
    answer = _signed_post(stack, tenant, f"/{bucket}/mp?uploadId={upload_id}", body)
    assert answer.status == 400
    assert _error_code(answer) == "MalformedXML"


def test_put_decoded_length_not_ascii(
    stack: Stack, tenant: Tenant, backend_s3: Any, bucket: str
) -> None:
    body = b"1\r\nx\r\n0\r\n\r\n"
    headers = _sign(
        tenant,
        "PUT",
        f"{stack.proxy.url}/{bucket}/odd",
        {
            "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": "\u00b2",
            "Content-Length": str(len(body)),
        },
        body,
        payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    )
    # http.client would send the str as Latin-1; the signature covers UTF-8
    raw: dict[str, str | bytes] = dict(headers)
    raw["x-amz-decoded-content-length"] = "\u00b2".encode()
    answer = _send(stack.proxy.url, "PUT", f"/{bucket}/odd", headers=raw, body=body)
    assert answer.status == 400
    assert _error_code(answer) == "InvalidArgument"
    assert _keys_in_backend(backend_s3, bucket) == []


# keys that look like paths


@pytest.fixture(scope="module")
def victim(stack: Stack) -> Iterator[tuple[Any, str]]:
    """Another organisation's client and its bucket with the object `secret`."""
    owner = stack.tenant("victim-" + secrets.token_hex(4))
    client = stack.client(owner)
    name = "victim-" + secrets.token_hex(6)
    client.create_bucket(Bucket=name)
    yield client, name
    remove_bucket(client, name)


@pytest.mark.parametrize("prefix", ["..", "x/../..", "./..", "%2E%2E", "x/%2e%2e/.."])
def test_key_dot_segments_stay_in_bucket(
    stack: Stack,
    tenant: Tenant,
    backend_s3: Any,
    bucket: str,
    victim: tuple[Any, str],
    prefix: str,
) -> None:
    victim_s3, victim_bucket = victim
    secret_data = CANARY * 100
    victim_s3.put_object(Bucket=victim_bucket, Key="secret", Body=secret_data)

    target = f"/{bucket}/{prefix}/{victim_bucket}/secret"
    for method in ("PUT", "GET", "HEAD", "DELETE"):
        body = b"overwrite" if method == "PUT" else b""
        answer = _send(stack.proxy.url, method, target, tenant=tenant, body=body)
        assert CANARY not in answer.body, method
    stored = victim_s3.get_object(Bucket=victim_bucket, Key="secret")
    assert stored["Body"].read() == secret_data
    assert _keys_in_backend(backend_s3, victim_bucket) == ["secret"]


# reserved metadata and unsupported requests


@pytest.mark.parametrize("name", ["byok-header", "byok-anything", "BYOK-Header"])
def test_metadata_reserved_name(
    stack: Stack, tenant: Tenant, s3: Any, backend_s3: Any, bucket: str, name: str
) -> None:
    for query in ("", "?uploads"):
        method = "POST" if query else "PUT"
        answer = _send(
            stack.proxy.url,
            method,
            f"/{bucket}/reserved{query}",
            tenant=tenant,
            headers={f"x-amz-meta-{name}": "AAAA"},
            body=b"" if query else b"data",
        )
        assert answer.status == 400
        assert _error_code(answer) == "InvalidArgument"
    assert _keys_in_backend(backend_s3, bucket) == []


def test_metadata_reserved_name_boto3(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", Metadata={"byok-header": "x"})
    assert raised.value.response["Error"]["Code"] == "InvalidArgument"


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/{bucket}?cors"),
        ("PUT", "/{bucket}?lifecycle"),
        ("GET", "/{bucket}?website"),
        ("GET", "/{bucket}?policyStatus"),
        ("PUT", "/{bucket}?policy"),
        ("GET", "/{bucket}/obj?torrent"),
        ("POST", "/{bucket}/obj?select&select-type=2"),
    ],
)
def test_unsupported_subresource(
    stack: Stack, tenant: Tenant, s3: Any, bucket: str, method: str, target: str
) -> None:
    _put(s3, bucket, "obj", b"data")
    answer = _send(stack.proxy.url, method, target.format(bucket=bucket), tenant=tenant)
    assert answer.status == 501
    assert _error_code(answer) == "NotImplemented"


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "bytes=abc",
        "bytes=5-2",
        "items=0-5",
        "bytes=0-1,3-4",
        "bytes=",
        "bytes=-",
        "bytes=--5",
    ],
)
def test_range_garbage_whole_object(s3: Any, bucket: str, value: str) -> None:
    data = os.urandom(1000)
    _put(s3, bucket, "ranged", data)
    got = s3.get_object(Bucket=bucket, Key="ranged", Range=value)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert got["Body"].read() == data


def test_error_bodies_are_s3_xml(stack: Stack, tenant: Tenant, bucket: str) -> None:
    requests = [
        ("GET", f"/{bucket}/missing"),
        ("GET", "/no-such-bucket-" + secrets.token_hex(4)),
        ("DELETE", "/"),
        ("POST", f"/{bucket}/obj"),
        ("PUT", "/Invalid_Bucket"),
        ("GET", f"/{bucket}/obj?uploadId=nope"),
    ]
    for method, target in requests:
        answer = _send(stack.proxy.url, method, target, tenant=tenant)
        assert answer.status >= 400, target
        assert _error_code(answer, tenant.secret_access_key), target


# slow and vanishing readers


@pytest.fixture(scope="module")
def large_object(stack: Stack, tenant: Tenant) -> Iterator[tuple[str, str, bytes]]:
    s3 = stack.client(tenant)
    bucket = "large-" + secrets.token_hex(6)
    s3.create_bucket(Bucket=bucket)
    data = os.urandom(20 * MIB)
    s3.put_object(Bucket=bucket, Key="large", Body=data)
    yield bucket, "large", data
    remove_bucket(s3, bucket)


def _raw_get(tenant: Tenant, base_url: str, target: str) -> socket.socket:
    signed = _sign(tenant, "GET", base_url + target)
    host = urlsplit(base_url).netloc
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in signed.items()]
    client = _connect(base_url)
    client.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return client


def _read_response(client: socket.socket) -> tuple[bytes, bytes]:
    """Read a response until the server closes; return head and body."""
    received = bytearray()
    while b"\r\n\r\n" not in received:
        chunk = client.recv(65536)
        if not chunk:
            break
        received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    return head, body


def _read_body(client: socket.socket, body: bytes, length: int) -> bytes:
    received = bytearray(body)
    while len(received) < length:
        try:
            chunk = client.recv(min(65536, length - len(received)))
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        received += chunk
    return bytes(received)


def test_get_slow_reader(
    stack: Stack,
    tenant: Tenant,
    s3: Any,
    bucket: str,
    large_object: tuple[str, str, bytes],
) -> None:
    large_bucket, key, data = large_object
    client = _raw_get(tenant, stack.proxy.url, f"/{large_bucket}/{key}")
    with client:
        head, body = _read_response(client)
        assert head.startswith(b"HTTP/1.1 200")
        # while this reader stalls, others are served
        for _ in range(3):
            _assert_still_serving(s3, bucket)
            body += client.recv(4096)
        received = _read_body(client, body, len(data))
    assert received == data


def test_get_client_vanishes(
    stack: Stack,
    tenant: Tenant,
    s3: Any,
    bucket: str,
    large_object: tuple[str, str, bytes],
) -> None:
    large_bucket, key, _ = large_object
    log_start = stack.proxy.log.stat().st_size
    for _ in range(5):
        client = _raw_get(tenant, stack.proxy.url, f"/{large_bucket}/{key}")
        with client:
            head, _ = _read_response(client)
            assert head.startswith(b"HTTP/1.1 200")
            client.recv(4096)
        _assert_still_serving(s3, bucket)
    access_line = f"GET /{large_bucket}/{key} ".encode()
    logged = _wait_for_log(stack.proxy.log, log_start, access_line, count=5)
    assert logged.count(access_line) == 5
    assert b"Traceback" not in logged
    assert b"request.failed" not in logged


# the object store fails


@dataclass
class Pair:
    """A SeaweedFS and a proxy of a test's own, so the test may kill the store."""

    backend: Backend
    proxy: ProxyProcess
    tenant: Tenant
    client: Any


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    backend = start_backend(tmp_path / "seaweedfs")
    data_dir = tmp_path / "proxy"
    proxy: ProxyProcess | None = None
    try:
        byok(data_dir, "org", "create", "solo")
        keys = byok(data_dir, "credentials", "create", "solo", "--json")
        parsed = json.loads(keys)
        tenant = Tenant("solo", parsed["access_key_id"], parsed["secret_access_key"])
        proxy = start_proxy(data_dir, backend, tmp_path / "proxy.log")
        stack = Stack(backend, proxy, data_dir)
        yield Pair(backend, proxy, tenant, stack.client(tenant, config=NO_RETRIES))
    finally:
        if proxy is not None:
            proxy.stop()
        backend.stop()


def _kill_backend(pair: Pair) -> None:
    os.killpg(pair.backend.process.pid, signal.SIGKILL)
    pair.backend.process.wait()


def _assert_proxy_answers_error(pair: Pair) -> None:
    assert pair.proxy.process.poll() is None, "the proxy process exited"
    answer = _send(pair.proxy.url, "GET", "/", tenant=pair.tenant)
    assert answer.status in (500, 502, 503)
    assert _error_code(answer, pair.tenant.secret_access_key)
    assert b"Traceback" not in pair.proxy.log.read_bytes()


def test_backend_dies_during_put(pair: Pair) -> None:
    pair.client.create_bucket(Bucket="doomed")
    head = _raw_request_head(
        pair.tenant,
        pair.proxy.url,
        "PUT",
        "/doomed/large",
        {"Content-Length": str(64 * MIB)},
    )
    chunk = os.urandom(MIB)
    with _connect(pair.proxy.url) as client:
        client.sendall(head)
        for _ in range(4):
            client.sendall(chunk)
        _kill_backend(pair)
        try:
            for _ in range(60):
                client.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            response, _ = _read_response(client)
        except ConnectionResetError:
            response = b""
    # the proxy either returns a server error or closes the connection
    if response:
        status = int(response.split(b" ", 2)[1])
        assert status >= 500
    assert pair.backend.process.poll() is not None
    _assert_proxy_answers_error(pair)


def test_backend_dies_during_get(pair: Pair) -> None:
    pair.client.create_bucket(Bucket="doomed")
    data = os.urandom(40 * MIB)
    pair.client.put_object(Bucket="doomed", Key="large", Body=data)
    client = _raw_get(pair.tenant, pair.proxy.url, "/doomed/large")
    with client:
        head, body = _read_response(client)
        assert head.startswith(b"HTTP/1.1 200")
        _kill_backend(pair)
        received = _read_body(client, body, len(data))
    assert len(received) < len(data)
    assert data.startswith(received)
    _assert_proxy_answers_error(pair)


# what the proxy log never contains


def _secret_forms(key: bytes) -> list[bytes]:
    """The raw key and the text encodings a log line could show it in."""
    return [
        key,
        key.hex().encode(),
        key.hex().upper().encode(),
        base64.b64encode(key),
        base64.urlsafe_b64encode(key).rstrip(b"="),
    ]


def test_log_contains_no_secrets(
    stack: Stack,
    tenant: Tenant,
    s3: Any,
    backend_s3: Any,
    bucket: str,
    new_bucket: Callable[..., str],
) -> None:
    other = stack.tenant("log-scan-" + secrets.token_hex(4))
    other_s3 = stack.client(other, config=NO_RETRIES)
    other_bucket = new_bucket(other_s3)
    log_start = stack.proxy.log.stat().st_size
    plaintext = CANARY * 20000

    # ordinary traffic: single, multipart, ranged and presigned reads
    other_s3.put_object(Bucket=other_bucket, Key="plain", Body=plaintext)
    other_s3.get_object(Bucket=other_bucket, Key="plain", Range="bytes=5-99")
    _upload_parts(other_s3, other_bucket, "parts", [1000])
    presigned = stack.client(
        other, config=Config(signature_version="s3v4")
    ).generate_presigned_url(
        "get_object", Params={"Bucket": other_bucket, "Key": "plain"}
    )
    with urllib.request.urlopen(presigned, timeout=30) as response:
        assert response.read() == plaintext

    # rejected requests
    wrong = _send(
        stack.proxy.url, "GET", f"/{other_bucket}", tenant=other, secret="z" * 40
    )
    assert _error_code(wrong, other.secret_access_key) == "SignatureDoesNotMatch"
    mismatch = _send(
        stack.proxy.url,
        "PUT",
        f"/{other_bucket}/mismatch",
        tenant=other,
        body=plaintext,
        payload_hash=hashlib.sha256(b"other").hexdigest(),
    )
    assert _error_code(mismatch, other.secret_access_key) == (
        "XAmzContentSHA256Mismatch"
    )

    # malformed HTTP after a request on a kept-alive connection
    connection = _connection(stack.proxy.url)
    try:
        listing = _sign(other, "GET", f"{stack.proxy.url}/{other_bucket}")
        connection.request("GET", f"/{other_bucket}", headers=listing)
        connection.getresponse().read()
        _put_overlong(
            connection, stack, other, f"/{other_bucket}/cut", plaintext, 100, False
        )
    finally:
        connection.close()

    # an object that fails to open, and a client that vanishes mid-body
    stored = backend_s3.get_object(Bucket=other_bucket, Key="plain")
    body = bytearray(stored["Body"].read())
    body[70000] ^= 1
    backend_s3.put_object(
        Bucket=other_bucket, Key="plain", Body=bytes(body), Metadata=stored["Metadata"]
    )
    with pytest.raises(ClientError):
        other_s3.get_object(Bucket=other_bucket, Key="plain")["Body"].read()
    other_s3.put_object(Bucket=other_bucket, Key="big", Body=plaintext * 20)
    with _raw_get(other, stack.proxy.url, f"/{other_bucket}/big") as client:
        client.recv(4096)
    _wait_for_log(stack.proxy.log, log_start, f"GET /{other_bucket}/big".encode())
    _assert_still_serving(s3, bucket)

    with stack.proxy.log.open("rb") as log:
        log.seek(log_start)
        logged = log.read()
    master_key = (stack.data_dir / "master.key").read_bytes()
    assert len(master_key) == 32
    for form in _secret_forms(master_key):
        assert form not in logged
    for secret in (
        tenant.secret_access_key,
        other.secret_access_key,
        stack.backend.secret_key,
    ):
        assert secret.encode() not in logged
    assert CANARY not in logged
    assert CANARY[:12] not in logged
    assert b"Traceback" not in logged
    assert b"X-Amz-Signature" not in logged
