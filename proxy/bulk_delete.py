"""DeleteObjects, with per-object conditions on the plaintext ETag and size.

An <Object> may carry <ETag>, <Size> and <LastModifiedTime>, and is then
deleted only if they match. Clients name the plaintext ETag and size, which
the object store does not have, so the proxy HEADs each such object, compares
it, and reports a mismatch itself as PreconditionFailed without sending
that object upstream. A matching object goes upstream with the stored ETag
and size in place of the plaintext ones, so an object store that checks
them compares again at delete time and a concurrent write in between makes
the delete fail. An object the HEAD does not find goes upstream with an
ETag no stored object has, so that the object store reports a missing key
or a delete marker by its own rules but never deletes an object written
since.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.etree.ElementTree import Element, SubElement

from aiohttp import web

from proxy.checksums import requested_checksums
from proxy.conditions import etag_matches, parse_http_date
from proxy.context import S3Request
from proxy.errors import S3Error
from proxy.headers import governance_bypass_headers
from proxy.lookup import addressed, content_length, head_stored
from proxy.passthrough import body_digest_headers, forward, read_body, upstream_bytes
from proxy.s3xml import NAMESPACE, child_text, parse_xml, to_bytes
from proxy.stored import ForeignObject, object_etag

__all__ = ["MAX_OBJECTS", "delete_objects"]

# S3's limit on the objects of one DeleteObjects request.
MAX_OBJECTS = 1000
# HEAD requests in flight at once while checking conditions.
_HEAD_CONCURRENCY = 16
_PRECONDITION_FAILED = (
    "PreconditionFailed",
    "At least one of the pre-conditions you specified did not hold",
)
# Not a quoted MD5 hex digest, so it is the ETag of no stored object.
_NO_OBJECT_ETAG = '"byok-proxy-no-object"'


@dataclass
class _Object:
    """One <Object> of the request and the conditions it carries."""

    element: Element
    key: str
    version: str | None
    etag: str | None
    size: int | None
    modified: datetime | None

    @property
    def conditional(self) -> bool:
        return (self.etag, self.size, self.modified) != (None, None, None)


@dataclass(frozen=True)
class _Current:
    """The current object under a key, as the client sees it and as stored."""

    etag: str
    size: int
    last_modified: datetime | None
    stored_etag: str
    stored_size: int


@dataclass(frozen=True)
class _Outcome:
    """An error the proxy reports itself for one object."""

    item: _Object
    code: str
    message: str


async def delete_objects(s3: S3Request) -> web.StreamResponse:
    """Delete up to 1000 objects, checking per-object conditions on plaintext."""
    _require_digest(s3.http.headers)
    body = await read_body(s3)
    quiet, items = _parse(body)
    if not any(item.conditional for item in items):
        headers = body_digest_headers(s3.http.headers, body)
        headers.update(governance_bypass_headers(s3.http.headers))
        return await forward(
            s3, "POST", query=[("delete", "")], headers=headers, body=body
        )

    limit = asyncio.Semaphore(_HEAD_CONCURRENCY)
    outcomes = await asyncio.gather(*(_check(s3, item, limit) for item in items))
    pairs = list(zip(items, outcomes, strict=True))
    passed = [item for item, outcome in pairs if outcome is None]
    local = [outcome for outcome in outcomes if outcome is not None]
    root = Element("DeleteResult", xmlns=NAMESPACE)
    if passed:
        for entry in await _delete_upstream(s3, quiet, passed):
            root.append(entry)
    for outcome in local:
        root.append(_error_entry(outcome))
    return web.Response(body=to_bytes(root), content_type="application/xml")


def _require_digest(headers: Mapping[str, str]) -> None:
    """Raise unless the body comes with a digest, which S3 requires here.

    `read_body` checks the digest against the body.
    """
    trailer = headers.get("x-amz-trailer", "").lower()
    if (
        "Content-MD5" in headers
        or requested_checksums(headers)
        or "x-amz-checksum-" in trailer
    ):
        return
    raise S3Error(
        "InvalidRequest",
        "Missing required header for this request: Content-MD5 or an "
        "x-amz-checksum- header",
    )


def _parse(body: bytes) -> tuple[bool, list[_Object]]:
    """Return the Quiet flag and the objects of a <Delete> document."""
    root = parse_xml(body)
    if root.tag != "Delete":
        raise _malformed()
    quiet_text = (child_text(root, "Quiet") or "false").strip().lower()
    if quiet_text not in ("true", "false"):
        raise _malformed()
    elements = root.findall("Object")
    if not elements or len(elements) > MAX_OBJECTS:
        raise _malformed()
    return quiet_text == "true", [_parse_object(element) for element in elements]


def _parse_object(element: Element) -> _Object:
    key = child_text(element, "Key")
    if not key:
        raise _malformed()
    size_text = child_text(element, "Size")
    if size_text is not None and not (size_text.isascii() and size_text.isdigit()):
        raise _malformed()
    modified_text = child_text(element, "LastModifiedTime")
    return _Object(
        element,
        key,
        child_text(element, "VersionId"),
        child_text(element, "ETag"),
        None if size_text is None else int(size_text),
        None if modified_text is None else _parse_timestamp(modified_text),
    )


def _parse_timestamp(text: str) -> datetime:
    """Parse ISO 8601, or the HTTP date that botocore sends here."""
    value = parse_http_date(text)
    if value is None:
        try:
            value = datetime.fromisoformat(text.strip())
        except ValueError as error:
            raise _malformed() from error
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _malformed() -> S3Error:
    return S3Error(
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against "
        f"our published schema: a Delete with 1 to {MAX_OBJECTS} Object "
        "elements, each with a Key",
    )


async def _check(
    s3: S3Request, item: _Object, limit: asyncio.Semaphore
) -> _Outcome | None:
    """Return the local outcome of one object, or None to delete it upstream.

    A passing object has its ETag and Size rewritten to the stored ones.
    """
    if not item.conditional:
        return None
    try:
        async with limit:
            current = await _current(s3, item)
    except S3Error as error:
        return _Outcome(item, error.code, error.message)
    if current is None:
        # "*" alone requires only that an object exists, which the object
        # store checks itself
        only_exists = item.etag is not None and item.etag.strip() == "*"
        if not only_exists or (item.size, item.modified) != (None, None):
            _set_child(item.element, "ETag", _NO_OBJECT_ETAG)
        return None
    if not _matches(item, current):
        return _Outcome(item, *_PRECONDITION_FAILED)
    if item.etag is not None:
        _set_child(item.element, "ETag", current.stored_etag)
    if item.size is not None:
        _set_child(item.element, "Size", str(current.stored_size))
    return None


def _set_child(element: Element, name: str, text: str) -> None:
    child = element.find(name)
    if child is None:
        child = SubElement(element, name)
    child.text = text


async def _current(s3: S3Request, item: _Object) -> _Current | None:
    """HEAD the object; None if there is none, or a delete marker."""
    target = addressed(s3, item.key, item.version)
    try:
        stored, headers = await head_stored(target)
    except ForeignObject as foreign:
        # A foreign object has no plaintext ETag or size apart from the
        # stored ones, which GET returns under the "read" policy.
        headers = foreign.stored_headers
        etag, size = headers.get("ETag", ""), content_length(headers)
        modified = parse_http_date(headers.get("Last-Modified"))
        return _Current(etag, size, modified, etag, size)
    except S3Error as error:
        # S3 returns 405 for a version that is a delete marker
        if error.status in (404, 405):
            return None
        raise
    etag = await object_etag(target, stored)
    return _Current(
        etag,
        stored.plaintext_size,
        parse_http_date(headers.get("Last-Modified")),
        stored.backend_etag,
        stored.stored_size,
    )


def _matches(item: _Object, current: _Current) -> bool:
    if item.etag is not None and not etag_matches(item.etag, current.etag):
        return False
    if item.size is not None and item.size != current.size:
        return False
    if item.modified is not None:
        if current.last_modified is None:
            return False
        # Last-Modified has whole seconds, so compare whole seconds
        expected = int(item.modified.timestamp())
        if expected != int(current.last_modified.timestamp()):
            return False
    return True


async def _delete_upstream(
    s3: S3Request, quiet: bool, items: list[_Object]
) -> list[Element]:
    """Send the objects that passed upstream; return the store's result entries."""
    request = Element("Delete", xmlns=NAMESPACE)
    if quiet:
        SubElement(request, "Quiet").text = "true"
    for item in items:
        request.append(item.element)
    body = to_bytes(request)
    headers = body_digest_headers({"Content-Type": "application/xml"}, body)
    headers.update(governance_bypass_headers(s3.http.headers))
    answer, _ = await upstream_bytes(
        s3, "POST", query=[("delete", "")], headers=headers, body=body
    )
    result = parse_xml(answer, what="object store response")
    return [entry for entry in result if entry.tag in ("Deleted", "Error")]


def _error_entry(outcome: _Outcome) -> Element:
    entry = Element("Error")
    SubElement(entry, "Key").text = outcome.item.key
    if outcome.item.version is not None:
        SubElement(entry, "VersionId").text = outcome.item.version
    SubElement(entry, "Code").text = outcome.code
    SubElement(entry, "Message").text = outcome.message
    return entry
