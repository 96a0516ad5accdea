"""Multipart upload handlers; every part is sealed as a stream of its own.

Parts carry their own random salt and key, so they may arrive in any order
and in parallel, and a resent part number never reuses a key. The catalogue
records each part's salt, plaintext size and sealed MD5; CompleteMultipartUpload
turns them into the object's part table.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import replace
from xml.etree.ElementTree import SubElement

from aiohttp import web

from crypto.errors import DecryptionFailed
from crypto.header import Header, Layout, ObjectKeys, part_key, seal_header
from crypto.sealed import open_value, seal_value
from crypto.sizes import PART_SALT_SIZE, part_stored_size
from crypto.stream import StreamSealer
from proxy.body import RequestBody, plaintext_length
from proxy.catalogue import ObjectRecord, PartRecord, UploadRecord
from proxy.context import S3Request
from proxy.errors import S3Error
from proxy.headers import HEADER_METADATA, upstream_object_headers
from proxy.passthrough import read_body, upstream_bytes
from proxy.s3xml import NAMESPACE, document, parse_xml, to_bytes
from proxy.sigv4 import payload_mode
from proxy.stored import (
    composite_etag,
    decryption_failed,
    md5_etag,
    open_keys,
    sealed_etag,
)
from proxy.streams import Failure, guarded, send_upstream_write
from proxy.transfer import sealed_chunks

__all__ = [
    "abort_upload",
    "complete_upload",
    "create_upload",
    "list_parts",
    "open_upload",
    "part_number",
    "seal_part",
    "upload_part",
]

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_NUMBER = 10000
_XML = "application/xml"


async def create_upload(s3: S3Request) -> web.StreamResponse:
    """Start a multipart upload whose header names the purpose DEK."""
    services = s3.services
    headers = upstream_object_headers(s3.http.headers)
    purpose = services.catalogue.purpose_for(s3.bucket, s3.key)
    dek = services.keyring.current_dek(s3.org_id, purpose)
    header, _ = seal_header(
        dek, layout=Layout.MULTIPART, plaintext_size=0, bucket=s3.bucket, key=s3.key
    )
    headers[HEADER_METADATA] = header.to_metadata()
    body, _ = await upstream_bytes(
        s3, "POST", key=s3.key, query=[("uploads", "")], headers=headers
    )
    upload_id = parse_xml(body, what="upload answer").findtext("UploadId")
    if not upload_id:
        raise S3Error("InternalError", "The object store returned no upload id", 502)
    record = UploadRecord(upload_id, s3.bucket, s3.key, s3.org_id, header.encode())
    services.catalogue.add_upload(record, time.time())
    answer = document(
        "InitiateMultipartUploadResult",
        {"Bucket": s3.bucket, "Key": s3.key, "UploadId": upload_id},
    )
    return web.Response(body=to_bytes(answer), content_type=_XML)


async def upload_part(s3: S3Request) -> web.StreamResponse:
    """Seal one part under its own salt and key."""
    upload, header, keys = open_upload(s3)
    number = part_number(s3)
    size = plaintext_length(s3.http.headers, payload_mode(s3.identity.auth))
    body = RequestBody(
        s3.http.content.iter_any(),
        s3.http.headers,
        s3.identity.auth,
        s3.identity.context,
    )
    digest = await seal_part(
        s3, upload, (header, keys), number, size, body.chunks(), body.verify
    )
    answer = web.Response(status=200, headers={"ETag": md5_etag(digest)})
    for name, value in s3.http.headers.items():
        if name.lower().startswith("x-amz-checksum-"):
            answer.headers[name] = value
    return answer


async def seal_part(
    s3: S3Request,
    upload: UploadRecord,
    opened: tuple[Header, ObjectKeys],
    number: int,
    size: int,
    plaintext: AsyncIterable[bytes],
    before_final: Callable[[], None] | None = None,
) -> bytes:
    """Seal `plaintext` as part `number` of `upload`; return its MD5.

    The part draws a fresh salt, so a resent part number never reuses a key.
    """
    header, keys = opened
    part_salt = os.urandom(PART_SALT_SIZE)
    sealer = StreamSealer(part_key(keys, part_salt, number), header.nonce_prefix, size)
    failure = Failure()
    chunks = guarded(
        sealed_chunks(plaintext, sealer, part_salt, before_final=before_final),
        failure,
    )
    query = [("partNumber", str(number)), ("uploadId", upload.upload_id)]
    headers = {"Content-Length": str(part_stored_size(size))}
    response = await send_upstream_write(s3, headers, chunks, failure, query)

    digest = sealer.digest
    s3.services.catalogue.record_part(
        upload.upload_id,
        PartRecord(
            number,
            part_salt,
            size,
            seal_value(keys, digest, _part_label(header, number)),
            response.get("ETag", ""),
        ),
    )
    return digest


async def complete_upload(s3: S3Request) -> web.StreamResponse:
    """Check the client's part list, record the part table, complete upstream."""
    upload, header, keys = open_upload(s3)
    requested = _requested_parts(await read_body(s3))
    recorded = s3.services.catalogue.parts(upload.upload_id)
    chosen = [recorded.get(number) for number, _ in requested]
    digests: list[bytes] = []
    for (number, etag), part in zip(requested, chosen, strict=True):
        digests.append(_check_part(s3, header, keys, number, etag, part))
    parts = [part for part in chosen if part is not None]
    _check_sizes(parts)

    # the part table is recorded before the object appears upstream, so no
    # reader ever finds the object without it
    record = ObjectRecord(
        s3.bucket,
        s3.key,
        _backend_etag(parts),
        sum(part.plaintext_size for part in parts),
        sealed_etag(keys, header, composite_etag(digests)),
        header.encode(),
        tuple((p.part_number, p.plaintext_size, p.part_salt) for p in parts),
    )
    s3.services.catalogue.record_object(record)
    backend_etag = await _complete_upstream(s3, upload.upload_id, parts)
    if backend_etag != record.backend_etag:
        s3.services.catalogue.record_object(replace(record, backend_etag=backend_etag))
    s3.services.catalogue.forget_upload(upload.upload_id)
    answer = document(
        "CompleteMultipartUploadResult",
        {
            "Location": f"/{s3.bucket}/{s3.key}",
            "Bucket": s3.bucket,
            "Key": s3.key,
            "ETag": composite_etag(digests),
        },
    )
    return web.Response(body=to_bytes(answer), content_type=_XML)


