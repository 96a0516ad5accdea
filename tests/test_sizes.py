"""Tests of the size arithmetic of streams, parts and range spans."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto.errors import DecryptionFailed
from crypto.sizes import (
    DIGEST_SIZE,
    MAX_PLAINTEXT_SIZE,
    MAX_SEGMENTS,
    PART_SALT_SIZE,
    SEGMENT_SIZE,
    TAG_SIZE,
    SegmentSpan,
    covering_bounds,
    digest_span,
    part_plaintext_size,
    part_stored_size,
    plaintext_size,
    sealed_size,
    segment_count,
    segment_span,
)

S = SEGMENT_SIZE
SEALED = SEGMENT_SIZE + TAG_SIZE
MIB = 2**20

# Plaintext sizes around the segment boundaries. The digest makes S - 16 the
# largest size that fits one segment.
SIZE_TABLE = [
    0,
    1,
    15,
    16,
    17,
    S - 17,
    S - 16,
    S - 15,
    S - 1,
    S,
    S + 1,
    2 * S - 17,
    2 * S - 16,
    2 * S - 15,
    2 * S,
    3 * S - 16,
    5 * MIB - 16,
    5 * MIB,
    5 * MIB + 1,
    MAX_PLAINTEXT_SIZE - 1,
    MAX_PLAINTEXT_SIZE,
]

# (plaintext size, segment count, sealed size), worked out by hand from
# sealed_size(p) = (p + 16) + 16 * ceil((p + 16) / S).
EXPECTED_SIZES = [
    (0, 1, 32),
    (1, 1, 33),
    (S - 17, 1, S + 15),
    (S - 16, 1, S + 16),
    (S - 15, 2, S + 33),
    (S, 2, S + 48),
    (2 * S - 16, 2, 2 * S + 32),
    (2 * S - 15, 3, 2 * S + 49),
    (5 * MIB + 1, 81, 5 * MIB + 17 + 81 * 16),
    (MAX_PLAINTEXT_SIZE, 2**32, 2**48 + 2**36),
]

plaintext_sizes = st.integers(min_value=0, max_value=2**40)


def test_sizes_constants_match_format() -> None:
    assert SEGMENT_SIZE == 65536
    assert TAG_SIZE == 16
    assert DIGEST_SIZE == 16
    assert PART_SALT_SIZE == 16
    assert MAX_SEGMENTS == 2**32
    assert MAX_PLAINTEXT_SIZE == 2**48 - 16


@pytest.mark.parametrize(("size", "count", "stored"), EXPECTED_SIZES)
def test_segment_count_table(size: int, count: int, stored: int) -> None:
    assert segment_count(size) == count


@pytest.mark.parametrize(("size", "count", "stored"), EXPECTED_SIZES)
def test_sealed_size_table(size: int, count: int, stored: int) -> None:
    assert sealed_size(size) == stored


@pytest.mark.parametrize("size", SIZE_TABLE)
def test_plaintext_size_inverts_sealed_size(size: int) -> None:
    assert plaintext_size(sealed_size(size)) == size


@pytest.mark.parametrize("size", SIZE_TABLE)
def test_part_plaintext_size_inverts_part_stored_size(size: int) -> None:
    assert part_stored_size(size) == sealed_size(size) + PART_SALT_SIZE
    assert part_plaintext_size(part_stored_size(size)) == size


@given(plaintext_sizes)
def test_plaintext_size_inverts_sealed_size_random(size: int) -> None:
    assert plaintext_size(sealed_size(size)) == size
    assert part_plaintext_size(part_stored_size(size)) == size


@given(st.integers(min_value=0, max_value=MAX_PLAINTEXT_SIZE))
def test_sealed_size_matches_segment_count(size: int) -> None:
    count = segment_count(size)
    assert (count - 1) * S < size + DIGEST_SIZE <= count * S
    assert sealed_size(size) == size + DIGEST_SIZE + count * TAG_SIZE


@given(st.integers(min_value=0, max_value=2**40))
def test_plaintext_size_accepts_only_sealed_sizes_random(stored: int) -> None:
    try:
        size = plaintext_size(stored)
    except DecryptionFailed:
        # Rejected sizes end in the first 16 bytes of a segment slot, where
        # a last segment could contain no data besides its tag.
        assert stored < 32 or 1 <= stored % SEALED <= TAG_SIZE
    else:
        assert sealed_size(size) == stored


@pytest.mark.parametrize("stored", [*range(32), -1, -SEALED])
def test_plaintext_size_rejects_tiny_sizes(stored: int) -> None:
    with pytest.raises(DecryptionFailed, match="below the minimum"):
        plaintext_size(stored)


@pytest.mark.parametrize("segments", [1, 2, 3, 81, MAX_SEGMENTS - 1])
def test_plaintext_size_rejects_tag_gap(segments: int) -> None:
    # After ``segments`` full segments, a last segment of 1 to 16 bytes
    # would be a partial tag with no data.
    for extra in range(1, TAG_SIZE + 1):
        with pytest.raises(DecryptionFailed, match="last segment would be"):
            plaintext_size(segments * SEALED + extra)


@pytest.mark.parametrize("segments", [1, 2, 3, 81, MAX_SEGMENTS - 1])
def test_plaintext_size_accepts_tag_gap_edges(segments: int) -> None:
    assert plaintext_size(segments * SEALED) == segments * S - DIGEST_SIZE
    assert plaintext_size(segments * SEALED + TAG_SIZE + 1) == segments * S - 15


def test_plaintext_size_accepts_exactly_sealed_sizes() -> None:
    valid = {sealed_size(size) for size in range(3 * S + 64)}
    for stored in range(3 * SEALED + 64):
        if stored in valid:
            assert sealed_size(plaintext_size(stored)) == stored
        else:
            with pytest.raises(DecryptionFailed):
                plaintext_size(stored)


@pytest.mark.parametrize("excess", [1, TAG_SIZE + 1, SEALED, 2**40])
def test_plaintext_size_rejects_above_max(excess: int) -> None:
    with pytest.raises(DecryptionFailed):
        plaintext_size(sealed_size(MAX_PLAINTEXT_SIZE) + excess)


@pytest.mark.parametrize("size", [-1, -S, MAX_PLAINTEXT_SIZE + 1, 2**64])
def test_sealed_size_rejects_invalid_plaintext_size(size: int) -> None:
    with pytest.raises(ValueError, match="invalid plaintext size"):
        sealed_size(size)
    with pytest.raises(ValueError, match="invalid plaintext size"):
        segment_count(size)
    with pytest.raises(ValueError, match="invalid plaintext size"):
        part_stored_size(size)


@pytest.mark.parametrize("stored", [*range(48), -1])
def test_part_plaintext_size_rejects_tiny_sizes(stored: int) -> None:
    with pytest.raises(DecryptionFailed, match="part size"):
        part_plaintext_size(stored)


@pytest.mark.parametrize("segments", [1, 2, 81])
def test_part_plaintext_size_rejects_tag_gap(segments: int) -> None:
    for extra in range(1, TAG_SIZE + 1):
        stored = PART_SALT_SIZE + segments * SEALED + extra
        with pytest.raises(DecryptionFailed, match=f"part size {stored} "):
            part_plaintext_size(stored)


@given(st.integers(min_value=0, max_value=2**40))
def test_part_plaintext_size_accepts_only_part_sizes_random(stored: int) -> None:
    try:
        size = part_plaintext_size(stored)
    except DecryptionFailed:
        assert stored < 48 or 1 <= (stored - PART_SALT_SIZE) % SEALED <= TAG_SIZE
    else:
        assert part_stored_size(size) == stored


SPAN_TABLE = [
    # (first, last, plaintext size, base_offset, expected span)
    ((0, 0, 1, 0), SegmentSpan(0, 0, 0, 33, 0, 1)),
    ((0, S - 17, S - 16, 0), SegmentSpan(0, 0, 0, S + 16, 0, S - 16)),
    ((0, S - 1, S, 0), SegmentSpan(0, 0, 0, SEALED, 0, S)),
    ((S - 1, S, 2 * S, 0), SegmentSpan(0, 1, 0, 2 * SEALED, S - 1, 2)),
    ((S, S, S + 1, 0), SegmentSpan(1, 1, SEALED, S + 49, 0, 1)),
    ((S - 16, S - 16, S - 15, 0), SegmentSpan(0, 0, 0, SEALED, S - 16, 1)),
    ((10, 20, 3 * S, PART_SALT_SIZE), SegmentSpan(0, 0, 16, 16 + SEALED, 10, 11)),
    (
        (S + 5, 2 * S + 5, 3 * S, PART_SALT_SIZE),
        SegmentSpan(1, 2, 16 + SEALED, 16 + 3 * SEALED, 5, S + 1),
    ),
    (
        (5 * MIB, 5 * MIB, 5 * MIB + 1, 0),
        SegmentSpan(80, 80, 80 * SEALED, sealed_size(5 * MIB + 1), 0, 1),
    ),
]


@pytest.mark.parametrize(("arguments", "expected"), SPAN_TABLE)
def test_segment_span_table(
    arguments: tuple[int, int, int, int], expected: SegmentSpan
) -> None:
    first, last, size, base_offset = arguments
    assert segment_span(first, last, size, base_offset=base_offset) == expected


@st.composite
def ranges(draw: st.DrawFn) -> tuple[int, int, int]:
    size = draw(st.integers(min_value=1, max_value=2**40))
    first = draw(st.integers(min_value=0, max_value=size - 1))
    last = draw(st.integers(min_value=first, max_value=size - 1))
    return first, last, size


@given(ranges(), st.sampled_from([0, PART_SALT_SIZE]))
def test_segment_span_covers_exactly_the_range(
    byte_range: tuple[int, int, int], base_offset: int
) -> None:
    first, last, size = byte_range
    span = segment_span(first, last, size, base_offset=base_offset)

    assert span.first_segment == first // S
    assert span.last_segment == last // S
    assert span.first_segment * S + span.skip == first
    assert span.length == last - first + 1
    assert 0 <= span.skip < S
    assert span.stored_start == base_offset + span.first_segment * SEALED
    last_segment_end = min((span.last_segment + 1) * SEALED, sealed_size(size))
    assert span.stored_end == base_offset + last_segment_end
    assert span.stored_size == span.stored_end - span.stored_start
    assert span.stored_end <= base_offset + sealed_size(size)


@pytest.mark.parametrize(
    ("first", "last", "size", "message"),
    [
        (-1, 0, 10, "first must be >= 0"),
        (5, 4, 10, "first must be >= 0 and <= last"),
        (0, 10, 10, "last must be < 10"),
        (0, 0, 0, "last must be < 0"),
        (0, 0, -1, "invalid plaintext size"),
        (0, 0, MAX_PLAINTEXT_SIZE + 1, "invalid plaintext size"),
    ],
)
def test_segment_span_rejects_invalid_range(
    first: int, last: int, size: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        segment_span(first, last, size)


def test_segment_span_rejects_negative_base_offset() -> None:
    with pytest.raises(ValueError, match="base_offset"):
        segment_span(0, 0, 10, base_offset=-1)


DIGEST_SPAN_TABLE = [
    (0, SegmentSpan(0, 0, 0, 32, 0, 0)),
    (1, SegmentSpan(0, 0, 0, 33, 1, 0)),
    (S - 16, SegmentSpan(0, 0, 0, S + 16, S - 16, 0)),
    (S - 15, SegmentSpan(0, 1, 0, S + 33, S - 15, 0)),
    (S - 1, SegmentSpan(0, 1, 0, S + 47, S - 1, 0)),
    (S, SegmentSpan(1, 1, SEALED, S + 48, 0, 0)),
    (2 * S - 8, SegmentSpan(1, 2, SEALED, 2 * S + 8 + 48, S - 8, 0)),
]


@pytest.mark.parametrize(("size", "expected"), DIGEST_SPAN_TABLE)
def test_digest_span_table(size: int, expected: SegmentSpan) -> None:
    assert digest_span(size) == expected


def test_digest_span_with_base_offset() -> None:
    span = digest_span(S, base_offset=PART_SALT_SIZE)
    assert span == SegmentSpan(1, 1, 16 + SEALED, 16 + S + 48, 0, 0)


@given(plaintext_sizes)
def test_digest_span_covers_the_digest(size: int) -> None:
    span = digest_span(size)
    digest_start = size
    digest_end = size + DIGEST_SIZE
    assert span.first_segment * S <= digest_start < (span.first_segment + 1) * S
    assert span.last_segment * S < digest_end <= (span.last_segment + 1) * S
    assert span.last_segment == segment_count(size) - 1
    assert span.last_segment - span.first_segment in (0, 1)
    assert span.first_segment * S + span.skip == size
    assert span.length == 0
    assert span.stored_end == sealed_size(size)


def test_digest_span_rejects_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="invalid plaintext size"):
        digest_span(-1)
    with pytest.raises(ValueError, match="base_offset"):
        digest_span(0, base_offset=-16)


@given(ranges(), st.booleans())
def test_covering_bounds_contain_any_span(
    byte_range: tuple[int, int, int], open_ended: bool
) -> None:
    first, last, size = byte_range
    start, end = covering_bounds(first, None if open_ended else last)
    # the store cuts a range at the end of the object
    end = sealed_size(size) if end is None else min(end, sealed_size(size))
    span = segment_span(first, last, size)
    assert start == span.stored_start
    assert span.stored_end <= end
    if not open_ended:
        assert end == span.stored_end


def test_covering_bounds_reject_invalid_range() -> None:
    with pytest.raises(ValueError):
        covering_bounds(5, 4)
    with pytest.raises(ValueError):
        covering_bounds(-1, None)
