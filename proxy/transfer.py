"""Streaming encryption of uploads and decryption of downloads.

Backpressure is the design: each chunk is sealed or opened and handed on
before the next one is read, so a stream keeps a few segments in memory
whatever the object size.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from crypto.header import Header, ObjectKeys, part_key
from crypto.sizes import (
    PART_SALT_SIZE,
    SegmentSpan,
    part_stored_size,
    sealed_size,
    segment_span,
)
from crypto.stream import StreamOpener, StreamSealer

__all__ = [
    "PartLayout",
    "Piece",
    "opened_chunks",
    "plan_multipart",
    "plan_single",
    "sealed_chunks",
]


@dataclass(frozen=True)
class Piece:
    """The stored bytes of one stream that a read needs, and how to open them.

    `span` None means the whole stream. Offsets are absolute in the object.
    """

    key: bytes
    nonce_prefix: bytes
    plaintext_size: int
    span: SegmentSpan | None
    stored_start: int
    stored_end: int


@dataclass(frozen=True)
class PartLayout:
    """A multipart object's part as the catalogue records it."""

    part_number: int
    plaintext_size: int
    part_salt: bytes


async def sealed_chunks(
    plaintext: AsyncIterable[bytes],
    sealer: StreamSealer,
    prefix: bytes = b"",
    before_final: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    """Seal a plaintext stream; `before_final` may raise to withhold the end.

    The final segment is produced only after `before_final` accepted the
    body, so an upstream PUT of a body that fails a check stays short and
    the object store discards it.
    """
    if prefix:
        yield prefix
    async for chunk in plaintext:
        sealed = sealer.update(chunk)
        if sealed:
            yield sealed
    if before_final is not None:
        before_final()
    yield sealer.finalize()


async def opened_chunks(
    stored: AsyncIterable[bytes], pieces: Sequence[Piece], start: int
) -> AsyncIterator[bytes]:
    """Open the stored bytes of `pieces`, which arrive from offset `start`.

    Bytes between pieces (part salts) are skipped. Plaintext is released
    segment by segment, each only after its tag verified.
    """
    position = start
    index = 0
    opener = _opener(pieces[0]) if pieces else None
    async for chunk in stored:
        view = memoryview(chunk)
        while view and opener is not None:
            piece = pieces[index]
            if position < piece.stored_start:
                skip = min(piece.stored_start - position, len(view))
                view, position = view[skip:], position + skip
                continue
            take = min(piece.stored_end - position, len(view))
            plaintext = opener.update(view[:take])
            view, position = view[take:], position + take
            if plaintext:
                yield plaintext
            if position == piece.stored_end:
                tail = opener.finalize()
                if tail:
                    yield tail
                index += 1
                opener = _opener(pieces[index]) if index < len(pieces) else None
    if opener is not None:
        opener.finalize()  # raises: the stored bytes ended early


def _opener(piece: Piece) -> StreamOpener:
    return StreamOpener(piece.key, piece.nonce_prefix, piece.plaintext_size, piece.span)


def plan_single(
    header: Header, keys: ObjectKeys, byte_range: tuple[int, int] | None
) -> list[Piece]:
    """Plan the read of a single-stream object, whole or one range."""
    size = header.plaintext_size
    if byte_range is None:
        return [
            Piece(
                keys.content_key, header.nonce_prefix, size, None, 0, sealed_size(size)
            )
        ]
    span = segment_span(byte_range[0], byte_range[1], size)
    return [
        Piece(
            keys.content_key,
            header.nonce_prefix,
            size,
            span,
            span.stored_start,
            span.stored_end,
        )
    ]


def plan_multipart(
    header: Header,
    keys: ObjectKeys,
    parts: Sequence[PartLayout],
    byte_range: tuple[int, int] | None,
) -> list[Piece]:
    """Plan the read of a multipart object: one piece per part it touches."""
    pieces: list[Piece] = []
    plaintext_offset = stored_offset = 0
    for part in parts:
        stored = part_stored_size(part.plaintext_size)
        piece = _part_piece(
            header, keys, part, byte_range, plaintext_offset, stored_offset
        )
        if piece is not None:
            pieces.append(piece)
        plaintext_offset += part.plaintext_size
        stored_offset += stored
    return pieces


def _part_piece(
    header: Header,
    keys: ObjectKeys,
    part: PartLayout,
    byte_range: tuple[int, int] | None,
    plaintext_offset: int,
    stored_offset: int,
) -> Piece | None:
    key = part_key(keys, part.part_salt, part.part_number)
    size = part.plaintext_size
    if byte_range is None:
        start = stored_offset + PART_SALT_SIZE
        end = stored_offset + part_stored_size(size)
        return Piece(key, header.nonce_prefix, size, None, start, end)
    first = max(byte_range[0] - plaintext_offset, 0)
    last = min(byte_range[1] - plaintext_offset, size - 1)
    if size == 0 or first > last or first >= size or last < 0:
        return None
    span = segment_span(first, last, size, base_offset=PART_SALT_SIZE)
    return Piece(
        key,
        header.nonce_prefix,
        size,
        span,
        stored_offset + span.stored_start,
        stored_offset + span.stored_end,
    )
