"""CopyObject and UploadPartCopy under the destination's name and keys.

A CopyObject whose destination can keep the source's ciphertext gets a
re-tagged header and an object store copy (`proxy.header_copy`). Every
other copy opens the source and seals it again for the destination; both
ends stream, so memory stays bounded whatever the object size.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from xml.etree.ElementTree import SubElement

from aiohttp import web

from crypto.errors import DecryptionFailed
from crypto.header import Layout, Purpose, seal_header
from crypto.sizes import sealed_size
from crypto.stream import StreamSealer
from proxy.catalogue import ObjectRecord
from proxy.checksums import Checksum
from proxy.context import S3Request
from proxy.copy_source import (
    CopySource,
    check_copy_conditions,
    find_source,
    source_plaintext,
)
from proxy.errors import S3Error
from proxy.header_copy import copy_header_only, header_only_possible
from proxy.headers import (
    HEADER_METADATA,
    client_object_headers,
    object_lock_headers,
    upstream_object_headers,
)
from proxy.multipart import open_upload, part_number, seal_part
from proxy.object_checksums import (
    ObjectChecksum,
    b64,
    seal_checksum,
    whole_object,
    xml_name,
)
from proxy.s3xml import document, to_bytes
from proxy.stored import decryption_failed, md5_etag, sealed_etag, stored_checksum
from proxy.streams import Failure, guarded, send_upstream_write
from proxy.transfer import sealed_chunks

__all__ = ["copy_object", "upload_part_copy"]

MAX_COPY_SIZE = 5 * 1024**3
_COPY_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$", re.ASCII)
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
    """Copy an object of the same organisation, sealed again for its new name.

    A foreign source, in a bucket that lets clients read it, is read as
    stored and sealed like a new upload, so a copy onto itself encrypts it.
    """
    source = await find_source(s3)
    check_copy_conditions(s3, source)
    if source.size > MAX_COPY_SIZE:
        raise S3Error(
            "InvalidRequest",
            "The specified copy source is larger than the maximum allowable size "
            "for a copy source: 5368709120",
        )
    headers = _destination_headers(s3, source)
    purpose = s3.services.catalogue.purpose_for(s3.bucket, s3.key)
    written: Mapping[str, str]
    if header_only_possible(s3, source, purpose):
        written, checksum = await copy_header_only(s3, source, headers)
        new_etag = source.etag
    else:
        written, new_etag, checksum = await _copy_sealed(s3, source, headers, purpose)
    answer = document(
        "CopyObjectResult",
        {"LastModified": _now_iso(), "ETag": new_etag},
    )
    if checksum is not None:
        SubElement(answer, checksum.xml_name).text = checksum.value
        SubElement(answer, "ChecksumType").text = checksum.kind
    response = web.Response(body=to_bytes(answer), content_type="application/xml")
    if "x-amz-version-id" in written:
        response.headers["x-amz-version-id"] = written["x-amz-version-id"]
    _copy_source_version(source, response)
    return response


async def _copy_sealed(
    s3: S3Request, source: CopySource, headers: dict[str, str], purpose: Purpose
) -> tuple[Mapping[str, str], str, ObjectChecksum | None]:
    """Stream the source's plaintext and seal it under the destination's keys."""
    dek = s3.services.keyring.current_dek(s3.org_id, purpose)
    header, keys = seal_header(
        dek,
        layout=Layout.SINGLE,
        plaintext_size=source.size,
        bucket=s3.bucket,
        key=s3.key,
    )
    headers[HEADER_METADATA] = header.to_metadata()
    headers["Content-Length"] = str(sealed_size(source.size))
    sealer = StreamSealer(keys.content_key, header.nonce_prefix, source.size)
    running = _copy_checksum(s3, source)
    try:
        async with source_plaintext(source, None) as plaintext:
            failure = Failure()
            observed = _observed(plaintext, running)
            chunks = guarded(sealed_chunks(observed, sealer), failure)
            written = await send_upstream_write(s3, headers, chunks, failure)
    except DecryptionFailed as error:
        raise decryption_failed(source.request, error) from error

    new_etag = md5_etag(sealer.digest)
    checksum = None
    if running is not None:
        checksum = whole_object(running.algorithm, running.digest())
    s3.services.catalogue.record_object(
        ObjectRecord(
            s3.bucket,
            s3.key,
            written.get("ETag", ""),
            source.size,
            sealed_etag(keys, header, new_etag),
            header.encode(),
            sealed_checksum=seal_checksum(keys, header, checksum) if checksum else b"",
        )
    )
    return written, new_etag, checksum


async def upload_part_copy(s3: S3Request) -> web.StreamResponse:
    """Seal a range of a source object, or all of it, as one part."""
    upload, header, keys = open_upload(s3)
    number = part_number(s3)
    source = await find_source(s3)
    check_copy_conditions(s3, source)
    byte_range = _copy_range(s3, source.size)
    size = source.size
    if byte_range is not None:
        size = byte_range[1] - byte_range[0] + 1

    algorithm = upload.checksum.split("/")[0]
    running = Checksum.new(algorithm) if algorithm else None
    try:
        async with source_plaintext(source, byte_range) as plaintext:
            digest, checksum = await seal_part(
                s3,
                upload,
                (header, keys),
                (number, size),
                _observed(plaintext, running),
                checksum=lambda: (algorithm, running.digest()) if running else None,
            )
    except DecryptionFailed as error:
        raise decryption_failed(source.request, error) from error
    answer = document(
        "CopyPartResult", {"LastModified": _now_iso(), "ETag": md5_etag(digest)}
    )
    if checksum is not None:
        SubElement(answer, xml_name(checksum[0])).text = b64(checksum[1])
    response = web.Response(body=to_bytes(answer), content_type="application/xml")
    _copy_source_version(source, response)
    return response


def _copy_checksum(s3: S3Request, source: CopySource) -> Checksum | None:
    """Start the checksum a copy gets: the one asked for, else the source's.

    S3 gives a copy a full-object checksum of the algorithm the request
    names, or of the source's algorithm.
    """
    algorithm = s3.http.headers.get("x-amz-checksum-algorithm", "").strip()
    if not algorithm and source.stored is not None:
        stored = stored_checksum(source.request, source.stored)
        algorithm = stored.algorithm if stored is not None else ""
    return Checksum.new(algorithm) if algorithm else None


async def _observed(
    plaintext: AsyncIterator[bytes], checksum: Checksum | None
) -> AsyncIterator[bytes]:
    """Pass `plaintext` on, feeding it to `checksum` on the way."""
    async for chunk in plaintext:
        if checksum is not None:
            checksum.update(chunk)
        yield chunk


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


def _destination_headers(s3: S3Request, source: CopySource) -> dict[str, str]:
    directive = s3.http.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", f"Unknown metadata directive {directive!r}")
    if directive == "REPLACE":
        return upstream_object_headers(s3.http.headers)
    if _copies_onto_itself(s3, source) and not source.is_foreign:
        raise S3Error(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object "
            "to itself without changing the object's metadata, storage class, "
            "website redirect location or encryption attributes.",
        )
    stored = client_object_headers(source.headers)
    headers = {name: stored[name] for name in _COPIED_HEADERS if name in stored}
    headers.update({k: v for k, v in stored.items() if k.startswith("x-amz-meta-")})
    headers.update(object_lock_headers(s3.http.headers))
    return headers


def _copies_onto_itself(s3: S3Request, source: CopySource) -> bool:
    """Whether the copy writes the current version of its own source.

    Copying an older version onto its key restores it, which S3 allows.
    """
    return source.request.target == s3.target and "versionId" not in (
        source.request.query
    )


def _copy_source_version(source: CopySource, response: web.StreamResponse) -> None:
    """Name the source version that was copied, as S3 does for versioned sources."""
    version = source.headers.get("x-amz-version-id")
    if version is not None:
        response.headers["x-amz-copy-source-version-id"] = version


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
