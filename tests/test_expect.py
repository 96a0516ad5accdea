"""The proxy sends 100 Continue only after authentication and authorisation."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import Stack, Tenant

BODY = b"x" * 1000


def signed_put(tenant: Tenant, url: str, expect: str, secret: str = "") -> bytes:
    """Build a signed PUT request head, without its body."""
    request = AWSRequest(
        method="PUT",
        url=url,
        headers={"Expect": expect, "Content-Length": str(len(BODY))},
        data=BODY,
    )
    credentials = Credentials(tenant.access_key_id, secret or tenant.secret_access_key)
    S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    path = urlsplit(url).path
    lines = [f"PUT {path} HTTP/1.1", f"Host: {urlsplit(url).netloc}"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def first_answer(url: str, head: bytes) -> tuple[bytes, socket.socket]:
    """Send a request head and read the proxy's response before the body."""
    parts = urlsplit(url)
    connection = socket.create_connection((parts.hostname, parts.port), timeout=10)
    connection.sendall(head)
    return connection.recv(65536), connection


def read_all(connection: socket.socket) -> bytes:
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    return data


def test_expect_continue_after_auth(
    stack: Stack, tenant: Tenant, s3: Any, bucket: str
) -> None:
    url = f"{stack.proxy.url}/{bucket}/continued"
    answer, connection = first_answer(url, signed_put(tenant, url, "100-continue"))
    with connection:
        assert answer.startswith(b"HTTP/1.1 100 Continue")
        connection.sendall(BODY)
        final = connection.recv(65536)
    assert final.startswith(b"HTTP/1.1 200")
    assert s3.get_object(Bucket=bucket, Key="continued")["Body"].read() == BODY


def test_expect_bad_signature_rejected_first(
    stack: Stack, tenant: Tenant, backend_s3: Any, bucket: str
) -> None:
    url = f"{stack.proxy.url}/{bucket}/forged"
    head = signed_put(tenant, url, "100-continue", secret="wrong" * 8)
    answer, connection = first_answer(url, head)
    with connection:
        rest = read_all(connection)
    response = answer + rest
    assert response.startswith(b"HTTP/1.1 403")
    assert b"<Code>SignatureDoesNotMatch</Code>" in response
    assert b"100 Continue" not in response
    assert backend_s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_expect_anonymous_rejected_first(stack: Stack, bucket: str) -> None:
    url = f"{stack.proxy.url}/{bucket}/anonymous"
    head = (
        f"PUT /{bucket}/anonymous HTTP/1.1\r\nHost: {urlsplit(url).netloc}\r\n"
        f"Expect: 100-continue\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode()
    answer, connection = first_answer(url, head)
    with connection:
        response = answer + read_all(connection)
    assert response.startswith(b"HTTP/1.1 403")
    assert b"<Code>AccessDenied</Code>" in response
    assert b"100 Continue" not in response


def test_expect_other_bucket_rejected_first(stack: Stack, s3: Any, bucket: str) -> None:
    other = stack.tenant("expect-other")
    url = f"{stack.proxy.url}/{bucket}/intruder"
    answer, connection = first_answer(url, signed_put(other, url, "100-continue"))
    with connection:
        response = answer + read_all(connection)
    assert response.startswith(b"HTTP/1.1 403")
    assert b"<Code>AccessDenied</Code>" in response
    assert b"100 Continue" not in response
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_expect_other_value_ignored(
    stack: Stack, tenant: Tenant, s3: Any, bucket: str
) -> None:
    url = f"{stack.proxy.url}/{bucket}/expect-200"
    head = signed_put(tenant, url, "200")
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(head + BODY)
        answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200")
    assert s3.get_object(Bucket=bucket, Key="expect-200")["Body"].read() == BODY
