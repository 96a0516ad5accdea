"""Object handlers: PutObject, GetObject, HeadObject, DeleteObject."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from multidict import CIMultiDict

from crypto.header import Layout, seal_header
from crypto.sizes import sealed_size
from crypto.stream import StreamSealer
from proxy.body import RequestBody, plaintext_length
from proxy.catalogue import ObjectRecord
from proxy.conditions import check_conditions
from proxy.context import S3Request
from proxy.errors import S3Error
from proxy.headers import (
    HEADER_METADATA,
    client_object_headers,
    upstream_object_headers,
)
from proxy.multipart import part_number
from proxy.passthrough import body_digest_headers, forward, read_body
from proxy.ranges import parse_range
from proxy.sigv4 import payload_mode
from proxy.stored import (
    StoredObject,
    md5_etag,
    object_etag,
    open_stored,
    sealed_etag,
)
from proxy.streams import Failure, guarded, send_upstream_write, stream_plaintext
from proxy.transfer import Piece, plan_multipart, plan_single, sealed_chunks
from proxy.upstream import error_from_response

__all__ = [
    "delete_object",
    "delete_objects",
    "get_object",
    "head_object",
    "head_stored",
    "plan_read",
    "put_object",
    "read_headers",
]

_VERSION_QUERY = ("versionId",)
_GET_OVERRIDES = (
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
)


async def put_object(s3: S3Request) -> web.StreamResponse:
    """Encrypt the request body into a new object."""
    services = s3.services
    request = s3.http
    size = plaintext_length(request.headers, payload_mode(s3.identity.auth))
    headers = upstream_object_headers(request.headers)
    purpose = services.catalogue.purpose_for(s3.bucket, s3.key)
    dek = services.keyring.current_dek(s3.org_id, purpose)
    header, keys = seal_header(
        dek, layout=Layout.SINGLE, plaintext_size=size, bucket=s3.bucket, key=s3.key
    )
    headers[HEADER_METADATA] = header.to_metadata()
    headers["Content-Length"] = str(sealed_size(size))
    headers.update(await _write_conditions(s3))

    # seal while streaming; the final segment waits for every check to pass
    body = RequestBody(
        request.content.iter_any(),
        request.headers,
        s3.identity.auth,
        s3.identity.context,
    )
    sealer = StreamSealer(keys.content_key, header.nonce_prefix, size)
    failure = Failure()
    chunks = guarded(
        sealed_chunks(body.chunks(), sealer, before_final=body.verify), failure
    )
    stored = await send_upstream_write(s3, headers, chunks, failure)

    etag = md5_etag(sealer.digest)
    services.catalogue.record_object(
        ObjectRecord(
            s3.bucket,
            s3.key,
            stored.get("ETag", ""),
            size,
            sealed_etag(keys, header, etag),
            header.encode(),
        )
    )
    answer = web.Response(status=200, headers={"ETag": etag})
    _copy_header(stored, answer, "x-amz-version-id")
    for name, value in request.headers.items():
        if name.lower().startswith("x-amz-checksum-"):
            answer.headers[name] = value
    return answer


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
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    await response.prepare(s3.http)
    await response.write_eof()
    return response


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
    if byte_range[1] < byte_range[0]:
        return web.Response(status=206, headers=headers)

    pieces = plan_read(stored, byte_range)
    first_stored, end_stored = pieces[0].stored_start, pieces[-1].stored_end
    upstream = await s3.services.upstream.request(
        "GET",
        s3.bucket,
        s3.key,
        query=_query(s3, _VERSION_QUERY),
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
        "DELETE", s3.bucket, s3.key, query=_query(s3, _VERSION_QUERY)
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


async def delete_objects(s3: S3Request) -> web.StreamResponse:
    """Delete several objects; the body passes upstream unchanged."""
    body = await read_body(s3)
    headers = body_digest_headers(s3.http.headers)
    return await forward(s3, "POST", query=[("delete", "")], headers=headers, body=body)


async def _get_whole(s3: S3Request) -> web.StreamResponse:
    upstream = await s3.services.upstream.request(
        "GET", s3.bucket, s3.key, query=_query(s3, _VERSION_QUERY + _GET_OVERRIDES)
    )
    try:
        if upstream.status != 200:
            raise await error_from_response(upstream)
        stored = open_stored(s3, upstream.headers, _content_length(upstream.headers))
        etag = await object_etag(s3, stored)
        check_conditions(s3.http.headers, etag, upstream.headers.get("Last-Modified"))
    except BaseException:
        upstream.release()
        raise
    headers = read_headers(upstream.headers, etag)
    return await stream_plaintext(
        s3, upstream, plan_read(stored, None), 0, headers, stored.plaintext_size
    )


async def _write_conditions(s3: S3Request) -> dict[str, str]:
    """Check a conditional PUT and return the conditions for the object store.

    If-Match names the plaintext ETag, so the proxy compares it and then
    passes the stored ETag on, and the object store checks again at write
    time. If-None-Match: * needs no translation.
    """
    conditions: dict[str, str] = {}
    if_none_match = s3.http.headers.get("If-None-Match")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise S3Error(
                "NotImplemented",
                "A PUT accepts only If-None-Match: *",
                501,
            )
        conditions["If-None-Match"] = "*"
    if_match = s3.http.headers.get("If-Match")
    if if_match is not None:
        stored, _ = await head_stored(s3)
        etag = await object_etag(s3, stored)
        check_conditions({"If-Match": if_match}, etag, None)
        conditions["If-Match"] = stored.backend_etag
    return conditions


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


def _part_headers(stored: StoredObject, part: tuple[int, int]) -> dict[str, str]:
    first, last = part
    headers = {"Content-Range": f"bytes {first}-{last}/{stored.plaintext_size}"}
    if stored.is_multipart:
        headers["x-amz-mp-parts-count"] = str(len(stored.parts))
    return headers


async def head_stored(s3: S3Request) -> tuple[StoredObject, Mapping[str, str]]:
    """HEAD the addressed object upstream and open its header."""
    response = await s3.services.upstream.request(
        "HEAD", s3.bucket, s3.key, query=_query(s3, _VERSION_QUERY + _GET_OVERRIDES)
    )
    async with response:
        if response.status != 200:
            raise await error_from_response(response)
        headers = CIMultiDict(response.headers)
    stored = open_stored(s3, response.headers, _content_length(response.headers))
    return stored, headers


def plan_read(stored: StoredObject, byte_range: tuple[int, int] | None) -> list[Piece]:
    if stored.is_multipart:
        return plan_multipart(stored.header, stored.keys, stored.parts, byte_range)
    return plan_single(stored.header, stored.keys, byte_range)


def read_headers(upstream: Mapping[str, str], etag: str) -> dict[str, str]:
    headers = client_object_headers(upstream)
    headers["ETag"] = etag
    headers["Accept-Ranges"] = "bytes"
    return headers


def _content_length(headers: Mapping[str, str]) -> int:
    value = headers.get("Content-Length", "")
    if not value.isdigit():
        raise S3Error("InternalError", "The object store sent no Content-Length", 502)
    return int(value)


def _query(s3: S3Request, names: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in s3.query.items() if name in names]


def _copy_header(
    source: Mapping[str, str], answer: web.StreamResponse, name: str
) -> None:
    value = source.get(name)
    if value is not None:
        answer.headers[name] = value
