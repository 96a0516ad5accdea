"""S3 additional checksums (`x-amz-checksum-*`) and Content-MD5.

A `Checksum` digests the plaintext as it streams past. Its `b64digest()` is
the base64 of the big-endian digest bytes, the form S3 puts in
`x-amz-checksum-<algorithm>` headers and trailers. The header parsers reject
malformed values with the S3 error codes, and the verifiers raise `BadDigest`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import zlib
from collections.abc import Callable, Mapping
from typing import Final, Protocol

import crc32c
from awscrt import checksums as crt_checksums

from proxy.errors import S3Error

__all__ = [
    "ALGORITHMS",
    "Checksum",
    "parse_content_md5",
    "requested_checksums",
    "verify_checksum",
    "verify_content_md5",
]

CHECKSUM_HEADER_PREFIX: Final = "x-amz-checksum-"

# Digest size in bytes of each algorithm S3 accepts, keyed by the lowercase
# name used in `x-amz-checksum-<name>`. The xxhash family and sha512 are the
# newer S3 algorithms that botocore 1.44 also sends.
DIGEST_SIZES: Final[Mapping[str, int]] = {
    "crc32": 4,
    "crc32c": 4,
    "crc64nvme": 8,
    "sha1": 20,
    "sha256": 32,
    "sha512": 64,
    "xxhash64": 8,
    "xxhash3": 8,
    "xxhash128": 16,
}
ALGORITHMS: Final = tuple(DIGEST_SIZES)

# `x-amz-checksum-*` headers that carry no checksum value.
_NON_VALUE_HEADERS: Final = frozenset(
    {"x-amz-checksum-algorithm", "x-amz-checksum-mode", "x-amz-checksum-type"}
)


class _Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


class _Crc:
    """A running CRC whose update function takes (data, previous value)."""

    def __init__(
        self, function: Callable[[bytes | memoryview, int], int], size: int
    ) -> None:
        self._function = function
        self._size = size
        self._value = 0

    def update(self, data: bytes | memoryview, /) -> None:
        self._value = self._function(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._size, "big")


class _XXHash:
    """awscrt's streaming xxhash, which can be finalized only once."""

    def __init__(self, factory: Callable[[], crt_checksums.XXHash]) -> None:
        self._hash = factory()
        self._digest: bytes | None = None

    def update(self, data: bytes | memoryview, /) -> None:
        if self._digest is not None:
            raise ValueError("cannot update an xxhash after its digest was taken")
        # awscrt's xxhash takes bytes only, not a memoryview.
        self._hash.update(bytes(data))

    def digest(self) -> bytes:
        if self._digest is None:
            self._digest = self._hash.finalize()
        return self._digest


def _new_hasher(algorithm: str) -> _Hasher:
    match algorithm:
        case "crc32":
            return _Crc(zlib.crc32, 4)
        case "crc32c":
            return _Crc(crc32c.crc32c, 4)
        case "crc64nvme":
            return _Crc(crt_checksums.crc64nvme, 8)
        case "sha1" | "sha256" | "sha512":
            return hashlib.new(algorithm)
        case "xxhash64":
            return _XXHash(crt_checksums.XXHash.new_xxhash64)
        case "xxhash3":
            return _XXHash(crt_checksums.XXHash.new_xxhash3_64)
        case "xxhash128":
            return _XXHash(crt_checksums.XXHash.new_xxhash3_128)
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")


class Checksum:
    """A running checksum of one S3 algorithm over streamed data."""

    def __init__(self, algorithm: str, hasher: _Hasher) -> None:
        self.algorithm = algorithm
        self._hasher = hasher

    @classmethod
    def new(cls, algorithm: str) -> Checksum:
        """Start a checksum; `algorithm` is case-insensitive, e.g. "CRC32"."""
        name = algorithm.lower()
        if name not in DIGEST_SIZES:
            raise S3Error(
                "InvalidRequest",
                f"The checksum algorithm {algorithm!r} is not supported; "
                f"use one of {', '.join(ALGORITHMS)}.",
            )
        return cls(name, _new_hasher(name))

    @property
    def header_name(self) -> str:
        """The header or trailer name that carries this checksum."""
        return CHECKSUM_HEADER_PREFIX + self.algorithm

    def update(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)

    def digest(self) -> bytes:
        return self._hasher.digest()

    def b64digest(self) -> str:
        """Return the digest in base64, as S3 sends it."""
        return base64.b64encode(self.digest()).decode("ascii")


def _invalid_value(header: str) -> S3Error:
    return S3Error(
        "InvalidRequest",
        f"Value for {header} header is invalid; send the base64 of the "
        "big-endian digest.",
    )


def _decode_value(algorithm: str, value: str) -> bytes:
    header = CHECKSUM_HEADER_PREFIX + algorithm
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid_value(header) from None
    if len(digest) != DIGEST_SIZES[algorithm]:
        raise _invalid_value(header)
    return digest


def requested_checksums(headers: Mapping[str, str]) -> dict[str, str]:
    """Return the `x-amz-checksum-<algorithm>` values of a request by algorithm.

    Raises InvalidRequest for a malformed value, an unknown algorithm, or
    more than one checksum header, as S3 accepts only one per request.
    """
    found: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if not lower.startswith(CHECKSUM_HEADER_PREFIX):
            continue
        if lower in _NON_VALUE_HEADERS:
            continue
        algorithm = lower.removeprefix(CHECKSUM_HEADER_PREFIX)
        if algorithm not in DIGEST_SIZES:
            raise S3Error(
                "InvalidRequest",
                f"The header {lower} names an unsupported checksum algorithm; "
                f"use one of {', '.join(ALGORITHMS)}.",
            )
        if found:
            raise S3Error(
                "InvalidRequest",
                "Expecting a single x-amz-checksum- header. Multiple checksum "
                "Types are not allowed.",
            )
        _decode_value(algorithm, value)
        found[algorithm] = value.strip()
    return found


def verify_checksum(algorithm: str, expected_b64: str, actual: Checksum) -> None:
    """Compare a client's base64 checksum with the computed one.

    Raises InvalidRequest if the value is malformed, BadDigest if it differs.
    """
    name = algorithm.lower()
    if name not in DIGEST_SIZES or name != actual.algorithm:
        raise ValueError(
            f"checksum algorithm {algorithm!r} does not match the computed "
            f"{actual.algorithm!r} checksum"
        )
    expected = _decode_value(name, expected_b64)
    if not hmac.compare_digest(expected, actual.digest()):
        raise S3Error(
            "BadDigest",
            f"The {actual.header_name} you specified did not match the "
            "calculated checksum.",
        )


def parse_content_md5(value: str | None) -> bytes | None:
    """Decode a Content-MD5 header, None if absent.

    Raises InvalidDigest unless the value is the base64 of 16 bytes.
    """
    if value is None:
        return None
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise S3Error(
            "InvalidDigest",
            "The Content-MD5 you specified was invalid; send the base64 of "
            "the 16-byte MD5 digest of the body.",
        )
    return digest


def verify_content_md5(expected: bytes, actual: bytes) -> None:
    """Compare a decoded Content-MD5 with the body's MD5; raises BadDigest."""
    if not hmac.compare_digest(expected, actual):
        raise S3Error(
            "BadDigest",
            "The Content-MD5 you specified did not match what we received.",
        )
