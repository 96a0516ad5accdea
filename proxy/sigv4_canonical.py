"""SigV4 canonical forms, signing keys and signatures, as S3 computes them.

These functions take already-parsed parts and return strings. They do not
compare signatures: `proxy.sigv4` does, and maps failures to S3 errors.

Text that came off the wire is carried as `str` decoded from UTF-8 with
`surrogateescape` (what aiohttp does for paths, query strings and header
values), so `str.encode("utf-8", "surrogateescape")` gives back the exact
wire bytes even when they are not valid UTF-8. The canonical request is
hashed in that encoding, so a header value is signed as its wire bytes, as
botocore (which sends header values as UTF-8) and the Go SDKs sign it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote_from_bytes, unquote_to_bytes

from proxy.errors import S3Error

__all__ = [
    "ALGORITHM",
    "AMZ_DATE_FORMAT",
    "EMPTY_SHA256",
    "canonical_header_value",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "credential_scope",
    "format_amz_date",
    "group_headers",
    "parse_query",
    "signature",
    "signing_key",
    "string_to_sign",
]

ALGORITHM: Final = "AWS4-HMAC-SHA256"
EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()
AMZ_DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"

# RFC 3986 unreserved characters besides letters and digits. SigV4 keeps
# these as they are and percent-encodes every other byte in upper-case hex.
_UNRESERVED: Final = "-_.~"
_BAD_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _wire_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _decode_percent(text: str, what: str) -> bytes:
    if _BAD_PERCENT.search(text):
        raise S3Error(
            "InvalidURI",
            f"Couldn't parse the specified URI: the {what} has a '%' that is "
            "not followed by two hexadecimal digits; encode '%' as %25.",
        )
    return unquote_to_bytes(_wire_bytes(text))


def _encode(raw: bytes) -> str:
    return quote_from_bytes(raw, safe=_UNRESERVED)


def canonical_uri(raw_path: str) -> str:
    """Return the S3 canonical URI of a request path as sent on the wire.

    S3 neither normalises the path (no dot-segment removal, no merging of
    slashes) nor double-encodes it. Each segment between slashes is decoded
    once and encoded again: `/a b` and `/a%20b` both give `/a%20b`, `%7E`
    gives `~`, `+` gives %2B and an encoded slash stays %2F. Anything from
    the first `?` on is ignored.
    """
    path = raw_path.partition("?")[0] or "/"
    segments = path.split("/")
    return "/".join(_encode(_decode_percent(part, "path")) for part in segments)


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Split and decode a raw query string into (name, value) pairs in order.

    `+` decodes to a space, as in HTML forms, which is also how aiohttp's
    `request.query` and MinIO read it. `name` without `=` gives an empty
    value. Invalid percent-escapes raise InvalidURI.
    """
    pairs: list[tuple[str, str]] = []
    for field in raw_query.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        pairs.append((_decode_field(name), _decode_field(value)))
    return pairs


def _decode_field(text: str) -> str:
    raw = _decode_percent(text.replace("+", " "), "query string")
    return raw.decode("utf-8", "surrogateescape")


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Return the canonical query string of decoded (name, value) pairs.

    Names and values are encoded first, then sorted by name and, for a
    repeated name, by value.
    """
    encoded = sorted(
        (_encode(_wire_bytes(name)), _encode(_wire_bytes(value)))
        for name, value in pairs
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def group_headers(headers: Mapping[str, str]) -> dict[str, list[str]]:
    """Group header values by lower-case name, keeping repeats in order.

    A multidict (aiohttp's `CIMultiDictProxy`) yields every repeated header
    from `items()`, and a plain dict contains one value per name.
    """
    grouped: dict[str, list[str]] = {}
    for name, value in headers.items():
        grouped.setdefault(name.lower(), []).append(value)
    return grouped


def canonical_header_value(values: Sequence[str]) -> str:
    """Trim each value, collapse inner whitespace runs, and join with commas.

    TODO: whitespace is what `str.split()` splits on, as in botocore and
    MinIO; the AWS text names only spaces, so a tab inside a value is
    signed as a space here.
    """
    return ",".join(" ".join(value.split()) for value in values)


def canonical_request(
    method: str,
    uri: str,
    query: str,
    headers: Sequence[tuple[str, str]],
    payload_hash: str,
) -> str:
    """Assemble the canonical request from canonical parts.

    `headers` are (lower-case name, canonical value) pairs in the order of
    the SignedHeaders list.
    """
    header_lines = "".join(f"{name}:{value}\n" for name, value in headers)
    signed = ";".join(name for name, _ in headers)
    return "\n".join(
        (method, uri, query, header_lines, signed, payload_hash),
    )


def format_amz_date(moment: datetime) -> str:
    """Format an aware datetime as an ISO 8601 basic timestamp in UTC."""
    if moment.tzinfo is None:
        raise ValueError("the signing time must be timezone-aware")
    return moment.astimezone(UTC).strftime(AMZ_DATE_FORMAT)


def credential_scope(date_stamp: str, region: str, service: str) -> str:
    return f"{date_stamp}/{region}/{service}/aws4_request"


def string_to_sign(amz_date: str, scope: str, request: str) -> str:
    digest = hashlib.sha256(request.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def _hmac(key: bytes, message: str) -> bytes:
    data = message.encode("utf-8", "surrogateescape")
    return hmac.new(key, data, hashlib.sha256).digest()


def signing_key(secret_key: str, date_stamp: str, region: str, service: str) -> bytes:
    """Derive the SigV4 signing key for one day, region and service."""
    key = _hmac(f"AWS4{secret_key}".encode(), date_stamp)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def signature(key: bytes, message: str) -> str:
    """Return the lower-case hex HMAC-SHA256 of a string to sign."""
    return _hmac(key, message).hex()
