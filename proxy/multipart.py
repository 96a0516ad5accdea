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
from xml.etree.ElementTree import Element, SubElement

from aiohttp import web
from multidict import CIMultiDict

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
from proxy.object_checksums import (
    ObjectChecksum,
    b64,
    combine,
    open_checksum,
    seal_checksum,
    upload_checksum,
    xml_name,
)
from proxy.passthrough import read_body, upstream_bytes
from proxy.s3xml import NAMESPACE, document, parse_xml, to_bytes
from proxy.stored import (
    composite_etag,
    decryption_failed,
    etag_label,
    md5_etag,
    open_keys,
    sealed_etag,
)
from proxy.streams import Failure, guarded, send_upstream_write
from proxy.transfer import sealed_chunks
from proxy.write_conditions import write_conditions

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

# A part's S3 checksum: algorithm name and digest.
PartChecksum = tuple[str, bytes]

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_NUMBER = 10000
_XML = "application/xml"


async def create_upload(s3: S3Request) -> web.StreamResponse:
    """Start a multipart upload whose header names the purpose DEK."""
    services = s3.services
    headers = upstream_object_headers(s3.http.headers)
    checksum = upload_checksum(s3.http.headers)
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
    record = UploadRecord(
        upload_id, s3.bucket, s3.key, s3.org_id, header.encode(), checksum
    )
    services.catalogue.add_upload(record, time.time())
    answer = document(
        "InitiateMultipartUploadResult",
        {"Bucket": s3.bucket, "Key": s3.key, "UploadId": upload_id},
    )
    response = web.Response(body=to_bytes(answer), content_type=_XML)
    if checksum:
        algorithm, kind = checksum.split("/")
        response.headers["x-amz-checksum-algorithm"] = algorithm.upper()
        response.headers["x-amz-checksum-type"] = kind
    return response


async def upload_part(s3: S3Request) -> web.StreamResponse:
    """Seal one part under its own salt and key."""
    upload, header, keys = open_upload(s3)
    number = part_number(s3)
    size = plaintext_length(s3.http.headers, s3.identity.payload.mode)
    declared = upload.checksum.split("/")[0]
    body = RequestBody(
        s3.http.content.iter_any(),
        s3.http.headers,
        s3.identity.payload,
        compute=declared,
    )
    if declared and body.presented and body.presented != declared:
        raise S3Error(
            "InvalidRequest",
            f"The upload was created with a {declared} checksum, and this part "
            f"carries a {body.presented} checksum",
        )
    algorithm = declared or body.presented
    digest, checksum = await seal_part(
        s3,
        upload,
        (header, keys),
        (number, size),
        body.chunks(),
        body.verify,
        lambda: (algorithm, body.digest(algorithm)) if algorithm else None,
    )
    answer = web.Response(status=200, headers={"ETag": md5_etag(digest)})
    if checksum is not None:
        name, value = checksum
        answer.headers[f"x-amz-checksum-{name}"] = b64(value)
    return answer


async def seal_part(
    s3: S3Request,
    upload: UploadRecord,
    opened: tuple[Header, ObjectKeys],
    part: tuple[int, int],
    plaintext: AsyncIterable[bytes],
    before_final: Callable[[], None] | None = None,
    checksum: Callable[[], PartChecksum | None] = lambda: None,
) -> tuple[bytes, PartChecksum | None]:
    """Seal `plaintext` as part `(number, size)` of `upload`.

    Returns the part's MD5 and the S3 checksum that `checksum` gives once
    the plaintext has been read. The part draws a fresh salt, so a resent
    part number never reuses a key.
    """
    header, keys = opened
    number, size = part
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
    part_checksum = checksum()
    sealed_checksum = b""
    if part_checksum is not None:
        name, value = part_checksum
        label = _checksum_label(header, number)
        sealed_checksum = seal_value(keys, name.encode() + b":" + value, label)
    s3.services.catalogue.record_part(
        upload.upload_id,
        PartRecord(
            number,
            part_salt,
            size,
            seal_value(keys, digest, _part_label(header, number)),
            response.get("ETag", ""),
            sealed_checksum,
        ),
    )
    return digest, part_checksum


