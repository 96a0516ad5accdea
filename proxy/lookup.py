"""Find the addressed stored object: HEAD it upstream and open its header."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from multidict import CIMultiDict, MultiDict, MultiDictProxy

from proxy.addressing import Target
from proxy.context import S3Request
from proxy.errors import S3Error
from proxy.stored import StoredObject, open_stored
from proxy.upstream import error_from_response

__all__ = ["addressed", "content_length", "head_stored", "read_query", "version_query"]

_VERSION_QUERY = ("versionId",)
_GET_OVERRIDES = (
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
)


async def head_stored(s3: S3Request) -> tuple[StoredObject, Mapping[str, str]]:
    """HEAD the addressed object upstream and open its header."""
    response = await s3.services.upstream.request(
        "HEAD", s3.bucket, s3.key, query=read_query(s3)
    )
    async with response:
        if response.status != 200:
            raise await error_from_response(response)
        headers = CIMultiDict(response.headers)
    stored = open_stored(s3, response.headers, content_length(response.headers))
    return stored, headers


def content_length(headers: Mapping[str, str]) -> int:
    """Return the object store's Content-Length; 502 if it sent none."""
    value = headers.get("Content-Length", "")
    if not (value.isascii() and value.isdigit()):
        raise S3Error("InternalError", "The object store sent no Content-Length", 502)
    return int(value)


def addressed(s3: S3Request, key: str, version_id: str | None) -> S3Request:
    """Return the request readdressed to `key`, or one version of it, in its bucket.

    Bulk operations use it to open each object they name with the handlers'
    own helpers.
    """
    query: MultiDict[str] = MultiDict()
    if version_id is not None:
        query["versionId"] = version_id
    return replace(s3, target=Target(s3.bucket, key), query=MultiDictProxy(query))


def version_query(s3: S3Request) -> list[tuple[str, str]]:
    """Return the request's versionId, to pass upstream."""
    return _pick(s3, _VERSION_QUERY)


def read_query(s3: S3Request) -> list[tuple[str, str]]:
    """Return the versionId and response header overrides, to pass upstream."""
    return _pick(s3, _VERSION_QUERY + _GET_OVERRIDES)


def _pick(s3: S3Request, names: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in s3.query.items() if name in names]