async def abort_upload(s3: S3Request) -> web.StreamResponse:
    """Abort an upload upstream and forget its parts."""
    upload, _, _ = open_upload(s3)
    await upstream_bytes(
        s3,
        "DELETE",
        key=s3.key,
        query=[("uploadId", upload.upload_id)],
        expect=(204, 200),
    )
    s3.services.catalogue.forget_upload(upload.upload_id)
    return web.Response(status=204)


async def list_parts(s3: S3Request) -> web.StreamResponse:
    """List uploaded parts with plaintext sizes and ETags."""
    upload, header, keys = open_upload(s3)
    query = [
        (name, value)
        for name, value in s3.query.items()
        if name in ("uploadId", "max-parts", "part-number-marker")
    ]
    body, _ = await upstream_bytes(s3, "GET", key=s3.key, query=query)
    root = parse_xml(body, what="part list")
    recorded = s3.services.catalogue.parts(upload.upload_id)
    for element in root.iter("Part"):
        part = recorded.get(int(element.findtext("PartNumber") or "0"))
        if part is None:
            continue
        digest = _open_digest(s3, header, keys, part)
        _set_text(element, "ETag", md5_etag(digest))
        _set_text(element, "Size", str(part.plaintext_size))
    root.set("xmlns", NAMESPACE)
    return web.Response(body=to_bytes(root), content_type=_XML)


def open_upload(s3: S3Request) -> tuple[UploadRecord, Header, ObjectKeys]:
    upload_id = s3.query.get("uploadId", "")
    upload = s3.services.catalogue.upload(upload_id)
    if upload is None or (upload.bucket, upload.key) != (s3.bucket, s3.key):
        raise S3Error(
            "NoSuchUpload",
            "The specified multipart upload does not exist. The upload ID might "
            "be invalid, or the upload might have been aborted or completed.",
            404,
        )
    if upload.org_id != s3.org_id:
        raise S3Error("AccessDenied", "Access Denied", 403)
    try:
        header = Header.decode(upload.header)
    except DecryptionFailed as error:
        raise decryption_failed(s3, error) from error
    return upload, header, open_keys(s3, header, s3.bucket, s3.key)