async def complete_upload(s3: S3Request) -> web.StreamResponse:
    """Check the client's part list, record the part table, complete upstream."""
    upload, header, keys = open_upload(s3, completed=True)
    requested = _requested_parts(await read_body(s3, body_checksums=False))
    if upload.completed_etag is not None:
        return await _repeat_completion(s3, upload, header, keys)
    conditions = await write_conditions(s3)
    recorded = s3.services.catalogue.parts(upload.upload_id)
    parts: list[PartRecord] = []
    digests: list[bytes] = []
    checksums: list[PartChecksum | None] = []
    for number, etag, claims in requested:
        part = recorded.get(number)
        digests.append(_check_part(s3, header, keys, number, etag, part))
        assert part is not None
        checksums.append(_check_part_checksum(s3, header, keys, part, claims))
        parts.append(part)
    _check_sizes(parts)
    checksum = _object_checksum(s3, upload.checksum, parts, checksums)

    # the part table is recorded before the object appears upstream, so no
    # reader ever finds the object without it
    etag = composite_etag(digests)
    record = ObjectRecord(
        s3.bucket,
        s3.key,
        _backend_etag(parts),
        sum(part.plaintext_size for part in parts),
        sealed_etag(keys, header, etag),
        header.encode(),
        tuple((p.part_number, p.plaintext_size, p.part_salt) for p in parts),
        seal_checksum(keys, header, checksum) if checksum else b"",
    )
    s3.services.catalogue.record_object(record)
    backend_etag, version_id = await _complete_upstream(
        s3, upload.upload_id, parts, conditions
    )
    if backend_etag != record.backend_etag:
        s3.services.catalogue.record_object(replace(record, backend_etag=backend_etag))
    s3.services.catalogue.finish_upload(upload.upload_id, backend_etag)
    return _completion_answer(s3, etag, checksum, version_id)


async def _repeat_completion(
    s3: S3Request, upload: UploadRecord, header: Header, keys: ObjectKeys
) -> web.StreamResponse:
    """Repeat the first completion's response while its object is current.

    S3 lets a client that lost the first response complete again. Once the
    object has been replaced or deleted, the upload is gone.
    """
    _, headers = await upstream_bytes(s3, "HEAD", key=s3.key, expect=(200, 404))
    stored_etag = CIMultiDict(headers).get("ETag")
    record = s3.services.catalogue.object(s3.bucket, s3.key, stored_etag or "")
    if stored_etag != upload.completed_etag or record is None:
        raise no_such_upload()
    try:
        etag = open_value(keys, record.sealed_etag, etag_label(header)).decode()
        checksum = open_checksum(keys, header, record.sealed_checksum)
    except DecryptionFailed as error:
        raise decryption_failed(s3, error) from error
    return _completion_answer(
        s3, etag, checksum, CIMultiDict(headers).get("x-amz-version-id")
    )


def _completion_answer(
    s3: S3Request, etag: str, checksum: ObjectChecksum | None, version_id: str | None
) -> web.Response:
    answer = document(
        "CompleteMultipartUploadResult",
        {
            "Location": f"/{s3.bucket}/{s3.key}",
            "Bucket": s3.bucket,
            "Key": s3.key,
            "ETag": etag,
        },
    )
    if checksum is not None:
        SubElement(answer, checksum.xml_name).text = checksum.value
        SubElement(answer, "ChecksumType").text = checksum.kind
    response = web.Response(body=to_bytes(answer), content_type=_XML)
    if version_id:
        response.headers["x-amz-version-id"] = version_id
    return response


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
        _set_checksum(element, _open_part_checksum(s3, header, keys, part))
    if upload.checksum:
        algorithm, kind = upload.checksum.split("/")
        SubElement(root, "ChecksumAlgorithm").text = algorithm.upper()
        SubElement(root, "ChecksumType").text = kind
    root.set("xmlns", NAMESPACE)
    return web.Response(body=to_bytes(root), content_type=_XML)


def open_upload(
    s3: S3Request, *, completed: bool = False
) -> tuple[UploadRecord, Header, ObjectKeys]:
    """Find the addressed upload and open its header.

    A completed upload counts as missing unless `completed` is true.
    """
    upload_id = s3.query.get("uploadId", "")
    upload = s3.services.catalogue.upload(upload_id)
    if upload is None or (upload.bucket, upload.key) != (s3.bucket, s3.key):
        raise no_such_upload()
    if upload.completed_etag is not None and not completed:
        raise no_such_upload()
    if upload.org_id != s3.org_id:
        raise S3Error("AccessDenied", "Access Denied", 403)
    try:
        header = Header.decode(upload.header)
    except DecryptionFailed as error:
        raise decryption_failed(s3, error) from error
    return upload, header, open_keys(s3, header, s3.bucket, s3.key)


def no_such_upload() -> S3Error:
    return S3Error(
        "NoSuchUpload",
        "The specified multipart upload does not exist. The upload ID might "
        "be invalid, or the upload might have been aborted or completed.",
        404,
    )


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


def _checksum_label(header: Header, number: int) -> bytes:
    return b"byok-proxy/1 part checksum" + header.salt + number.to_bytes(4, "big")


def _open_digest(
    s3: S3Request, header: Header, keys: ObjectKeys, part: PartRecord
) -> bytes:
    try:
        return open_value(
            keys, part.sealed_digest, _part_label(header, part.part_number)
        )
    except DecryptionFailed as error:
        raise decryption_failed(s3, error) from error


