"""POST Object: browser form uploads, signed with a policy instead of a header.

The form is read as a stream. Fields up to the `file` part are collected,
the policy signature is verified (Signature Version 4 or 2), the form is
checked against the policy, and the file part is sealed into the object
exactly as PutObject seals a body.

The sealed format needs the plaintext size before the first byte goes
upstream, and a form does not state it. The size is derived instead: the
request's Content-Length, less the bytes before the file data, less the
closing delimiter `CRLF--boundary--CRLF`. This holds only when `file` is the
last part and the body ends right after the closing delimiter, as urllib3
(which requests uses) and aiohttp 3.14 send forms. Any other layout (fields
after the file, which S3 ignores, or an epilogue) fails with
MalformedPOSTRequest before the final segment is sent, so no object becomes
visible. A body without Content-Length is rejected up front.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Final
from urllib.parse import quote, urlencode, urlsplit
from xml.etree.ElementTree import Element, SubElement

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage
from multidict import CIMultiDict, CIMultiDictProxy

from crypto.header import Layout, seal_header
from crypto.sizes import sealed_size
from crypto.stream import StreamSealer
from proxy.addressing import Target, encode_key, parse_target
from proxy.buckets import require_owner
from proxy.catalogue import ObjectRecord
from proxy.checksums import parse_content_md5, verify_content_md5
from proxy.context import SERVICES, S3Request
from proxy.errors import S3Error
from proxy.headers import HEADER_METADATA, upstream_object_headers
from proxy.post_form import (
    MAX_OBJECT_SIZE,
    MAX_PRE_DATA_SIZE,
    CountingStream,
    check_form,
    closing_delimiter,
    file_size,
    form_boundary,
    form_content_length,
    form_identity,
    malformed,
    read_error,
    read_form,
)
from proxy.post_policy import (
    check_size,
    verify_signature,
)
from proxy.s3xml import child_text, parse_xml, to_bytes
from proxy.stored import md5_etag, sealed_etag
from proxy.streams import Failure, guarded, send_upstream_write
from proxy.transfer import sealed_chunks

__all__ = ["MAX_OBJECT_SIZE", "MAX_PRE_DATA_SIZE", "is_form_upload", "post_object"]

_FILE_CHUNK: Final = 256 * 1024


def is_form_upload(request: web.Request, domain: str) -> bool:
    """Return whether a request is a POST Object form upload.

    S3 reads a POST to a bucket, with no key and no query string, whose
    Content-Type is multipart/form-data, as a form upload.
    """
    if request.method != "POST" or request.content_type != "multipart/form-data":
        return False
    if request.rel_url.raw_query_string:
        return False
    try:
        target = parse_target(request.raw_path, request.headers.get("Host", ""), domain)
    except S3Error:
        return False
    return bool(target.bucket) and not target.key


async def post_object(request: web.Request, request_id: str) -> web.StreamResponse:
    """Verify a form upload and encrypt its file into a new object."""
    services = request.app[SERVICES]
    bucket = parse_target(
        request.raw_path, request.headers.get("Host", ""), services.settings.domain
    ).bucket
    content_length = form_content_length(request)
    boundary = form_boundary(request)
    stream = CountingStream(request.content)
    form = await read_form(request, stream)

    org_id, access_key_id = verify_signature(form.fields, services.keyring)
    request["org"] = access_key_id
    identity = form_identity(org_id, access_key_id)
    s3 = S3Request(
        request, services, identity, Target(bucket), request.query, request_id
    )
    require_owner(s3)

    fields, policy, file = check_form(form, bucket)
    size = file_size(content_length, stream.consumed, boundary)
    check_size(policy, size)
    headers = _object_headers(fields)
    content_md5 = parse_content_md5(fields.get("content-md5"))
    layout = _BodyLayout(size, content_length, boundary)
    body = _FileBody(file, stream, layout, content_md5)
    s3 = replace(s3, target=Target(bucket, fields["key"]))
    etag, stored = await _store(s3, headers, body)
    return _success_response(s3, fields, etag, stored)


# storing the file


def _object_headers(fields: dict[str, str]) -> dict[str, str]:
    """Turn form fields into the object headers that PutObject would send.

    `acl` and `tagging` stand for x-amz-acl and x-amz-tagging, and the
    tagging XML becomes the query-string form of that header.
    """
    client: CIMultiDict[str] = CIMultiDict(fields)
    client.popall("x-amz-acl", None)
    client.popall("x-amz-tagging", None)
    if "acl" in fields:
        client["x-amz-acl"] = fields["acl"]
    if "tagging" in fields:
        client["x-amz-tagging"] = _tagging_header(fields["tagging"])
    return upstream_object_headers(client)


def _tagging_header(document: str) -> str:
    root = parse_xml(document.encode(), what="tagging form field")
    tags = root.findall("TagSet/Tag")
    keys = [child_text(tag, "Key") for tag in tags]
    if root.tag != "Tagging" or None in keys:
        raise S3Error(
            "MalformedXML",
            "The tagging form field must be <Tagging><TagSet><Tag><Key>...</Key>"
            "<Value>...</Value></Tag></TagSet></Tagging>.",
        )
    pairs = [
        (key or "", child_text(tag, "Value") or "")
        for key, tag in zip(keys, tags, strict=True)
    ]
    return urlencode(pairs, quote_via=quote, safe="")


@dataclass(frozen=True)
class _BodyLayout:
    """Sizes and delimiter of the body around the file part.

    `size` is the file size derived from `content_length`, and `boundary`
    is the delimiter with its leading `--`.
    """

    size: int
    content_length: int
    boundary: bytes


class _FileBody:
    """The file part's bytes, checked against the size derived before they came.

    `chunks` raises before it ends unless exactly `layout.size` bytes
    arrived and the closing delimiter ended the body, so the sealer never
    produces the final segment of a body of another size.
    """

    def __init__(
        self,
        part: BodyPartReader,
        stream: CountingStream,
        layout: _BodyLayout,
        content_md5: bytes | None,
    ) -> None:
        self._part = part
        self._stream = stream
        self._layout = layout
        self._content_md5 = content_md5
        self._md5 = hashlib.md5() if content_md5 is not None else None

    @property
    def size(self) -> int:
        """The file size in bytes."""
        return self._layout.size

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the file's bytes, then check its size and the body's end."""
        received = 0
        while not self._part.at_eof():
            chunk = await self._read_chunk()
            received += len(chunk)
            if received > self.size:
                raise _wrong_layout()
            if self._md5 is not None:
                self._md5.update(chunk)
            if chunk:
                yield chunk
        if received != self.size:
            raise _wrong_layout()
        await self._check_end()

    def verify(self) -> None:
        """Compare the Content-MD5 field with the file's MD5."""
        if self._md5 is not None and self._content_md5 is not None:
            verify_content_md5(self._content_md5, self._md5.digest())

    async def _read_chunk(self) -> bytes:
        try:
            return await self._part.read_chunk(_FILE_CHUNK)
        except (ValueError, BadHttpMessage) as error:
            raise read_error(error) from error

    async def _check_end(self) -> None:
        # The part reader consumed the CRLF before the delimiter, so only
        # `--boundary--CRLF` may remain.
        expected = closing_delimiter(self._layout.boundary)[2:]
        remaining = self._layout.content_length - self._stream.consumed
        end = b""
        try:
            while len(end) < remaining and not self._stream.at_eof():
                end += await self._stream.read(remaining - len(end))
        except BadHttpMessage as error:
            raise read_error(error) from error
        if end != expected:
            raise _wrong_layout()


