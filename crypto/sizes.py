"""Size arithmetic of sealed streams and parts, and the segments behind a range.

A stream of plaintext P is stored as the segments of ``P || MD5(P)``: every
segment but the last contains ``SEGMENT_SIZE`` bytes, and each is followed by
its ``TAG_SIZE``-byte GCM tag. A part adds ``PART_SALT_SIZE`` bytes in front.
"""

from dataclasses import dataclass

from crypto.errors import DecryptionFailed

__all__ = [
    "DIGEST_SIZE",
    "KEY_SIZE",
    "MAX_PLAINTEXT_SIZE",
    "MAX_SEGMENTS",
    "NONCE_PREFIX_SIZE",
    "PART_SALT_SIZE",
    "SEGMENT_SIZE",
    "TAG_SIZE",
    "SegmentSpan",
    "covering_bounds",
    "digest_span",
    "part_plaintext_size",
    "part_stored_size",
    "plaintext_size",
    "sealed_size",
    "segment_count",
    "segment_span",
]

SEGMENT_SIZE = 65536
TAG_SIZE = 16
DIGEST_SIZE = 16
PART_SALT_SIZE = 16
KEY_SIZE = 32
NONCE_PREFIX_SIZE = 7
MAX_SEGMENTS = 2**32
# The segment_index is 4 bytes, so a stream has at most MAX_SEGMENTS
# segments, and the last of them also contains the digest.
MAX_PLAINTEXT_SIZE = MAX_SEGMENTS * SEGMENT_SIZE - DIGEST_SIZE

_SEALED_SEGMENT_SIZE = SEGMENT_SIZE + TAG_SIZE
# An empty stream is one segment of DIGEST_SIZE bytes and its tag.
_MIN_SEALED_SIZE = DIGEST_SIZE + TAG_SIZE


@dataclass(frozen=True)
class SegmentSpan:
    """The sealed segments to fetch and open for a plaintext range of a stream.

    Stored offsets are relative to the start of the stored object or part,
    so they include the ``base_offset`` passed in. Opening the segments from
    ``first_segment`` to ``last_segment`` yields plaintext of which the first
    ``skip`` bytes are dropped and the next ``length`` bytes are released.
    """

    first_segment: int
    last_segment: int
    stored_start: int
    stored_end: int
    skip: int
    length: int

    @property
    def stored_size(self) -> int:
        """Number of stored bytes from ``stored_start`` to ``stored_end``."""
        return self.stored_end - self.stored_start


