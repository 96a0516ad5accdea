"""Conditional writes: If-Match and If-None-Match on PUT and on completion.

Clients name plaintext ETags, which the object store does not have. The proxy
compares them with the current object's plaintext ETag itself. The write
then goes upstream with the condition that the compared object is still
current, so a concurrent writer in between makes it fail instead of racing.
"""

from __future__ import annotations

from proxy.conditions import check_conditions, etag_matches
from proxy.context import S3Request
from proxy.errors import S3Error
from proxy.lookup import head_stored
from proxy.stored import ForeignObject, object_etag

__all__ = ["write_conditions"]


async def write_conditions(s3: S3Request) -> dict[str, str]:
    """Check a conditional write; return the conditions for the object store.

    If-None-Match: * passes on unchanged. If-Match, and If-None-Match with an
    ETag, need the current object: a missing object fails If-Match with
    NoSuchKey and satisfies If-None-Match.
    """
    headers = s3.http.headers
    if_match = headers.get("If-Match")
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None and if_none_match.strip() == "*":
        return {"If-None-Match": "*"}
    if if_match is None and if_none_match is None:
        return {}
    try:
        stored, _ = await head_stored(s3)
    except ForeignObject as foreign:
        # stored unencrypted, so the store's ETag is already the plaintext's
        etag = backend_etag = foreign.stored_headers.get("ETag", "")
    except S3Error as error:
        if error.code == "NoSuchKey" and if_match is None:
            return {}
        raise
    else:
        etag, backend_etag = await object_etag(s3, stored), stored.backend_etag
    if if_match is not None:
        check_conditions({"If-Match": if_match}, etag, None)
    if if_none_match is not None and etag_matches(if_none_match, etag):
        raise S3Error(
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
            412,
        )
    return {"If-Match": backend_etag}
