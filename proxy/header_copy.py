"""CopyObject without moving the body: a new header over the same ciphertext.

A single-stream object opens with its DEK and salt only, and its header tag
binds its name. A copy to another name of the same purpose therefore needs
only a re-tagged header: the object store copies the ciphertext itself, and
nothing new is encrypted under the source's content key. The sealed ETag
and checksum are bound to the salt, not the name, so they carry over too.

The body must go through the proxy when the copy changes what it is
encrypted under or how it is laid out: a destination that routes to another
purpose (another DEK), a foreign source (stored unencrypted), a multipart
source (S3 gives the copy a single-part ETag, which needs the plaintext
MD5), a copy that requests a checksum algorithm the source has no value for,
and a copy that sets object lock, which not every store applies on copies.
"""

from __future__ import annotations

from urllib.parse import quote

from multidict import CIMultiDictProxy

from crypto.header import Purpose, reseal_header
from proxy.catalogue import ObjectRecord
from proxy.context import S3Request
from proxy.copy_source import CopySource
from proxy.headers import HEADER_METADATA, object_lock_headers
from proxy.object_checksums import ObjectChecksum
from proxy.s3xml import result_etag
from proxy.stored import sealed_etag, stored_checksum
from proxy.upstream import error_from_response

__all__ = ["copy_header_only", "header_only_possible"]


def header_only_possible(s3: S3Request, source: CopySource, purpose: Purpose) -> bool:
    """Return whether this copy can keep the source's ciphertext."""
    stored = source.stored
    if stored is None or stored.is_multipart or stored.header.purpose != purpose:
        return False
    if object_lock_headers(s3.http.headers):
        # SeaweedFS ignores lock headers on a copy, but applies them on a PUT
        return False
    requested = s3.http.headers.get("x-amz-checksum-algorithm", "").strip().lower()
    if not requested:
        return True
    existing = stored_checksum(source.request, stored)
    return existing is not None and existing.algorithm == requested


async def copy_header_only(
    s3: S3Request, source: CopySource, headers: dict[str, str]
) -> tuple[CIMultiDictProxy[str], ObjectChecksum | None]:
    """Copy the stored ciphertext under a header re-tagged for the destination.

    `headers` are the destination's object headers. The object store copies
    only if the source is still the version the proxy examined. Returns the
    store's response headers, with the new backend ETag, and the checksum.
    """
    stored = source.stored
    assert stored is not None, "a foreign source is sealed, not copied"
    header = reseal_header(stored.header, stored.keys, bucket=s3.bucket, key=s3.key)
    upstream_headers = {
        **headers,
        HEADER_METADATA: header.to_metadata(),
        "x-amz-copy-source": _copy_source(source),
        "x-amz-copy-source-if-match": stored.backend_etag,
        "x-amz-metadata-directive": "REPLACE",
    }
    response = await s3.services.upstream.request(
        "PUT", s3.bucket, s3.key, headers=upstream_headers
    )
    async with response:
        if response.status != 200:
            raise await error_from_response(response)
        body = await response.read()
        backend_etag = result_etag(body, "CopyObjectResult")
        written = response.headers
    checksum = stored_checksum(source.request, stored)
    s3.services.catalogue.record_object(
        ObjectRecord(
            s3.bucket,
            s3.key,
            backend_etag,
            stored.plaintext_size,
            sealed_etag(stored.keys, stored.header, source.etag),
            header.encode(),
            sealed_checksum=stored.record.sealed_checksum if stored.record else b"",
        )
    )
    return written, checksum


def _copy_source(source: CopySource) -> str:
    target = source.request.target
    value = quote(f"/{target.bucket}/{target.key}", safe="/~")
    version = source.request.query.get("versionId")
    return value if version is None else f"{value}?versionId={quote(version)}"
