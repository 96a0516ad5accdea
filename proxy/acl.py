"""ACL, object ownership and public access requests, handled in the proxy.

The proxy signs every request to the object store with its one identity,
and organisations own buckets through the catalogue. ACLs in the object
store could therefore grant nothing to an organisation, and a public one
would let anonymous readers of the object store fetch ciphertext. The proxy
neither forwards nor stores ACLs. It behaves as S3 does for a bucket whose
object ownership is BucketOwnerEnforced (ACLs disabled, the S3 default for
new buckets). GetBucketAcl and GetObjectAcl return the owner with
FULL_CONTROL, and an ACL write succeeds only if it grants the owner full
control and nothing else. Every request must be signed by an organisation,
so nothing is public, and GetPublicAccessBlock returns all four settings on.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.etree.ElementTree import Element, SubElement

from aiohttp import web

from proxy.context import S3Request
from proxy.errors import S3Error
from proxy.passthrough import read_body, upstream_bytes
from proxy.s3xml import NAMESPACE, document, parse_xml, to_bytes

__all__ = [
    "CANNED_ACLS",
    "OWNER_ONLY_ACLS",
    "acl_not_supported",
    "check_acl_headers",
    "check_object_ownership",
    "delete_ownership_controls",
    "delete_public_access_block",
    "get_acl",
    "get_ownership_controls",
    "get_public_access_block",
    "put_acl",
    "put_ownership_controls",
    "put_public_access_block",
]

# Every canned ACL S3 defines, and those that grant only the owner full
# control, which a bucket with ACLs disabled still accepts.
CANNED_ACLS = frozenset(
    {
        "private",
        "public-read",
        "public-read-write",
        "authenticated-read",
        "aws-exec-read",
        "bucket-owner-read",
        "bucket-owner-full-control",
        "log-delivery-write",
    }
)
OWNER_ONLY_ACLS = frozenset({"private", "bucket-owner-full-control"})
_PERMISSIONS = frozenset({"FULL_CONTROL", "READ", "WRITE", "READ_ACP", "WRITE_ACP"})
_GRANT_PREFIX = "x-amz-grant-"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_XML = "application/xml"
_ENFORCED = "BucketOwnerEnforced"
_PUBLIC_ACCESS_SETTINGS = (
    "BlockPublicAcls",
    "IgnorePublicAcls",
    "BlockPublicPolicy",
    "RestrictPublicBuckets",
)


def check_acl_headers(headers: Mapping[str, str]) -> None:
    """Raise unless the ACL headers of a request grant only the owner full control.

    As on an S3 bucket with ACLs disabled, `x-amz-acl: private` and
    `bucket-owner-full-control` pass, other canned ACLs and every
    `x-amz-grant-*` header fail with AccessControlListNotSupported, and an
    unknown canned ACL fails with InvalidArgument. An empty `x-amz-acl` is
    ignored, as S3 ignores it.
    """
    canned = headers.get("x-amz-acl", "").strip()
    grants = [name for name in headers if name.lower().startswith(_GRANT_PREFIX)]
    if canned and canned not in CANNED_ACLS:
        raise S3Error(
            "InvalidArgument",
            f"The canned ACL {canned!r} is not valid. Use private or "
            "bucket-owner-full-control, the canned ACLs this proxy accepts.",
        )
    if canned and grants:
        raise S3Error(
            "InvalidRequest",
            "Specifying both Canned ACLs and Header Grants is not allowed",
        )
    if grants or (canned and canned not in OWNER_ONLY_ACLS):
        raise acl_not_supported()


def check_object_ownership(value: str | None) -> None:
    """Raise unless an object ownership setting is absent or BucketOwnerEnforced.

    The other two settings enable ACLs, which the proxy cannot offer.
    """
    if value is None or value == _ENFORCED:
        return
    if value in ("BucketOwnerPreferred", "ObjectWriter"):
        raise S3Error(
            "NotImplemented",
            f"The proxy supports only the {_ENFORCED} object ownership, not "
            f"{value!r}, because its buckets keep ACLs disabled",
            501,
        )
    raise S3Error(
        "InvalidArgument",
        f"The object ownership {value!r} is not valid. Use {_ENFORCED}.",
    )


def acl_not_supported() -> S3Error:
    """Return the error S3 sends when a bucket with ACLs disabled gets an ACL."""
    return S3Error("AccessControlListNotSupported", "The bucket does not allow ACLs")


async def get_acl(s3: S3Request) -> web.StreamResponse:
    """Return the owner-only ACL of a bucket, or of an object that exists."""
    await read_body(s3)
    if s3.key:
        await _require_object(s3)
    return _xml_answer(_owner_acl(s3))


async def put_acl(s3: S3Request) -> web.StreamResponse:
    """Accept an ACL that grants only the owner full control, and reject any other."""
    body = await read_body(s3)
    check_acl_headers(s3.http.headers)
    canned = s3.http.headers.get("x-amz-acl", "").strip()
    if body.strip():
        _check_policy(body, _owner_id(s3))
    elif not canned:
        raise S3Error(
            "MissingSecurityHeader", "Your request was missing a required header"
        )
    if s3.key:
        await _require_object(s3)
    return web.Response(status=200)


async def get_ownership_controls(s3: S3Request) -> web.StreamResponse:
    """Return BucketOwnerEnforced, the only object ownership the proxy offers."""
    await read_body(s3)
    root = document("OwnershipControls")
    rule = SubElement(root, "Rule")
    SubElement(rule, "ObjectOwnership").text = _ENFORCED
    return _xml_answer(root)


async def put_ownership_controls(s3: S3Request) -> web.StreamResponse:
    """Accept BucketOwnerEnforced, which changes nothing, and reject the others."""
    root = parse_xml(await read_body(s3))
    rules = root.findall("Rule")
    if root.tag != "OwnershipControls" or not rules:
        raise _malformed_xml()
    for rule in rules:
        value = rule.findtext("ObjectOwnership")
        if value is None:
            raise _malformed_xml()
        check_object_ownership(value)
    return web.Response(status=200)


async def delete_ownership_controls(s3: S3Request) -> web.StreamResponse:
    """Raise NotImplemented, because without the setting S3 would enable ACLs."""
    await read_body(s3)
    raise S3Error(
        "NotImplemented",
        f"The proxy cannot remove the {_ENFORCED} object ownership, because its "
        "buckets keep ACLs disabled",
        501,
    )


async def get_public_access_block(s3: S3Request) -> web.StreamResponse:
    """Return all four settings on, because the proxy serves only signed requests."""
    await read_body(s3)
    fields = {name: "true" for name in _PUBLIC_ACCESS_SETTINGS}
    return _xml_answer(document("PublicAccessBlockConfiguration", fields))


async def put_public_access_block(s3: S3Request) -> web.StreamResponse:
    """Accept a configuration with all four settings on, and reject any other.

    S3 treats a setting left out as off, so all four must be present.
    """
    root = parse_xml(await read_body(s3))
    if root.tag != "PublicAccessBlockConfiguration":
        raise _malformed_xml()
    for name in _PUBLIC_ACCESS_SETTINGS:
        value = (root.findtext(name) or "false").strip().lower()
        if value not in ("true", "false"):
            raise _malformed_xml()
        if value == "false":
            raise _public_access_not_implemented(f"{name} set to false")
    return web.Response(status=200)


async def delete_public_access_block(s3: S3Request) -> web.StreamResponse:
    """Raise NotImplemented, because the proxy cannot allow public access."""
    await read_body(s3)
    raise _public_access_not_implemented("its removal")


def _public_access_not_implemented(change: str) -> S3Error:
    return S3Error(
        "NotImplemented",
        f"The proxy does not implement public access, so it rejects a public "
        f"access block with {change}; every request must be signed by an "
        "organisation",
        501,
    )


def _check_policy(body: bytes, owner_id: str) -> None:
    """Raise unless an AccessControlPolicy grants its owner FULL_CONTROL only."""
    try:
        root = parse_xml(body, what="ACL")
    except S3Error as error:
        raise _malformed_acl() from error
    grants = root.find("AccessControlList")
    if root.tag != "AccessControlPolicy" or grants is None:
        raise _malformed_acl()
    owner = root.findtext("Owner/ID")
    if owner is not None and owner.strip().lower() != owner_id:
        raise acl_not_supported()
    entries = grants.findall("Grant")
    if not entries:
        raise acl_not_supported()
    for grant in entries:
        if not _grants_owner_full_control(grant, owner_id):
            raise acl_not_supported()


def _grants_owner_full_control(grant: Element, owner_id: str) -> bool:
    grantee = grant.find("Grantee")
    permission = grant.findtext("Permission")
    if grantee is None or permission not in _PERMISSIONS:
        raise _malformed_acl()
    grantee_id = (grantee.findtext("ID") or "").strip().lower()
    others = grantee.find("URI") is not None or grantee.find("EmailAddress") is not None
    return grantee_id == owner_id and not others and permission == "FULL_CONTROL"


async def _require_object(s3: S3Request) -> None:
    """Raise NoSuchKey unless the addressed object (or version) exists."""
    query = [(name, value) for name, value in s3.query.items() if name == "versionId"]
    await upstream_bytes(s3, "HEAD", key=s3.key, query=query)


def _owner_acl(s3: S3Request) -> Element:
    """Build the ACL S3 returns for a bucket or object with ACLs disabled.

    The canonical user id is the organisation id in hexadecimal and the
    display name is the organisation name.
    """
    owner_id, name = owner(s3)
    root = Element("AccessControlPolicy", xmlns=NAMESPACE)
    owner_element = SubElement(root, "Owner")
    SubElement(owner_element, "ID").text = owner_id
    SubElement(owner_element, "DisplayName").text = name
    grant = SubElement(SubElement(root, "AccessControlList"), "Grant")
    grantee = SubElement(
        grant, "Grantee", {"xmlns:xsi": _XSI, "xsi:type": "CanonicalUser"}
    )
    SubElement(grantee, "ID").text = owner_id
    SubElement(grantee, "DisplayName").text = name
    SubElement(grant, "Permission").text = "FULL_CONTROL"
    return root


def owner(s3: S3Request) -> tuple[str, str]:
    """Return the requesting organisation as an S3 owner: canonical id, name."""
    owner_id = _owner_id(s3)
    return owner_id, s3.services.keyring.organisation(s3.org_id).name or owner_id


def _owner_id(s3: S3Request) -> str:
    return s3.org_id.hex()


def _malformed_acl() -> S3Error:
    return S3Error(
        "MalformedACLError",
        "The XML you provided was not well-formed or did not validate against "
        "our published schema",
    )


def _malformed_xml() -> S3Error:
    return S3Error(
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against "
        "our published schema",
    )


def _xml_answer(root: Element) -> web.Response:
    return web.Response(body=to_bytes(root), content_type=_XML)
