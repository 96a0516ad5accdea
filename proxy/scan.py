"""Walk an organisation's objects upstream and decode their headers.

The operator commands `report` and `reencrypt` list every bucket the
catalogue gives the organisation (ListObjectsV2, or ListObjectVersions for
every version) and HEAD each object. A header is decoded but never opened:
no key is unwrapped, so a scan also works for a revoked organisation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import unquote_plus
from xml.etree.ElementTree import Element

from multidict import CIMultiDict, CIMultiDictProxy

from crypto.errors import DecryptionFailed
from crypto.header import Header
from proxy.errors import S3Error
from proxy.headers import HEADER_METADATA
from proxy.s3xml import parse_xml
from proxy.settings import Settings
from proxy.upstream import Upstream, error_from_response

__all__ = [
    "Kind",
    "Listed",
    "Position",
    "Scanned",
    "Totals",
    "connected",
    "count_objects",
    "scan_objects",
]

# HEAD requests in flight at once. A batch is HEADed before any of it is
# yielded, so a caller that writes acts on headers at most one batch old.
HEAD_BATCH = 16


@dataclass(frozen=True, order=True)
class Position:
    """The last object a run finished, in listing order: bucket, then key."""

    bucket: str
    key: str


@dataclass(frozen=True)
class Listed:
    """One entry of a listing; `version_id` is "" outside a versions listing."""

    bucket: str
    key: str
    size: int
    etag: str
    version_id: str = ""

    @property
    def position(self) -> Position:
        """Where a run that finished this object continues."""
        return Position(self.bucket, self.key)


class Kind(StrEnum):
    """Result of the HEAD of a listed object."""

    ENCRYPTED = "encrypted"
    # no header: written to the object store directly, stored unencrypted
    FOREIGN = "foreign"
    # a header that does not decode or names another organisation
    INVALID = "invalid"
    # deleted between the listing and the HEAD
    GONE = "gone"


@dataclass(frozen=True)
class Scanned:
    """A listed object with its decoded header and its HEAD response headers."""

    listed: Listed
    kind: Kind
    header: Header | None = None
    stored: CIMultiDictProxy[str] = field(
        default_factory=lambda: CIMultiDictProxy(CIMultiDict())
    )
    problem: str = ""

    @property
    def etag(self) -> str:
        """The object store's ETag of the version that the HEAD saw."""
        return self.stored.get("ETag", self.listed.etag)

    @property
    def size(self) -> int:
        """Stored bytes of the version that the HEAD saw."""
        length = self.stored.get("Content-Length", "")
        return int(length) if length.isdigit() else self.listed.size


@dataclass
class Totals:
    """A number of objects and their stored bytes."""

    objects: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        """Count one object of `size` stored bytes."""
        self.objects += 1
        self.bytes += size


@asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[Upstream]:
    """Open an upstream connection pool for one command and close it after."""
    upstream = Upstream(settings)
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.close()


async def count_objects(
    upstream: Upstream,
    buckets: Iterable[str],
    *,
    versions: bool = False,
    start: Position | None = None,
) -> Totals:
    """List without HEADs to size a progress bar: objects and stored bytes."""
    totals = Totals()
    for bucket in _ordered(buckets, start):
        async for page in _pages(
            upstream, bucket, versions, _start_after(bucket, start)
        ):
            for listed in page:
                totals.add(listed.size)
    return totals


async def scan_objects(
    upstream: Upstream,
    org_id: bytes,
    buckets: Iterable[str],
    *,
    versions: bool = False,
    start: Position | None = None,
) -> AsyncIterator[Scanned]:
    """Yield every object of `buckets` in listing order, with its header decoded.

    Buckets go in name order and keys in the object store's order, so a run
    can continue after `start`. With `versions` every version is yielded and
    delete markers are skipped; `start` applies only without `versions`.
    """
    for bucket in _ordered(buckets, start):
        async for page in _pages(
            upstream, bucket, versions, _start_after(bucket, start)
        ):
            for offset in range(0, len(page), HEAD_BATCH):
                batch = page[offset : offset + HEAD_BATCH]
                for scanned in await _head_batch(upstream, org_id, batch):
                    yield scanned


