"""The payload modes of S3 SigV4, named by the x-amz-content-sha256 value."""

from __future__ import annotations

import enum
import re
from typing import Final

from proxy.errors import S3Error

__all__ = ["CONTENT_SHA256_HEADER", "PayloadMode", "classify_payload"]

CONTENT_SHA256_HEADER: Final = "x-amz-content-sha256"
_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")


class PayloadMode(enum.Enum):
    """A body signing mode, named by its x-amz-content-sha256 value."""

    LITERAL = "sha256"
    UNSIGNED = "UNSIGNED-PAYLOAD"
    STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
    STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

    @property
    def is_streaming(self) -> bool:
        """True if the body uses aws-chunked framing."""
        return self.value.startswith("STREAMING-")

    @property
    def has_chunk_signatures(self) -> bool:
        return self in (
            PayloadMode.STREAMING_SIGNED,
            PayloadMode.STREAMING_SIGNED_TRAILER,
        )

    @property
    def has_trailer(self) -> bool:
        return self.value.endswith("-TRAILER")


def classify_payload(value: str) -> PayloadMode:
    if _SHA256_HEX.fullmatch(value):
        return PayloadMode.LITERAL
    for mode in PayloadMode:
        if mode is not PayloadMode.LITERAL and value == mode.value:
            return mode
    known = ", ".join(m.value for m in PayloadMode if m is not PayloadMode.LITERAL)
    raise S3Error(
        "InvalidArgument",
        f"x-amz-content-sha256 must be {known}, or the hex SHA-256 of the "
        "body; this value is not supported.",
    )
