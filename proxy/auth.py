"""Authenticate a client request: find its organisation, verify its signature.

Requests may be signed with SigV4 or, for older clients, SigV2. Each
scheme has its own module: `proxy.sigv4` and `proxy.sigv2`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from crypto.errors import KeyRevoked, UnknownAccessKey
from crypto.keyring import KeyRing
from proxy import sigv2
from proxy.addressing import parse_target
from proxy.body import PayloadSigning
from proxy.context import SERVICES, Identity
from proxy.errors import S3Error
from proxy.sigv4 import PayloadMode, parse_authorization, parse_query, verify

__all__ = ["authenticate", "credentials", "key_revoked"]


def authenticate(request: web.Request, keyring: KeyRing) -> Identity:
    """Verify the request's SigV4 or SigV2 signature. Every request must be signed."""
    query = parse_query(request.rel_url.raw_query_string)
    v2_auth = sigv2.parse_authorization(request.headers, query)
    if v2_auth is not None:
        return _authenticate_v2(request, keyring, v2_auth)
    auth = parse_authorization(request.method, request.headers, query)
    if auth is None:
        raise S3Error(
            "AccessDenied",
            "Anonymous requests are not allowed; sign requests with the access "
            "key that `byok-proxy credentials create` printed",
            403,
        )
    org_id, secret = credentials(keyring, auth.access_key_id)
    context = verify(
        auth,
        method=request.method,
        raw_path=request.raw_path.split("?", 1)[0],
        query=query,
        headers=request.headers,
        secret_key=secret,
        now=datetime.now(UTC),
    )
    payload = PayloadSigning.sigv4(auth, context)
    return Identity(org_id, auth.access_key_id, payload)


def _authenticate_v2(
    request: web.Request, keyring: KeyRing, auth: sigv2.V2Authorization
) -> Identity:
    org_id, secret = credentials(keyring, auth.access_key_id)
    sigv2.verify(
        auth,
        method=request.method,
        raw_path=request.raw_path,
        raw_query=request.rel_url.raw_query_string,
        headers=request.headers,
        secret_key=secret,
        now=datetime.now(UTC),
        bucket=_virtual_host_bucket(request),
    )
    return Identity(org_id, auth.access_key_id, PayloadSigning(PayloadMode.UNSIGNED))


def _virtual_host_bucket(request: web.Request) -> str:
    """Return the bucket a virtual-hosted request names in Host, else "".

    The request is virtual-hosted exactly when reading the Host header
    changes the target: a virtual-hosted key is the whole path, so it is
    always longer than the key of a path-style read of the same path.
    """
    domain = request.app[SERVICES].settings.domain
    host = request.headers.get("Host", "")
    virtual = parse_target(request.raw_path, host, domain)
    if virtual == parse_target(request.raw_path, host, ""):
        return ""
    return virtual.bucket


def credentials(keyring: KeyRing, access_key_id: str) -> tuple[bytes, str]:
    """Return the organisation id and secret of an access key, or raise S3Error."""
    keyring.refresh()
    try:
        return keyring.credentials(access_key_id)
    except UnknownAccessKey:
        raise S3Error(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            403,
        ) from None
    except KeyRevoked:
        raise key_revoked() from None


def key_revoked() -> S3Error:
    """Build the error returned to every request of a revoked organisation."""
    return S3Error(
        "KeyRevoked",
        "The organisation's encryption key has been revoked; its data can no "
        "longer be read or written",
        403,
    )