def _ordered(buckets: Iterable[str], start: Position | None) -> list[str]:
    ordered = sorted(buckets)
    if start is None:
        return ordered
    return [bucket for bucket in ordered if bucket >= start.bucket]


def _start_after(bucket: str, start: Position | None) -> str:
    return start.key if start is not None and start.bucket == bucket else ""


async def _head_batch(
    upstream: Upstream, org_id: bytes, batch: Sequence[Listed]
) -> list[Scanned]:
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_head(upstream, org_id, item)) for item in batch]
    return [task.result() for task in tasks]


async def _head(upstream: Upstream, org_id: bytes, listed: Listed) -> Scanned:
    query = [("versionId", listed.version_id)] if listed.version_id else []
    response = await upstream.request("HEAD", listed.bucket, listed.key, query=query)
    async with response:
        if response.status == 404:
            return Scanned(listed, Kind.GONE)
        if response.status != 200:
            raise await error_from_response(response)
        stored = CIMultiDictProxy(CIMultiDict(response.headers))
    return _classify(listed, stored, org_id)


def _classify(listed: Listed, stored: CIMultiDictProxy[str], org_id: bytes) -> Scanned:
    """Decode the header in a HEAD response and check that it names `org_id`."""
    text = stored.get(HEADER_METADATA)
    if text is None:
        return Scanned(listed, Kind.FOREIGN, stored=stored)
    try:
        header = Header.from_metadata(text)
    except DecryptionFailed as error:
        return Scanned(listed, Kind.INVALID, stored=stored, problem=str(error))
    if header.org_id != org_id:
        problem = f"the header names organisation {header.org_id.hex()}"
        return Scanned(listed, Kind.INVALID, header, stored, problem)
    return Scanned(listed, Kind.ENCRYPTED, header, stored)


async def _pages(
    upstream: Upstream, bucket: str, versions: bool, start_after: str
) -> AsyncIterator[list[Listed]]:
    """Yield the listing of `bucket` one page at a time."""
    if versions:
        async for page in _version_pages(upstream, bucket):
            yield page
        return
    query = [("list-type", "2"), ("encoding-type", "url")]
    if start_after:
        query.append(("start-after", start_after))
    while True:
        root = await _list(upstream, bucket, query)
        yield [_listed(bucket, entry) for entry in root.iter("Contents")]
        token = root.findtext("NextContinuationToken")
        if root.findtext("IsTruncated") != "true" or not token:
            return
        query = [("list-type", "2"), ("encoding-type", "url")]
        query.append(("continuation-token", token))


async def _version_pages(
    upstream: Upstream, bucket: str
) -> AsyncIterator[list[Listed]]:
    markers: list[tuple[str, str]] = []
    while True:
        query = [("versions", ""), ("encoding-type", "url"), *markers]
        root = await _list(upstream, bucket, query)
        yield [_listed(bucket, entry) for entry in root.iter("Version")]
        if root.findtext("IsTruncated") != "true":
            return
        markers = [
            ("key-marker", unquote_plus(root.findtext("NextKeyMarker") or "")),
            ("version-id-marker", root.findtext("NextVersionIdMarker") or ""),
        ]


async def _list(
    upstream: Upstream, bucket: str, query: Sequence[tuple[str, str]]
) -> Element:
    response = await upstream.request("GET", bucket, query=query)
    async with response:
        if response.status != 200:
            raise await error_from_response(response)
        body = await response.read()
    return parse_xml(body, what=f"object listing of bucket {bucket}")


def _listed(bucket: str, entry: Element) -> Listed:
    # S3 URL encoding writes a space as '+', as HTML forms do
    key = unquote_plus(entry.findtext("Key") or "")
    size = entry.findtext("Size") or ""
    if not (size.isascii() and size.isdigit()):
        raise S3Error(
            "InternalError",
            f"The object store listed {bucket}/{key} without a valid Size",
            502,
        )
    return Listed(
        bucket,
        key,
        int(size),
        entry.findtext("ETag") or "",
        entry.findtext("VersionId") or "",
    )