def part_number(s3: S3Request) -> int:
    text = s3.query.get("partNumber", "")
    if not _is_decimal(text) or not 1 <= int(text) <= MAX_PART_NUMBER:
        raise S3Error(
            "InvalidArgument",
            f"Part number must be an integer between 1 and {MAX_PART_NUMBER}, "
            "inclusive",
        )
    return int(text)


def _is_decimal(text: str) -> bool:
    # str.isdigit alone also accepts digits such as "²" that int() rejects
    return text.isascii() and text.isdigit()


def _part_label(header: Header, number: int) -> bytes:
    return b"byok-proxy/1 part digest" + header.salt + number.to_bytes(4, "big")


def _open_digest(
    s3: S3Request, header: Header, keys: ObjectKeys, part: PartRecord
) -> bytes:
    try:
        return open_value(
            keys, part.sealed_digest, _part_label(header, part.part_number)
        )
    except DecryptionFailed as error:
        raise decryption_failed(s3, error) from error


def _requested_parts(body: bytes) -> list[tuple[int, str]]:
    root = parse_xml(body, what="part list")
    requested: list[tuple[int, str]] = []
    for element in root.findall("Part"):
        number = element.findtext("PartNumber") or ""
        if not _is_decimal(number):
            raise S3Error("MalformedXML", "A Part has no valid PartNumber")
        requested.append((int(number), (element.findtext("ETag") or "").strip()))
    if not requested:
        raise S3Error(
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate "
            "against our published schema",
        )
    numbers = [number for number, _ in requested]
    if numbers != sorted(set(numbers)):
        raise S3Error(
            "InvalidPartOrder",
            "The list of parts was not in ascending order. The parts list must "
            "be specified in order by part number.",
        )
    return requested


def _check_part(
    s3: S3Request,
    header: Header,
    keys: ObjectKeys,
    number: int,
    etag: str,
    part: PartRecord | None,
) -> bytes:
    if part is not None:
        digest = _open_digest(s3, header, keys, part)
        if etag.strip('"') == digest.hex():
            return digest
    raise S3Error(
        "InvalidPart",
        f"Part {number} could not be found, or its ETag does not match the "
        "uploaded part.",
    )


def _check_sizes(parts: list[PartRecord]) -> None:
    for part in parts[:-1]:
        if part.plaintext_size < MIN_PART_SIZE:
            raise S3Error(
                "EntityTooSmall",
                f"Part {part.part_number} is {part.plaintext_size} bytes; every "
                f"part but the last must be at least {MIN_PART_SIZE} bytes",
            )


def _backend_etag(parts: list[PartRecord]) -> str:
    """Predict the object store's ETag: MD5 of the part MD5s, dash, count.

    A store whose part ETags are not MD5 digests gets "", and the catalogue
    entry is then keyed by the ETag its completion returns.
    """
    try:
        joined = b"".join(bytes.fromhex(p.backend_etag.strip('"')) for p in parts)
    except ValueError:
        return ""
    return f'"{hashlib.md5(joined).hexdigest()}-{len(parts)}"'


async def _complete_upstream(
    s3: S3Request, upload_id: str, parts: list[PartRecord]
) -> str:
    root = document("CompleteMultipartUpload")
    for part in parts:
        element = SubElement(root, "Part")
        SubElement(element, "PartNumber").text = str(part.part_number)
        SubElement(element, "ETag").text = part.backend_etag
    body, _ = await upstream_bytes(
        s3,
        "POST",
        key=s3.key,
        query=[("uploadId", upload_id)],
        headers={"Content-Type": _XML},
        body=to_bytes(root),
    )
    answer = parse_xml(body, what="completion answer")
    if answer.tag == "Error":
        raise S3Error(
            answer.findtext("Code") or "InternalError",
            answer.findtext("Message") or "The object store failed the upload",
            500,
        )
    return answer.findtext("ETag") or ""


def _set_text(element: object, name: str, value: str) -> None:
    child = element.find(name)  # type: ignore[attr-defined]
    if child is not None:
        child.text = value
