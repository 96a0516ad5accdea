"""Opening a stored object: its header, keys, plaintext size and ETag."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy

from crypto.errors import DecryptionFailed
from crypto.header import Header, Layout, ObjectKeys, open_header
from crypto.sealed import open_value, seal_value
from crypto.sizes import digest_span, part_stored_size, sealed_size
from crypto.stream import StreamOpener
from proxy.catalogue import ObjectRecord
from proxy.context import S3Request
from proxy.errors import S3Error, object_changed
from proxy.headers import HEADER_METADATA
from proxy.object_checksums import ObjectChecksum, open_checksum
from proxy.transfer import PartLayout

__all__ = [
    "ForeignObject",
    "StoredObject",
    "composite_etag",
    "decryption_failed",
    "etag_label",
    "md5_etag",
    "object_etag",
    "open_keys",
    "open_stored",
    "recorded_etag",
    "sealed_etag",
    "stored_checksum",
    "unwrap_dek",
]

log = logging.getLogger("byok.objects")


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


@dataclass(frozen=True)
class StoredObject:
    """An object whose header opened: everything needed to read it."""

    header: Header
    keys: ObjectKeys
    backend_etag: str
    stored_size: int
    plaintext_size: int
    parts: tuple[PartLayout, ...]
    record: ObjectRecord | None

    @property
    def is_multipart(self) -> bool:
        """Whether the object was written by a multipart upload."""
        return self.header.layout is Layout.MULTIPART


def decryption_failed(s3: S3Request, reason: object) -> S3Error:
    """Log why an object failed to open and return the error all failures share."""
    log.warning(
        "object.open_failed request=%s bucket=%s key=%r: %s",
        s3.request_id,
        s3.bucket,
        s3.key,
        reason,
    )
    return S3Error(
        "DecryptionFailed",
        "The stored object failed its integrity check and cannot be read",
        400,
    )


def etag_label(header: Header) -> bytes:
    """Associated data binding a sealed ETag to its object."""
    return b"byok-proxy/1 etag" + header.salt


def sealed_etag(keys: ObjectKeys, header: Header, etag: str) -> bytes:
    """Seal a client-visible ETag for the catalogue."""
    return seal_value(keys, etag.encode(), etag_label(header))


def open_stored(
    s3: S3Request, headers: Mapping[str, str], stored_size: int
) -> StoredObject:
    """Check and open the header of a stored object from its response headers.

    Raises ForeignObject when there is no header, and AccessDenied when the
    header names another organisation: the proxy never unwraps another
    organisation's keys for a request.
    """
    text = headers.get(HEADER_METADATA)
    if text is None:
        raise ForeignObject(headers)
    try:
        header = Header.from_metadata(text)
    except DecryptionFailed as error:
        raise decryption_failed(s3, error) from error
    if header.org_id != s3.org_id:
        raise S3Error("AccessDenied", "Access Denied", 403)
    keys = open_keys(s3, header, s3.bucket, s3.key)
    backend_etag = headers.get("ETag", "")
    record = s3.services.catalogue.object(s3.bucket, s3.key, backend_etag)
    parts = _parts(s3, header, record)
    plaintext_size = _plaintext_size(s3, header, parts, stored_size)
    return StoredObject(
        header, keys, backend_etag, stored_size, plaintext_size, parts, record
    )


def recorded_etag(s3: S3Request, record: ObjectRecord) -> str | None:
    """Open the plaintext ETag that a catalogue record sealed, for a listing.

    Returns None when the record names another organisation or fails to
    open, and the listing then keeps the object store's ETag.
    """
    try:
        header = Header.decode(record.header)
        if header.org_id != s3.org_id:
            return None
        dek = unwrap_dek(s3, header)
        keys = open_header(header, dek, bucket=record.bucket, key=record.key)
        etag = open_value(keys, record.sealed_etag, etag_label(header))
    except DecryptionFailed as error:
        log.warning(
            "object.etag_unreadable request=%s bucket=%s key=%r: %s",
            s3.request_id,
            record.bucket,
            record.key,
            error,
        )
        return None
    return etag.decode()


def open_keys(s3: S3Request, header: Header, bucket: str, key: str) -> ObjectKeys:
    """Unwrap the header's DEK and check the header against `bucket` and `key`.

    Every failure, from the DEK unwrap to the header tag, is logged and
    raised as the one error that all decryption failures share.
    """
    try:
        return open_header(header, unwrap_dek(s3, header), bucket=bucket, key=key)
    except DecryptionFailed as error:
        raise decryption_failed(s3, error) from error


def unwrap_dek(s3: S3Request, header: Header) -> bytes:
    """Return the DEK that `header` names, unwrapped by the key ring."""
    return s3.services.keyring.dek(
        header.org_id,
        header.purpose,
        header.org_key_version,
        header.dek_version,
        header.wrapped_dek,
    )


def _parts(
    s3: S3Request, header: Header, record: ObjectRecord | None
) -> tuple[PartLayout, ...]:
    if header.layout is not Layout.MULTIPART:
        return ()
    if record is None:
        # The catalogue records every completed upload under the stored ETag,
        # so a miss means the stored object was replaced or the catalogue lost.
        # TODO: rebuild a lost part table from the object store's
        # partNumber HEADs and the part salts at each part's start.
        raise decryption_failed(s3, "no part table for this stored ETag")
    return tuple(PartLayout(n, size, salt) for n, size, salt in record.parts)


def _plaintext_size(
    s3: S3Request, header: Header, parts: tuple[PartLayout, ...], stored_size: int
) -> int:
    if header.layout is Layout.MULTIPART:
        expected = sum(part_stored_size(p.plaintext_size) for p in parts)
        size = sum(p.plaintext_size for p in parts)
    else:
        expected = sealed_size(header.plaintext_size)
        size = header.plaintext_size
    if stored_size != expected:
        raise decryption_failed(
            s3, f"stored size {stored_size} does not match the header ({expected})"
        )
    return size


async def object_etag(s3: S3Request, stored: StoredObject) -> str:
    """Return the plaintext ETag, from the catalogue or the sealed digest."""
    if stored.record is not None:
        try:
            value = open_value(
                stored.keys, stored.record.sealed_etag, etag_label(stored.header)
            )
        except DecryptionFailed as error:
            raise decryption_failed(s3, error) from error
        return value.decode()
    etag = f'"{(await _read_digest(s3, stored)).hex()}"'
    s3.services.catalogue.record_object(
        ObjectRecord(
            s3.bucket,
            s3.key,
            stored.backend_etag,
            stored.plaintext_size,
            sealed_etag(stored.keys, stored.header, etag),
            stored.header.encode(),
        )
    )
    return etag


async def _read_digest(s3: S3Request, stored: StoredObject) -> bytes:
    """Open the final segments of a single stream to recover its MD5."""
    span = digest_span(stored.plaintext_size)
    response = await s3.services.upstream.request(
        "GET",
        s3.bucket,
        s3.key,
        query=[
            (name, value) for name, value in s3.query.items() if name == "versionId"
        ],
        headers={
            "Range": f"bytes={span.stored_start}-{span.stored_end - 1}",
            "If-Match": stored.backend_etag,
        },
    )
    async with response:
        if response.status != 206:
            raise object_changed()
        data = await response.content.read()
    opener = StreamOpener(
        stored.keys.content_key,
        stored.header.nonce_prefix,
        stored.plaintext_size,
        span,
    )
    try:
        opener.update(data)
        opener.finalize()
    except DecryptionFailed as error:
        raise decryption_failed(s3, error) from error
    if opener.digest is None:
        raise decryption_failed(s3, "digest segments did not hold the digest")
    return opener.digest


def stored_checksum(s3: S3Request, stored: StoredObject) -> ObjectChecksum | None:
    """Open the object's S3 checksum from its catalogue record, if it has one."""
    if stored.record is None:
        return None
    try:
        return open_checksum(stored.keys, stored.header, stored.record.sealed_checksum)
    except DecryptionFailed as error:
        raise decryption_failed(s3, error) from error


def md5_etag(digest: bytes) -> str:
    """Return the quoted S3 ETag of a single-part object."""
    return f'"{digest.hex()}"'


def composite_etag(digests: list[bytes]) -> str:
    """Return the quoted S3 ETag of a multipart object from its part MD5s."""
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'
