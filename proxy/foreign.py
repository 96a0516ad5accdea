"""Objects in a proxy bucket that the proxy did not write: foreign objects.

A foreign object has no encryption header, for example because it was
stored before the bucket was put behind the proxy. Each bucket has a policy
for them in the catalogue. "refuse", the default, rejects every read with
403 InvalidObjectState. "read" serves GET and HEAD with the stored bytes
and headers, and lets CopyObject and UploadPartCopy read the source as it
is, so that copying a foreign object onto itself encrypts it in place.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
from aiohttp import web

from proxy.context import S3Request
from proxy.errors import object_changed
from proxy.headers import HEADER_METADATA
from proxy.lookup import content_length, version_query
from proxy.ranges import range_from_start
from proxy.stored import ForeignObject
from proxy.streams import client_may_leave, relay
from proxy.upstream import error_from_response

__all__ = [
    "foreign_policy_allows",
    "open_foreign",
    "serve_foreign",
    "serves_foreign",
]

Handler = Callable[[S3Request], Awaitable[web.StreamResponse]]

# Passed to the object store so that it evaluates them on the stored bytes,
# which are the bytes the client receives.
_REQUEST_HEADERS = (
    "Range",
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
)
_QUERY = (
    "versionId",
    "partNumber",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
)
# Headers of the object store's response that describe the object; the
# x-amz-* names except those below pass as well.
_RESPONSE_HEADERS = (
    "Accept-Ranges",
    "Cache-Control",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Range",
    "Content-Type",
    "ETag",
    "Expires",
    "Last-Modified",
)
# The object store's request ids name its own request, not the client's.
_DROPPED_HEADERS = ("x-amz-request-id", "x-amz-id-2")
_RESERVED_METADATA = "x-amz-meta-byok-"
# The largest object S3 stores: 5 TiB.
_MAX_OBJECT_SIZE = 5 * 2**40


def foreign_policy_allows(s3: S3Request) -> bool:
    """Return whether the addressed bucket lets clients read foreign objects."""
    return s3.services.catalogue.foreign_objects(s3.bucket) == "read"


def serves_foreign(handler: Handler) -> Handler:
    """Wrap GetObject or HeadObject to serve foreign objects under "read".

    The wrapped handler raises ForeignObject before it prepares a response,
    so the fallback can still respond. Under "refuse" the error goes to the
    client unchanged.
    """

    @functools.wraps(handler)
    async def serve(s3: S3Request) -> web.StreamResponse:
        try:
            return await handler(s3)
        except ForeignObject:
            if not foreign_policy_allows(s3):
                raise
            return await serve_foreign(s3, s3.http.method)

    return serve


async def serve_foreign(s3: S3Request, method: str) -> web.StreamResponse:
    """Forward a GET or HEAD of a foreign object and stream the response back.

    Range, conditional headers, versionId, partNumber and the response
    header overrides go to the object store, which evaluates them on the
    stored bytes, the same bytes the client receives.
    """
    headers = {
        name: s3.http.headers[name]
        for name in _REQUEST_HEADERS
        if name in s3.http.headers
    }
    if "Range" in headers:
        headers["Range"] = _bounded_range(headers["Range"])
    query = [(name, value) for name, value in s3.query.items() if name in _QUERY]
    upstream = await s3.services.upstream.request(
        method, s3.bucket, s3.key, query=query, headers=headers
    )
    try:
        if upstream.status == 304:
            return web.Response(status=304, headers=_answer_headers(upstream.headers))
        if upstream.status not in (200, 206):
            error = await error_from_response(upstream)
            if upstream.status == 416 and "Content-Range" in upstream.headers:
                # the stored size is the plaintext size of a foreign object
                error.headers["Content-Range"] = upstream.headers["Content-Range"]
            raise error
        _check_still_foreign(upstream.headers)
        response = web.StreamResponse(
            status=upstream.status, headers=_answer_headers(upstream.headers)
        )
        response.content_length = content_length(upstream.headers)
        async with client_may_leave(s3):
            await response.prepare(s3.http)
            if method == "GET":
                await relay(s3, upstream.content.iter_any(), response)
            else:
                await response.write_eof()
        return response
    finally:
        upstream.release()


def _bounded_range(value: str) -> str:
    """Return `value` with a last byte beyond any object's size left open.

    S3 cuts such a range at the object's end, but SeaweedFS 4.48 rejects a
    last byte that overflows int64 with 416. `bytes=first-` means the same
    for every object S3 can store.
    """
    requested = range_from_start(value)
    if requested is None:
        return value
    first, last = requested
    if last is None or last < _MAX_OBJECT_SIZE:
        return value
    return f"bytes={first}-"


async def open_foreign(
    s3: S3Request, etag: str, byte_range: tuple[int, int] | None
) -> aiohttp.ClientResponse:
    """GET a foreign object, or `byte_range` of it, pinned to its stored ETag.

    The caller releases the response. An object replaced since its HEAD
    fails with 500 InternalError, which clients retry.
    """
    headers = {"If-Match": etag}
    if byte_range is not None:
        headers["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
    response = await s3.services.upstream.request(
        "GET", s3.bucket, s3.key, query=version_query(s3), headers=headers
    )
    try:
        if response.status == 412:
            raise object_changed()
        if response.status != (200 if byte_range is None else 206):
            raise await error_from_response(response)
        _check_still_foreign(response.headers)
    except BaseException:
        response.release()
        raise
    return response


def _check_still_foreign(headers: Mapping[str, str]) -> None:
    """Raise if the object was replaced by one the proxy wrote.

    Without this check a proxy write between the first request and this
    one would send ciphertext to the client as if it were the object.
    """
    if HEADER_METADATA in headers:
        raise object_changed()


def _answer_headers(stored: Mapping[str, str]) -> dict[str, str]:
    """Pick the object store's headers that describe the object.

    Names under x-amz-meta-byok- are the proxy's own; a foreign object
    should have none, and they are dropped if it does.
    """
    headers = {name: stored[name] for name in _RESPONSE_HEADERS if name in stored}
    for name, value in stored.items():
        lower = name.lower()
        if not lower.startswith("x-amz-") or lower in _DROPPED_HEADERS:
            continue
        if lower.startswith(_RESERVED_METADATA):
            continue
        headers[lower] = value
    return headers
