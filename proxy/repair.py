"""Record in the catalogue the objects a listing finds but it does not know.

A listing shows plaintext ETags and sizes from catalogue records, one
upstream request per page. Some objects have no record: they were written
before the catalogue existed, or restored from a backup of the object
store. Each is opened once instead, with a HEAD for its header and a ranged
GET of its final segments, where the sealed MD5 travels. The record this
writes serves every later listing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from proxy.catalogue import ObjectRecord
from proxy.context import S3Request
from proxy.errors import S3Error
from proxy.lookup import addressed, content_length, head_stored
from proxy.stored import ForeignObject, object_etag

__all__ = ["learn_objects"]

log = logging.getLogger("byok.objects")

# Objects opened at once while a listing waits for them.
_CONCURRENCY = 8


async def learn_objects(s3: S3Request, missing: Iterable[tuple[str, str]]) -> None:
    """Open each `(key, version_id)` so that the catalogue records it.

    An object the proxy did not write is recorded as foreign, with an empty
    header. Objects that cannot be opened (a multipart object whose part
    table is lost) are logged and left out.
    """
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def learn(key: str, version_id: str) -> None:
        version = version_id if version_id and version_id != "null" else None
        target = addressed(s3, key, version)
        async with limit:
            try:
                stored, _ = await head_stored(target)
                await object_etag(target, stored)
            except ForeignObject as foreign:
                _record_foreign(target, foreign.stored_headers)
            except S3Error as error:
                log.info(
                    "listing.unknown_object request=%s bucket=%s key=%r: %s",
                    s3.request_id,
                    s3.bucket,
                    key,
                    error.code,
                )

    await asyncio.gather(*(learn(key, version) for key, version in missing))


def _record_foreign(s3: S3Request, headers: Mapping[str, str]) -> None:
    """Record an object the proxy did not write, so listings stop opening it."""
    size = content_length(headers)
    s3.services.catalogue.record_object(
        ObjectRecord(s3.bucket, s3.key, headers.get("ETag", ""), size, b"", b"")
    )
