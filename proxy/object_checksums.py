"""An object's S3 checksum: what clients see, how it is combined and stored.

A single PUT gets a FULL_OBJECT checksum of the algorithm the client chose.
A multipart upload names its algorithm and type when it starts. COMPOSITE
is the digest of the part digests with a "-N" suffix. FULL_OBJECT (CRC
algorithms only) is the CRC of the whole plaintext, combined from the part
CRCs without reading the data again. Values are digests of the plaintext, so
the catalogue stores them sealed under the object's keys.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from awscrt import checksums as crt_checksums

from crypto.header import Header, ObjectKeys
from crypto.sealed import open_value, seal_value
from proxy.checksums import Checksum
from proxy.errors import S3Error

__all__ = [
    "COMPOSITE",
    "FULL_OBJECT",
    "ObjectChecksum",
    "b64",
    "checksum_mode",
    "combine",
    "open_checksum",
    "seal_checksum",
    "upload_checksum",
    "whole_object",
    "xml_name",
]

FULL_OBJECT: Final = "FULL_OBJECT"
COMPOSITE: Final = "COMPOSITE"

# CRC combination: (CRC of A, CRC of B, length of B) -> CRC of A || B
_COMBINE: Final[Mapping[str, Callable[[int, int, int], int]]] = {
    "crc32": crt_checksums.combine_crc32,
    "crc32c": crt_checksums.combine_crc32c,
    "crc64nvme": crt_checksums.combine_crc64nvme,
}
_LABEL = b"byok-proxy/1 checksum"


@dataclass(frozen=True)
class ObjectChecksum:
    """The checksum of an object, and of each part of a multipart object."""

    algorithm: str
    kind: str
    value: str
    parts: tuple[str, ...] = ()

    @property
    def xml_name(self) -> str:
        """Return the element name S3 uses in XML responses, e.g. ChecksumCRC32."""
        return xml_name(self.algorithm)

    def headers(self) -> dict[str, str]:
        """Return the response headers that carry this checksum."""
        return {
            f"x-amz-checksum-{self.algorithm}": self.value,
            "x-amz-checksum-type": self.kind,
        }

    def encode(self) -> bytes:
        fields = [self.algorithm, self.kind, self.value, list(self.parts)]
        return json.dumps(fields).encode()

    @classmethod
    def decode(cls, data: bytes) -> ObjectChecksum:
        algorithm, kind, value, parts = json.loads(data)
        return cls(algorithm, kind, value, tuple(parts))


def whole_object(algorithm: str, digest: bytes) -> ObjectChecksum:
    """Return the checksum of an object written in one piece."""
    return ObjectChecksum(algorithm, FULL_OBJECT, b64(digest))


def xml_name(algorithm: str) -> str:
    """Return the XML element name for `algorithm`, e.g. ChecksumCRC64NVME."""
    return "Checksum" + algorithm.upper()


def checksum_mode(headers: Mapping[str, str]) -> bool:
    """Return whether a GET or HEAD requests the stored checksum."""
    return headers.get("x-amz-checksum-mode", "").upper() == "ENABLED"


def upload_checksum(headers: Mapping[str, str]) -> str:
    """Return "<algorithm>/<type>" for a new multipart upload, or "".

    Raises InvalidRequest for an unknown algorithm, a type without an
    algorithm, or a type the algorithm cannot have.
    """
    algorithm = headers.get("x-amz-checksum-algorithm", "").strip().lower()
    kind = headers.get("x-amz-checksum-type", "").strip().upper()
    if not algorithm:
        if kind:
            raise S3Error(
                "InvalidRequest",
                "x-amz-checksum-type requires x-amz-checksum-algorithm",
            )
        return ""
    Checksum.new(algorithm)  # raises InvalidRequest for an unknown algorithm
    if not kind:
        kind = FULL_OBJECT if algorithm == "crc64nvme" else COMPOSITE
    if kind not in (FULL_OBJECT, COMPOSITE):
        raise S3Error(
            "InvalidRequest",
            f"Invalid checksum type {kind!r}; use COMPOSITE or FULL_OBJECT",
        )
    if kind == FULL_OBJECT and algorithm not in _COMBINE:
        raise S3Error(
            "InvalidRequest",
            f"The FULL_OBJECT checksum type cannot be used with {algorithm}",
        )
    if kind == COMPOSITE and algorithm == "crc64nvme":
        raise S3Error(
            "InvalidRequest",
            "The COMPOSITE checksum type cannot be used with crc64nvme",
        )
    return f"{algorithm}/{kind}"


def combine(spec: str, parts: list[tuple[bytes, int]]) -> ObjectChecksum:
    """Combine part digests and plaintext sizes into an object checksum.

    `spec` is the upload's "<algorithm>/<type>"; `parts` is not empty.
    """
    algorithm, kind = spec.split("/")
    encoded = tuple(b64(digest) for digest, _ in parts)
    if kind == COMPOSITE:
        checksum = Checksum.new(algorithm)
        for digest, _ in parts:
            checksum.update(digest)
        value = f"{checksum.b64digest()}-{len(parts)}"
        return ObjectChecksum(algorithm, kind, value, encoded)
    crc = 0
    for digest, size in parts:
        crc = _COMBINE[algorithm](crc, int.from_bytes(digest, "big"), size)
    width = len(parts[0][0])
    return ObjectChecksum(algorithm, kind, b64(crc.to_bytes(width, "big")), encoded)


def seal_checksum(keys: ObjectKeys, header: Header, checksum: ObjectChecksum) -> bytes:
    """Seal a checksum for the catalogue under the object's keys."""
    return seal_value(keys, checksum.encode(), _LABEL + header.salt)


def open_checksum(
    keys: ObjectKeys, header: Header, sealed: bytes
) -> ObjectChecksum | None:
    """Open a sealed checksum; None if the object has none.

    Raises DecryptionFailed if the sealed value was altered.
    """
    if not sealed:
        return None
    return ObjectChecksum.decode(open_value(keys, sealed, _LABEL + header.salt))


def b64(digest: bytes) -> str:
    """Return a digest in base64, as S3 headers and XML carry it."""
    return base64.b64encode(digest).decode("ascii")
