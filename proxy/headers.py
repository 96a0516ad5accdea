"""Header filters for both directions: client to object store and back."""

from __future__ import annotations

from collections.abc import Mapping

from crypto.header import METADATA_KEY
from proxy.errors import S3Error

__all__ = [
    "HEADER_METADATA",
    "client_object_headers",
    "upstream_object_headers",
]

HEADER_METADATA = "x-amz-meta-" + METADATA_KEY
_RESERVED_PREFIX = "x-amz-meta-byok-"

# Stored with the object and returned on GET and HEAD.
_OBJECT_HEADERS = (
    "Cache-Control",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Type",
    "Expires",
)
# Accepted on PUT and CreateMultipartUpload and passed on unchanged.
_WRITE_HEADERS = (
    *_OBJECT_HEADERS,
    "x-amz-acl",
    "x-amz-storage-class",
    "x-amz-tagging",
    "x-amz-website-redirect-location",
)
# Returned on GET and HEAD as the object store sent them.
_READ_HEADERS = (
    *_OBJECT_HEADERS,
    "Last-Modified",
    "x-amz-delete-marker",
    "x-amz-storage-class",
    "x-amz-tagging-count",
    "x-amz-version-id",
)


def upstream_object_headers(client: Mapping[str, str]) -> dict[str, str]:
    """Pick the headers of a client write that the object store keeps.

    User metadata passes unchanged; names under `byok-` are the proxy's
    own and a client may not set them. `aws-chunked` is a transfer detail
    and is removed from Content-Encoding.
    """
    headers = {name: client[name] for name in _WRITE_HEADERS if name in client}
    encoding = _without_aws_chunked(headers.pop("Content-Encoding", ""))
    if encoding:
        headers["Content-Encoding"] = encoding
    for name, value in client.items():
        lower = name.lower()
        if not lower.startswith("x-amz-meta-"):
            continue
        if lower.startswith(_RESERVED_PREFIX) or lower == HEADER_METADATA:
            raise S3Error(
                "InvalidArgument",
                f"The metadata name {name!r} is reserved by the proxy; "
                "choose a name that does not start with 'byok-'",
            )
        headers[lower] = value
    return headers


def client_object_headers(stored: Mapping[str, str]) -> dict[str, str]:
    """Pick the stored headers that a GET or HEAD returns, hiding the proxy's own."""
    headers = {name: stored[name] for name in _READ_HEADERS if name in stored}
    for name, value in stored.items():
        lower = name.lower()
        if lower.startswith("x-amz-meta-") and not lower.startswith(_RESERVED_PREFIX):
            headers[lower] = value
    return headers


def _without_aws_chunked(value: str) -> str:
    codings = [c.strip() for c in value.split(",")]
    return ", ".join(c for c in codings if c and c.lower() != "aws-chunked")
