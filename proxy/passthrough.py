"""Requests whose bodies the proxy reads whole or forwards unchanged."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence

from aiohttp import web
from multidict import CIMultiDict

from proxy.body import RequestBody
from proxy.context import S3Request
from proxy.errors import S3Error
from proxy.upstream import error_from_response

__all__ = ["body_digest_headers", "forward", "read_body", "upstream_bytes"]

XML_BODY_LIMIT = 4 * 1024 * 1024
_ANSWER_HEADERS = ("Content-Type", "x-amz-version-id", "x-amz-delete-marker")
_CHECKSUM_PREFIX = "x-amz-checksum-"


def body_digest_headers(
    headers: Mapping[str, str], body: bytes | None = None
) -> dict[str, str]:
    """Pick the headers describing a body that the proxy forwards unchanged.

    Given the `body`, the proxy sets Content-MD5 from it. The object store
    then gets a digest even when the client sent its checksum in an
    aws-chunked trailer, which is not forwarded, and S3 requires one on
    object lock and DeleteObjects requests. x-amz-sdk-checksum-algorithm
    passes only with its x-amz-checksum-* header, because S3 rejects it
    alone.
    """
    picked = {
        name: value
        for name, value in headers.items()
        if name.lower() in ("content-md5", "content-type")
        or name.lower().startswith(_CHECKSUM_PREFIX)
    }
    sent = {name.lower() for name in picked}
    for name, value in headers.items():
        paired = _CHECKSUM_PREFIX + value.lower() in sent
        if name.lower() == "x-amz-sdk-checksum-algorithm" and paired:
            picked[name] = value
    if body is not None:
        picked = {n: v for n, v in picked.items() if n.lower() != "content-md5"}
        picked["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
    return picked


async def read_body(
    s3: S3Request, limit: int = XML_BODY_LIMIT, *, body_checksums: bool = True
) -> bytes:
    """Read a small request body whole and check its signature and digests.

    Without `body_checksums`, x-amz-checksum-* headers are not checked
    against the body: on CompleteMultipartUpload they describe the object.
    """
    headers: Mapping[str, str] = s3.http.headers
    if not body_checksums:
        headers = CIMultiDict(
            (name, value)
            for name, value in headers.items()
            if not name.lower().startswith(_CHECKSUM_PREFIX)
        )
    body = RequestBody(
        s3.http.content.iter_any(),
        headers,
        s3.identity.payload,
    )
    data = bytearray()
    async for chunk in body.chunks():
        data += chunk
        if len(data) > limit:
            raise S3Error(
                "EntityTooLarge",
                f"The request body is larger than the {limit} bytes allowed here",
            )
    body.verify()
    return bytes(data)


async def upstream_bytes(
    s3: S3Request,
    method: str,
    *,
    key: str = "",
    query: Sequence[tuple[str, str]] = (),
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    expect: tuple[int, ...] = (200,),
) -> tuple[bytes, dict[str, str]]:
    """Send a request upstream, raise its S3 error, return body and headers."""
    response = await s3.services.upstream.request(
        method, s3.bucket, key, query=query, headers=headers, body=body
    )
    async with response:
        if response.status not in expect:
            raise await error_from_response(response)
        return await response.read(), dict(response.headers)


async def forward(
    s3: S3Request,
    method: str,
    *,
    query: Sequence[tuple[str, str]] = (),
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> web.Response:
    """Forward a request whose response the client may see unchanged."""
    response = await s3.services.upstream.request(
        method, s3.bucket, s3.key, query=query, headers=headers, body=body
    )
    async with response:
        if response.status >= 300:
            raise await error_from_response(response)
        data = await response.read()
        answer = web.Response(status=response.status, body=data)
        for name in _ANSWER_HEADERS:
            if name in response.headers:
                answer.headers[name] = response.headers[name]
        return answer
