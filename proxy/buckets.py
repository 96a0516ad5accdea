"""Bucket handlers: create, delete, head, list buckets and list objects."""

from __future__ import annotations

import time
from urllib.parse import unquote_plus
from xml.etree.ElementTree import Element

from aiohttp import web

from crypto.errors import DecryptionFailed
from crypto.sizes import plaintext_size
from proxy import acl
from proxy.addressing import validate_bucket_name
from proxy.catalogue import BucketTaken, ObjectRecord
from proxy.context import S3Request
from proxy.errors import S3Error
from proxy.headers import bucket_create_headers
from proxy.passthrough import read_body, upstream_bytes
from proxy.repair import learn_objects
from proxy.s3xml import NAMESPACE, parse_xml, to_bytes
from proxy.stored import recorded_etag

__all__ = [
    "create_bucket",
    "delete_bucket",
    "head_bucket",
    "list_buckets",
    "list_object_versions",
    "list_objects",
    "require_owner",
]

_XML = "application/xml"
_LIST_QUERY = (
    "allow-unordered",
    "continuation-token",
    "delimiter",
    "encoding-type",
    "fetch-owner",
    "list-type",
    "marker",
    "max-keys",
    "prefix",
    "start-after",
)


def require_owner(s3: S3Request) -> None:
    """Raise unless the requesting organisation owns the addressed bucket.

    A bucket that no organisation created through the proxy is reported as
    NoSuchBucket, whether or not the object store has it, so that buckets
    outside the proxy stay invisible.
    """
    owner = s3.services.catalogue.bucket_owner(s3.bucket)
    if owner is None:
        raise S3Error(
            "NoSuchBucket",
            "The specified bucket does not exist",
            404,
            resource=s3.bucket,
        )
    if owner != s3.org_id:
        raise S3Error("AccessDenied", "Access Denied", 403, resource=s3.bucket)


async def create_bucket(s3: S3Request) -> web.StreamResponse:
    """Create a bucket upstream and record the organisation as its owner."""
    validate_bucket_name(s3.bucket)
    headers = bucket_create_headers(s3.http.headers)
    body = await read_body(s3)
    catalogue = s3.services.catalogue
    owner = catalogue.bucket_owner(s3.bucket)
    if owner == s3.org_id:
        raise S3Error(
            "BucketAlreadyOwnedByYou",
            "Your previous request to create the named bucket succeeded and you "
            "already own it.",
            409,
        )
    if owner is not None:
        raise _bucket_exists()
    await upstream_bytes(s3, "PUT", headers=headers, body=body or None)
    try:
        catalogue.claim_bucket(s3.bucket, s3.org_id, time.time())
    except BucketTaken:
        raise _bucket_exists() from None
    return web.Response(status=200, headers={"Location": f"/{s3.bucket}"})


async def delete_bucket(s3: S3Request) -> web.StreamResponse:
    """Delete an empty bucket and release its ownership."""
    # TODO: only the object store checks that the bucket is empty. SeaweedFS
    # deletes a bucket with its objects unless run with
    # allowDeleteBucketNotEmpty=false.
    await upstream_bytes(s3, "DELETE", expect=(204, 200))
    s3.services.catalogue.release_bucket(s3.bucket)
    return web.Response(status=204)


async def head_bucket(s3: S3Request) -> web.StreamResponse:
    """Return 200 for a bucket the organisation owns."""
    await upstream_bytes(s3, "HEAD")
    return web.Response(status=200)


async def list_buckets(s3: S3Request) -> web.StreamResponse:
    """List the buckets of the requesting organisation only."""
    body, _ = await upstream_bytes(s3, "GET")
    root = parse_xml(body, what="bucket list")
    owned = s3.services.catalogue.buckets_of(s3.org_id)
    buckets = root.find("Buckets")
    if buckets is not None:
        for bucket in list(buckets):
            if bucket.findtext("Name") not in owned:
                buckets.remove(bucket)
    _set_owners(s3, root)
    return _xml_answer(root)


def _set_owners(s3: S3Request, root: Element) -> None:
    """Name the organisation, not the proxy's upstream identity, as owner."""
    owner_id, name = acl.owner(s3)
    for element in root.iter("Owner"):
        for tag, value in (("ID", owner_id), ("DisplayName", name)):
            child = element.find(tag)
            if child is not None:
                child.text = value


async def list_objects(s3: S3Request) -> web.StreamResponse:
    """List objects (V1 or V2) with plaintext sizes and ETags."""
    return await _listing(s3, _LIST_QUERY, "Contents")


async def list_object_versions(s3: S3Request) -> web.StreamResponse:
    """List object versions with plaintext sizes and ETags."""
    return await _listing(s3, _VERSIONS_QUERY, "Version")


async def _listing(
    s3: S3Request, names: tuple[str, ...], entry_tag: str
) -> web.StreamResponse:
    query = [(n, v) for n, v in s3.query.items() if n in names]
    body, _ = await upstream_bytes(s3, "GET", query=query)
    root = parse_xml(body, what="object list")
    url_encoded = root.findtext("EncodingType") == "url"
    entries = [
        (entry, _entry_key(entry, url_encoded)) for entry in root.iter(entry_tag)
    ]
    unknown = [
        (key, entry.findtext("VersionId") or "")
        for entry, key in entries
        if _stored_size(entry) is not None and _record(s3, entry, key) is None
    ]
    if unknown:
        await learn_objects(s3, unknown)
    for entry, key in entries:
        _rewrite_entry(s3, entry, key)
    _set_owners(s3, root)
    return _xml_answer(root)


_VERSIONS_QUERY = (
    "delimiter",
    "encoding-type",
    "key-marker",
    "max-keys",
    "prefix",
    "version-id-marker",
    "versions",
)


def _entry_key(entry: Element, url_encoded: bool) -> str:
    key = entry.findtext("Key") or ""
    # S3 URL encoding writes a space as '+', as HTML forms do
    return unquote_plus(key) if url_encoded else key


def _stored_size(entry: Element) -> int | None:
    text = entry.findtext("Size") or ""
    return int(text) if text.isascii() and text.isdigit() else None


def _record(s3: S3Request, entry: Element, key: str) -> ObjectRecord | None:
    return s3.services.catalogue.object(s3.bucket, key, entry.findtext("ETag") or "")


def _rewrite_entry(s3: S3Request, entry: Element, key: str) -> None:
    """Put the plaintext size and ETag into one listing entry."""
    stored_size = _stored_size(entry)
    size_element, etag_element = entry.find("Size"), entry.find("ETag")
    if stored_size is None or size_element is None:
        return
    record = _record(s3, entry, key)
    if record is not None and record.is_foreign:
        return
    if record is None:
        # an object the proxy could not open (see proxy/repair.py) keeps the
        # object store's ETag; a single stream's size is still computed
        size = _computed_size(stored_size)
        if size is not None:
            size_element.text = str(size)
        return
    size_element.text = str(record.plaintext_size)
    plaintext_etag = recorded_etag(s3, record)
    if etag_element is not None and plaintext_etag is not None:
        etag_element.text = plaintext_etag


def _computed_size(stored: int) -> int | None:
    try:
        return plaintext_size(stored)
    except DecryptionFailed:
        return None


def _xml_answer(root: Element) -> web.Response:
    root.set("xmlns", NAMESPACE)
    return web.Response(body=to_bytes(root), content_type=_XML)


def _bucket_exists() -> S3Error:
    return S3Error(
        "BucketAlreadyExists",
        "The requested bucket name is not available. Select a different name "
        "and try again.",
        409,
    )
