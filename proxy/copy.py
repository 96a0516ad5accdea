"""CopyObject: the source is opened and sealed again under the destination's keys.

A copy never carries the source's ciphertext: the destination may belong to
another bucket, purpose or DEK version, and its header binds its own name.
Both ends stream, so memory stays bounded whatever the object size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from crypto.errors import DecryptionFailed
from crypto.header import Layout, seal_header
from crypto.sizes import sealed_size
from crypto.stream import StreamSealer
from proxy.addressing import Target
from proxy.buckets import require_owner
from proxy.catalogue import ObjectRecord
from proxy.conditions import check_conditions
from proxy.context import S3Request
from proxy.errors import S3Error
from proxy.headers import (
    HEADER_METADATA,
    client_object_headers,
    upstream_object_headers,
)
from proxy.multipart import open_upload, part_number, seal_part
from proxy.objects import head_stored, plan_read
from proxy.s3xml import document, to_bytes
from proxy.stored import (
    StoredObject,
    decryption_failed,
    md5_etag,
    object_etag,
    sealed_etag,
)
from proxy.streams import Failure, guarded, send_upstream_write
from proxy.transfer import opened_chunks, sealed_chunks
from proxy.upstream import error_from_response

__all__ = ["copy_object", "upload_part_copy"]

MAX_COPY_SIZE = 5 * 1024**3
_COPY_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$", re.ASCII)
_COPY_CONDITIONS = {
    "x-amz-copy-source-if-match": "If-Match",
    "x-amz-copy-source-if-none-match": "If-None-Match",
    "x-amz-copy-source-if-modified-since": "If-Modified-Since",
    "x-amz-copy-source-if-unmodified-since": "If-Unmodified-Since",
}
# Stored with the object and copied along with the COPY metadata directive.
_COPIED_HEADERS = (
    "Cache-Control",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Type",
    "Expires",
)


async def copy_object(s3: S3Request) -> web.StreamResponse:
    """Copy an object of the same organisation, sealed again for its new name."""
    source = _source_request(s3)
    require_owner(source)
    stored, source_headers = await head_stored(source)
    etag = await object_etag(source, stored)
    _check_copy_conditions(s3, etag, source_headers.get("Last-Modified"))
    if stored.plaintext_size > MAX_COPY_SIZE:
        raise S3Error(
            "InvalidRequest",
            "The specified copy source is larger than the maximum allowable size "
            "for a copy source: 5368709120",
        )
    headers = _destination_headers(s3, source, source_headers)

    # open the source as it arrives and seal it for the destination
    purpose = s3.services.catalogue.purpose_for(s3.bucket, s3.key)
    dek = s3.services.keyring.current_dek(s3.org_id, purpose)
    header, keys = seal_header(
        dek,
        layout=Layout.SINGLE,
        plaintext_size=stored.plaintext_size,
        bucket=s3.bucket,
        key=s3.key,
    )
    headers[HEADER_METADATA] = header.to_metadata()
    headers["Content-Length"] = str(sealed_size(stored.plaintext_size))
    sealer = StreamSealer(keys.content_key, header.nonce_prefix, stored.plaintext_size)
    pieces = plan_read(stored, None)
    upstream = await _open_source(source, stored, 0, stored.stored_size)
    try:
        plaintext = opened_chunks(upstream.content.iter_any(), pieces, 0)
        failure = Failure()
        chunks = guarded(sealed_chunks(plaintext, sealer), failure)
        written = await send_upstream_write(s3, headers, chunks, failure)
    except DecryptionFailed as error:
        raise decryption_failed(source, error) from error
    finally:
        upstream.release()

    new_etag = md5_etag(sealer.digest)
    s3.services.catalogue.record_object(
        ObjectRecord(
            s3.bucket,
            s3.key,
            written.get("ETag", ""),
            stored.plaintext_size,
            sealed_etag(keys, header, new_etag),
            header.encode(),
        )
    )
    answer = document(
        "CopyObjectResult",
        {"LastModified": _now_iso(), "ETag": new_etag},
    )
    response = web.Response(body=to_bytes(answer), content_type="application/xml")
    if "x-amz-version-id" in written:
        response.headers["x-amz-version-id"] = written["x-amz-version-id"]
    return response


async def upload_part_copy(s3: S3Request) -> web.StreamResponse:
    """Seal a range of a source object, or all of it, as one part."""
    upload, header, keys = open_upload(s3)
    number = part_number(s3)
    source = _source_request(s3)
    require_owner(source)
    stored, source_headers = await head_stored(source)
    etag = await object_etag(source, stored)
    _check_copy_conditions(s3, etag, source_headers.get("Last-Modified"))
    byte_range = _copy_range(s3, stored.plaintext_size)
    if byte_range is None:
        size = stored.plaintext_size
        pieces = plan_read(stored, None)
    else:
        size = byte_range[1] - byte_range[0] + 1
        pieces = plan_read(stored, byte_range)

    upstream = await _open_source(
        source, stored, pieces[0].stored_start, pieces[-1].stored_end
    )
    try:
        plaintext = opened_chunks(
            upstream.content.iter_any(), pieces, pieces[0].stored_start
        )
        digest = await seal_part(s3, upload, (header, keys), number, size, plaintext)
    except DecryptionFailed as error:
        raise decryption_failed(source, error) from error
    finally:
        upstream.release()
    answer = document(
        "CopyPartResult", {"LastModified": _now_iso(), "ETag": md5_etag(digest)}
    )
    return web.Response(body=to_bytes(answer), content_type="application/xml")


def _copy_range(s3: S3Request, size: int) -> tuple[int, int] | None:
    """Parse x-amz-copy-source-range, which must name both ends in the source."""
    value = s3.http.headers.get("x-amz-copy-source-range")
    if value is None:
        return None
    match = _COPY_RANGE.match(value)
    if match is None or int(match[1]) > int(match[2]) or int(match[2]) >= size:
        raise S3Error(
            "InvalidRange" if match else "InvalidArgument",
            f"Range specified is not valid for source object of size: {size}",
            416 if match else 400,
        )
    return int(match[1]), int(match[2])


def _source_request(s3: S3Request) -> S3Request:
    """The request as if it addressed the copy source, version included."""
    text = unquote(s3.http.headers["x-amz-copy-source"])
    path, _, query = text.partition("?")
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket or not key:
        raise S3Error(
            "InvalidArgument",
            "Copy Source must mention the source bucket and key: "
            "sourcebucket/sourcekey",
        )
    version: MultiDict[str] = MultiDict()
    if query.startswith("versionId="):
        version["versionId"] = query.removeprefix("versionId=")
    return replace(s3, target=Target(bucket, key), query=MultiDictProxy(version))


def _check_copy_conditions(s3: S3Request, etag: str, last_modified: str | None) -> None:
    conditions = {
        plain: s3.http.headers[name]
        for name, plain in _COPY_CONDITIONS.items()
        if name in s3.http.headers
    }
    try:
        check_conditions(conditions, etag, last_modified)
    except S3Error as error:
        if error.status != 304:
            raise
        # a copy fails every unmet condition with 412, 304 included
        raise S3Error(
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
            412,
        ) from None


def _destination_headers(
    s3: S3Request, source: S3Request, source_headers: Mapping[str, str]
) -> dict[str, str]:
    directive = s3.http.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", f"Unknown metadata directive {directive!r}")
    if directive == "REPLACE":
        return upstream_object_headers(s3.http.headers)
    if source.target == s3.target:
        raise S3Error(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object "
            "to itself without changing the object's metadata, storage class, "
            "website redirect location or encryption attributes.",
        )
    stored = client_object_headers(source_headers)
    headers = {name: stored[name] for name in _COPIED_HEADERS if name in stored}
    headers.update({k: v for k, v in stored.items() if k.startswith("x-amz-meta-")})
    return headers


async def _open_source(
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


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
