"""Which headers cross the proxy in each direction."""

from __future__ import annotations

import base64
import hashlib

import pytest
from multidict import CIMultiDict

from proxy.errors import S3Error
from proxy.headers import (
    HEADER_METADATA,
    bucket_create_headers,
    client_object_headers,
    governance_bypass_headers,
    object_lock_headers,
    upstream_object_headers,
)
from proxy.passthrough import body_digest_headers


def test_upstream_headers_keep_standard_and_metadata() -> None:
    client = CIMultiDict(
        {
            "Content-Type": "text/plain",
            "Cache-Control": "no-cache",
            "x-amz-meta-Colour": "blue",
            "x-amz-tagging": "a=b",
            "Authorization": "AWS4-HMAC-SHA256 ...",
            "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
            "Content-MD5": "abc",
            "x-amz-checksum-crc32": "AAAAAA==",
        }
    )
    headers = upstream_object_headers(client)
    assert headers == {
        "Content-Type": "text/plain",
        "Cache-Control": "no-cache",
        "x-amz-meta-colour": "blue",
        "x-amz-tagging": "a=b",
    }


@pytest.mark.parametrize(
    ("encoding", "stored"),
    [
        ("aws-chunked", None),
        ("gzip, aws-chunked", "gzip"),
        ("aws-chunked,gzip", "gzip"),
        ("gzip", "gzip"),
    ],
)
def test_upstream_headers_drop_aws_chunked(encoding: str, stored: str | None) -> None:
    headers = upstream_object_headers(CIMultiDict({"Content-Encoding": encoding}))
    assert headers.get("Content-Encoding") == stored


@pytest.mark.parametrize("name", ["x-amz-meta-byok-header", "X-Amz-Meta-Byok-Other"])
def test_upstream_headers_reject_reserved_metadata(name: str) -> None:
    with pytest.raises(S3Error) as error:
        upstream_object_headers(CIMultiDict({name: "x"}))
    assert error.value.code == "InvalidArgument"


def test_client_headers_hide_proxy_metadata() -> None:
    stored = CIMultiDict(
        {
            HEADER_METADATA: "AQID",
            "x-amz-meta-colour": "blue",
            "Content-Type": "image/png",
            "Last-Modified": "Wed, 02 Dec 2026 10:00:00 GMT",
            "Content-Length": "1234",
            "ETag": '"ciphertext"',
            "Server": "SeaweedFS",
        }
    )
    headers = client_object_headers(stored)
    assert headers == {
        "Content-Type": "image/png",
        "Last-Modified": "Wed, 02 Dec 2026 10:00:00 GMT",
        "x-amz-meta-colour": "blue",
    }


LOCK_HEADERS = {
    "x-amz-object-lock-mode": "GOVERNANCE",
    "x-amz-object-lock-retain-until-date": "2030-01-01T00:00:00Z",
    "x-amz-object-lock-legal-hold": "ON",
}


def test_upstream_headers_keep_object_lock() -> None:
    headers = upstream_object_headers(CIMultiDict(LOCK_HEADERS))
    assert headers == LOCK_HEADERS


def test_client_headers_return_object_lock() -> None:
    stored = CIMultiDict({**LOCK_HEADERS, "Server": "SeaweedFS"})
    assert client_object_headers(stored) == LOCK_HEADERS


@pytest.mark.parametrize("canned", ["private", "bucket-owner-full-control", ""])
def test_upstream_headers_drop_owner_only_acl(canned: str) -> None:
    client = CIMultiDict({"x-amz-acl": canned, "Content-Type": "text/plain"})
    assert upstream_object_headers(client) == {"Content-Type": "text/plain"}


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"x-amz-acl": "public-read"}, "AccessControlListNotSupported"),
        ({"x-amz-acl": "authenticated-read"}, "AccessControlListNotSupported"),
        ({"X-Amz-Grant-Read": "uri=x"}, "AccessControlListNotSupported"),
        ({"x-amz-grant-full-control": "id=abc"}, "AccessControlListNotSupported"),
        ({"x-amz-acl": "public-ready"}, "InvalidArgument"),
        ({"x-amz-acl": "private", "x-amz-grant-read": "id=a"}, "InvalidRequest"),
    ],
)
def test_upstream_headers_reject_acls(headers: dict[str, str], code: str) -> None:
    with pytest.raises(S3Error) as error:
        upstream_object_headers(CIMultiDict(headers))
    assert error.value.code == code
    assert error.value.status == 400


def test_bucket_create_headers_keep_object_lock() -> None:
    client = CIMultiDict(
        {
            "x-amz-bucket-object-lock-enabled": "True",
            "x-amz-acl": "private",
            "x-amz-object-ownership": "BucketOwnerEnforced",
            "Content-Type": "application/xml",
        }
    )
    headers = bucket_create_headers(client)
    assert headers == {"x-amz-bucket-object-lock-enabled": "True"}


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"x-amz-acl": "public-read-write"}, "AccessControlListNotSupported"),
        ({"x-amz-grant-write": "id=abc"}, "AccessControlListNotSupported"),
        ({"x-amz-acl": "nonsense"}, "InvalidArgument"),
        ({"x-amz-object-ownership": "ObjectWriter"}, "NotImplemented"),
        ({"x-amz-object-ownership": "BucketOwnerPreferred"}, "NotImplemented"),
        ({"x-amz-object-ownership": "Nobody"}, "InvalidArgument"),
    ],
)
def test_bucket_create_headers_reject(headers: dict[str, str], code: str) -> None:
    with pytest.raises(S3Error) as error:
        bucket_create_headers(CIMultiDict(headers))
    assert error.value.code == code


def test_governance_bypass_headers() -> None:
    client = CIMultiDict(
        {"X-Amz-Bypass-Governance-Retention": "true", "x-amz-acl": "private"}
    )
    headers = governance_bypass_headers(client)
    assert headers == {"x-amz-bypass-governance-retention": "true"}
    assert governance_bypass_headers(CIMultiDict()) == {}


def test_object_lock_headers_pick_only_lock() -> None:
    client = CIMultiDict({**LOCK_HEADERS, "x-amz-meta-a": "b", "x-amz-acl": "x"})
    assert object_lock_headers(client) == LOCK_HEADERS


def _md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def test_body_digest_headers_compute_content_md5() -> None:
    body = b"<Retention/>"
    client = CIMultiDict(
        {
            "content-md5": _md5(b"what the client sent"),
            "Content-Type": "application/xml",
            "x-amz-checksum-crc32": "AAAAAA==",
            "x-amz-sdk-checksum-algorithm": "CRC32",
            "Authorization": "AWS4-HMAC-SHA256 ...",
        }
    )
    headers = body_digest_headers(client, body)
    assert headers == {
        "Content-MD5": _md5(body),
        "Content-Type": "application/xml",
        "x-amz-checksum-crc32": "AAAAAA==",
        "x-amz-sdk-checksum-algorithm": "CRC32",
    }


def test_body_digest_headers_drop_algorithm_without_checksum() -> None:
    # a checksum sent in an aws-chunked trailer does not reach the store
    client = CIMultiDict(
        {
            "x-amz-sdk-checksum-algorithm": "CRC32",
            "x-amz-trailer": "x-amz-checksum-crc32",
        }
    )
    assert body_digest_headers(client, b"") == {"Content-MD5": _md5(b"")}


def test_body_digest_headers_without_body_keep_client_md5() -> None:
    client = CIMultiDict({"Content-MD5": "abc=", "x-amz-meta-a": "b"})
    assert body_digest_headers(client) == {"Content-MD5": "abc="}
