"""The plaintext of a request body: aws-chunked decoding and every integrity check.

The client's payload hash, chunk signatures, trailer checksums, checksum
headers and Content-MD5 are all checked over the plaintext. `verify()` runs
after the last byte and before the caller commits anything, so a body that
fails a check never becomes a stored object.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass

from proxy.checksums import (
    Checksum,
    parse_content_md5,
    requested_checksums,
    verify_checksum,
    verify_content_md5,
)
from proxy.chunked import ChunkedDecoder
from proxy.errors import S3Error
from proxy.sigv4 import Authorization, PayloadMode, SigningContext, payload_mode

__all__ = ["PayloadSigning", "RequestBody", "plaintext_length"]


@dataclass(frozen=True)
class PayloadSigning:
    """The signature coverage of a request body.

    `mode` is named by the signed x-amz-content-sha256 value. `sha256` is
    that value when it is a literal hex digest, else "". `context` seeds
    the chunk signature checks of signed aws-chunked bodies. A SigV2
    signature covers no body, so its requests are UNSIGNED with no context.
    """

    mode: PayloadMode
    sha256: str = ""
    context: SigningContext | None = None

    @classmethod
    def sigv4(cls, auth: Authorization, context: SigningContext) -> PayloadSigning:
        """Describe the body of a verified SigV4 request."""
        mode = payload_mode(auth)
        sha256 = auth.payload_hash if mode is PayloadMode.LITERAL else ""
        return cls(mode, sha256, context)


def plaintext_length(headers: Mapping[str, str], mode: PayloadMode) -> int:
    """Return the plaintext size a PUT declares; S3 requires it up front."""
    name = "Content-Length"
    if mode.is_streaming:
        name = "x-amz-decoded-content-length"
    value = headers.get(name)
    if value is None:
        raise S3Error(
            "MissingContentLength",
            f"You must provide the {name} HTTP header.",
            411,
        )
    # str.isdigit alone also accepts digits such as "²" that int() rejects
    if not (value.isascii() and value.isdigit()):
        raise S3Error("InvalidArgument", f"The {name} header {value!r} is not valid")
    return int(value)


class RequestBody:
    """Yields a request's plaintext and checks it once it has all arrived."""

    def __init__(
        self,
        raw: AsyncIterable[bytes],
        headers: Mapping[str, str],
        payload: PayloadSigning,
        compute: str = "",
    ) -> None:
        """`compute` names a checksum algorithm to run even if the client
        sent no value for it."""
        self._raw = raw
        self._mode = payload.mode
        self._payload_hash = payload.sha256
        self._sha256 = hashlib.sha256() if self._mode is PayloadMode.LITERAL else None
        self._content_md5 = parse_content_md5(headers.get("Content-MD5"))
        self._md5 = hashlib.md5() if self._content_md5 is not None else None
        self._expected = requested_checksums(headers)
        self._decoder: ChunkedDecoder | None = None
        if self._mode.is_streaming:
            self._decoder = ChunkedDecoder(
                self._mode,
                context=payload.context,
                trailer_names=_trailer_names(headers),
                decoded_length=plaintext_length(headers, self._mode),
            )
        self._checksums = {name: Checksum.new(name) for name in self._expected}
        for name in _trailer_names(headers):
            algorithm = name.removeprefix("x-amz-checksum-")
            self._checksums.setdefault(algorithm, Checksum.new(algorithm))
        self._presented = next(iter(self._checksums), "")
        if compute:
            self._checksums.setdefault(compute, Checksum.new(compute))

    @property
    def presented(self) -> str:
        """The algorithm of the checksum the client sent, or ""."""
        return self._presented

    def digest(self, algorithm: str) -> bytes:
        """Return a checksum of the whole plaintext, once it has been read."""
        return self._checksums[algorithm].digest()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the plaintext as it arrives."""
        async for data in self._raw:
            if self._sha256 is not None:
                self._sha256.update(data)
            pieces = [data] if self._decoder is None else self._decoder.feed(data)
            for piece in pieces:
                self._observe(piece)
                yield bytes(piece)

    def verify(self) -> None:
        """Check every digest and checksum; raise the S3 error of the first miss."""
        if self._sha256 is not None:
            actual = self._sha256.hexdigest()
            if not hmac.compare_digest(actual, self._payload_hash.lower()):
                raise S3Error(
                    "XAmzContentSHA256Mismatch",
                    "The provided 'x-amz-content-sha256' header does not match "
                    "what was computed.",
                )
        expected = dict(self._expected)
        if self._decoder is not None:
            for name, value in self._decoder.finish().items():
                expected[name.removeprefix("x-amz-checksum-")] = value
        for algorithm, value in expected.items():
            verify_checksum(algorithm, value, self._checksums[algorithm])
        if self._md5 is not None and self._content_md5 is not None:
            verify_content_md5(self._content_md5, self._md5.digest())

    def _observe(self, piece: bytes | memoryview) -> None:
        if self._md5 is not None:
            self._md5.update(piece)
        for checksum in self._checksums.values():
            checksum.update(piece)


def _trailer_names(headers: Mapping[str, str]) -> list[str]:
    value = headers.get("x-amz-trailer", "")
    return [name.strip().lower() for name in value.split(",") if name.strip()]
