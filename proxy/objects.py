"""Object handlers: PutObject, GetObject, HeadObject, DeleteObject."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from crypto.header import Layout, seal_header
from crypto.sizes import sealed_size
from crypto.stream import StreamSealer
from proxy.body import RequestBody, plaintext_length
from proxy.catalogue import ObjectRecord
from proxy.conditions import check_conditions
from proxy.context import S3Request
from proxy.errors import S3Error
from proxy.foreign import serves_foreign
from proxy.headers import (
    HEADER_METADATA,
    client_object_headers,
    governance_bypass_headers,
    upstream_object_headers,
)
from proxy.lookup import content_length, head_stored, read_query, version_query
from proxy.multipart import part_number
from proxy.object_checksums import (
    COMPOSITE,
    checksum_mode,
    seal_checksum,
    whole_object,
)
from proxy.ranges import parse_range
from proxy.stored import (
    StoredObject,
    md5_etag,
    object_etag,
    open_stored,
    sealed_etag,
    stored_checksum,
)
from proxy.streams import Failure, guarded, send_upstream_write, stream_plaintext
from proxy.transfer import Piece, plan_multipart, plan_single, sealed_chunks
from proxy.upstream import error_from_response
from proxy.write_conditions import write_conditions

__all__ = [
    "delete_object",
    "get_object",
    "head_object",
    "head_stored",
    "plan_read",
    "put_object",
    "read_headers",
]


async def put_object(s3: S3Request) -> web.StreamResponse:
    """Encrypt the request body into a new object."""
    services = s3.services
    request = s3.http
    size = plaintext_length(request.headers, s3.identity.payload.mode)
    headers = upstream_object_headers(request.headers)
    purpose = services.catalogue.purpose_for(s3.bucket, s3.key)
    dek = services.keyring.current_dek(s3.org_id, purpose)
    header, keys = seal_header(
        dek, layout=Layout.SINGLE, plaintext_size=size, bucket=s3.bucket, key=s3.key
    )
    headers[HEADER_METADATA] = header.to_metadata()
    headers["Content-Length"] = str(sealed_size(size))
    headers.update(await write_conditions(s3))

    # seal while streaming; the final segment waits for every check to pass
    body = RequestBody(
        request.content.iter_any(),
        request.headers,
        s3.identity.payload,
    )
    sealer = StreamSealer(keys.content_key, header.nonce_prefix, size)
    failure = Failure()
    chunks = guarded(
        sealed_chunks(body.chunks(), sealer, before_final=body.verify), failure
    )
    stored = await send_upstream_write(s3, headers, chunks, failure)

    etag = md5_etag(sealer.digest)
    checksum = None
    if body.presented:
        checksum = whole_object(body.presented, body.digest(body.presented))
    services.catalogue.record_object(
        ObjectRecord(
            s3.bucket,
            s3.key,
            stored.get("ETag", ""),
            size,
            sealed_etag(keys, header, etag),
            header.encode(),
            sealed_checksum=seal_checksum(keys, header, checksum) if checksum else b"",
        )
    )
    answer = web.Response(status=200, headers={"ETag": etag})
    _copy_header(stored, answer, "x-amz-version-id")
    if checksum is not None:
        answer.headers.update(checksum.headers())
    return answer


@serves_foreign
async def head_object(s3: S3Request) -> web.StreamResponse:
    """Return the plaintext size, ETag and metadata of an object or one part."""
    stored, upstream_headers = await head_stored(s3)
    etag = await object_etag(s3, stored)
    headers = read_headers(upstream_headers, etag)
    check_conditions(s3.http.headers, etag, upstream_headers.get("Last-Modified"))
    part = _part_range(s3, stored)
    status, length = 200, stored.plaintext_size
    if part is not None:
        status, length = 206, part[1] - part[0] + 1
        headers.update(_part_headers(stored, part))
    headers.update(_checksum_headers(s3, stored, whole=True))
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    await response.prepare(s3.http)
    await response.write_eof()
    return response


@serves_foreign
async def get_object(s3: S3Request) -> web.StreamResponse:
    """Stream an object's plaintext, whole, one range or one part."""
    range_header = s3.http.headers.get("Range")
    if "partNumber" in s3.query and range_header is not None:
        raise S3Error(
            "InvalidRequest",
            "Cannot specify both Range header and partNumber query parameter",
        )
    if range_header is None and "partNumber" not in s3.query:
        return await _get_whole(s3)

    # a range or a part: the header and size first, then the covering segments
    stored, upstream_headers = await head_stored(s3)
    part = _part_range(s3, stored)
    byte_range = part or parse_range(range_header, stored.plaintext_size)
    if byte_range is None:
        return await _get_whole(s3)
    etag = await object_etag(s3, stored)
    check_conditions(s3.http.headers, etag, upstream_headers.get("Last-Modified"))
    headers = read_headers(upstream_headers, etag)
    if part is not None:
        headers.update(_part_headers(stored, part))
    headers.update(_checksum_headers(s3, stored, whole=part is not None))
    if byte_range[1] < byte_range[0]:
        return web.Response(status=206, headers=headers)

    pieces = plan_read(stored, byte_range)
    first_stored, end_stored = pieces[0].stored_start, pieces[-1].stored_end
    upstream = await s3.services.upstream.request(
        "GET",
        s3.bucket,
        s3.key,
        query=version_query(s3),
        headers={
            "Range": f"bytes={first_stored}-{end_stored - 1}",
            "If-Match": stored.backend_etag,
        },
    )
    first, last = byte_range
    headers["Content-Range"] = f"bytes {first}-{last}/{stored.plaintext_size}"
    return await stream_plaintext(
        s3, upstream, pieces, first_stored, headers, last - first + 1, status=206
    )


