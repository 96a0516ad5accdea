"""The source of CopyObject and UploadPartCopy: its address, facts and bytes.

`find_source` parses x-amz-copy-source, checks that the organisation owns
the source bucket and HEADs the source. `source_plaintext` then streams the
source's plaintext: opened segment by segment for an object the proxy
wrote, or as stored for a foreign object that its bucket lets clients read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from urllib.parse import unquote

import aiohttp
from multidict import MultiDict, MultiDictProxy

from proxy.addressing import Target
from proxy.buckets import require_owner
from proxy.conditions import check_conditions
from proxy.context import S3Request
from proxy.errors import S3Error
from proxy.foreign import foreign_policy_allows, open_foreign
from proxy.lookup import content_length, head_stored
from proxy.object_reads import plan_read
from proxy.stored import ForeignObject, StoredObject, object_etag
from proxy.transfer import opened_chunks
from proxy.upstream import error_from_response

__all__ = [
    "CopySource",
    "check_copy_conditions",
    "find_source",
    "parse_copy_source",
    "source_plaintext",
]

_VERSION_MARK = "?versionId="
_COPY_CONDITIONS = {
    "x-amz-copy-source-if-match": "If-Match",
    "x-amz-copy-source-if-none-match": "If-None-Match",
    "x-amz-copy-source-if-modified-since": "If-Modified-Since",
    "x-amz-copy-source-if-unmodified-since": "If-Unmodified-Since",
}


@dataclass(frozen=True)
class CopySource:
    """The copy source as the client sees it.

    `request` is the copy request addressed to the source, with its
    versionId. `headers` are the object store's HEAD response headers,
    `etag` and `size` the plaintext ETag and size. `stored` is None for a
    foreign object, whose stored bytes are its plaintext.
    """

    request: S3Request
    headers: Mapping[str, str]
    etag: str
    size: int
    stored: StoredObject | None

    @property
    def is_foreign(self) -> bool:
        """Whether the source has no encryption header."""
        return self.stored is None


def parse_copy_source(value: str) -> tuple[str, str, str | None]:
    """Split x-amz-copy-source into bucket, key and version id, as S3 does.

    Clients percent-encode `bucket/key` but append `?versionId=ID` as it
    is, and send a `?` inside a key as %3F. So the version id is split off
    at the last literal `?versionId=` before anything is decoded. One
    leading `/` is allowed.
    """
    text = value.removeprefix("/")
    path, mark, version = text.rpartition(_VERSION_MARK)
    if not mark:
        path, version = text, ""
    bucket, _, key = _decode(path).partition("/")
    if not bucket or not key:
        raise S3Error(
            "InvalidArgument",
            "Copy Source must mention the source bucket and key: "
            "sourcebucket/sourcekey",
        )
    if not mark:
        return bucket, key, None
    if not version:
        raise S3Error("InvalidArgument", "Version id cannot be the empty string")
    return bucket, key, _decode(version)


async def find_source(s3: S3Request) -> CopySource:
    """Address, authorise and HEAD the source that x-amz-copy-source names."""
    bucket, key, version = parse_copy_source(s3.http.headers["x-amz-copy-source"])
    query: MultiDict[str] = MultiDict()
    if version is not None:
        query["versionId"] = version
    source = replace(s3, target=Target(bucket, key), query=MultiDictProxy(query))
    require_owner(source)
    try:
        stored, headers = await head_stored(source)
    except ForeignObject as error:
        if not foreign_policy_allows(source):
            raise
        headers = error.stored_headers
        size = content_length(headers)
        return CopySource(source, headers, headers.get("ETag", ""), size, None)
    etag = await object_etag(source, stored)
    return CopySource(source, headers, etag, stored.plaintext_size, stored)


def check_copy_conditions(s3: S3Request, source: CopySource) -> None:
    """Evaluate the x-amz-copy-source-if-* headers against the source."""
    conditions = {
        plain: s3.http.headers[name]
        for name, plain in _COPY_CONDITIONS.items()
        if name in s3.http.headers
    }
    try:
        check_conditions(conditions, source.etag, source.headers.get("Last-Modified"))
    except S3Error as error:
        if error.status != 304:
            raise
        # a copy fails every unmet condition with 412, 304 included
        raise S3Error(
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
            412,
        ) from None


@asynccontextmanager
async def source_plaintext(
    source: CopySource, byte_range: tuple[int, int] | None
) -> AsyncIterator[AsyncIterator[bytes]]:
    """Stream the source's plaintext, whole or the inclusive `byte_range`.

    A sealed source raises DecryptionFailed from the stream when a segment
    fails its check. Both kinds of read are pinned to the stored ETag, so
    a source replaced since its HEAD fails instead of mixing two objects.
    """
    stored = source.stored
    if stored is None:
        etag = source.headers.get("ETag", "")
        response = await open_foreign(source.request, etag, byte_range)
        try:
            yield response.content.iter_any()
        finally:
            response.release()
        return
    pieces = plan_read(stored, byte_range)
    start, end = 0, stored.stored_size
    if byte_range is not None:
        start, end = pieces[0].stored_start, pieces[-1].stored_end
    response = await _open_sealed(source.request, stored, start, end)
    try:
        yield opened_chunks(response.content.iter_any(), pieces, start)
    finally:
        response.release()


async def _open_sealed(
    source: S3Request, stored: StoredObject, start: int, end: int
) -> aiohttp.ClientResponse:
    """GET the stored bytes [start, end) of the source, pinned to its ETag."""
    headers = {"If-Match": stored.backend_etag}
    whole = start == 0 and end == stored.stored_size
    if not whole:
        headers["Range"] = f"bytes={start}-{end - 1}"
    response = await source.services.upstream.request(
        "GET",
        source.bucket,
        source.key,
        query=list(source.query.items()),
        headers=headers,
    )
    if response.status != (200 if whole else 206):
        try:
            raise await error_from_response(response)
        finally:
            response.release()
    return response


def _decode(text: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError as error:
        raise S3Error(
            "InvalidArgument",
            "The copy source is not valid UTF-8 after percent-decoding",
        ) from error
