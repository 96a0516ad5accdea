"""Moving bodies between the client and the object store.

Uploads: the sealed stream goes upstream with an exact Content-Length. If
the client body fails a check or ends early, the stream raises, so the
upstream request is cut short and the object store discards it.

Downloads: plaintext is released segment by segment after each tag
verified. A failure before the first byte returns a clean S3 error; a later
one aborts the connection, so the client sees a short body, never wrong
bytes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

from crypto.errors import DecryptionFailed, KeyRevoked, SizeMismatch
from proxy.context import S3Request
from proxy.errors import S3Error, object_changed
from proxy.stored import decryption_failed
from proxy.transfer import Piece, opened_chunks
from proxy.upstream import error_from_response

__all__ = [
    "Failure",
    "client_disconnected",
    "client_may_leave",
    "guarded",
    "relay",
    "send_upstream_write",
    "stream_plaintext",
]

log = logging.getLogger("byok.objects")

# Plaintext bytes a download sends between two checks that its organisation
# is still active, so that a revocation also cuts downloads in progress.
_REVOCATION_CHECK_BYTES = 1024 * 1024
# TODO: uploads in progress are not checked, so one that started before a
# revocation still stores its object. Its DEK is destroyed, so the object
# cannot be read.


class Failure:
    """The first exception a guarded upload stream raised, if any."""

    def __init__(self) -> None:
        self.error: BaseException | None = None


async def guarded(
    chunks: AsyncIterable[bytes], failure: Failure
) -> AsyncIterator[bytes]:
    """Pass `chunks` on, remembering what made them fail.

    The HTTP client wraps an exception raised by a request body in its own
    connection error. Keeping the original lets the handler report the
    client's real mistake (BadDigest, IncompleteBody) instead.
    """
    try:
        async for chunk in chunks:
            yield chunk
    except BaseException as error:
        failure.error = error
        raise


async def send_upstream_write(
    s3: S3Request,
    headers: dict[str, str],
    chunks: AsyncIterable[bytes],
    failure: Failure,
    query: Sequence[tuple[str, str]] = (),
) -> CIMultiDictProxy[str]:
    """PUT a sealed stream upstream and return the response headers."""
    try:
        response = await s3.services.upstream.request(
            "PUT", s3.bucket, s3.key, query=query, headers=headers, body=chunks
        )
    except (S3Error, aiohttp.ClientError) as error:
        if failure.error is None:
            log.warning(
                "upstream.failed request=%s bucket=%s key=%r: %s",
                s3.request_id,
                s3.bucket,
                s3.key,
                error.__cause__ or error,
            )
        raise _upload_error(failure, error) from None
    async with response:
        if failure.error is not None:
            raise _upload_error(failure, failure.error) from None
        if response.status != 200:
            raise await error_from_response(response)
        await response.read()
        return response.headers


def _upload_error(failure: Failure, fallback: BaseException) -> BaseException:
    error = failure.error
    if isinstance(error, SizeMismatch):
        return S3Error(
            "IncompleteBody",
            "You did not provide the number of bytes specified by the "
            "Content-Length HTTP header",
        )
    return error or fallback


async def stream_plaintext(
    s3: S3Request,
    upstream: aiohttp.ClientResponse,
    pieces: Sequence[Piece],
    first_stored: int,
    headers: dict[str, str],
    content_length: int,
    status: int = 200,
) -> web.StreamResponse:
    """Send the plaintext of `pieces`, opened from the upstream body."""
    try:
        if upstream.status not in (200, 206):
            raise await _read_error(upstream)
        chunks = opened_chunks(upstream.content.iter_any(), pieces, first_stored)
        first = await _next_chunk(s3, chunks)
        if len(first) == content_length:
            # The whole body is open and verified once the stream ends, so
            # one write carries the headers and the body.
            if await _next_chunk(s3, chunks):
                raise decryption_failed(s3, "more plaintext than planned")
            return web.Response(status=status, headers=headers, body=first)
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = content_length
        async with client_may_leave(s3):
            await response.prepare(s3.http)
            if first:
                await response.write(first)
            await relay(s3, chunks, response)
        return response
    finally:
        upstream.release()


def client_disconnected(request: web.Request) -> bool:
    """Return whether the client closed the connection of `request`.

    A write to a closed client raises ConnectionError or aiohttp's
    ClientConnectionResetError. The HTTP client to the object store raises
    that class too, so the check looks at the transport, not the class.
    """
    transport = request.transport
    return transport is None or transport.is_closing()


async def _next_chunk(s3: S3Request, chunks: AsyncIterator[bytes]) -> bytes:
    """Return the next plaintext chunk, or b"" at the end, before any response."""
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return b""
    except DecryptionFailed as error:
        raise decryption_failed(s3, error) from error
    except aiohttp.ClientPayloadError as error:
        raise S3Error(
            "InternalError", "The object store ended the object early", 502
        ) from error


@asynccontextmanager
async def client_may_leave(s3: S3Request) -> AsyncIterator[None]:
    """Log and swallow a write failure caused by the client closing the connection."""
    try:
        yield
    except ConnectionError as error:
        if not client_disconnected(s3.http):
            raise
        log.info("client.disconnected request=%s: %s", s3.request_id, error)


async def relay(
    s3: S3Request, chunks: AsyncIterable[bytes], response: web.StreamResponse
) -> None:
    """Write the rest of a prepared response; abort the connection on failure.

    The status line is already sent, so a failure can only cut the body
    short. The organisation is checked every megabyte, so that a revocation
    also cuts a download in progress.
    """
    unchecked = 0
    try:
        async for chunk in chunks:
            unchecked += len(chunk)
            if unchecked >= _REVOCATION_CHECK_BYTES:
                _ensure_active(s3)
                unchecked = 0
            await response.write(chunk)
    except DecryptionFailed as error:
        decryption_failed(s3, error)
        _abort(s3.http)
        return
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
    except KeyRevoked:
        log.warning(
            "object.read_revoked request=%s bucket=%s key=%r: the organisation "
            "was revoked during the download",
            s3.request_id,
            s3.bucket,
            s3.key,
        )
        _abort(s3.http)
        return
    await response.write_eof()


def _ensure_active(s3: S3Request) -> None:
    """Raise KeyRevoked if another process revoked the organisation meanwhile."""
    keyring = s3.services.keyring
    keyring.refresh()
    keyring.ensure_active(s3.org_id)


def _abort(request: web.Request) -> None:
    """Close the client connection without finishing the response."""
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _read_error(upstream: aiohttp.ClientResponse) -> S3Error:
    if upstream.status == 412:
        return object_changed()
    return await error_from_response(upstream)
