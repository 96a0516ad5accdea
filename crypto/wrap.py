"""AES-256-GCM key wrapping and the associated data of each wrapped key.

A wrapped value is `nonce (12, random) || ciphertext || tag (16)`, so a
256-bit key wraps to 60 bytes. The associated data names what the key is
(`docs/format.md`, section "Key wrapping"), so a wrapped key cannot be
presented as another one: a DEK of one purpose, version or organisation fails
to open as any other.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.errors import DecryptionFailed

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "ORG_ID_SIZE",
    "TAG_SIZE",
    "WRAPPED_KEY_SIZE",
    "dek_associated_data",
    "org_key_associated_data",
    "secret_associated_data",
    "unwrap",
    "unwrap_dek",
    "wrap",
    "wrap_dek",
]

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
WRAPPED_KEY_SIZE = NONCE_SIZE + KEY_SIZE + TAG_SIZE

ORG_ID_SIZE = 16
_MAX_UINT32 = 2**32 - 1

_ORG_KEY_LABEL = b"byok-proxy/1 org-key"
_DEK_LABEL = b"byok-proxy/1 dek"
_SECRET_LABEL = b"byok-proxy/1 secret"


def wrap(wrapping_key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """Encrypt `plaintext` under `wrapping_key` with a fresh random nonce.

    Returns `nonce || ciphertext || tag`.
    """
    _check_key(wrapping_key, "wrapping key")
    if not plaintext:
        raise ValueError("the plaintext to wrap is empty; pass a key or secret")
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(wrapping_key).encrypt(nonce, plaintext, associated_data)


def unwrap(wrapping_key: bytes, wrapped: bytes, associated_data: bytes) -> bytes:
    """Decrypt a value made by `wrap`, or raise DecryptionFailed if it does not open.

    A wrong key, wrong associated data or any changed byte of nonce,
    ciphertext or tag all raise the same error.
    """
    _check_key(wrapping_key, "wrapping key")
    if len(wrapped) <= NONCE_SIZE + TAG_SIZE:
        raise DecryptionFailed(
            f"wrapped value of {len(wrapped)} bytes is too short to open"
        )
    nonce = wrapped[:NONCE_SIZE]
    try:
        return AESGCM(wrapping_key).decrypt(
            nonce, wrapped[NONCE_SIZE:], associated_data
        )
    except InvalidTag:
        raise DecryptionFailed(
            "wrapped value failed to open: the tag does not match the key, "
            "the associated data and the bytes"
        ) from None


def wrap_dek(
    org_key: bytes,
    dek: bytes,
    *,
    org_id: bytes,
    purpose: int,
    dek_version: int,
    org_key_version: int,
) -> bytes:
    """Wrap a DEK under its organisation key and return the 60-byte result."""
    _check_key(dek, "DEK")
    associated_data = dek_associated_data(org_id, purpose, dek_version, org_key_version)
    return wrap(org_key, dek, associated_data)


def unwrap_dek(
    org_key: bytes,
    wrapped: bytes,
    *,
    org_id: bytes,
    purpose: int,
    dek_version: int,
    org_key_version: int,
) -> bytes:
    """Unwrap a DEK made by `wrap_dek`, or raise DecryptionFailed."""
    if len(wrapped) != WRAPPED_KEY_SIZE:
        raise DecryptionFailed(
            f"wrapped DEK must be {WRAPPED_KEY_SIZE} bytes, got {len(wrapped)}"
        )
    associated_data = dek_associated_data(org_id, purpose, dek_version, org_key_version)
    return unwrap(org_key, wrapped, associated_data)


def org_key_associated_data(org_id: bytes, org_key_version: int) -> bytes:
    """Return the associated data of an organisation key wrapped by the master key."""
    _check_org_id(org_id)
    return _ORG_KEY_LABEL + org_id + _uint32(org_key_version, "org key version")


def dek_associated_data(
    org_id: bytes, purpose: int, dek_version: int, org_key_version: int
) -> bytes:
    """Return the associated data of a DEK wrapped by an organisation key."""
    _check_org_id(org_id)
    if not 0 <= purpose <= 0xFF:
        raise ValueError(f"purpose must fit in one byte, got {purpose}")
    return (
        _DEK_LABEL
        + org_id
        + bytes([purpose])
        + _uint32(dek_version, "DEK version")
        + _uint32(org_key_version, "org key version")
    )


def secret_associated_data(access_key_id: str) -> bytes:
    """Return the associated data of an access key secret wrapped by the master key."""
    if not access_key_id:
        raise ValueError("access key id is empty; pass the id the secret belongs to")
    return _SECRET_LABEL + access_key_id.encode()


def _uint32(value: int, name: str) -> bytes:
    if not 0 <= value <= _MAX_UINT32:
        raise ValueError(f"{name} must be in 0..{_MAX_UINT32}, got {value}")
    return value.to_bytes(4, "big")


def _check_key(key: bytes, name: str) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"{name} must be {KEY_SIZE} bytes, got {len(key)}")


def _check_org_id(org_id: bytes) -> None:
    if len(org_id) != ORG_ID_SIZE:
        raise ValueError(
            f"organisation id must be {ORG_ID_SIZE} bytes, got {len(org_id)}"
        )
