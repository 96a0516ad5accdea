"""POST policy documents of form uploads: parse, verify the signature, check a form.

A policy is base64 of a UTF-8 JSON object with an `expiration` (ISO 8601 in
UTC) and a `conditions` list. A condition is an exact match written as
`{"field": "value"}` or `["eq", "$field", "value"]`, a prefix match written as
`["starts-with", "$field", "prefix"]`, or a size range written as
`["content-length-range", min, max]`. Field names and operators compare
case-insensitively and values case-sensitively, as S3 compares them (AWS S3
API reference, "POST Policy", and the ceph/s3-tests POST cases).

The policy signature is the hex HMAC-SHA256 of the base64 text under the
SigV4 signing key (Signature Version 4), or the base64 HMAC-SHA1 of that text
under the secret key (Signature Version 2).

Malformed documents raise InvalidPolicyDocument (400). A form that breaks a
valid policy raises AccessDenied (403) with a message that starts with
"Invalid according to Policy", and a file outside the size range raises
EntityTooSmall or EntityTooLarge (400).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from crypto.keyring import KeyRing
from proxy.auth import credentials
from proxy.errors import S3Error
from proxy.sigv4_canonical import ALGORITHM, AMZ_DATE_FORMAT, signature, signing_key

__all__ = [
    "EXEMPT_FIELDS",
    "Condition",
    "PostPolicy",
    "check_fields",
    "check_size",
    "parse_policy",
    "verify_signature",
]

# Fields that no condition needs to name: the signature and credential of
# both signature versions, the policy itself, the file, and `x-ignore-*`.
EXEMPT_FIELDS: Final = frozenset(
    {"awsaccesskeyid", "file", "policy", "signature", "x-amz-signature"}
)
_IGNORED_PREFIX: Final = "x-ignore-"
_V4_FIELDS: Final = (
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-signature",
)
_MATCH_OPERATORS: Final = frozenset({"eq", "starts-with"})
_LENGTH_RANGE: Final = "content-length-range"
# Seconds, then an optional fraction of up to nine digits, then Z for UTC.
_EXPIRATION: Final = re.compile(
    r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?Z", re.ASCII
)


@dataclass(frozen=True)
class Condition:
    """One `eq` or `starts-with` condition on a form field.

    `field` is the lower-case field name without its `$`.
    """

    operator: str
    field: str
    value: str

    def matches(self, actual: str) -> bool:
        """Return whether a field value satisfies the condition."""
        if self.operator == "eq":
            return actual == self.value
        return actual.startswith(self.value)

    def describe(self) -> str:
        """Render the condition as the policy wrote it, for error messages."""
        return json.dumps([self.operator, "$" + self.field, self.value])


@dataclass(frozen=True)
class PostPolicy:
    """A parsed policy: its expiry, field conditions and size ranges.

    `size_ranges` contains one (minimum, maximum) pair, both inclusive, per
    content-length-range condition.
    """

    expiration: datetime
    conditions: tuple[Condition, ...]
    size_ranges: tuple[tuple[int, int], ...]


def parse_policy(encoded: str) -> PostPolicy:
    """Decode and validate a base64 policy; raise InvalidPolicyDocument if malformed.

    Whitespace inside the base64 text is skipped, because some encoders wrap
    long lines.
    """
    document = _decode(encoded)
    if "expiration" not in document:
        raise _invalid("Policy missing expiration.")
    if "conditions" not in document:
        raise _invalid("Policy missing conditions.")
    conditions = document["conditions"]
    if not isinstance(conditions, list):
        raise _invalid("The 'conditions' element must be a list.")
    parsed = [_parse_condition(item) for item in conditions]
    return PostPolicy(
        expiration=_parse_expiration(document["expiration"]),
        conditions=tuple(item for item in parsed if isinstance(item, Condition)),
        size_ranges=tuple(item for item in parsed if isinstance(item, tuple)),
    )


def check_fields(
    policy: PostPolicy, fields: Mapping[str, str], *, bucket: str, now: datetime
) -> None:
    """Raise AccessDenied unless the form satisfies the policy at `now`.

    `fields` maps lower-case field names to values with `${filename}`
    already expanded. A field the form lacks compares as "". The `bucket`
    condition compares with the bucket the request addresses, not with a
    form field. Every form field other than EXEMPT_FIELDS and `x-ignore-*`
    must be named by at least one condition.
    """
    if now > policy.expiration:
        raise _denied("Policy expired.")
    for condition in policy.conditions:
        actual = bucket if condition.field == "bucket" else fields.get(condition.field)
        if not condition.matches(actual or ""):
            raise _denied(f"Policy Condition failed: {condition.describe()}")
    named = {condition.field for condition in policy.conditions}
    extra = sorted(
        name
        for name in fields
        if name not in named
        and name not in EXEMPT_FIELDS
        and not name.startswith(_IGNORED_PREFIX)
    )
    if extra:
        raise _denied(f"Extra input fields: {', '.join(extra)}")


def check_size(policy: PostPolicy, size: int) -> None:
    """Raise EntityTooSmall or EntityTooLarge unless `size` is in every size range."""
    for minimum, maximum in policy.size_ranges:
        if size < minimum:
            raise S3Error(
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed size: "
                f"{size} bytes, and the policy requires at least {minimum}.",
            )
        if size > maximum:
            raise S3Error(
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size: "
                f"{size} bytes, and the policy allows at most {maximum}.",
            )


def verify_signature(fields: dict[str, str], keyring: KeyRing) -> tuple[bytes, str]:
    """Verify the policy signature and return (org_id, access_key_id).

    Raises the S3 error of the first failed check. Any of the
    x-amz-algorithm, x-amz-credential, x-amz-date and x-amz-signature fields
    makes the form a Signature Version 4 one. A form with no policy and no
    credential is anonymous, which the proxy rejects.
    """
    if any(name in fields for name in _V4_FIELDS):
        return _verify_v4(fields, keyring)
    if not any(name in fields for name in ("policy", "awsaccesskeyid", "signature")):
        raise S3Error(
            "AccessDenied",
            "Anonymous form uploads are not allowed; sign the policy with the "
            "access key that `byok-proxy credentials create` printed",
            403,
        )
    return _verify_v2(fields, keyring)


def _verify_v4(fields: dict[str, str], keyring: KeyRing) -> tuple[bytes, str]:
    names = (*_V4_FIELDS, "policy")
    algorithm, credential, amz_date, provided, policy = _required(fields, names)
    if algorithm != ALGORITHM:
        raise S3Error(
            "InvalidArgument",
            f"The x-amz-algorithm {algorithm!r} is not supported; use {ALGORITHM}.",
        )
    _check_amz_date(amz_date)
    scope = credential.split("/")
    if len(scope) != 5 or scope[3] != "s3" or scope[4] != "aws4_request":
        raise S3Error(
            "InvalidArgument",
            "The x-amz-credential must be "
            "<access key id>/<YYYYMMDD>/<region>/s3/aws4_request.",
        )
    access_key_id, day, region, service, _ = scope
    if day != amz_date[:8]:
        raise S3Error(
            "InvalidArgument",
            f"The credential date {day!r} is not the date of x-amz-date "
            f"{amz_date!r}; sign with the date of x-amz-date.",
        )
    org_id, secret = credentials(keyring, access_key_id)
    key = signing_key(secret, day, region, service)
    _compare(signature(key, policy), provided)
    return org_id, access_key_id


def _verify_v2(fields: dict[str, str], keyring: KeyRing) -> tuple[bytes, str]:
    names = ("awsaccesskeyid", "signature", "policy")
    access_key_id, provided, policy = _required(fields, names)
    org_id, secret = credentials(keyring, access_key_id)
    digest = hmac.new(secret.encode(), policy.encode(), hashlib.sha1).digest()
    _compare(base64.b64encode(digest).decode(), provided)
    return org_id, access_key_id


def _required(fields: dict[str, str], names: tuple[str, ...]) -> list[str]:
    for name in names:
        if name not in fields:
            raise S3Error(
                "InvalidArgument",
                f"Bucket POST must contain a field named {name!r}: a signed form "
                f"needs {', '.join(names)}, all before the file field.",
            )
    return [fields[name] for name in names]


def _check_amz_date(value: str) -> None:
    try:
        datetime.strptime(value, AMZ_DATE_FORMAT)
    except ValueError:
        raise S3Error(
            "InvalidArgument",
            f"The x-amz-date {value!r} is not valid; use YYYYMMDDTHHMMSSZ.",
        ) from None


def _compare(expected: str, provided: str) -> None:
    """Compare signatures in constant time."""
    wire = provided.encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(expected.encode(), wire):
        raise S3Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature "
            "you provided. Check your key and signing method.",
            403,
        )


def _decode(encoded: str) -> dict[str, object]:
    compact = "".join(encoded.split())
    try:
        text = base64.b64decode(compact, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise _invalid(
            "The policy is not valid base64 of UTF-8 text; encode the JSON "
            "document as UTF-8, then as base64."
        ) from None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise _invalid("Invalid JSON.") from None
    if not isinstance(document, dict):
        raise _invalid("The policy must be a JSON object.")
    return document


def _parse_expiration(value: object) -> datetime:
    match = _EXPIRATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _invalid(
            f"Invalid 'expiration' value: {_shown(value)}; use ISO 8601 "
            "in UTC, such as 2030-01-01T12:00:00.000Z."
        )
    seconds, fraction = match.groups()
    try:
        moment = datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise _invalid(f"Invalid 'expiration' value: {_shown(value)}.") from None
    microseconds = int((fraction or "0").ljust(6, "0")[:6])
    return moment.replace(microsecond=microseconds, tzinfo=UTC)


def _parse_condition(item: object) -> Condition | tuple[int, int]:
    if isinstance(item, dict):
        return _parse_simple(item)
    if not isinstance(item, list) or not item or not isinstance(item[0], str):
        raise _invalid(
            f"Invalid condition {_shown(item)}: use an object such as "
            '{"key": "value"} or a list such as ["starts-with", "$key", "prefix"].'
        )
    operator = item[0].lower()
    if operator == _LENGTH_RANGE:
        return _parse_size_range(item)
    if operator not in _MATCH_OPERATORS:
        raise _invalid(
            f"Invalid condition {_shown(item)}: unknown operation {item[0]!r}; "
            "use eq, starts-with or content-length-range."
        )
    if len(item) != 3:
        raise _invalid(
            f"Invalid condition {_shown(item)}: {operator} takes a $field and a value."
        )
    field, value = item[1], item[2]
    if not isinstance(field, str) or not field.startswith("$") or len(field) < 2:
        raise _invalid(
            f"Invalid condition {_shown(item)}: the field must be a string that "
            "starts with '$'."
        )
    if not isinstance(value, str):
        raise _invalid(f"Invalid condition {_shown(item)}: the value must be a string.")
    return Condition(operator, field[1:].lower(), value)


def _parse_simple(item: dict[str, object]) -> Condition:
    if len(item) != 1:
        raise _invalid(
            f"Invalid Simple-Condition {_shown(item)}: Simple-Conditions must "
            "have exactly one property specified."
        )
    ((field, value),) = item.items()
    if not isinstance(value, str):
        raise _invalid(
            f"Invalid Simple-Condition {_shown(item)}: the value must be a string."
        )
    return Condition("eq", field.lower(), value)


def _parse_size_range(item: list[object]) -> tuple[int, int]:
    if len(item) != 3:
        raise _invalid(
            f"Invalid condition {_shown(item)}: content-length-range takes a "
            "minimum and a maximum."
        )
    minimum, maximum = _size_bound(item, item[1]), _size_bound(item, item[2])
    if minimum > maximum:
        raise _invalid(
            f"Invalid condition {_shown(item)}: the minimum is larger than the maximum."
        )
    return minimum, maximum


def _size_bound(item: list[object], value: object) -> int:
    """Accept a non-negative integer, or a string of ASCII digits."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise _invalid(
        f"Invalid condition {_shown(item)}: content-length-range bounds must be "
        "integers of 0 or more."
    )


def _shown(item: object) -> str:
    """Render part of a policy for a message, cut short if it is long."""
    try:
        text = json.dumps(item)
    except (ValueError, RecursionError):
        return "(not shown: nested too deeply)"
    return text if len(text) <= 200 else text[:197] + "..."


def _invalid(detail: str) -> S3Error:
    return S3Error("InvalidPolicyDocument", f"Invalid Policy: {detail}")


def _denied(detail: str) -> S3Error:
    return S3Error("AccessDenied", f"Invalid according to Policy: {detail}", 403)
