"""GetObjectAttributes: an object's plaintext ETag, size, checksum and parts."""

from __future__ import annotations

from collections.abc import Mapping
from xml.etree.ElementTree import Element, SubElement

from aiohttp import web

from proxy.context import S3Request
from proxy.errors import S3Error
from proxy.lookup import head_stored
from proxy.object_checksums import ObjectChecksum
from proxy.s3xml import document, to_bytes
from proxy.stored import StoredObject, object_etag, stored_checksum

__all__ = ["get_object_attributes"]

_ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")
_MAX_PARTS = 1000
_PASSED_HEADERS = ("Last-Modified", "x-amz-version-id", "x-amz-delete-marker")


async def get_object_attributes(s3: S3Request) -> web.StreamResponse:
    """Return the requested attributes from the object's header and record."""
    requested = _requested(s3.http.headers)
    max_parts = _number(s3.http.headers, "x-amz-max-parts", _MAX_PARTS)
    marker = _number(s3.http.headers, "x-amz-part-number-marker", 0)
    stored, upstream = await head_stored(s3)
    checksum = stored_checksum(s3, stored)
    root = document("GetObjectAttributesResponse")
    if "ETag" in requested:
        SubElement(root, "ETag").text = (await object_etag(s3, stored)).strip('"')
    if "Checksum" in requested and checksum is not None:
        element = SubElement(root, "Checksum")
        SubElement(element, checksum.xml_name).text = checksum.value
        SubElement(element, "ChecksumType").text = checksum.kind
    if "ObjectParts" in requested and stored.is_multipart:
        root.append(_parts(stored, checksum, max_parts, marker))
    if "StorageClass" in requested:
        storage_class = upstream.get("x-amz-storage-class", "STANDARD")
        SubElement(root, "StorageClass").text = storage_class
    if "ObjectSize" in requested:
        SubElement(root, "ObjectSize").text = str(stored.plaintext_size)
    headers = {name: upstream[name] for name in _PASSED_HEADERS if name in upstream}
    return web.Response(
        body=to_bytes(root), content_type="application/xml", headers=headers
    )


def _parts(
    stored: StoredObject,
    checksum: ObjectChecksum | None,
    max_parts: int,
    marker: int,
) -> Element:
    """Build the ObjectParts element: one page of parts after `marker`."""
    element = Element("ObjectParts")
    SubElement(element, "PartsCount").text = str(len(stored.parts))
    SubElement(element, "PartNumberMarker").text = str(marker)
    SubElement(element, "MaxParts").text = str(max_parts)
    listed = [
        (index, part)
        for index, part in enumerate(stored.parts)
        if part.part_number > marker
    ]
    page = listed[:max_parts]
    truncated = len(listed) > len(page)
    if page:
        SubElement(element, "NextPartNumberMarker").text = str(page[-1][1].part_number)
    SubElement(element, "IsTruncated").text = "true" if truncated else "false"
    for index, part in page:
        item = SubElement(element, "Part")
        SubElement(item, "PartNumber").text = str(part.part_number)
        SubElement(item, "Size").text = str(part.plaintext_size)
        if checksum is not None and checksum.parts:
            SubElement(item, checksum.xml_name).text = checksum.parts[index]
    return element


def _requested(headers: Mapping[str, str]) -> set[str]:
    names = {
        name.strip()
        for name in headers.get("x-amz-object-attributes", "").split(",")
        if name.strip()
    }
    if not names:
        raise S3Error(
            "InvalidArgument",
            "The x-amz-object-attributes header specifying the attributes to be "
            "retrieved is either missing or empty",
        )
    unknown = names - set(_ATTRIBUTES)
    if unknown:
        raise S3Error(
            "InvalidArgument",
            f"Invalid attribute name specified: {sorted(unknown)[0]}",
        )
    return names


def _number(headers: Mapping[str, str], name: str, default: int) -> int:
    text = headers.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) > 2**31 - 1:
        raise S3Error("InvalidArgument", f"The {name} header {text!r} is not valid")
    return int(text)
