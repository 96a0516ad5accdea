"""Header filters for both directions: client to object store and back."""

from __future__ import annotations

from collections.abc import Mapping

from crypto.header import METADATA_KEY
from proxy.acl import check_acl_headers, check_object_ownership
from proxy.errors import S3Error

__all__ = [
    "HEADER_METADATA",
    "OBJECT_LOCK_HEADERS",
    "bucket_create_headers",
    "client_object_headers",
    "governance_bypass_headers",
    "object_lock_headers",
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
# Object lock (WORM) settings of a new object. The object store enforces them,
# and they never reveal plaintext.
# NOTE: AWS requires Content-MD5 or a checksum on every upload that gets a
# retention period, from these headers or from the bucket's default (S3 API
# reference, PutObject). Sealed uploads and parts send neither, so they work in
# front of SeaweedFS 4.48, which requires none, but fail in front of AWS.
OBJECT_LOCK_HEADERS = (
    "x-amz-object-lock-mode",
    "x-amz-object-lock-retain-until-date",
    "x-amz-object-lock-legal-hold",
)
# Accepted on PUT and CreateMultipartUpload and passed on unchanged. ACL
# headers are checked and never forwarded. The proxy signs every request to
# the object store with its own identity, so ACLs there could grant nothing to
# organisations, and a public one would let anonymous readers fetch ciphertext.
_WRITE_HEADERS = (
    *_OBJECT_HEADERS,
    *OBJECT_LOCK_HEADERS,
    "x-amz-storage-class",
    "x-amz-tagging",
    "x-amz-website-redirect-location",
)
# Returned on GET and HEAD as the object store sent them.
_READ_HEADERS = (
    *_OBJECT_HEADERS,
    *OBJECT_LOCK_HEADERS,
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
    and is removed from Content-Encoding. ACL headers are checked, then
    dropped.
    """
    check_acl_headers(client)
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


def object_lock_headers(client: Mapping[str, str]) -> dict[str, str]:
    """Pick the object lock settings a write request gives its new object."""
    return {name: client[name] for name in OBJECT_LOCK_HEADERS if name in client}


def governance_bypass_headers(client: Mapping[str, str]) -> dict[str, str]:
    """Pick `x-amz-bypass-governance-retention` for the object store.

    It lets DeleteObject, DeleteObjects and PutObjectRetention override
    GOVERNANCE retention. The object store checks it, as it checks the
    retention itself.
    """
    name = "x-amz-bypass-governance-retention"
    return {name: client[name]} if name in client else {}


def bucket_create_headers(client: Mapping[str, str]) -> dict[str, str]:
    """Check the headers of a CreateBucket and pick those the object store keeps.

    Only `x-amz-bucket-object-lock-enabled` passes on. ACLs and object
    ownership stay in the proxy (see proxy.acl), which treats every bucket
    as S3 treats one with the BucketOwnerEnforced setting.
    """
    check_acl_headers(client)
    check_object_ownership(client.get("x-amz-object-ownership"))
    name = "x-amz-bucket-object-lock-enabled"
    return {name: client[name]} if name in client else {}


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
