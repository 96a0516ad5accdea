"""Authenticate a client request: find its organisation, verify its signature."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from crypto.errors import KeyRevoked, UnknownAccessKey
from crypto.keyring import KeyRing
from proxy.context import Identity
from proxy.errors import S3Error
from proxy.sigv4 import parse_authorization, parse_query, verify

__all__ = ["authenticate", "key_revoked"]


def authenticate(request: web.Request, keyring: KeyRing) -> Identity:
    """Verify the request's SigV4 signature; every request must be signed."""
    query = parse_query(request.rel_url.raw_query_string)
    auth = parse_authorization(request.method, request.headers, query)
    if auth is None:
        raise S3Error(
            "AccessDenied",
            "Anonymous requests are not allowed; sign requests with the access "
            "key that `byok-proxy credentials create` printed",
            403,
        )
    keyring.refresh()
    try:
        org_id, secret = keyring.credentials(auth.access_key_id)
    except UnknownAccessKey:
        raise S3Error(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            403,
        ) from None
    except KeyRevoked:
        raise key_revoked() from None
    context = verify(
        auth,
        method=request.method,
        raw_path=request.raw_path.split("?", 1)[0],
        query=query,
        headers=request.headers,
        secret_key=secret,
        now=datetime.now(UTC),
    )
    return Identity(org_id, auth.access_key_id, auth, context)


def key_revoked() -> S3Error:
    """Build the error returned to every request of a revoked organisation."""
    return S3Error(
        "KeyRevoked",
        "The organisation's encryption key has been revoked; its data can no "
        "longer be read or written",
        403,
    )
