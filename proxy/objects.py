"""Object handlers: PutObject, HeadObject, DeleteObject.

GetObject lives in proxy/object_reads.py.
"""

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
from proxy.foreign import serves_foreign
from proxy.headers import (
    HEADER_METADATA,
    governance_bypass_headers,
    upstream_object_headers,
)
from proxy.lookup import head_stored, version_query
from proxy.object_checksums import seal_checksum, whole_object
from proxy.object_reads import checksum_headers, part_headers, part_range, read_headers
from proxy.stored import md5_etag, object_etag, sealed_etag
from proxy.streams import Failure, guarded, send_upstream_write
from proxy.transfer import sealed_chunks
from proxy.upstream import error_from_response
from proxy.write_conditions import write_conditions

__all__ = ["delete_object", "head_object", "put_object"]


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
    part = part_range(s3, stored)
    status, length = 200, stored.plaintext_size
    if part is not None:
        status, length = 206, part[1] - part[0] + 1
        headers.update(part_headers(stored, part))
    headers.update(checksum_headers(s3, stored, whole=True))
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    await response.prepare(s3.http)
    await response.write_eof()
    return response


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


def _copy_header(
    source: Mapping[str, str], answer: web.StreamResponse, name: str
) -> None:
    value = source.get(name)
    if value is not None:
        answer.headers[name] = value
