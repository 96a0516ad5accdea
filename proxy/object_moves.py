"""Move one object onto its organisation's current keys, in the object store.

A rewrap changes only the header: the object store copies the object onto
itself with new metadata, so the ciphertext stays byte for byte. A
re-encryption opens the body and seals it again under the current DEK with
a fresh salt, as one stream or as the same parts. Every write is
conditional on the ETag that the scan saw, so a client's newer write wins.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from urllib.parse import quote, urlencode
from xml.etree.ElementTree import SubElement

from crypto.errors import DecryptionFailed
from crypto.header import (
    DataKey,
    Header,
    Layout,
    ObjectKeys,
    open_header,
    part_key,
    reseal_header,
    seal_header,
)
from crypto.keyring import KeyRing
from crypto.sealed import open_value
from crypto.sizes import PART_SALT_SIZE, part_stored_size, sealed_size
from crypto.stream import StreamSealer
from proxy.catalogue import Catalogue, ObjectRecord
from proxy.copy import MAX_COPY_SIZE
from proxy.errors import S3Error
from proxy.headers import HEADER_METADATA
from proxy.object_checksums import ObjectChecksum, open_checksum, seal_checksum
from proxy.s3xml import document, parse_xml, result_etag, result_text, to_bytes
from proxy.scan import Listed, Scanned
from proxy.stored import composite_etag, etag_label, md5_etag, sealed_etag
from proxy.streams import Failure, guarded
from proxy.transfer import (
    PartLayout,
    Piece,
    opened_chunks,
    plan_multipart,
    plan_single,
    sealed_chunks,
)
from proxy.upstream import Body, Upstream, error_from_response

__all__ = ["MAX_COPY_SIZE", "MoveFailed", "Mover", "ObjectChanged", "move"]

log = logging.getLogger("byok.reencrypt")

# Object headers that a move writes again as the object store returned them.
_KEPT_HEADERS = (
    "Cache-Control",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Type",
    "Expires",
    "x-amz-storage-class",
    "x-amz-website-redirect-location",
)


class ObjectChanged(Exception):
    """The object was replaced or deleted after the scan read it."""


class MoveFailed(Exception):
    """An object cannot be moved; the message gives the reason."""


@dataclass(frozen=True)
class Mover:
    """The services a move uses: the object store, the keys and the catalogue."""

    upstream: Upstream
    keyring: KeyRing
    catalogue: Catalogue


async def move(
    mover: Mover, scanned: Scanned, header: Header, current: DataKey, rewrap: bool
) -> None:
    """Rewrap or re-encrypt one object onto `current`, conditional on its ETag."""
    listed = scanned.listed
    dek = mover.keyring.dek(
        header.org_id,
        header.purpose,
        header.org_key_version,
        header.dek_version,
        header.wrapped_dek,
    )
    keys = open_header(header, dek, bucket=listed.bucket, key=listed.key)
    record = mover.catalogue.object(listed.bucket, listed.key, scanned.etag)
    if rewrap:
        if not hmac.compare_digest(dek, current.key):
            raise MoveFailed(
                f"the header's DEK differs from DEK version {current.dek_version} "
                "in the key store; the key store is inconsistent"
            )
        await _rewrap(mover, scanned, (header, keys), current, record)
    elif header.layout is Layout.SINGLE:
        await _reencrypt_single(mover, scanned, (header, keys), current, record)
    else:
        await _reencrypt_multipart(mover, scanned, (header, keys), current, record)


async def _rewrap(
    mover: Mover,
    scanned: Scanned,
    opened: tuple[Header, ObjectKeys],
    current: DataKey,
    record: ObjectRecord | None,
) -> None:
    """Copy the object onto itself under a header naming the active org key."""
    listed = scanned.listed
    if scanned.size > MAX_COPY_SIZE:
        # TODO: move the header of larger objects with UploadPartCopy.
        raise MoveFailed(
            f"the object is {scanned.size} bytes, more than one copy can move"
        )
    header, keys = opened
    new_header = reseal_header(
        header,
        keys,
        bucket=listed.bucket,
        key=listed.key,
        wrapped_dek=current.wrapped,
        org_key_version=current.org_key_version,
    )
    headers = {
        **_kept_headers(scanned.stored),
        HEADER_METADATA: new_header.to_metadata(),
        "x-amz-copy-source": quote(f"/{listed.bucket}/{listed.key}", safe="/~"),
        "x-amz-copy-source-if-match": scanned.etag,
        "x-amz-metadata-directive": "REPLACE",
    }
    body = await _send(mover.upstream, "PUT", listed, headers=headers)
    new_etag = result_etag(body, "CopyObjectResult")
    # the keys stay, so the sealed ETag, checksum and part table still open
    if record is not None:
        mover.catalogue.record_object(
            replace(record, backend_etag=new_etag, header=new_header.encode())
        )


async def _reencrypt_single(
    mover: Mover,
    scanned: Scanned,
    opened: tuple[Header, ObjectKeys],
    current: DataKey,
    record: ObjectRecord | None,
) -> None:
    """Open the one stream and seal it again under the current DEK."""
    listed = scanned.listed
    header, keys = opened
    size = header.plaintext_size
    if scanned.size != sealed_size(size):
        raise MoveFailed(
            f"the stored size {scanned.size} does not match the header's "
            f"plaintext size {size}"
        )
    etag, checksum = _carried_values(opened, record)

    # a fresh salt, so nothing is sealed twice under one key and nonce
    new_header, new_keys = seal_header(
        current,
        layout=Layout.SINGLE,
        plaintext_size=size,
        bucket=listed.bucket,
        key=listed.key,
    )
    sealer = StreamSealer(new_keys.content_key, new_header.nonce_prefix, size)
    headers = {
        **_kept_headers(scanned.stored),
        **await _tagging(mover.upstream, scanned),
        HEADER_METADATA: new_header.to_metadata(),
        "Content-Length": str(sealed_size(size)),
        "If-Match": scanned.etag,
    }

    # both ends stream, and both are conditional on the ETag the scan saw
    async with _source(mover.upstream, scanned, None) as stored:
        plaintext = opened_chunks(stored, plan_single(header, keys, None), 0)
        new_etag = await _put_sealed(
            mover.upstream, listed, headers, sealed_chunks(plaintext, sealer)
        )

    sealed_check = seal_checksum(new_keys, new_header, checksum) if checksum else b""
    mover.catalogue.record_object(
        ObjectRecord(
            listed.bucket,
            listed.key,
            new_etag,
            size,
            sealed_etag(new_keys, new_header, etag or md5_etag(sealer.digest)),
            new_header.encode(),
            sealed_checksum=sealed_check,
        )
    )


@dataclass(frozen=True)
class _NewPart:
    number: int
    plaintext_size: int
    part_salt: bytes
    backend_etag: str
    digest: bytes


async def _reencrypt_multipart(
    mover: Mover,
    scanned: Scanned,
    opened: tuple[Header, ObjectKeys],
    current: DataKey,
    record: ObjectRecord | None,
) -> None:
    """Seal every part again under the current DEK, as a new multipart upload."""
    listed = scanned.listed
    if record is None or not record.parts:
        raise MoveFailed("the catalogue has no part table for this stored ETag")
    layouts = [PartLayout(n, size, salt) for n, size, salt in record.parts]
    expected = sum(part_stored_size(part.plaintext_size) for part in layouts)
    if scanned.size != expected:
        raise MoveFailed(
            f"the stored size {scanned.size} does not match the part table ({expected})"
        )
    etag, checksum = _carried_values(opened, record)

    new_header, new_keys = seal_header(
        current,
        layout=Layout.MULTIPART,
        plaintext_size=0,
        bucket=listed.bucket,
        key=listed.key,
    )
    headers = {
        **_kept_headers(scanned.stored),
        **await _tagging(mover.upstream, scanned),
        HEADER_METADATA: new_header.to_metadata(),
    }
    upload_id = result_text(
        await _send(mover.upstream, "POST", listed, [("uploads", "")], headers),
        "InitiateMultipartUploadResult",
        "UploadId",
    )

    # every part keeps its number and plaintext size, so the part table and
    # the composite ETag that clients see stay the same
    completed = False
    try:
        pieces = plan_multipart(opened[0], opened[1], layouts, None)
        parts = []
        for layout, piece in zip(layouts, pieces, strict=True):
            parts.append(
                await _reencrypt_part(
                    mover, scanned, (new_header, new_keys), upload_id, layout, piece
                )
            )
        new_record = ObjectRecord(
            listed.bucket,
            listed.key,
            _predicted_etag(parts),
            record.plaintext_size,
            sealed_etag(
                new_keys, new_header, etag or composite_etag([p.digest for p in parts])
            ),
            new_header.encode(),
            tuple((p.number, p.plaintext_size, p.part_salt) for p in parts),
            seal_checksum(new_keys, new_header, checksum) if checksum else b"",
        )
        # the part table is recorded first, so no reader finds the new
        # object without it
        mover.catalogue.record_object(new_record)
        new_etag = await _complete(mover.upstream, scanned, upload_id, parts)
        completed = True
        if new_etag != new_record.backend_etag:
            mover.catalogue.record_object(replace(new_record, backend_etag=new_etag))
    finally:
        if not completed:
            await asyncio.shield(_abort(mover.upstream, listed, upload_id))


async def _reencrypt_part(
    mover: Mover,
    scanned: Scanned,
    sealed_under: tuple[Header, ObjectKeys],
    upload_id: str,
    layout: PartLayout,
    piece: Piece,
) -> _NewPart:
    """Read one part's stream, open it and upload it sealed as the same part."""
    header, keys = sealed_under
    number, size = layout.part_number, layout.plaintext_size
    part_salt = os.urandom(PART_SALT_SIZE)
    sealer = StreamSealer(part_key(keys, part_salt, number), header.nonce_prefix, size)
    stored_range = (piece.stored_start, piece.stored_end - 1)
    async with _source(mover.upstream, scanned, stored_range) as stored:
        plaintext = opened_chunks(stored, [piece], piece.stored_start)
        backend_etag = await _put_sealed(
            mover.upstream,
            scanned.listed,
            {"Content-Length": str(part_stored_size(size))},
            sealed_chunks(plaintext, sealer, part_salt),
            [("partNumber", str(number)), ("uploadId", upload_id)],
        )
    return _NewPart(number, size, part_salt, backend_etag, sealer.digest)


