"""The object header: its byte layout, the object keys and the name binding.

The header travels in the metadata entry ``x-amz-meta-byok-header``. It names
the wrapped DEK, carries the salt from which the object keys are derived,
commits to the DEK and is tagged with HMAC-SHA256 over its fields and the
object's bucket and key (see docs/format.md).
"""

import base64
import binascii
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Self

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto.errors import DecryptionFailed
from crypto.sizes import KEY_SIZE, MAX_PLAINTEXT_SIZE, NONCE_PREFIX_SIZE, PART_SALT_SIZE

__all__ = [
    "COMMITMENT_SIZE",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "HEADER_TAG_SIZE",
    "MAX_PART_NUMBER",
    "METADATA_KEY",
    "ORG_ID_SIZE",
    "SALT_SIZE",
    "WRAPPED_DEK_SIZE",
    "DataKey",
    "Header",
    "Layout",
    "ObjectKeys",
    "Purpose",
    "open_header",
    "part_key",
    "reseal_header",
    "seal_header",
]

METADATA_KEY = "byok-header"
FORMAT_VERSION = 1
ORG_ID_SIZE = 16
WRAPPED_DEK_SIZE = 60
SALT_SIZE = 32
COMMITMENT_SIZE = 32
HEADER_TAG_SIZE = 32
MAX_PART_NUMBER = 10000

# version, layout, purpose, reserved, org_id, org_key_version, dek_version,
# wrapped_dek_size, wrapped_dek, salt, nonce_prefix, plaintext_size,
# commitment, tag
_LAYOUT = struct.Struct(
    f">BBBB{ORG_ID_SIZE}sIIB{WRAPPED_DEK_SIZE}s{SALT_SIZE}s"
    f"{NONCE_PREFIX_SIZE}sQ{COMMITMENT_SIZE}s{HEADER_TAG_SIZE}s"
)
HEADER_SIZE = _LAYOUT.size
# The header tag covers every byte before it.
_TAGGED_SIZE = HEADER_SIZE - HEADER_TAG_SIZE
_MAX_UINT32 = 2**32 - 1

_OBJECT_INFO = b"byok-proxy/1 object"
_PART_INFO = b"byok-proxy/1 part"


class Layout(IntEnum):
    """Storage layout of an object's body: one stream, or one stream per part."""

    SINGLE = 1
    MULTIPART = 2


class Purpose(IntEnum):
    """The kind of data an object contains. Each purpose has its own DEK."""

    MESSAGES = 1
    FILES = 2
    RECORDINGS = 3
    TRANSCRIPTS = 4

    @classmethod
    def parse(cls, name: str) -> "Purpose":
        """Return the purpose whose label is ``name``, such as ``"files"``."""
        for purpose in cls:
            if purpose.label == name:
                return purpose
        choices = ", ".join(purpose.label for purpose in cls)
        raise ValueError(f"unknown purpose {name!r}; expected one of: {choices}")

    @property
    def label(self) -> str:
        """Lowercase name, as used in configuration and on the command line."""
        return self.name.lower()


_LAYOUT_VALUES = frozenset(layout.value for layout in Layout)
_PURPOSE_VALUES = frozenset(purpose.value for purpose in Purpose)