def segment_count(plaintext_size: int) -> int:
    """Return the number of segments of a stream of ``plaintext_size`` bytes."""
    _check_plaintext_size(plaintext_size)
    return -(-(plaintext_size + DIGEST_SIZE) // SEGMENT_SIZE)


def sealed_size(plaintext_size: int) -> int:
    """Return the stored size of a stream of ``plaintext_size`` bytes."""
    count = segment_count(plaintext_size)
    return plaintext_size + DIGEST_SIZE + TAG_SIZE * count


def plaintext_size(sealed_size: int) -> int:
    """Return the plaintext size of a stream stored in ``sealed_size`` bytes.

    Raises DecryptionFailed when no stream has that stored size.
    """
    return _open_size(sealed_size, sealed_size, "stream")


def part_stored_size(plaintext_size: int) -> int:
    """Return the stored size of a part of ``plaintext_size`` bytes."""
    return PART_SALT_SIZE + sealed_size(plaintext_size)


def part_plaintext_size(stored_size: int) -> int:
    """Return the plaintext size of a part stored in ``stored_size`` bytes.

    Raises DecryptionFailed when no part has that stored size.
    """
    return _open_size(stored_size - PART_SALT_SIZE, stored_size, "part")


def segment_span(
    first: int, last: int, plaintext_size: int, *, base_offset: int = 0
) -> SegmentSpan:
    """Return the segments that hold the plaintext bytes ``first`` to ``last``.

    ``last`` is inclusive, as in an HTTP Range header. ``base_offset`` is the
    stored offset at which the stream starts: 0 for a single stream,
    ``PART_SALT_SIZE`` for a part.
    """
    _check_plaintext_size(plaintext_size)
    _check_base_offset(base_offset)
    if first < 0 or first > last:
        raise ValueError(
            f"invalid plaintext range [{first}, {last}]: first must be >= 0 and <= last"
        )
    if last >= plaintext_size:
        raise ValueError(
            f"plaintext range [{first}, {last}] ends beyond the plaintext size "
            f"{plaintext_size}; last must be < {plaintext_size}"
        )

    first_segment = first // SEGMENT_SIZE
    last_segment = last // SEGMENT_SIZE
    return SegmentSpan(
        first_segment=first_segment,
        last_segment=last_segment,
        stored_start=base_offset + first_segment * _SEALED_SEGMENT_SIZE,
        stored_end=base_offset + _segment_stored_end(last_segment, plaintext_size),
        skip=first - first_segment * SEGMENT_SIZE,
        length=last - first + 1,
    )


def covering_bounds(first: int, last: int | None) -> tuple[int, int | None]:
    """Return the stored bytes ``[start, end)`` with plaintext ``first`` to ``last``.

    This works before the stream's size is known: for every single stream
    longer than ``first`` bytes, the span of ``first`` to ``min(last, size -
    1)`` lies inside the result once it is cut at the stream's end. ``last``
    None, and then ``end`` None, mean up to the end of the stream.
    """
    if first < 0 or (last is not None and last < first):
        raise ValueError(f"invalid plaintext range [{first}, {last}]")
    start = first // SEGMENT_SIZE * _SEALED_SEGMENT_SIZE
    if last is None:
        return start, None
    return start, (last // SEGMENT_SIZE + 1) * _SEALED_SEGMENT_SIZE


def digest_span(plaintext_size: int, *, base_offset: int = 0) -> SegmentSpan:
    """Return the one or two final segments that hold the sealed MD5 digest.

    The span releases no plaintext (``length`` is 0): ``skip`` is the offset
    of the digest in the first segment. Opening the span gives the digest,
    which is the object's ETag, without reading the rest of the body.
    """
    _check_base_offset(base_offset)
    first_segment = plaintext_size // SEGMENT_SIZE
    last_segment = segment_count(plaintext_size) - 1
    return SegmentSpan(
        first_segment=first_segment,
        last_segment=last_segment,
        stored_start=base_offset + first_segment * _SEALED_SEGMENT_SIZE,
        stored_end=base_offset + sealed_size(plaintext_size),
        skip=plaintext_size - first_segment * SEGMENT_SIZE,
        length=0,
    )


def _segment_stored_end(index: int, plaintext_size: int) -> int:
    # Every segment but the last is full, and the last one ends the stream.
    return min((index + 1) * _SEALED_SEGMENT_SIZE, sealed_size(plaintext_size))


def _open_size(sealed: int, stored: int, kind: str) -> int:
    # ``sealed`` is the size of the stream itself, ``stored`` the size that
    # the caller passed in, which is the one named in the error message.
    offset = stored - sealed
    if sealed < _MIN_SEALED_SIZE:
        raise DecryptionFailed(
            f"{kind} size {stored} is below the minimum of "
            f"{_MIN_SEALED_SIZE + offset} bytes"
        )

    count = -(-sealed // _SEALED_SEGMENT_SIZE)
    if count > MAX_SEGMENTS:
        raise DecryptionFailed(
            f"{kind} size {stored} exceeds the maximum of "
            f"{sealed_size(MAX_PLAINTEXT_SIZE) + offset} bytes"
        )

    extended = sealed - TAG_SIZE * count
    if not (count - 1) * SEGMENT_SIZE < extended <= count * SEGMENT_SIZE:
        last_size = sealed - (count - 1) * _SEALED_SEGMENT_SIZE
        raise DecryptionFailed(
            f"{kind} size {stored} is invalid: its last segment would be "
            f"{last_size} bytes, too short for one byte of data and its tag"
        )
    return extended - DIGEST_SIZE


def _check_plaintext_size(size: int) -> None:
    if not 0 <= size <= MAX_PLAINTEXT_SIZE:
        raise ValueError(
            f"invalid plaintext size {size}: "
            f"a stream holds 0 to {MAX_PLAINTEXT_SIZE} bytes"
        )


def _check_base_offset(base_offset: int) -> None:
    if base_offset < 0:
        raise ValueError(f"invalid base_offset {base_offset}: must be >= 0")