def _carried_values(
    opened: tuple[Header, ObjectKeys], record: ObjectRecord | None
) -> tuple[str | None, ObjectChecksum | None]:
    """Open the plaintext ETag and checksum that the catalogue keeps sealed.

    They describe the plaintext, which a move keeps, so the moved object
    shows clients the same values.
    """
    if record is None or not record.header:
        return None, None
    header, keys = opened
    etag = open_value(keys, record.sealed_etag, etag_label(header)).decode()
    return etag, open_checksum(keys, header, record.sealed_checksum)


def _kept_headers(stored: Mapping[str, str]) -> dict[str, str]:
    """Pick the headers and user metadata that the rewritten object keeps."""
    headers = {name: stored[name] for name in _KEPT_HEADERS if name in stored}
    for name, value in stored.items():
        lower = name.lower()
        if lower.startswith("x-amz-meta-") and lower != HEADER_METADATA:
            headers[lower] = value
    return headers


async def _tagging(upstream: Upstream, scanned: Scanned) -> dict[str, str]:
    """Read the object's tags for a rewrite; a copy keeps them by itself."""
    count = scanned.stored.get("x-amz-tagging-count", "0")
    if not count.isdigit() or int(count) == 0:
        return {}
    body = await _send(upstream, "GET", scanned.listed, [("tagging", "")])
    root = parse_xml(body, what="object tagging")
    tags = [
        (tag.findtext("Key") or "", tag.findtext("Value") or "")
        for tag in root.iter("Tag")
    ]
    return {"x-amz-tagging": urlencode(tags)}


