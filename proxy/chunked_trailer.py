"""The trailer section of aws-chunked bodies, and checks on declared trailers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from proxy.checksums import ALGORITHMS, Checksum, verify_checksum
from proxy.errors import S3Error

__all__ = [
    "TRAILER_SIGNATURE",
    "TrailerReader",
    "bad_trailer",
    "declared_trailers",
    "verify_trailer_checksum",
]

TRAILER_SIGNATURE: Final = "x-amz-trailer-signature"
_TRAILER_LINE: Final = re.compile(rb"([A-Za-z0-9-]+):[ \t]*([\x21-\x7e]*)[ \t]*")


def bad_trailer(detail: str) -> S3Error:
    return S3Error(
        "MalformedTrailerError",
        "The request contained trailing data that was not well-formed or did "
        f"not conform to our published schema: {detail}",
    )


class TrailerReader:
    """Collects trailer lines until the empty line that ends the body.

    Each declared trailer must arrive exactly once and no other may. In the
    signed mode `x-amz-trailer-signature` must come last, and the caller
    checks its value.
    """

    def __init__(self, declared: frozenset[str], *, signed: bool) -> None:
        self._declared = declared
        self._signed = signed
        self.trailers: dict[str, str] = {}
        self.signature: str | None = None

    def add_line(self, line: bytes) -> bool:
        """Take one line without its CRLF; returns True once the section ends."""
        if not line:
            self._check_complete()
            return True
        match = _TRAILER_LINE.fullmatch(line)
        if match is None:
            raise bad_trailer("expected 'name:value' CRLF.")
        if self.signature is not None:
            raise bad_trailer(f"{TRAILER_SIGNATURE} must be the last trailer.")
        name = match.group(1).decode("ascii").lower()
        value = match.group(2).decode("ascii")
        if name == TRAILER_SIGNATURE and self._signed:
            self.signature = value
        elif name not in self._declared:
            raise bad_trailer(f"the trailer {name} was not declared in x-amz-trailer.")
        elif name in self.trailers:
            raise bad_trailer(f"the trailer {name} appears more than once.")
        else:
            self.trailers[name] = value
        return False

    def _check_complete(self) -> None:
        missing = sorted(self._declared - self.trailers.keys())
        if missing:
            raise bad_trailer(f"the declared trailer {', '.join(missing)} is missing.")
        if self._signed and self.signature is None:
            raise bad_trailer(f"{TRAILER_SIGNATURE} is missing.")


def declared_trailers(headers: Mapping[str, str]) -> list[str]:
    """Return the trailer names declared in x-amz-trailer, lower-cased.

    Only checksum trailers (`x-amz-checksum-<algorithm>`), each at most
    once, are accepted, as on S3; anything else raises InvalidRequest.
    """
    names: list[str] = []
    for header, value in headers.items():
        if header.lower() == "x-amz-trailer":
            parts = (part.strip().lower() for part in value.split(","))
            names.extend(part for part in parts if part)
    allowed = {f"x-amz-checksum-{algorithm}" for algorithm in ALGORITHMS}
    for name in names:
        if name not in allowed or names.count(name) > 1:
            raise S3Error(
                "InvalidRequest",
                "The value specified in the x-amz-trailer header is not "
                f"supported: {name!r}; declare one x-amz-checksum-<algorithm>.",
            )
    return names


def verify_trailer_checksum(trailers: Mapping[str, str], actual: Checksum) -> None:
    """Check the trailer of `actual`'s algorithm against the computed checksum.

    Raises MalformedTrailerError if that trailer is missing, InvalidRequest
    if its value is malformed, and BadDigest if it differs.
    """
    expected = trailers.get(actual.header_name)
    if expected is None:
        raise bad_trailer(f"the trailer {actual.header_name} is missing.")
    verify_checksum(actual.algorithm, expected, actual)
