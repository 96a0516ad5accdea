"""Conditional GET and HEAD headers, evaluated against the plaintext ETag.

The object store only has the ciphertext's ETag, so the proxy evaluates
these headers itself and never forwards them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime

from proxy.errors import S3Error

__all__ = ["check_conditions", "etag_matches", "parse_http_date"]


def check_conditions(
    headers: Mapping[str, str], etag: str, last_modified: str | None
) -> None:
    """Raise 412 PreconditionFailed or 304 NotModified as S3 would.

    If-Match wins over If-Unmodified-Since, and If-None-Match over
    If-Modified-Since, as in RFC 9110.
    """
    modified = parse_http_date(last_modified)
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not etag_matches(if_match, etag):
            raise _failed("If-Match")
    elif _after(modified, headers.get("If-Unmodified-Since")):
        raise _failed("If-Unmodified-Since")
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        if etag_matches(if_none_match, etag):
            raise _not_modified(etag, last_modified)
    elif _not_after(modified, headers.get("If-Modified-Since")):
        raise _not_modified(etag, last_modified)


def etag_matches(header: str, etag: str) -> bool:
    """Return whether an If-Match or If-None-Match value names `etag` or is *."""
    expected = etag.strip('"')
    for candidate in header.split(","):
        value = candidate.strip().removeprefix("W/").strip('"')
        if value == "*" or value == expected:
            return True
    return False


def _after(modified: datetime | None, header: str | None) -> bool:
    limit = parse_http_date(header)
    return modified is not None and limit is not None and modified > limit


def _not_after(modified: datetime | None, header: str | None) -> bool:
    limit = parse_http_date(header)
    return modified is not None and limit is not None and modified <= limit


def parse_http_date(value: str | None) -> datetime | None:
    """Parse an HTTP date; None if absent or malformed, as S3 then ignores it."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def _failed(condition: str) -> S3Error:
    return S3Error(
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold",
        412,
        resource=condition,
    )


def _not_modified(etag: str, last_modified: str | None) -> S3Error:
    headers = {"ETag": etag}
    if last_modified:
        headers["Last-Modified"] = last_modified
    return S3Error("NotModified", "Not Modified", 304, headers=headers)
