"""Test payloads: generated files, digests and a search for leaked plaintext."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MIB",
    "leaked_windows",
    "put_multipart",
    "sha256_file",
    "write_sample_file",
]

MIB = 1024 * 1024
WINDOW = 64


def write_sample_file(path: Path, size: int) -> Path:
    """Write `size` bytes that alternate numbered text lines and random bytes.

    The text makes plaintext windows easy to recognise in stored bytes, and
    the random half keeps the file incompressible.
    """
    with path.open("wb") as output:
        written = block = 0
        while written < size:
            text = b"".join(
                b"block %08d line %05d of the sample file\n" % (block, line)
                for line in range(MIB // 2 // 40 + 1)
            )
            chunk = (text[: MIB // 2] + os.urandom(MIB // 2))[: size - written]
            output.write(chunk)
            written += len(chunk)
            block += 1
    return path


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def leaked_windows(stored: bytes, plaintext: bytes, count: int = 12) -> list[int]:
    """Return the offsets of the plaintext windows that appear in `stored`.

    `count` windows of 64 bytes are taken at evenly spaced offsets, the first
    at 0 and the last at the end. Ciphertext contains a given 64-byte window
    by chance with probability about 2**-512 per position.
    """
    last = max(len(plaintext) - WINDOW, 0)
    offsets = sorted({index * last // max(count - 1, 1) for index in range(count)})
    return [
        offset for offset in offsets if plaintext[offset : offset + WINDOW] in stored
    ]


def put_multipart(
    client: Any, bucket: str, key: str, parts: Sequence[bytes]
) -> dict[str, Any]:
    """Upload `parts` as parts 1..n of one multipart upload and complete it.

    Returns the CompleteMultipartUpload result.
    """
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    listed = []
    for number, part in enumerate(parts, start=1):
        answer = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part
        )
        listed.append({"PartNumber": number, "ETag": answer["ETag"]})
    result: dict[str, Any] = client.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": listed},
    )
    return result
