"""Regenerate the golden vectors of the ciphertext format, version 1.

Run from the repository root:

    python -m tests.make_vectors

Every byte comes from ``random.Random(SEED)``, drawn in a fixed order: the
data key first, then for each case the header's salt and nonce_prefix, the
part_salt of a part and last the plaintext. The wrapped DEK is random bytes
of the right size, because the header only carries it. The output therefore
changes only when the format or the code changes, and tests/test_stream.py
fails until the vectors are regenerated and reviewed.
"""

import base64
import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crypto.header import DataKey, Layout, Purpose, part_key, seal_header
from crypto.sizes import SEGMENT_SIZE
from crypto.stream import StreamSealer, seal_part_prefix

__all__ = ["SEED", "VECTORS_PATH", "build_vectors", "render_vectors"]

SEED = 1
VECTORS_PATH = Path(__file__).parent / "vectors" / "format_v1.json"
BUCKET = "vectors"
# Plaintexts up to this size are stored in the file next to their digest.
_INLINE_PLAINTEXT_SIZE = 64

# (name, plaintext size, part number or None for a single stream)
_CASES: list[tuple[str, int, int | None]] = [
    ("single-empty", 0, None),
    ("single-1", 1, None),
    # The plaintext and its digest fill exactly one segment.
    ("single-one-full-segment", SEGMENT_SIZE - 16, None),
    # The digest is split: 15 bytes in segment 0 and 1 byte in segment 1.
    ("single-digest-split", SEGMENT_SIZE - 15, None),
    # Segment 0 is all plaintext, segment 1 holds only the digest.
    ("single-digest-alone", SEGMENT_SIZE, None),
    ("part-1-empty", 0, 1),
    ("part-10000", 100, 10000),
]


def build_vectors() -> dict[str, Any]:
    """Seal every case from the seeded random source; return the vector file."""
    draw = random.Random(SEED).randbytes
    data_key = DataKey(
        org_id=draw(16),
        purpose=Purpose.FILES,
        org_key_version=3,
        dek_version=7,
        key=draw(32),
        wrapped=draw(60),
    )
    return {
        "description": (
            "Golden vectors of the byok-proxy ciphertext format, version 1 "
            "(docs/format.md). Regenerate with: python -m tests.make_vectors"
        ),
        "seed": SEED,
        "bucket": BUCKET,
        "data_key": {
            "org_id": data_key.org_id.hex(),
            "purpose": data_key.purpose.label,
            "org_key_version": data_key.org_key_version,
            "dek_version": data_key.dek_version,
            "dek": data_key.key.hex(),
            "wrapped_dek": data_key.wrapped.hex(),
        },
        "cases": [_build_case(data_key, draw, *case) for case in _CASES],
    }


def render_vectors(vectors: dict[str, Any]) -> str:
    """Return the text of the vector file."""
    return json.dumps(vectors, indent=2) + "\n"


def _build_case(
    data_key: DataKey,
    draw: Callable[[int], bytes],
    name: str,
    size: int,
    part_number: int | None,
) -> dict[str, Any]:
    layout = Layout.SINGLE if part_number is None else Layout.MULTIPART
    key = f"objects/{name}.bin"
    header, keys = seal_header(
        data_key,
        layout=layout,
        plaintext_size=size if layout is Layout.SINGLE else 0,
        bucket=BUCKET,
        key=key,
        random=draw,
    )
    case: dict[str, Any] = {
        "name": name,
        "key": key,
        "layout": layout.name.lower(),
        "header": header.to_metadata(),
        "content_key": keys.content_key.hex(),
        "commitment": keys.commitment.hex(),
        "header_key": keys.header_key.hex(),
    }

    stream_key = keys.content_key
    prefix = b""
    if part_number is not None:
        part_salt = seal_part_prefix(draw)
        stream_key = part_key(keys, part_salt, part_number)
        prefix = part_salt
        case.update(
            part_number=part_number,
            part_salt=part_salt.hex(),
            part_key=stream_key.hex(),
        )

    plaintext = draw(size)
    sealer = StreamSealer(stream_key, header.nonce_prefix, size)
    stored = prefix + sealer.update(plaintext) + sealer.finalize()
    case.update(
        plaintext_size=size,
        plaintext_sha256=hashlib.sha256(plaintext).hexdigest(),
        plaintext_md5=hashlib.md5(plaintext).hexdigest(),
    )
    if size <= _INLINE_PLAINTEXT_SIZE:
        case["plaintext"] = plaintext.hex()
    case.update(stored_size=len(stored), stored=base64.b64encode(stored).decode())
    return case


def main() -> None:
    VECTORS_PATH.parent.mkdir(parents=True, exist_ok=True)
    VECTORS_PATH.write_text(render_vectors(build_vectors()), encoding="utf-8")
    print(f"wrote {VECTORS_PATH}")


if __name__ == "__main__":
    main()
