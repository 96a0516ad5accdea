"""Chunk and trailer signatures of signed aws-chunked bodies.

Chunk signatures chain from the request signature. Each signs
`AWS4-HMAC-SHA256-PAYLOAD`, the request time, the scope, the previous
signature, the SHA-256 of the empty string and the SHA-256 of the chunk
data. The trailer signature signs `AWS4-HMAC-SHA256-TRAILER`, the request
time, the scope, the final chunk's signature and the SHA-256 of the trailers
written as `name:value\\n` lines sorted by name.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Final

from proxy.errors import S3Error
from proxy.sigv4 import SigningContext

__all__ = ["check_signature", "chunk_string_to_sign", "trailer_string_to_sign"]

_EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()
_SIGNATURE: Final = re.compile(r"[0-9a-f]{64}")


def chunk_string_to_sign(
    context: SigningContext, previous: str, data_sha256: str
) -> str:
    """Return the string to sign of a chunk whose data hashes to `data_sha256`."""
    fields = (
        "AWS4-HMAC-SHA256-PAYLOAD",
        context.amz_date,
        context.scope,
        previous,
        _EMPTY_SHA256,
        data_sha256,
    )
    return "\n".join(fields)


def trailer_string_to_sign(
    context: SigningContext, previous: str, trailers: Mapping[str, str]
) -> str:
    """Return the string to sign of the trailers; `previous` signed the final chunk."""
    canonical = "".join(f"{name}:{value}\n" for name, value in sorted(trailers.items()))
    fields = (
        "AWS4-HMAC-SHA256-TRAILER",
        context.amz_date,
        context.scope,
        previous,
        hashlib.sha256(canonical.encode("ascii")).hexdigest(),
    )
    return "\n".join(fields)


def check_signature(
    context: SigningContext, message: str, claimed: str, what: str
) -> None:
    """Raise SignatureDoesNotMatch unless `claimed` signs `message`.

    `what` names the signed part ("chunk", "trailer") in the error message.
    """
    key = context.signing_key
    expected = hmac.new(key, message.encode("ascii"), hashlib.sha256).hexdigest()
    matches = _SIGNATURE.fullmatch(claimed) is not None
    if not (matches and hmac.compare_digest(expected, claimed)):
        raise S3Error(
            "SignatureDoesNotMatch",
            f"The {what} signature we calculated does not match the signature "
            "you provided. Check your key and signing method.",
            403,
        )