def _predicted_etag(parts: list[_NewPart]) -> str:
    """Predict the object store's ETag: MD5 of the part MD5s, dash, count.

    A store whose part ETags are not MD5 digests gets "", and the record is
    then written again under the ETag that the completion returns.
    """
    try:
        joined = b"".join(bytes.fromhex(p.backend_etag.strip('"')) for p in parts)
    except ValueError:
        return ""
    return f'"{hashlib.md5(joined).hexdigest()}-{len(parts)}"'


# requests to the object store


@asynccontextmanager
async def _source(
    upstream: Upstream, scanned: Scanned, stored_range: tuple[int, int] | None
) -> AsyncIterator[AsyncIterator[bytes]]:
    """GET the stored bytes of the version the scan saw and yield its chunks."""
    headers = {"If-Match": scanned.etag}
    expected = 200
    if stored_range is not None:
        headers["Range"] = f"bytes={stored_range[0]}-{stored_range[1]}"
        expected = 206
    listed = scanned.listed
    response = await upstream.request("GET", listed.bucket, listed.key, headers=headers)
    try:
        if response.status in (404, 412):
            raise ObjectChanged()
        if response.status != expected:
            raise await error_from_response(response)
        yield response.content.iter_any()
    finally:
        response.release()


async def _put_sealed(
    upstream: Upstream,
    listed: Listed,
    headers: dict[str, str],
    chunks: AsyncIterator[bytes],
    query: list[tuple[str, str]] | None = None,
) -> str:
    """PUT a sealed stream; return the stored ETag.

    An error from the source stream, such as a segment that fails to open,
    is raised as itself rather than as the HTTP client's connection error.
    """
    failure = Failure()
    body = guarded(chunks, failure)
    try:
        response = await upstream.request(
            "PUT",
            listed.bucket,
            listed.key,
            query=query or [],
            headers=headers,
            body=body,
        )
    except S3Error:
        _raise_source_failure(failure)
        raise
    async with response:
        _raise_source_failure(failure)
        if response.status in (404, 412):
            raise ObjectChanged()
        if response.status != 200:
            raise await error_from_response(response)
        await response.read()
        return response.headers.get("ETag", "")


