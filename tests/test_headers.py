"""Which headers cross the proxy in each direction."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.errors import S3Error
from proxy.headers import (
    HEADER_METADATA,
    client_object_headers,
    upstream_object_headers,
)


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
