"""AWS Signature Version 4 for S3: verify client requests, sign upstream ones.

A request is handled in three steps:

    auth = parse_authorization(request.headers, query)  # None: anonymous
    secret = <look up auth.access_key_id; InvalidAccessKeyId if unknown>
    context = verify(auth, method=..., raw_path=..., query=..., ...)

`context` then seeds the aws-chunked decoder when `payload_mode(auth)` is a
streaming mode. For a literal payload hash the caller hashes the body and
calls `verify_payload_sha256` before it commits anything.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final
from urllib.parse import urlsplit

from proxy.errors import S3Error
from proxy.sigv4_canonical import (
    ALGORITHM,
    canonical_header_value,
    canonical_query,
    canonical_request,
    canonical_uri,
    credential_scope,
    format_amz_date,
    group_headers,
    parse_query,
    signature,
    signing_key,
    string_to_sign,
)
from proxy.sigv4_parse import Authorization, malformed_error, parse_authorization
from proxy.sigv4_payload import CONTENT_SHA256_HEADER, PayloadMode, classify_payload

__all__ = [
    "MAX_CLOCK_SKEW",
    "Authorization",
    "PayloadMode",
    "SigningContext",
    "canonical_uri",
    "parse_authorization",
    "parse_query",
    "payload_mode",
    "sign",
    "verify",
    "verify_payload_sha256",
]

MAX_CLOCK_SKEW: Final = timedelta(minutes=15)
SERVICE: Final = "s3"

# Headers botocore leaves out of the signature because HTTP clients and
# proxies add or change them in transit.
_UNSIGNABLE_HEADERS: Final = frozenset(
    {"expect", "transfer-encoding", "user-agent", "x-amzn-trace-id"}
)
_SIGNER_HEADERS: Final = frozenset(
    {"authorization", "x-amz-content-sha256", "x-amz-date", "x-amz-security-token"}
)


@dataclass(frozen=True)
class SigningContext:
    """The signing state that a verified request passes to the chunk decoder.

    `seed_signature` is the request signature, which the first chunk
    signature chains from.
    """

    signing_key: bytes = field(repr=False)
    seed_signature: str
    scope: str
    amz_date: str


def verify(
    auth: Authorization,
    *,
    method: str,
    raw_path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    secret_key: str,
    now: datetime,
    region: str | None = None,
) -> SigningContext:
    """Check the scope, the request time and the signature of a request.

    `raw_path` is the path exactly as on the wire, such as aiohttp's
    `request.raw_path`, and any query part of it is ignored. `query` is the
    decoded pairs in wire order (see `parse_query`), and `headers` are as
    aiohttp received them. `region`, when given, is the only region accepted
    in the scope. By default any region is accepted, because the upstream
    request is signed again with the upstream's own region. Raises S3Error
    with the S3 code of the first failed check.

    TODO: an X-Amz-Security-Token is covered by the signature like any other
    header but not checked, since the proxy issues no session credentials.
    """
    _check_scope(auth, region)
    _check_time(auth, now)
    grouped = group_headers(headers)
    _check_signed_headers(auth, grouped)
    header_values = [
        (name, canonical_header_value(grouped.get(name, [])))
        for name in auth.signed_headers
    ]
    request = canonical_request(
        method,
        canonical_uri(raw_path),
        canonical_query(_signed_query(auth, query)),
        header_values,
        auth.payload_hash,
    )
    key = signing_key(secret_key, auth.credential_date, auth.region, auth.service)
    expected = signature(key, string_to_sign(auth.amz_date, auth.scope, request))
    if not hmac.compare_digest(expected, auth.signature):
        raise S3Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature "
            "you provided. Check your key and signing method.",
            403,
        )
    return SigningContext(key, auth.signature, auth.scope, auth.amz_date)


def _check_scope(auth: Authorization, region: str | None) -> None:
    if auth.service != SERVICE:
        raise malformed_error(
            auth.presigned,
            f'the credential scope names service "{auth.service}"; sign for '
            f'service "{SERVICE}".',
        )
    if region is not None and auth.region != region:
        raise malformed_error(
            auth.presigned,
            f"the region '{auth.region}' is wrong; expecting '{region}'.",
        )
    if auth.credential_date != auth.amz_date[:8]:
        raise malformed_error(
            auth.presigned,
            f"the credential date {auth.credential_date} is not the date of "
            f"X-Amz-Date {auth.amz_date}; sign with the request's own date.",
        )


def _check_time(auth: Authorization, now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    if auth.expires is None:
        if abs(now - auth.date) > MAX_CLOCK_SKEW:
            raise S3Error(
                "RequestTimeTooSkewed",
                "The difference between the request time and the current "
                "time is too large; correct the client clock.",
                403,
            )
        return
    if auth.date - now > MAX_CLOCK_SKEW:
        raise S3Error("AccessDenied", "Request is not valid yet", 403)
    if now > auth.date + timedelta(seconds=auth.expires):
        raise S3Error("AccessDenied", "Request has expired", 403)


def _check_signed_headers(auth: Authorization, headers: dict[str, list[str]]) -> None:
    signed = set(auth.signed_headers)
    if "host" not in signed:
        raise malformed_error(auth.presigned, "SignedHeaders must include host.")
    if not auth.presigned and "x-amz-date" not in headers and "date" not in signed:
        raise malformed_error(
            auth.presigned, "SignedHeaders must include the Date header."
        )
    unsigned = sorted(
        name for name in headers if name.startswith("x-amz-") and name not in signed
    )
    if unsigned:
        raise S3Error(
            "AccessDenied",
            "There were headers present in the request which were not signed: "
            f"{', '.join(unsigned)}. Sign every x-amz-* header you send.",
            403,
        )


def _signed_query(
    auth: Authorization, query: Sequence[tuple[str, str]]
) -> Sequence[tuple[str, str]]:
    if not auth.presigned:
        return query
    return [(name, value) for name, value in query if name != "X-Amz-Signature"]


def payload_mode(source: Authorization | Mapping[str, str]) -> PayloadMode:
    """Classify the x-amz-content-sha256 value of a request.

    `source` is a parsed Authorization, or the headers of an anonymous
    request, for which a missing header means UNSIGNED. aws-chunked framing
    follows from this value alone, never from Content-Encoding, because
    some clients stream aws-chunked bodies without that header. Raises
    InvalidArgument for an unknown or repeated value.
    """
    if isinstance(source, Authorization):
        return classify_payload(source.payload_hash)
    values = group_headers(source).get(CONTENT_SHA256_HEADER, [])
    if not values:
        return PayloadMode.UNSIGNED
    if len(values) > 1:
        raise S3Error(
            "InvalidArgument",
            "The x-amz-content-sha256 header appears more than once; send it once.",
        )
    return classify_payload(values[0].strip())


def verify_payload_sha256(auth: Authorization, sha256_digest: bytes) -> None:
    """Compare the body's SHA-256 with a literal x-amz-content-sha256 value.

    Raises XAmzContentSHA256Mismatch if they differ, and ValueError if the
    request did not sign a literal hash.
    """
    if payload_mode(auth) is not PayloadMode.LITERAL:
        raise ValueError("the request did not sign a literal payload hash")
    if not hmac.compare_digest(sha256_digest.hex(), auth.payload_hash.lower()):
        raise S3Error(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what "
            "was computed; send the hex SHA-256 of the body.",
        )


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    *,
    payload_hash: str,
    access_key_id: str,
    secret_key: str,
    region: str,
    now: datetime,
    session_token: str | None = None,
) -> dict[str, str]:
    """Sign an upstream S3 request with SigV4 in the Authorization header.

    `url` must be percent-encoded as it will be sent. Returns a copy of
    `headers` plus host (unless given), x-amz-date, x-amz-content-sha256,
    x-amz-security-token (with `session_token`) and authorization. Every
    header is signed except those in `_UNSIGNABLE_HEADERS`, as botocore
    does. Header values are signed as their UTF-8 encoding, so they must be
    sent as UTF-8.
    """
    parts = urlsplit(url)
    amz_date = format_amz_date(now)
    signed_copy = {
        name: value
        for name, value in headers.items()
        if name.lower() not in _SIGNER_HEADERS
    }
    if not any(name.lower() == "host" for name in signed_copy):
        signed_copy["host"] = _host_from_url(url)
    signed_copy["x-amz-date"] = amz_date
    signed_copy["x-amz-content-sha256"] = payload_hash
    if session_token is not None:
        signed_copy["x-amz-security-token"] = session_token
    grouped = group_headers(signed_copy)
    names = sorted(name for name in grouped if name not in _UNSIGNABLE_HEADERS)
    scope = credential_scope(amz_date[:8], region, SERVICE)
    request = canonical_request(
        method.upper(),
        canonical_uri(parts.path),
        canonical_query(parse_query(parts.query)),
        [(name, canonical_header_value(grouped[name])) for name in names],
        payload_hash,
    )
    key = signing_key(secret_key, amz_date[:8], region, SERVICE)
    sig = signature(key, string_to_sign(amz_date, scope, request))
    signed_copy["authorization"] = (
        f"{ALGORITHM} Credential={access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={sig}"
    )
    return signed_copy


def _host_from_url(url: str) -> str:
    """Return the Host header for a URL, without a default port."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    if parts.port is not None and parts.port != default_port:
        host = f"{host}:{parts.port}"
    return host
