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
import logging
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.context import S3Request
from proxy.errors import S3Error
from proxy.headers import HEADER_METADATA
from proxy.upstream import error_from_response

__all__ = [
    "ForeignObject",
    "foreign_policy_allows",
    "open_foreign",
    "serve_foreign",
    "serves_foreign",
]

log = logging.getLogger("byok.objects")

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


class ForeignObject(S3Error):
    """The addressed object has no encryption header: the proxy did not write it.

    `stored_headers` keeps the object store's response headers, so that a
    caller allowed to read the object needs no second HEAD.
    """

    def __init__(self, stored_headers: Mapping[str, str]) -> None:
        super().__init__(
            "InvalidObjectState",
            "The object was not written through byok-proxy and has no "
            "encryption header. Only GET, HEAD and copy can read such an "
            "object, and only in a bucket whose foreign-objects policy is read",
            403,
        )
        self.stored_headers = CIMultiDictProxy(CIMultiDict(stored_headers))


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
    query = [(name, value) for name, value in s3.query.items() if name in _QUERY]
    upstream = await s3.services.upstream.request(
        method, s3.bucket, s3.key, query=query, headers=headers
    )
    try:
        if upstream.status == 304:
            return web.Response(status=304, headers=_answer_headers(upstream.headers))
        if upstream.status not in (200, 206):
            raise await error_from_response(upstream)
        _check_still_foreign(upstream.headers)
        response = web.StreamResponse(
            status=upstream.status, headers=_answer_headers(upstream.headers)
        )
        response.content_length = _content_length(upstream.headers)
        await response.prepare(s3.http)
        if method == "GET":
            await _write_body(s3, upstream, response)
        else:
            await response.write_eof()
        return response
    finally:
        upstream.release()


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
    version = [(name, value) for name, value in s3.query.items() if name == "versionId"]
    response = await s3.services.upstream.request(
        "GET", s3.bucket, s3.key, query=version, headers=headers
    )
    try:
        if response.status == 412:
            raise _changed()
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
        raise _changed()


def _changed() -> S3Error:
    return S3Error(
        "InternalError", "The object changed while it was being read; retry", 500
    )


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


def _content_length(headers: Mapping[str, str]) -> int:
    value = headers.get("Content-Length", "")
    if not (value.isascii() and value.isdigit()):
        raise S3Error("InternalError", "The object store sent no Content-Length", 502)
    return int(value)


async def _write_body(
    s3: S3Request, upstream: aiohttp.ClientResponse, response: web.StreamResponse
) -> None:
    """Copy the stored bytes to the client; abort the connection on failure.

    The status line is already sent, so a failure can only cut the body
    short, and the client sees fewer bytes than Content-Length promised.
    """
    try:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
    except aiohttp.ClientPayloadError as error:
        log.warning(
            "upstream.failed request=%s bucket=%s key=%r: the object store ended "
            "the body early: %s",
            s3.request_id,
            s3.bucket,
            s3.key,
            error,
        )
        _abort(s3.http)
        return
    except ConnectionError as error:
        # Both connections raise ConnectionError, so the client's transport
        # shows which one failed, as in streams.client_disconnected. That module
        # imports stored.py, which imports this one, so it is not imported.
        transport = s3.http.transport
        if transport is not None and not transport.is_closing():
            raise
        log.info("client.disconnected request=%s: %s", s3.request_id, error)
        return
    await response.write_eof()


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