def _requested_parts(body: bytes) -> list[tuple[int, str, dict[str, str]]]:
    """Parse a completion's part list: number, ETag and checksum claims.

    Numbers must not decrease. A number listed twice keeps its last entry,
    the one a client that resent the part heard about last.
    """
    root = parse_xml(body, what="part list")
    requested: dict[int, tuple[int, str, dict[str, str]]] = {}
    previous = 0
    for element in root.findall("Part"):
        text = element.findtext("PartNumber") or ""
        if not _is_decimal(text):
            raise S3Error("MalformedXML", "A Part has no valid PartNumber")
        number = int(text)
        if number < previous:
            raise S3Error(
                "InvalidPartOrder",
                "The list of parts was not in ascending order. The parts list "
                "must be specified in order by part number.",
            )
        previous = number
        claims = {
            child.tag: (child.text or "").strip()
            for child in element
            if child.tag.startswith("Checksum")
        }
        etag = (element.findtext("ETag") or "").strip()
        requested[number] = (number, etag, claims)
    if not requested:
        raise S3Error(
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate "
            "against our published schema",
        )
    return list(requested.values())


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


def _check_part_checksum(
    s3: S3Request,
    header: Header,
    keys: ObjectKeys,
    part: PartRecord,
    claims: dict[str, str],
) -> PartChecksum | None:
    """Open a part's stored checksum and compare the client's claims with it."""
    checksum = _open_part_checksum(s3, header, keys, part)
    for name, value in claims.items():
        if checksum is None:
            # a part copied into an upload that named no algorithm has none
            continue
        algorithm, digest = checksum
        if name != xml_name(algorithm) or value != b64(digest):
            raise S3Error(
                "InvalidPart",
                f"Part {part.part_number}: the {name} does not match the "
                "checksum of the uploaded part.",
            )
    return checksum


def _open_part_checksum(
    s3: S3Request, header: Header, keys: ObjectKeys, part: PartRecord
) -> PartChecksum | None:
    if not part.sealed_checksum:
        return None
    label = _checksum_label(header, part.part_number)
    try:
        value = open_value(keys, part.sealed_checksum, label)
    except DecryptionFailed as error:
        raise decryption_failed(s3, error) from error
    algorithm, _, digest = value.partition(b":")
    return algorithm.decode(), digest


def _object_checksum(
    s3: S3Request,
    spec: str,
    parts: list[PartRecord],
    checksums: list[PartChecksum | None],
) -> ObjectChecksum | None:
    """Combine the parts' checksums as the upload asked and check the client's.

    Returns None when the upload named no algorithm, or a part lacks a
    checksum of that algorithm.
    """
    if not spec:
        return None
    algorithm = spec.split("/")[0]
    digests = [c[1] for c in checksums if c is not None and c[0] == algorithm]
    if len(digests) != len(parts):
        return None
    checksum = combine(
        spec, [(d, p.plaintext_size) for d, p in zip(digests, parts, strict=True)]
    )
    claimed = s3.http.headers.get(f"x-amz-checksum-{algorithm}")
    if claimed is not None and claimed.strip() != checksum.value:
        raise S3Error(
            "BadDigest",
            f"The x-amz-checksum-{algorithm} you specified did not match the "
            "calculated checksum.",
        )
    return checksum


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
    s3: S3Request,
    upload_id: str,
    parts: list[PartRecord],
    conditions: dict[str, str],
) -> tuple[str, str | None]:
    """Complete the upload upstream; return the stored ETag and version id."""
    root = document("CompleteMultipartUpload")
    for part in parts:
        element = SubElement(root, "Part")
        SubElement(element, "PartNumber").text = str(part.part_number)
        SubElement(element, "ETag").text = part.backend_etag
    body, headers = await upstream_bytes(
        s3,
        "POST",
        key=s3.key,
        query=[("uploadId", upload_id)],
        headers={"Content-Type": _XML, **conditions},
        body=to_bytes(root),
    )
    answer = parse_xml(body, what="completion answer")
    if answer.tag == "Error":
        raise S3Error(
            answer.findtext("Code") or "InternalError",
            answer.findtext("Message") or "The object store failed the upload",
            500,
        )
    version_id = CIMultiDict(headers).get("x-amz-version-id")
    return answer.findtext("ETag") or "", version_id


def _set_checksum(element: Element, checksum: PartChecksum | None) -> None:
    """Replace the object store's part checksums with the plaintext one."""
    for child in list(element):
        if child.tag.startswith("Checksum"):
            element.remove(child)
    if checksum is not None:
        algorithm, digest = checksum
        SubElement(element, xml_name(algorithm)).text = b64(digest)


def _set_text(element: object, name: str, value: str) -> None:
    child = element.find(name)  # type: ignore[attr-defined]
    if child is not None:
        child.text = value
