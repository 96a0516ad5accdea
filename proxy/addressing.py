"""Find the bucket and object key of an S3 request, path or virtual-hosted style."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from proxy.errors import S3Error

__all__ = ["Target", "encode_key", "parse_target", "validate_bucket_name"]

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


@dataclass(frozen=True)
class Target:
    """The addressed resource: the service, a bucket, or an object."""

    bucket: str = ""
    key: str = ""


def parse_target(raw_path: str, host: str, domain: str) -> Target:
    """Split a request into bucket and key.

    `raw_path` is the path as sent, still percent-encoded and without the
    query. With a configured `domain`, a Host of `bucket.domain` selects
    virtual-hosted style; otherwise the first path segment is the bucket.
    """
    path = raw_path.split("?", 1)[0]
    if not path.startswith("/"):
        raise S3Error("InvalidURI", f"Couldn't parse the specified URI: {raw_path}")
    bucket = _virtual_host_bucket(host, domain)
    if bucket:
        return Target(bucket, _decode(path[1:]))
    name, _, key = path[1:].partition("/")
    return Target(_decode(name), _decode(key))


def validate_bucket_name(bucket: str) -> None:
    """Reject names that S3 does not allow for new buckets."""
    if not _BUCKET_NAME.match(bucket) or ".." in bucket or _IP_ADDRESS.match(bucket):
        raise S3Error(
            "InvalidBucketName",
            f"The bucket name {bucket!r} is not valid: use 3 to 63 lowercase "
            "letters, digits, dots and hyphens",
        )


def encode_key(key: str) -> str:
    """Percent-encode an object key once, keeping `/`, for an upstream URL."""
    return quote(key, safe="/-_.~")


def _virtual_host_bucket(host: str, domain: str) -> str:
    if not domain:
        return ""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    suffix = "." + domain
    if name.endswith(suffix) and len(name) > len(suffix):
        return name[: -len(suffix)]
    return ""


def _decode(text: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError as error:
        raise S3Error(
            "InvalidURI", "The object key is not valid UTF-8 after decoding"
        ) from error