def _raise_source_failure(failure: Failure) -> None:
    error = failure.error
    if error is None:
        return
    if isinstance(error, DecryptionFailed):
        raise error
    raise S3Error(
        "InternalError", f"reading the stored object failed: {error}", 502
    ) from error


async def _send(
    upstream: Upstream,
    method: str,
    listed: Listed,
    query: list[tuple[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    body: Body = None,
) -> bytes:
    """Send a request about one object and return the body of its 200 response.

    404 and 412 mean that the object is no longer the one the scan saw.
    """
    response = await upstream.request(
        method, listed.bucket, listed.key, query=query or [], headers=headers, body=body
    )
    async with response:
        if response.status in (404, 412):
            raise ObjectChanged()
        if response.status != 200:
            raise await error_from_response(response)
        return await response.read()


async def _complete(
    upstream: Upstream, scanned: Scanned, upload_id: str, parts: list[_NewPart]
) -> str:
    """Complete the upload only if the object is still the one the scan saw."""
    root = document("CompleteMultipartUpload")
    for part in parts:
        element = SubElement(root, "Part")
        SubElement(element, "PartNumber").text = str(part.number)
        SubElement(element, "ETag").text = part.backend_etag
    body = await _send(
        upstream,
        "POST",
        scanned.listed,
        [("uploadId", upload_id)],
        {"Content-Type": "application/xml", "If-Match": scanned.etag},
        to_bytes(root),
    )
    return result_etag(body, "CompleteMultipartUploadResult")


async def _abort(upstream: Upstream, listed: Listed, upload_id: str) -> None:
    try:
        response = await upstream.request(
            "DELETE", listed.bucket, listed.key, query=[("uploadId", upload_id)]
        )
        response.release()
    except S3Error as error:
        log.warning(
            "reencrypt.abort_failed bucket=%s key=%r upload=%s: %s; the object "
            "store keeps the parts until the upload is aborted",
            listed.bucket,
            listed.key,
            upload_id,
            error,
        )