@dataclass(frozen=True)
class Header:
    """The decoded header of one object; docs/format.md gives the byte layout.

    Construction validates every field and raises ValueError for a value that
    cannot be encoded. ``decode`` raises DecryptionFailed instead.
    """

    version: int
    layout: Layout
    purpose: Purpose
    org_id: bytes
    org_key_version: int
    dek_version: int
    wrapped_dek: bytes
    salt: bytes
    nonce_prefix: bytes
    plaintext_size: int
    commitment: bytes
    tag: bytes

    def __post_init__(self) -> None:
        _validate_header(self)

    def encode(self) -> bytes:
        """Return the HEADER_SIZE bytes of the header."""
        return _LAYOUT.pack(
            self.version,
            self.layout,
            self.purpose,
            0,
            self.org_id,
            self.org_key_version,
            self.dek_version,
            len(self.wrapped_dek),
            self.wrapped_dek,
            self.salt,
            self.nonce_prefix,
            self.plaintext_size,
            self.commitment,
            self.tag,
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Parse the bytes of a header; raise DecryptionFailed if malformed."""
        if not data:
            raise DecryptionFailed("header: empty")
        # The version comes first, so that a header of a later version is
        # reported as such rather than as a header of the wrong size.
        if data[0] != FORMAT_VERSION:
            raise DecryptionFailed(f"header: unsupported version {data[0]}")
        if len(data) != HEADER_SIZE:
            raise DecryptionFailed(f"header: {len(data)} bytes, expected {HEADER_SIZE}")

        (
            version,
            layout,
            purpose,
            reserved,
            org_id,
            org_key_version,
            dek_version,
            wrapped_size,
            wrapped_dek,
            salt,
            nonce_prefix,
            size,
            commitment,
            tag,
        ) = _LAYOUT.unpack(data)
        if layout not in _LAYOUT_VALUES:
            raise DecryptionFailed(f"header: unknown layout {layout}")
        if purpose not in _PURPOSE_VALUES:
            raise DecryptionFailed(f"header: unknown purpose {purpose}")
        if reserved != 0:
            raise DecryptionFailed(f"header: reserved byte is {reserved}, not 0")
        if wrapped_size != WRAPPED_DEK_SIZE:
            raise DecryptionFailed(
                f"header: wrapped_dek_size is {wrapped_size}, "
                f"expected {WRAPPED_DEK_SIZE}"
            )

        try:
            return cls(
                version=version,
                layout=Layout(layout),
                purpose=Purpose(purpose),
                org_id=org_id,
                org_key_version=org_key_version,
                dek_version=dek_version,
                wrapped_dek=wrapped_dek,
                salt=salt,
                nonce_prefix=nonce_prefix,
                plaintext_size=size,
                commitment=commitment,
                tag=tag,
            )
        except ValueError as exc:
            raise DecryptionFailed(f"header: {exc}") from exc

    def to_metadata(self) -> str:
        """Return the header as unpadded base64url text for the metadata."""
        return base64.urlsafe_b64encode(self.encode()).rstrip(b"=").decode("ascii")

    @classmethod
    def from_metadata(cls, text: str) -> Self:
        """Parse the metadata text of a header; raise DecryptionFailed if bad."""
        return cls.decode(_decode_base64url(text))


@dataclass(frozen=True)
class ObjectKeys:
    """The keys of one object, derived from its DEK and salt with HKDF."""

    content_key: bytes = field(repr=False)
    commitment: bytes = field(repr=False)
    header_key: bytes = field(repr=False)

    @classmethod
    def derive(cls, dek: bytes, salt: bytes) -> Self:
        """Derive the keys of the object whose header carries ``salt``."""
        _check_size("DEK", dek, KEY_SIZE)
        _check_size("salt", salt, SALT_SIZE)
        okm = HKDF(
            algorithm=hashes.SHA256(),
            length=3 * KEY_SIZE,
            salt=salt,
            info=_OBJECT_INFO,
        ).derive(dek)
        return cls(
            content_key=okm[:KEY_SIZE],
            commitment=okm[KEY_SIZE : 2 * KEY_SIZE],
            header_key=okm[2 * KEY_SIZE :],
        )


@dataclass(frozen=True)
class DataKey:
    """An unwrapped DEK together with the names under which it is wrapped.

    The key hierarchy hands these to the data path: ``key`` encrypts, and
    ``wrapped`` is what the header stores.
    """

    org_id: bytes
    purpose: Purpose
    org_key_version: int
    dek_version: int
    key: bytes = field(repr=False)
    wrapped: bytes

    def __post_init__(self) -> None:
        _check_size("org_id", self.org_id, ORG_ID_SIZE)
        _check_uint32("org_key_version", self.org_key_version)
        _check_uint32("dek_version", self.dek_version)
        _check_size("DEK", self.key, KEY_SIZE)
        _check_size("wrapped DEK", self.wrapped, WRAPPED_DEK_SIZE)


def seal_header(
    dek: DataKey,
    *,
    layout: Layout,
    plaintext_size: int,
    bucket: str,
    key: str,
    random: Callable[[int], bytes] = os.urandom,
) -> tuple[Header, ObjectKeys]:
    """Create the header of a new object and derive its keys.

    A fresh salt and nonce_prefix are drawn from ``random``, in that order.
    ``plaintext_size`` must be 0 for a multipart upload, whose size is not
    known when its header is written.
    """
    salt = _draw(random, SALT_SIZE)
    nonce_prefix = _draw(random, NONCE_PREFIX_SIZE)
    keys = ObjectKeys.derive(dek.key, salt)
    untagged = Header(
        version=FORMAT_VERSION,
        layout=layout,
        purpose=dek.purpose,
        org_id=dek.org_id,
        org_key_version=dek.org_key_version,
        dek_version=dek.dek_version,
        wrapped_dek=dek.wrapped,
        salt=salt,
        nonce_prefix=nonce_prefix,
        plaintext_size=plaintext_size,
        commitment=keys.commitment,
        tag=bytes(HEADER_TAG_SIZE),
    )
    tag = _header_tag(keys.header_key, untagged, bucket, key)
    return replace(untagged, tag=tag), keys


def open_header(header: Header, dek: bytes, *, bucket: str, key: str) -> ObjectKeys:
    """Check the header against the unwrapped DEK and name; return the keys.

    The key commitment is checked first, then the header tag, both in
    constant time. Either failure raises DecryptionFailed.
    """
    keys = ObjectKeys.derive(dek, header.salt)
    if not hmac.compare_digest(keys.commitment, header.commitment):
        raise DecryptionFailed("header: key commitment mismatch (wrong DEK)")
    expected = _header_tag(keys.header_key, header, bucket, key)
    if not hmac.compare_digest(expected, header.tag):
        raise DecryptionFailed(
            "header: tag mismatch (header modified or moved to another name)"
        )
    return keys


def reseal_header(
    header: Header,
    keys: ObjectKeys,
    *,
    bucket: str,
    key: str,
    wrapped_dek: bytes | None = None,
    org_key_version: int | None = None,
) -> Header:
    """Return the header re-tagged for a new name, or with a re-wrapped DEK.

    The salt stays, so the body is unchanged and the copy shares the source's
    content key without encrypting anything new under it. ``keys`` must come
    from ``open_header`` of this header. A re-wrapped DEK needs both
    ``wrapped_dek`` and the ``org_key_version`` that wraps it.
    """
    if not hmac.compare_digest(keys.commitment, header.commitment):
        raise ValueError("the object keys do not belong to this header")
    if (wrapped_dek is None) != (org_key_version is None):
        raise ValueError("pass wrapped_dek and org_key_version together")

    if wrapped_dek is not None and org_key_version is not None:
        header = replace(
            header, wrapped_dek=wrapped_dek, org_key_version=org_key_version
        )
    return replace(header, tag=_header_tag(keys.header_key, header, bucket, key))


def part_key(keys: ObjectKeys, part_salt: bytes, part_number: int) -> bytes:
    """Derive the key of one part of a multipart upload from its part_salt."""
    _check_size("part_salt", part_salt, PART_SALT_SIZE)
    if not 1 <= part_number <= MAX_PART_NUMBER:
        raise ValueError(
            f"invalid part number {part_number}: must be 1 to {MAX_PART_NUMBER}"
        )
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=part_salt,
        info=_PART_INFO + part_number.to_bytes(4, "big"),
    ).derive(keys.content_key)


def _header_tag(header_key: bytes, header: Header, bucket: str, key: str) -> bytes:
    bucket_bytes = _encode_name("bucket", bucket, 2)
    key_bytes = _encode_name("object key", key, 4)
    mac = crypto_hmac.HMAC(header_key, hashes.SHA256())
    mac.update(header.encode()[:_TAGGED_SIZE])
    mac.update(len(bucket_bytes).to_bytes(2, "big"))
    mac.update(bucket_bytes)
    mac.update(len(key_bytes).to_bytes(4, "big"))
    mac.update(key_bytes)
    return mac.finalize()


def _encode_name(label: str, name: str, length_size: int) -> bytes:
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"the {label} is not valid UTF-8 text") from exc
    if len(encoded) >= 2 ** (8 * length_size):
        raise ValueError(f"the {label} is too long: {len(encoded)} bytes")
    return encoded


def _decode_base64url(text: str) -> bytes:
    # Only the canonical unpadded encoding is accepted, so one header has
    # exactly one metadata text.
    try:
        raw = text.encode("ascii")
        padded = raw + b"=" * (-len(raw) % 4)
        data = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise DecryptionFailed("header: metadata is not valid base64url") from exc
    if b"+" in raw or b"/" in raw or b"=" in raw:
        raise DecryptionFailed("header: metadata is not unpadded base64url")
    if base64.urlsafe_b64encode(data).rstrip(b"=") != raw:
        raise DecryptionFailed("header: metadata is not canonical base64url")
    return data


def _validate_header(header: Header) -> None:
    if header.version != FORMAT_VERSION:
        raise ValueError(f"unsupported version {header.version}")
    if not isinstance(header.layout, Layout):
        raise ValueError(f"layout must be a Layout, got {header.layout!r}")
    if not isinstance(header.purpose, Purpose):
        raise ValueError(f"purpose must be a Purpose, got {header.purpose!r}")
    _check_size("org_id", header.org_id, ORG_ID_SIZE)
    _check_uint32("org_key_version", header.org_key_version)
    _check_uint32("dek_version", header.dek_version)
    _check_size("wrapped_dek", header.wrapped_dek, WRAPPED_DEK_SIZE)
    _check_size("salt", header.salt, SALT_SIZE)
    _check_size("nonce_prefix", header.nonce_prefix, NONCE_PREFIX_SIZE)
    _check_size("commitment", header.commitment, COMMITMENT_SIZE)
    _check_size("tag", header.tag, HEADER_TAG_SIZE)
    _check_header_plaintext_size(header.layout, header.plaintext_size)


def _check_header_plaintext_size(layout: Layout, size: int) -> None:
    if layout is Layout.MULTIPART and size != 0:
        raise ValueError(f"plaintext_size is {size}, but must be 0 for multipart")
    if not 0 <= size <= MAX_PLAINTEXT_SIZE:
        raise ValueError(
            f"plaintext_size {size} is out of range 0 to {MAX_PLAINTEXT_SIZE}"
        )


def _check_size(field_name: str, value: bytes, size: int) -> None:
    if not isinstance(value, bytes):
        raise ValueError(f"{field_name} must be bytes, got {type(value).__name__}")
    if len(value) != size:
        raise ValueError(f"{field_name} must be {size} bytes, got {len(value)}")


def _check_uint32(field_name: str, value: int) -> None:
    if not 0 <= value <= _MAX_UINT32:
        raise ValueError(f"{field_name} {value} is out of range 0 to {_MAX_UINT32}")


def _draw(random: Callable[[int], bytes], size: int) -> bytes:
    value = random(size)
    if len(value) != size:
        raise ValueError(f"random source returned {len(value)} bytes, not {size}")
    return bytes(value)