def _wrong_layout() -> S3Error:
    return malformed(
        "the file field must be the last field, and the closing delimiter must "
        "end the body, because the proxy derives the file size from "
        "Content-Length"
    )


async def _store(
    s3: S3Request, headers: dict[str, str], body: _FileBody
) -> tuple[str, CIMultiDictProxy[str]]:
    """Seal the file into the object and record it, as PutObject does."""
    services = s3.services
    size = body.size
    purpose = services.catalogue.purpose_for(s3.bucket, s3.key)
    dek = services.keyring.current_dek(s3.org_id, purpose)
    header, keys = seal_header(
        dek, layout=Layout.SINGLE, plaintext_size=size, bucket=s3.bucket, key=s3.key
    )
    headers[HEADER_METADATA] = header.to_metadata()
    headers["Content-Length"] = str(sealed_size(size))

    # seal while streaming; the final segment waits for every check to pass
    sealer = StreamSealer(keys.content_key, header.nonce_prefix, size)
    failure = Failure()
    chunks = guarded(
        sealed_chunks(body.chunks(), sealer, before_final=body.verify), failure
    )
    stored = await send_upstream_write(s3, headers, chunks, failure)

    etag = md5_etag(sealer.digest)
    services.catalogue.record_object(
        ObjectRecord(
            s3.bucket,
            s3.key,
            stored.get("ETag", ""),
            size,
            sealed_etag(keys, header, etag),
            header.encode(),
        )
    )
    return etag, stored


# the response


def _success_response(
    s3: S3Request,
    fields: dict[str, str],
    etag: str,
    stored: CIMultiDictProxy[str],
) -> web.Response:
    """Build the response that success_action_redirect or _status requests.

    A redirect that is not an absolute http or https URL is ignored, as S3
    ignores a URL it cannot interpret. A status other than 200 or 201 gives
    204.
    """
    location = _object_url(s3)
    headers = {"ETag": etag, "Location": location}
    version_id = stored.get("x-amz-version-id")
    if version_id is not None:
        headers["x-amz-version-id"] = version_id
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect and _is_http_url(redirect):
        query = urlencode(
            [("bucket", s3.bucket), ("key", s3.key), ("etag", etag)], quote_via=quote
        )
        separator = "&" if urlsplit(redirect).query else "?"
        headers["Location"] = redirect + separator + query
        return web.Response(status=303, headers=headers)
    status = fields.get("success_action_status")
    if status == "201":
        body = _post_response(location, s3.bucket, s3.key, etag)
        return web.Response(
            status=201, body=body, content_type="application/xml", headers=headers
        )
    return web.Response(status=200 if status == "200" else 204, headers=headers)


def _object_url(s3: S3Request) -> str:
    request = s3.http
    path = "/" + encode_key(s3.key)
    if request.path.strip("/"):
        # path style: the bucket is the first path segment
        path = "/" + encode_key(s3.bucket) + path
    return f"{request.scheme}://{request.host}{path}"


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _post_response(location: str, bucket: str, key: str, etag: str) -> bytes:
    # S3 sends this document without a namespace.
    root = Element("PostResponse")
    for name, value in (
        ("Location", location),
        ("Bucket", bucket),
        ("Key", key),
        ("ETag", etag),
    ):
        SubElement(root, name).text = value
    return to_bytes(root)
