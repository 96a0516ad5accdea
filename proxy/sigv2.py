"""AWS Signature Version 2 for S3: verify requests signed with HMAC-SHA1.

Older clients still sign this way: s3cmd with `signature_v2`, botocore with
`signature_version="s3"`, and presigned URLs that carry AWSAccessKeyId,
Expires and Signature in the query. The string to sign is defined in the
Amazon S3 guide "Signing and authenticating REST requests":

    method \\n Content-MD5 \\n Content-Type \\n Date (or Expires) \\n
    one "name:value\\n" line per x-amz- header + canonical resource

A request is handled in three steps, as with SigV4:

    auth = parse_authorization(request.headers, query)  # None: not SigV2
    secret = <look up auth.access_key_id; InvalidAccessKeyId if unknown>
    verify(auth, method=..., raw_path=..., raw_query=..., ...)

The signature covers no hash of the body, so the body is checked only by
the Content-MD5 and x-amz-checksum-* headers that the client sends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final
from urllib.parse import unquote_to_bytes

from proxy.errors import S3Error
from proxy.sigv4 import MAX_CLOCK_SKEW
from proxy.sigv4_canonical import AMZ_DATE_FORMAT, group_headers

__all__ = [
    "SUBRESOURCES",
    "V2Authorization",
    "canonical_resource",
    "parse_authorization",
    "request_time",
    "sign",
    "string_to_sign",
    "verify",
]

# The query parameters that are part of the canonical resource. This is
# botocore's list (HmacV1Auth in botocore 1.44), which contains every
# sub-resource and response-* override that the AWS guide names. A client
# and the proxy must agree on it exactly, or the signatures differ.
SUBRESOURCES: Final = frozenset(
    {
        "accelerate",
        "acl",
        "analytics",
        "cors",
        "defaultObjectAcl",
        "delete",
        "inventory",
        "lifecycle",
        "location",
        "logging",
        "metrics",
        "notification",
        "object-lock",
        "partNumber",
        "policy",
        "replication",
        "requestPayment",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
        "restore",
        "select",
        "select-type",
        "storageClass",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
    }
)

_SCHEME: Final = "AWS"
_QUERY_PARAMS: Final = ("AWSAccessKeyId", "Signature", "Expires")
_SIGV4_QUERY_PARAMS: Final = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature")
_ACCESS_KEY_ID: Final = re.compile(r"[!-9;-~]+")
_EXPIRES: Final = re.compile(r"[0-9]{1,20}")
_AMZ_DATE: Final = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_FOLDING: Final = re.compile(r"\r?\n[ \t]+")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class V2Authorization:
    """The SigV2 credentials of one request, parsed but not yet verified.

    `expires` is the Expires query parameter of a presigned URL, as sent,
    and None for a request signed in the Authorization header.
    """

    access_key_id: str
    signature: str
    expires: str | None


def parse_authorization(
    headers: Mapping[str, str], query: Sequence[tuple[str, str]]
) -> V2Authorization | None:
    """Parse the SigV2 credentials of a request; None if it carries none.

    `query` is the decoded (name, value) pairs, as `proxy.sigv4.parse_query`
    returns them. Raises S3Error for malformed SigV2 credentials, and for
    SigV2 credentials mixed with another Authorization header or with
    SigV4 query parameters.
    """
    grouped = group_headers(headers)
    params: dict[str, list[str]] = {}
    for name, value in query:
        params.setdefault(name, []).append(value)
    header_values = grouped.get("authorization", [])
    in_header = any(_scheme(value) == _SCHEME for value in header_values)
    in_query = "AWSAccessKeyId" in params or "Signature" in params
    if not (in_header or in_query):
        return None
    sigv4_query = any(name in params for name in _SIGV4_QUERY_PARAMS)
    if sigv4_query or (in_query and header_values):
        raise S3Error(
            "InvalidArgument",
            "Only one auth mechanism allowed; send the Authorization header, "
            "the Signature query parameters or the X-Amz-Algorithm query "
            "parameters, not more than one of them.",
        )
    if in_header:
        return _parse_header(header_values)
    return _parse_query(params)


def _scheme(value: str) -> str:
    return value.strip().partition(" ")[0]


def _parse_header(values: list[str]) -> V2Authorization:
    if len(values) != 1:
        raise S3Error(
            "InvalidArgument",
            f"The Authorization header appears {len(values)} times; send it once.",
        )
    credentials = values[0].strip().partition(" ")[2].strip()
    access_key_id, _, signature = credentials.partition(":")
    valid_id = _ACCESS_KEY_ID.fullmatch(access_key_id) is not None
    if not (valid_id and signature) or ":" in signature:
        raise S3Error(
            "InvalidArgument",
            "AWS authorization header is invalid. Expected AwsAccessKeyId:signature",
        )
    return V2Authorization(access_key_id, signature, None)


def _parse_query(params: dict[str, list[str]]) -> V2Authorization:
    if any(len(params.get(name, [])) != 1 for name in _QUERY_PARAMS):
        raise S3Error(
            "AccessDenied",
            "Query-string authentication requires the Signature, Expires and "
            "AWSAccessKeyId parameters, each exactly once.",
            403,
        )
    access_key_id = params["AWSAccessKeyId"][0]
    signature = params["Signature"][0]
    expires = params["Expires"][0]
    if _ACCESS_KEY_ID.fullmatch(access_key_id) is None or not signature:
        raise S3Error(
            "AccessDenied",
            "AWSAccessKeyId must be an access key id without spaces or colons, "
            "and Signature must not be empty.",
            403,
        )
    if _EXPIRES.fullmatch(expires) is None:
        raise S3Error(
            "AccessDenied",
            f"Invalid date (should be seconds since epoch): {expires}; give "
            "Expires as whole seconds since 1970-01-01 UTC.",
            403,
        )
    return V2Authorization(access_key_id, signature, expires)


def verify(
    auth: V2Authorization,
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    secret_key: str,
    now: datetime,
    bucket: str = "",
) -> None:
    """Check the request time and the signature of a SigV2 request.

    `raw_path` and `raw_query` are as on the wire, still percent-encoded.
    `bucket` is the bucket named by the Host header of a virtual-hosted
    request, and "" for a path-style request. Raises S3Error with the S3
    code of the first failed check.
    """
    _check_time(auth, headers, now)
    message = string_to_sign(
        method, raw_path, raw_query, headers, bucket=bucket, expires=auth.expires
    )
    expected = sign(secret_key, message).encode("ascii")
    # surrogatepass encodes any str, and a valid signature is ASCII anyway
    claimed = auth.signature.encode("utf-8", "surrogatepass")
    if not hmac.compare_digest(expected, claimed):
        raise S3Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature "
            "you provided. Check your key and signing method.",
            403,
        )
    _reject_streaming_payload(headers)


def _check_time(
    auth: V2Authorization, headers: Mapping[str, str], now: datetime
) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    if auth.expires is not None:
        if now.timestamp() > int(auth.expires):
            raise S3Error("AccessDenied", "Request has expired", 403)
        return
    if abs(now - request_time(headers)) > MAX_CLOCK_SKEW:
        raise S3Error(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is "
            "too large; correct the client clock.",
            403,
        )


def request_time(headers: Mapping[str, str]) -> datetime:
    """Return the time of a request signed in its Authorization header.

    x-amz-date, when present even if empty, replaces Date. Both take an HTTP
    date such as "Tue, 27 Mar 2007 19:36:42 +0000", and x-amz-date also the
    ISO 8601 basic form "20070327T193642Z". Raises AccessDenied for a
    missing, repeated or invalid value and for a time before 1970.
    """
    grouped = group_headers(headers)
    name = "x-amz-date" if "x-amz-date" in grouped else "date"
    values = grouped.get(name, [])
    moment = _parse_time(values[0].strip()) if len(values) == 1 else None
    if moment is None or moment < _EPOCH:
        raise S3Error(
            "AccessDenied",
            "AWS authentication requires a valid Date or x-amz-date header",
            403,
        )
    return moment


def _parse_time(value: str) -> datetime | None:
    if _AMZ_DATE.fullmatch(value):
        try:
            return datetime.strptime(value, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return None
    try:
        moment = parsedate_to_datetime(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _reject_streaming_payload(headers: Mapping[str, str]) -> None:
    """Reject an aws-chunked body, whose chunk signatures need SigV4.

    Storing it would keep the chunk framing as part of the object.
    """
    values = group_headers(headers).get("x-amz-content-sha256", [])
    if any(value.strip().startswith("STREAMING-") for value in values):
        raise S3Error(
            "InvalidRequest",
            "aws-chunked uploads need Signature Version 4; sign the request "
            "with AWS4-HMAC-SHA256 or send the body without aws-chunked framing.",
        )


def string_to_sign(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    *,
    bucket: str = "",
    expires: str | None = None,
) -> str:
    """Build the SigV2 string to sign of a request.

    `expires` takes the place of the Date for a presigned URL. Otherwise an
    x-amz-date header empties the Date position, because it is signed as an
    x-amz- header instead. See `verify` for the other arguments.
    """
    # TODO: botocore's presigned URLs carry the x-amz-* headers, Content-Type
    # and Content-MD5 they signed as query parameters. Only headers are read
    # here, so such a URL fails with SignatureDoesNotMatch.
    grouped = group_headers(headers)
    if expires is not None:
        date = expires
    elif "x-amz-date" in grouped:
        date = ""
    else:
        date = _joined(grouped.get("date", []))
    positional = (
        method,
        _joined(grouped.get("content-md5", [])),
        _joined(grouped.get("content-type", [])),
        date,
    )
    return (
        "\n".join(positional)
        + "\n"
        + _canonical_amz_headers(grouped)
        + canonical_resource(raw_path, raw_query, bucket)
    )


def _joined(values: Sequence[str]) -> str:
    """Unfold and trim each value, and join repeated values with commas."""
    return ",".join(_FOLDING.sub(" ", value).strip() for value in values)


def _canonical_amz_headers(grouped: dict[str, list[str]]) -> str:
    names = sorted(name for name in grouped if name.startswith("x-amz-"))
    return "".join(f"{name}:{_joined(grouped[name])}\n" for name in names)


def canonical_resource(raw_path: str, raw_query: str, bucket: str = "") -> str:
    """Return the SigV2 canonical resource: bucket, raw path, sub-resources.

    The path is signed as sent, percent-encoding and all. A virtual-hosted
    request's `bucket` comes first, so both addressing styles sign the same
    resource. A path-style path of only a bucket, such as `/bucket`, is
    signed with a trailing slash, like virtual-hosted `/`. botocore signs it
    so, because S3 accepts only that form. Sub-resource values are signed
    percent-decoded, sorted by name and, for a repeated name, in wire
    order, as botocore signs them.
    """
    path = raw_path.partition("?")[0]
    if bucket:
        resource = f"/{bucket}{path}"
    elif path.count("/") == 1 and len(path) > 1:
        resource = path + "/"
    else:
        resource = path
    subresources: list[tuple[str, str]] = []
    for field in raw_query.split("&"):
        name, separator, value = field.partition("=")
        if name in SUBRESOURCES:
            text = f"{name}={_unquote(value)}" if separator else name
            subresources.append((name, text))
    if not subresources:
        return resource
    subresources.sort(key=lambda pair: pair[0])
    return resource + "?" + "&".join(text for _, text in subresources)


def _unquote(value: str) -> str:
    raw = unquote_to_bytes(value.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")


def sign(secret_key: str, message: str) -> str:
    """Return the base64 HMAC-SHA1 of `message`, the SigV2 signature.

    `message` is signed as UTF-8, with the wire bytes that aiohttp decoded
    with surrogateescape restored.
    """
    digest = hmac.new(
        secret_key.encode("utf-8"),
        message.encode("utf-8", "surrogateescape"),
        hashlib.sha1,
    ).digest()
    return base64.b64encode(digest).decode("ascii")