async def delete_object(s3: S3Request) -> web.StreamResponse:
    """Delete an object, or one version of it."""
    response = await s3.services.upstream.request(
        "DELETE",
        s3.bucket,
        s3.key,
        query=version_query(s3),
        headers=governance_bypass_headers(s3.http.headers),
    )
    async with response:
        if response.status >= 300:
            raise await error_from_response(response)
        # The catalogue keeps the object's record: in a versioned bucket older
        # versions stay readable and need their part tables.
        # TODO: prune the records of objects and versions that are gone.
        answer = web.Response(status=response.status)
        _copy_header(response.headers, answer, "x-amz-version-id")
        _copy_header(response.headers, answer, "x-amz-delete-marker")
        return answer


async def _get_whole(s3: S3Request) -> web.StreamResponse:
    upstream = await s3.services.upstream.request(
        "GET", s3.bucket, s3.key, query=read_query(s3)
    )
    try:
        if upstream.status != 200:
            raise await error_from_response(upstream)
        stored = open_stored(s3, upstream.headers, content_length(upstream.headers))
        etag = await object_etag(s3, stored)
        check_conditions(s3.http.headers, etag, upstream.headers.get("Last-Modified"))
    except BaseException:
        upstream.release()
        raise
    headers = read_headers(upstream.headers, etag)
    try:
        headers.update(_checksum_headers(s3, stored, whole=True))
    except BaseException:
        upstream.release()
        raise
    return await stream_plaintext(
        s3, upstream, plan_read(stored, None), 0, headers, stored.plaintext_size
    )


def _part_range(s3: S3Request, stored: StoredObject) -> tuple[int, int] | None:
    """Return the plaintext range of the part that ?partNumber selects.

    Parts are counted in the order the upload completed them, and an object
    written by a single PUT is part 1. An empty part gives `(offset,
    offset - 1)`.
    """
    if "partNumber" not in s3.query:
        return None
    number = part_number(s3)
    sizes = [p.plaintext_size for p in stored.parts] or [stored.plaintext_size]
    if number > len(sizes):
        raise S3Error(
            "InvalidPartNumber", "The requested partnumber is not satisfiable", 416
        )
    offset = sum(sizes[: number - 1])
    return offset, offset + sizes[number - 1] - 1


def _checksum_headers(
    s3: S3Request, stored: StoredObject, *, whole: bool
) -> dict[str, str]:
    """Return the stored checksum headers when the client asks for them.

    S3 returns checksums only for a whole object or one part (`whole`), never
    for a byte range. A part of a COMPOSITE multipart object gets its own
    part checksum.
    """
    if not whole or not checksum_mode(s3.http.headers):
        return {}
    checksum = stored_checksum(s3, stored)
    if checksum is None:
        return {}
    if "partNumber" in s3.query and stored.is_multipart:
        if checksum.kind != COMPOSITE:
            return {}
        value = checksum.parts[part_number(s3) - 1]
        return {
            f"x-amz-checksum-{checksum.algorithm}": value,
            "x-amz-checksum-type": COMPOSITE,
        }
    return checksum.headers()


def _part_headers(stored: StoredObject, part: tuple[int, int]) -> dict[str, str]:
    first, last = part
    headers = {"Content-Range": f"bytes {first}-{last}/{stored.plaintext_size}"}
    if stored.is_multipart:
        headers["x-amz-mp-parts-count"] = str(len(stored.parts))
    return headers


def plan_read(stored: StoredObject, byte_range: tuple[int, int] | None) -> list[Piece]:
    if stored.is_multipart:
        return plan_multipart(stored.header, stored.keys, stored.parts, byte_range)
    return plan_single(stored.header, stored.keys, byte_range)


def read_headers(upstream: Mapping[str, str], etag: str) -> dict[str, str]:
    headers = client_object_headers(upstream)
    headers["ETag"] = etag
    headers["Accept-Ranges"] = "bytes"
    return headers


def _copy_header(
    source: Mapping[str, str], answer: web.StreamResponse, name: str
) -> None:
    value = source.get(name)
    if value is not None:
        answer.headers[name] = value
