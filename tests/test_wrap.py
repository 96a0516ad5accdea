"""Tests of AES-256-GCM key wrapping and its associated data."""

import secrets
from typing import Any

import pytest

from crypto.errors import DecryptionFailed
from crypto.wrap import (
    WRAPPED_KEY_SIZE,
    dek_associated_data,
    org_key_associated_data,
    secret_associated_data,
    unwrap,
    unwrap_dek,
    wrap,
    wrap_dek,
)

ORG_ID = bytes(range(16))
OTHER_ORG_ID = bytes(range(1, 17))
DEK_NAMES: dict[str, Any] = {
    "org_id": ORG_ID,
    "purpose": 2,
    "dek_version": 3,
    "org_key_version": 4,
}


def test_wrap_round_trip() -> None:
    wrapping_key = secrets.token_bytes(32)
    key = secrets.token_bytes(32)
    associated_data = org_key_associated_data(ORG_ID, 1)

    wrapped = wrap(wrapping_key, key, associated_data)

    assert len(wrapped) == WRAPPED_KEY_SIZE
    assert key not in wrapped
    assert unwrap(wrapping_key, wrapped, associated_data) == key


def test_wrap_draws_fresh_nonce() -> None:
    wrapping_key = secrets.token_bytes(32)
    key = secrets.token_bytes(32)

    first = wrap(wrapping_key, key, b"ad")
    second = wrap(wrapping_key, key, b"ad")

    assert first[:12] != second[:12]
    assert first != second


def test_wrap_secret_round_trip() -> None:
    wrapping_key = secrets.token_bytes(32)
    secret = b"s" * 40
    associated_data = secret_associated_data("BYOKAAAAAAAAAAAAAAAA")

    wrapped = wrap(wrapping_key, secret, associated_data)

    assert len(wrapped) == 12 + 40 + 16
    assert unwrap(wrapping_key, wrapped, associated_data) == secret


def test_wrap_dek_round_trip() -> None:
    org_key = secrets.token_bytes(32)
    dek = secrets.token_bytes(32)

    wrapped = wrap_dek(org_key, dek, **DEK_NAMES)

    assert len(wrapped) == WRAPPED_KEY_SIZE
    assert unwrap_dek(org_key, wrapped, **DEK_NAMES) == dek


@pytest.mark.parametrize(
    ("part", "index"),
    [
        ("nonce", 0),
        ("nonce", 11),
        ("ciphertext", 12),
        ("ciphertext", 43),
        ("tag", 44),
        ("tag", 59),
    ],
)
def test_unwrap_dek_tampered_byte(part: str, index: int) -> None:
    org_key = secrets.token_bytes(32)
    wrapped = bytearray(wrap_dek(org_key, secrets.token_bytes(32), **DEK_NAMES))
    wrapped[index] ^= 0x01

    with pytest.raises(DecryptionFailed):
        unwrap_dek(org_key, bytes(wrapped), **DEK_NAMES)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("org_id", OTHER_ORG_ID),
        ("purpose", 1),
        ("dek_version", 2),
        ("org_key_version", 5),
    ],
)
def test_unwrap_dek_wrong_associated_data(field: str, value: object) -> None:
    org_key = secrets.token_bytes(32)
    wrapped = wrap_dek(org_key, secrets.token_bytes(32), **DEK_NAMES)
    names = {**DEK_NAMES, field: value}

    with pytest.raises(DecryptionFailed):
        unwrap_dek(org_key, wrapped, **names)


@pytest.mark.parametrize(
    ("org_id", "version"),
    [(OTHER_ORG_ID, 1), (ORG_ID, 2)],
)
def test_unwrap_org_key_wrong_associated_data(org_id: bytes, version: int) -> None:
    master = secrets.token_bytes(32)
    wrapped = wrap(master, secrets.token_bytes(32), org_key_associated_data(ORG_ID, 1))

    with pytest.raises(DecryptionFailed):
        unwrap(master, wrapped, org_key_associated_data(org_id, version))


def test_unwrap_secret_wrong_access_key_id() -> None:
    master = secrets.token_bytes(32)
    wrapped = wrap(master, b"x" * 40, secret_associated_data("BYOKAAAAAAAAAAAAAAAA"))

    with pytest.raises(DecryptionFailed):
        unwrap(master, wrapped, secret_associated_data("BYOKAAAAAAAAAAAAAAAB"))


def test_unwrap_org_key_as_dek_fails() -> None:
    # The same key under the same wrapping key, named as another kind of key.
    wrapping_key = secrets.token_bytes(32)
    wrapped = wrap(
        wrapping_key, secrets.token_bytes(32), org_key_associated_data(ORG_ID, 4)
    )

    with pytest.raises(DecryptionFailed):
        unwrap_dek(wrapping_key, wrapped, **DEK_NAMES)


def test_unwrap_wrong_key() -> None:
    wrapped = wrap(secrets.token_bytes(32), secrets.token_bytes(32), b"ad")

    with pytest.raises(DecryptionFailed):
        unwrap(secrets.token_bytes(32), wrapped, b"ad")


@pytest.mark.parametrize("size", [0, 27, 28])
def test_unwrap_too_short(size: int) -> None:
    with pytest.raises(DecryptionFailed):
        unwrap(secrets.token_bytes(32), bytes(size), b"ad")


@pytest.mark.parametrize("size", [59, 61])
def test_unwrap_dek_wrong_size(size: int) -> None:
    with pytest.raises(DecryptionFailed, match="must be 60 bytes"):
        unwrap_dek(secrets.token_bytes(32), bytes(size), **DEK_NAMES)


def test_associated_data_layout() -> None:
    # The byte strings of the format's key wrapping table.
    assert org_key_associated_data(ORG_ID, 7) == (
        b"byok-proxy/1 org-key" + ORG_ID + b"\x00\x00\x00\x07"
    )
    assert dek_associated_data(ORG_ID, 2, 3, 4) == (
        b"byok-proxy/1 dek"
        + ORG_ID
        + b"\x02"
        + b"\x00\x00\x00\x03"
        + b"\x00\x00\x00\x04"
    )
    assert secret_associated_data("BYOKABC") == b"byok-proxy/1 secret" + b"BYOKABC"


@pytest.mark.parametrize("size", [16, 31, 33])
def test_wrap_rejects_wrong_key_size(size: int) -> None:
    with pytest.raises(ValueError, match=f"wrapping key must be 32 bytes, got {size}"):
        wrap(bytes(size), b"key", b"ad")


def test_wrap_rejects_empty_plaintext() -> None:
    with pytest.raises(ValueError, match="empty"):
        wrap(secrets.token_bytes(32), b"", b"ad")


def test_associated_data_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="organisation id must be 16 bytes"):
        org_key_associated_data(b"short", 1)
    with pytest.raises(ValueError, match="DEK version"):
        dek_associated_data(ORG_ID, 1, 2**32, 1)
    with pytest.raises(ValueError, match="purpose"):
        dek_associated_data(ORG_ID, 256, 1, 1)
    with pytest.raises(ValueError, match="org key version"):
        org_key_associated_data(ORG_ID, -1)
