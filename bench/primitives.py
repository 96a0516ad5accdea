"""Speed of the two primitives every byte of a PUT passes through, on one core.

AES-256-GCM seals 64 KiB segments with `encrypt_into`, as the proxy does,
and MD5 hashes the same buffer with hashlib, which computes a single PUT's
ETag. Both run in the bench's process while nothing else is timed, so the
figures are the per-core ceilings that the streaming results compare with.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.results import MIB, Series

__all__ = ["PrimitiveSpeeds", "measure_primitives"]

_SEGMENT = 64 * 1024
_TAG = 16
_VOLUME = 256 * MIB


@dataclass
class PrimitiveSpeeds:
    """MiB per second of plaintext, one value per repetition."""

    aes_gcm_mibps: Series = field(default_factory=Series)
    md5_mibps: Series = field(default_factory=Series)


def measure_primitives(repeat: int) -> PrimitiveSpeeds:
    """Time AES-GCM sealing and MD5 over 256 MiB, `repeat` times each."""
    speeds = PrimitiveSpeeds()
    plaintext = memoryview(os.urandom(_SEGMENT))
    sealed = memoryview(bytearray(_SEGMENT + _TAG))
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    # Every sealed segment is thrown away, so one nonce serves them all.
    nonce = bytes(12)
    rounds = _VOLUME // _SEGMENT
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(rounds):
            aead.encrypt_into(nonce, plaintext, b"", sealed)
        speeds.aes_gcm_mibps.add(_VOLUME / MIB / (time.perf_counter() - started))

        digest = hashlib.md5(usedforsecurity=False)
        started = time.perf_counter()
        for _ in range(rounds):
            digest.update(plaintext)
        speeds.md5_mibps.add(_VOLUME / MIB / (time.perf_counter() - started))
    return speeds
