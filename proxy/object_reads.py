"""GetObject: a whole object, one byte range or one part, as plaintext.

A whole object takes one upstream GET, whose response carries the header
in its metadata. So does a range `bytes=first-last` or `bytes=first-`: the
segments that contain it can be named before the object's size is known,
because every segment of a single stream has the same stored size. A
multipart object's part salts move its segments, so once its header shows
it, the covering segments are fetched with a second GET pinned to the
stored ETag. Suffix ranges and `partNumber` reads need the size first and
start with a HEAD.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from aiohttp import web

from crypto.sizes import covering_bounds
from proxy.conditions import check_conditions
from proxy.context import S3Request
from proxy.errors import S3Error
from proxy.foreign import serves_foreign
from proxy.headers import client_object_headers
from proxy.lookup import content_length, head_stored, read_query, version_query
from proxy.multipart import part_number
from proxy.object_checksums import COMPOSITE, checksum_mode
from proxy.ranges import parse_range, range_from_start
from proxy.stored import StoredObject, object_etag, open_stored, stored_checksum
from proxy.streams import stream_plaintext
from proxy.transfer import Piece, plan_multipart, plan_single
from proxy.upstream import error_from_response

__all__ = [
    "checksum_headers",
    "get_object",
    "part_headers",
    "part_range",
    "plan_read",
    "read_headers",
]


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
    if range_header is not None:
        plaintext_range = range_from_start(range_header)
        if plaintext_range is not None:
            return await _get_range_at_once(s3, range_header, *plaintext_range)

    # a suffix range or a part: the header and size first
    stored, upstream_headers = await head_stored(s3)
    return await _get_part_or_range(s3, stored, upstream_headers, range_header)


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
        headers = read_headers(upstream.headers, etag)
        headers.update(checksum_headers(s3, stored, whole=True))
    except BaseException:
        upstream.release()
        raise
    return await stream_plaintext(
        s3, upstream, plan_read(stored, None), 0, headers, stored.plaintext_size
    )


async def _get_range_at_once(
    s3: S3Request, range_header: str, first: int, last: int | None
) -> web.StreamResponse:
    """GET the segments of a single stream that contain the range, and its header.

    The response's metadata and Content-Range give the header and the
    stored size. If the object turns out to need other bytes, because it
    is multipart or the range is unsatisfiable, the response is dropped and
    the read goes on from its header.
    """
    start, end = covering_bounds(first, last)
    requested = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
    upstream = await s3.services.upstream.request(
        "GET", s3.bucket, s3.key, query=read_query(s3), headers={"Range": requested}
    )
    try:
        if upstream.status == 416:
            upstream.release()
            stored, upstream_headers = await head_stored(s3)
            return await _get_part_or_range(s3, stored, upstream_headers, range_header)
        if upstream.status not in (200, 206):
            raise await error_from_response(upstream)
        fetched_start, fetched_end, stored_size = _fetched(upstream)
        stored = open_stored(s3, upstream.headers, stored_size)
        byte_range = parse_range(range_header, stored.plaintext_size)
        assert byte_range is not None  # parse_range ignores no `first-` range
        pieces = plan_read(stored, byte_range)
        if not _covers(pieces, fetched_start, fetched_end):
            upstream.release()
            return await _get_part_or_range(s3, stored, upstream.headers, range_header)
        etag = await object_etag(s3, stored)
        check_conditions(s3.http.headers, etag, upstream.headers.get("Last-Modified"))
        headers = read_headers(upstream.headers, etag)
    except BaseException:
        upstream.release()
        raise
    return await _stream_range(
        s3, stored, upstream, pieces, fetched_start, headers, byte_range
    )


def _fetched(upstream: aiohttp.ClientResponse) -> tuple[int, int, int]:
    """Return the body's stored offsets `[start, end)` and the object's stored size."""
    length = content_length(upstream.headers)
    if upstream.status == 200:
        return 0, length, length
    content_range = upstream.headers.get("Content-Range", "")
    unit_and_span, _, total = content_range.rpartition("/")
    first = unit_and_span.removeprefix("bytes ").partition("-")[0]
    if not (
        first.isascii() and first.isdigit() and total.isascii() and total.isdigit()
    ):
        raise S3Error(
            "InternalError", "The object store sent no valid Content-Range", 502
        )
    return int(first), int(first) + length, int(total)


def _covers(pieces: list[Piece], fetched_start: int, fetched_end: int) -> bool:
    """Return whether the fetched body covers the stored bytes of `pieces`."""
    return (
        fetched_start <= pieces[0].stored_start and pieces[-1].stored_end <= fetched_end
    )


async def _get_part_or_range(
    s3: S3Request,
    stored: StoredObject,
    upstream_headers: Mapping[str, str],
    range_header: str | None,
) -> web.StreamResponse:
    """Read one part or range of an object whose header is open already.

    The covering segments are fetched pinned to the stored ETag, so that a
    concurrent overwrite fails the read instead of mixing two objects.
    """
    part = part_range(s3, stored)
    byte_range = part or parse_range(range_header, stored.plaintext_size)
    if byte_range is None:
        return await _get_whole(s3)
    etag = await object_etag(s3, stored)
    check_conditions(s3.http.headers, etag, upstream_headers.get("Last-Modified"))
    headers = read_headers(upstream_headers, etag)
    if part is not None:
        headers.update(part_headers(stored, part))
    headers.update(checksum_headers(s3, stored, whole=part is not None))
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
    return await _stream_range(
        s3, stored, upstream, pieces, first_stored, headers, byte_range
    )


async def _stream_range(
    s3: S3Request,
    stored: StoredObject,
    upstream: aiohttp.ClientResponse,
    pieces: list[Piece],
    fetched_start: int,
    headers: dict[str, str],
    byte_range: tuple[int, int],
) -> web.StreamResponse:
    first, last = byte_range
    headers["Content-Range"] = f"bytes {first}-{last}/{stored.plaintext_size}"
    return await stream_plaintext(
        s3, upstream, pieces, fetched_start, headers, last - first + 1, status=206
    )


def part_range(s3: S3Request, stored: StoredObject) -> tuple[int, int] | None:
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


def checksum_headers(
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


def part_headers(stored: StoredObject, part: tuple[int, int]) -> dict[str, str]:
    """Return the Content-Range and part count of a `partNumber` read."""
    first, last = part
    headers = {"Content-Range": f"bytes {first}-{last}/{stored.plaintext_size}"}
    if stored.is_multipart:
        headers["x-amz-mp-parts-count"] = str(len(stored.parts))
    return headers


def plan_read(stored: StoredObject, byte_range: tuple[int, int] | None) -> list[Piece]:
    """Plan the read of `byte_range` of a stored object, or of all of it."""
    if stored.is_multipart:
        return plan_multipart(stored.header, stored.keys, stored.parts, byte_range)
    return plan_single(stored.header, stored.keys, byte_range)


def read_headers(upstream: Mapping[str, str], etag: str) -> dict[str, str]:
    """Return the headers of a GET or HEAD response: the stored ones and the ETag."""
    headers = client_object_headers(upstream)
    headers["ETag"] = etag
    headers["Accept-Ranges"] = "bytes"
    return headers
