"""S3 XML documents: parsing client and upstream bodies, writing responses."""

from __future__ import annotations

from typing import cast
from xml.etree.ElementTree import Element, SubElement, tostring

from defusedxml import ElementTree

from proxy.errors import S3Error

__all__ = [
    "NAMESPACE",
    "child_text",
    "document",
    "parse_xml",
    "strip_namespace",
    "to_bytes",
]

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def parse_xml(body: bytes, *, what: str = "request body") -> Element:
    """Parse XML with namespaces removed; MalformedXML if it does not parse."""
    try:
        root = cast(Element, ElementTree.fromstring(body))
    except (ElementTree.ParseError, ValueError) as error:
        raise S3Error(
            "MalformedXML",
            f"The XML {what} is not well-formed or did not validate",
        ) from error
    strip_namespace(root)
    return root


def strip_namespace(root: Element) -> None:
    """Remove namespace prefixes from every tag, in place."""
    for element in root.iter():
        if element.tag.startswith("{"):
            element.tag = element.tag.split("}", 1)[1]


def result_text(body: bytes, tag: str, child: str) -> str:
    """Return a child of an object store result; a 200 can still carry an Error."""
    root = parse_xml(body, what="object store response")
    text = root.findtext(child)
    if root.tag != tag or not text:
        raise S3Error(
            root.findtext("Code") or "InternalError",
            root.findtext("Message") or f"The object store sent no {tag}",
            500,
        )
    return text


def result_etag(body: bytes, tag: str) -> str:
    """Return the quoted ETag of an object store result document."""
    etag = result_text(body, tag, "ETag")
    # SeaweedFS leaves the quotes out of copy results but not out of HEADs
    return etag if etag.startswith('"') else f'"{etag}"'


def child_text(element: Element, name: str) -> str | None:
    """Return the text of the first child called `name`, if any."""
    child = element.find(name)
    if child is None:
        return None
    return child.text or ""


def document(tag: str, fields: dict[str, str] | None = None) -> Element:
    """Create a root element in the S3 namespace with simple text children."""
    root = Element(tag, xmlns=NAMESPACE)
    for name, value in (fields or {}).items():
        SubElement(root, name).text = value
    return root


def to_bytes(root: Element) -> bytes:
    """Serialise a response document with the XML declaration."""
    return _XML_DECLARATION + cast(
        bytes, tostring(root, encoding="utf-8", xml_declaration=False)
    )
