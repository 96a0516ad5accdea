"""Decoder for aws-chunked request bodies, the framing of S3 streaming uploads.

Each chunk is `<hex size>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n`, and a
chunk of size zero ends the payload. Then comes `\\r\\n` alone, or in the
trailer modes the trailer lines `name:value\\r\\n` (in the signed mode
followed by `x-amz-trailer-signature:<sig>\\r\\n`) and a final `\\r\\n`.

`proxy.chunked_signing` describes the chunk and trailer signatures.

Error codes: a malformed frame gives InvalidRequest, an oversized chunk
InvalidChunkSizeError, a bad chunk or trailer signature
SignatureDoesNotMatch, a bad trailer section MalformedTrailerError, and a
short body IncompleteBody.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Final

from proxy.chunked_signing import (
    check_signature,
    chunk_string_to_sign,
    trailer_string_to_sign,
)
from proxy.chunked_trailer import (
    TrailerReader,
    declared_trailers,
    verify_trailer_checksum,
)
from proxy.errors import S3Error
from proxy.sigv4 import PayloadMode, SigningContext

__all__ = [
    "MAX_CHUNK_SIZE",
    "MAX_LINE",
    "ChunkedDecoder",
    "declared_trailers",
    "decoded_content_length",
    "verify_trailer_checksum",
]

# 16 MiB is far above the 1 MiB chunks botocore sends and bounds what a
# signed chunk keeps buffered.
# TODO: S3 also rejects signed chunks under 8 KiB other than the last; that
# lower limit is not enforced here.
MAX_CHUNK_SIZE: Final = 16 * 1024 * 1024
# Maximum length of a chunk-size or trailer line, CRLF included. A signed size line is
# at most 16 + 17 + 64 + 2 bytes and a checksum trailer line under 128.
MAX_LINE: Final = 256

_SIGNED_SIZE_LINE: Final = re.compile(
    rb"([0-9a-fA-F]{1,16});chunk-signature=([\x21-\x7e]*)"
)
_UNSIGNED_SIZE_LINE: Final = re.compile(rb"[0-9a-fA-F]{1,16}")


class _State(enum.Enum):
    SIZE_LINE = enum.auto()
    DATA = enum.auto()
    DATA_END = enum.auto()
    TRAILER = enum.auto()
    DONE = enum.auto()


def _malformed(detail: str) -> S3Error:
    # TODO: S3's error code for broken aws-chunked framing is unconfirmed;
    # InvalidRequest is a guess.
    return S3Error("InvalidRequest", f"The aws-chunked body is malformed: {detail}")


def _incomplete(detail: str) -> S3Error:
    return S3Error("IncompleteBody", f"The aws-chunked body is incomplete: {detail}")


class ChunkedDecoder:
    """A push decoder for one aws-chunked body: `feed` pieces, then `finish`.

    `trailer_names` are the lower-case names declared in x-amz-trailer (see
    `declared_trailers`), and `decoded_length` is x-amz-decoded-content-length
    when the client sent it. In the signed modes a chunk's data is returned
    only after its signature has been checked, so at most one chunk plus one
    line is held in memory. After an S3Error the decoder raises it again on
    every call.
    """

    def __init__(
        self,
        mode: PayloadMode,
        *,
        context: SigningContext | None,
        trailer_names: Sequence[str],
        decoded_length: int | None,
    ) -> None:
        if not mode.is_streaming:
            raise ValueError(f"{mode.value} is not an aws-chunked payload mode")
        if mode.has_chunk_signatures and context is None:
            raise ValueError("signed aws-chunked bodies need a SigningContext")
        if trailer_names and not mode.has_trailer:
            raise S3Error(
                "InvalidRequest",
                f"x-amz-trailer is set, but x-amz-content-sha256 {mode.value} "
                "has no trailer; use the -TRAILER form or drop x-amz-trailer.",
            )

        self._mode = mode
        # Only the signed modes check signatures, even if a context is given.
        self._context = context if mode.has_chunk_signatures else None
        self._decoded_length = decoded_length
        self._state = _State.SIZE_LINE
        self._line = bytearray()
        self._error: S3Error | None = None
        self._finished = False
        self._total = 0

        # The chunk being read: bytes still expected, its claimed signature,
        # and in the signed modes its data held back until verified.
        self._remaining = 0
        self._final = False
        self._claimed = ""
        self._previous = self._context.seed_signature if self._context else ""
        self._chunk_hash = hashlib.sha256()
        self._held: list[memoryview] = []

        self._trailer = TrailerReader(
            frozenset(trailer_names), signed=mode.has_chunk_signatures
        )

    def feed(self, data: bytes) -> list[memoryview]:
        """Decode the next piece of the body; returns payload pieces in order.

        The returned views point into `data`, which must not be changed
        while they are in use.
        """
        self._check_usable()
        raw = bytes(data)
        view = memoryview(raw)
        out: list[memoryview] = []
        try:
            position = 0
            while position < len(raw):
                position = self._step(raw, view, position, out)
        except S3Error as error:
            self._error = error
            raise
        return out

    def finish(self) -> dict[str, str]:
        """End the body and return its trailers by lower-case name.

        Raises IncompleteBody if the final chunk (or, in the trailer modes,
        the end of the trailers) has not arrived, or if the payload length
        differs from x-amz-decoded-content-length.
        """
        self._check_usable()
        self._finished = True
        if self._state is not _State.DONE:
            self._error = _incomplete("the body ended before the final chunk.")
            raise self._error
        self._check_length_complete()
        return dict(self._trailer.trailers)

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._finished:
            raise ValueError("the decoder is already finished")

    def _step(
        self, raw: bytes, view: memoryview, position: int, out: list[memoryview]
    ) -> int:
        if self._state is _State.DATA:
            return self._read_data(view, position, out)
        if self._state is _State.DONE:
            raise _malformed("there are bytes after the end of the body.")
        line, position = self._read_line(raw, position)
        if line is not None:
            self._handle_line(line)
        return position

    def _read_line(self, raw: bytes, position: int) -> tuple[bytes | None, int]:
        room = MAX_LINE - len(self._line)
        end = raw.find(b"\n", position, position + room)
        if end < 0:
            self._line += raw[position : position + room + 1]
            if len(self._line) >= MAX_LINE:
                raise _malformed(f"a line is longer than {MAX_LINE} bytes.")
            return None, len(raw)
        self._line += raw[position : end + 1]
        line = bytes(self._line)
        self._line.clear()
        if not line.endswith(b"\r\n"):
            raise _malformed("a line does not end with CRLF.")
        return line[:-2], end + 1

    def _handle_line(self, line: bytes) -> None:
        if self._state is _State.SIZE_LINE:
            self._start_chunk(line)
        elif self._state is _State.DATA_END:
            if line:
                raise _malformed("chunk data is not followed by CRLF.")
            self._state = _State.DONE if self._final else _State.SIZE_LINE
        else:
            self._read_trailer_line(line)

    def _start_chunk(self, line: bytes) -> None:
        size = self._parse_size_line(line)
        limit = self._decoded_length
        if limit is not None and self._total + size > limit:
            raise _malformed(
                f"the payload is longer than x-amz-decoded-content-length ({limit} "
                "bytes)."
            )
        self._remaining = size
        self._chunk_hash = hashlib.sha256()
        if size > 0:
            self._state = _State.DATA
            return
        self._final = True
        self._check_length_complete()
        self._verify_chunk()
        trailer = self._mode.has_trailer
        self._state = _State.TRAILER if trailer else _State.DATA_END

    def _parse_size_line(self, line: bytes) -> int:
        if self._mode.has_chunk_signatures:
            match = _SIGNED_SIZE_LINE.fullmatch(line)
            if match is None:
                raise _malformed(
                    "expected '<hex size>;chunk-signature=<signature>' CRLF."
                )
            self._claimed = match.group(2).decode("ascii")
            size_hex = match.group(1)
        else:
            if _UNSIGNED_SIZE_LINE.fullmatch(line) is None:
                raise _malformed("expected a hexadecimal chunk size and CRLF.")
            size_hex = line
        size = int(size_hex, 16)
        if size > MAX_CHUNK_SIZE:
            raise S3Error(
                "InvalidChunkSizeError",
                f"A chunk declares {size} bytes; chunks may be at most "
                f"{MAX_CHUNK_SIZE} bytes.",
            )
        return size

    def _read_data(self, view: memoryview, position: int, out: list[memoryview]) -> int:
        take = min(self._remaining, len(view) - position)
        piece = view[position : position + take]
        self._remaining -= take
        self._total += take
        if self._mode.has_chunk_signatures:
            self._chunk_hash.update(piece)
            self._held.append(piece)
        else:
            out.append(piece)
        if self._remaining == 0:
            self._verify_chunk()
            out.extend(self._held)
            self._held.clear()
            self._state = _State.DATA_END
        return position + take

    def _verify_chunk(self) -> None:
        if self._context is None:
            return
        digest = self._chunk_hash.hexdigest()
        message = chunk_string_to_sign(self._context, self._previous, digest)
        check_signature(self._context, message, self._claimed, "chunk")
        self._previous = self._claimed

    def _read_trailer_line(self, line: bytes) -> None:
        if not self._trailer.add_line(line):
            return
        if self._context is not None:
            trailers = self._trailer.trailers
            message = trailer_string_to_sign(self._context, self._previous, trailers)
            claimed = self._trailer.signature or ""
            check_signature(self._context, message, claimed, "trailer")
        self._state = _State.DONE

    def _check_length_complete(self) -> None:
        expected = self._decoded_length
        if expected is not None and self._total != expected:
            raise _incomplete(
                f"the payload has {self._total} bytes, but "
                f"x-amz-decoded-content-length is {expected}."
            )


def decoded_content_length(headers: Mapping[str, str]) -> int | None:
    """Return x-amz-decoded-content-length, or None if it is absent."""
    values = [
        v for k, v in headers.items() if k.lower() == "x-amz-decoded-content-length"
    ]
    if not values:
        return None
    value = values[0].strip()
    if len(values) > 1 or not (value.isascii() and value.isdigit()):
        raise S3Error(
            "InvalidArgument",
            "x-amz-decoded-content-length must be one non-negative integer, "
            "the payload size in bytes before aws-chunked encoding.",
        )
    return int(value)
