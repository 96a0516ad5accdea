"""Small values sealed under an object's keys, for storage outside the object."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.errors import DecryptionFailed
from crypto.header import ObjectKeys

__all__ = ["open_value", "seal_value"]

_NONCE_SIZE = 12
_LABEL = b"byok-proxy/1 sealed value"


def seal_value(
    keys: ObjectKeys,
    value: bytes,
    associated_data: bytes,
    random: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Seal `value` (a digest, say) so that only holders of the DEK read it."""
    nonce = random(_NONCE_SIZE)
    return nonce + _cipher(keys).encrypt(nonce, value, associated_data)


def open_value(keys: ObjectKeys, sealed: bytes, associated_data: bytes) -> bytes:
    """Open a value sealed by `seal_value`; DecryptionFailed if altered."""
    nonce, ciphertext = sealed[:_NONCE_SIZE], sealed[_NONCE_SIZE:]
    try:
        return _cipher(keys).decrypt(nonce, ciphertext, associated_data)
    except (InvalidTag, ValueError) as error:
        raise DecryptionFailed("sealed value: authentication failed") from error


def _cipher(keys: ObjectKeys) -> AESGCM:
    key = hmac.new(keys.header_key, _LABEL, hashlib.sha256).digest()
    return AESGCM(key)
