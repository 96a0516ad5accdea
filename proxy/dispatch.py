"""Route an S3 request to its handler by method, target and subresource."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy import (
    acl,
    attributes,
    buckets,
    bulk_delete,
    copy,
    multipart,
    object_reads,
    objects,
)
from proxy.context import S3Request
from proxy.errors import S3Error
from proxy.headers import governance_bypass_headers
from proxy.passthrough import body_digest_headers, forward, read_body

__all__ = ["Handler", "handler_for"]

Handler = Callable[[S3Request], Awaitable[web.StreamResponse]]

# Subresources the proxy does not offer; everything else with one of these
# query names is rejected rather than passed through unencrypted or unchecked.
_UNSUPPORTED = (
    "accelerate", "analytics", "cors", "encryption",
    "intelligent-tiering", "inventory", "lifecycle", "logging",
    "metrics", "notification", "policy",
    "policyStatus", "replication", "requestPayment",
    "restore", "select", "torrent",
    "website",
)  # fmt: skip
# Subresources that exist only on buckets or only on objects. Elsewhere they
# are rejected, because the handler reached instead, such as GetObject or
# ListObjects, would ignore them.
_BUCKET_ONLY = ("object-lock", "ownershipControls", "publicAccessBlock")
_OBJECT_ONLY = ("attributes", "legal-hold", "retention")


def handler_for(s3: S3Request) -> Handler:
    """Return the handler for a request, or raise NotImplemented / MethodNotAllowed."""
    for name in _UNSUPPORTED:
        if name in s3.query:
            raise _not_implemented(name)
    if not s3.bucket:
        return _service(s3)
    if not s3.key:
        return _bucket(s3)
    return _object(s3)


def _service(s3: S3Request) -> Handler:
    if s3.http.method == "GET":
        return buckets.list_buckets
    raise _not_allowed(s3)


def _bucket(s3: S3Request) -> Handler:
    method, query = s3.http.method, s3.query
    if any(name in query for name in _OBJECT_ONLY):
        raise _not_allowed(s3)
    subresource = _bucket_subresource(s3)
    if subresource is not None:
        return subresource
    if method == "GET" and "uploads" in query:
        return _forward_get
    if method == "GET" and "location" in query:
        return _forward_get
    if method == "GET" and "versioning" in query:
        return _forward_get
    if "tagging" in query:
        return _tagging(s3)
    if method == "GET" and "versions" in query:
        return buckets.list_object_versions
    if method == "PUT" and "versioning" in query:
        return _forward_put
    if method == "PUT" and query:
        raise _not_implemented(next(iter(query)))
    if method == "POST" and "delete" in query:
        return bulk_delete.delete_objects
    table: dict[str, Handler] = {
        "GET": buckets.list_objects,
        "HEAD": buckets.head_bucket,
        "PUT": buckets.create_bucket,
        "DELETE": buckets.delete_bucket,
    }
    if method in table:
        return table[method]
    raise _not_allowed(s3)


def _bucket_subresource(s3: S3Request) -> Handler | None:
    query = s3.query
    if "acl" in query:
        return _by_method(s3, {"GET": acl.get_acl, "PUT": acl.put_acl})
    if "object-lock" in query:
        return _by_method(s3, {"GET": _forward_get, "PUT": _forward_put})
    if "ownershipControls" in query:
        return _by_method(
            s3,
            {
                "GET": acl.get_ownership_controls,
                "PUT": acl.put_ownership_controls,
                "DELETE": acl.delete_ownership_controls,
            },
        )
    if "publicAccessBlock" in query:
        return _by_method(
            s3,
            {
                "GET": acl.get_public_access_block,
                "PUT": acl.put_public_access_block,
                "DELETE": acl.delete_public_access_block,
            },
        )
    return None


def _object(s3: S3Request) -> Handler:
    method, query = s3.http.method, s3.query
    if any(name in query for name in _BUCKET_ONLY):
        raise _not_allowed(s3)
    if "x-amz-copy-source" in s3.http.headers:
        if method != "PUT":
            raise _not_allowed(s3)
        if "uploadId" in query:
            return copy.upload_part_copy
        # CopyObject with the COPY metadata directive does not read the
        # request's other headers, so its ACL headers are checked here
        acl.check_acl_headers(s3.http.headers)
        return copy.copy_object
    if "tagging" in query:
        return _tagging(s3)
    if "attributes" in query:
        return _by_method(s3, {"GET": attributes.get_object_attributes})
    if "acl" in query:
        return _by_method(s3, {"GET": acl.get_acl, "PUT": acl.put_acl})
    if "retention" in query or "legal-hold" in query:
        return _by_method(s3, {"GET": _forward_get, "PUT": _forward_lock_put})
    table: dict[str, Handler]
    if "uploadId" in query:
        table = {
            "PUT": multipart.upload_part,
            "POST": multipart.complete_upload,
            "DELETE": multipart.abort_upload,
            "GET": multipart.list_parts,
        }
    elif "uploads" in query:
        table = {"POST": multipart.create_upload}
    else:
        table = {
            "PUT": objects.put_object,
            "GET": object_reads.get_object,
            "HEAD": objects.head_object,
            "DELETE": objects.delete_object,
        }
    if method not in table:
        raise _not_allowed(s3)
    return table[method]


async def _forward_get(s3: S3Request) -> web.StreamResponse:
    await read_body(s3)
    return await forward(s3, "GET", query=list(s3.query.items()))


def _tagging(s3: S3Request) -> Handler:
    """Tags are object store metadata, stored unencrypted like object keys."""
    table: dict[str, Handler] = {
        "GET": _forward_get,
        "PUT": _forward_put,
        "DELETE": _forward_delete,
    }
    if s3.http.method not in table:
        raise _not_allowed(s3)
    return table[s3.http.method]


async def _forward_delete(s3: S3Request) -> web.StreamResponse:
    await read_body(s3)
    return await forward(s3, "DELETE", query=list(s3.query.items()))


async def _forward_put(s3: S3Request) -> web.StreamResponse:
    """Forward a configuration PUT whose body passes unchanged."""
    body = await read_body(s3)
    headers = body_digest_headers(s3.http.headers, body)
    return await forward(
        s3, "PUT", query=list(s3.query.items()), headers=headers, body=body
    )


async def _forward_lock_put(s3: S3Request) -> web.StreamResponse:
    """Forward PutObjectRetention or PutObjectLegalHold, which the store enforces."""
    body = await read_body(s3)
    headers = body_digest_headers(s3.http.headers, body)
    headers.update(governance_bypass_headers(s3.http.headers))
    return await forward(
        s3, "PUT", query=list(s3.query.items()), headers=headers, body=body
    )


def _by_method(s3: S3Request, table: dict[str, Handler]) -> Handler:
    if s3.http.method not in table:
        raise _not_allowed(s3)
    return table[s3.http.method]


def _not_implemented(feature: str) -> S3Error:
    return S3Error(
        "NotImplemented",
        f"The proxy does not implement the {feature!r} feature",
        501,
    )


def _not_allowed(s3: S3Request) -> S3Error:
    return S3Error(
        "MethodNotAllowed",
        f"The specified method {s3.http.method} is not allowed against this resource.",
        405,
    )
