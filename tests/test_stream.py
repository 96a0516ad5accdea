"""Tests of stream sealing and opening: round trips, spans, vectors, tampering."""

import array
import base64
import functools
import hashlib
import itertools
import json
import random
from collections.abc import Iterable

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.errors import DecryptionFailed, SizeMismatch
from crypto.header import (
    DataKey,
    Header,
    Layout,
    ObjectKeys,
    Purpose,
    open_header,
    part_key,
    seal_header,
)
from crypto.sizes import (
    PART_SALT_SIZE,
    SEGMENT_SIZE,
    TAG_SIZE,
    SegmentSpan,
    digest_span,
    part_plaintext_size,
    plaintext_size,
    sealed_size,
    segment_span,
)
from crypto.stream import StreamOpener, StreamSealer, seal_part_prefix
from tests.make_vectors import VECTORS_PATH, build_vectors, render_vectors

S = SEGMENT_SIZE
SEALED = SEGMENT_SIZE + TAG_SIZE
MIB = 2**20
KEY = bytes(range(32))
NONCE_PREFIX = bytes(range(100, 107))

ROUND_TRIP_SIZES = [
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
    2 * S + 1,
]
# 5 MiB + 1 is fed in chunks of 4 KiB and more: one-byte or three-byte
# chunks of it take about ten seconds.
LARGE_SIZE = 5 * MIB + 1


@functools.cache
def plaintext_of(size: int) -> bytes:
    return random.Random(size).randbytes(size)


@functools.cache
def sealed_of(size: int) -> bytes:
    return seal(plaintext_of(size))


def seal(
    plaintext: bytes,
    chunk_size: int | None = None,
    key: bytes = KEY,
    nonce_prefix: bytes = NONCE_PREFIX,
) -> bytes:
    sealer = StreamSealer(key, nonce_prefix, len(plaintext))
    pieces = [sealer.update(chunk) for chunk in split(plaintext, chunk_size)]
    return b"".join(pieces) + sealer.finalize()


def open_stream(
    sealed: bytes,
    size: int,
    chunk_size: int | None = None,
    span: SegmentSpan | None = None,
    key: bytes = KEY,
) -> bytes:
    opener = StreamOpener(key, NONCE_PREFIX, size, span)
    pieces = [opener.update(chunk) for chunk in split(sealed, chunk_size)]
    return b"".join(pieces) + opener.finalize()


def split(data: bytes, chunk_size: int | None) -> list[memoryview]:
    view = memoryview(data)
    if chunk_size is None:
        return [view]
    return [view[i : i + chunk_size] for i in range(0, len(data), chunk_size)]


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def segments_of(sealed: bytes) -> list[bytes]:
    return [sealed[i : i + SEALED] for i in range(0, len(sealed), SEALED)]


def open_collecting(
    opener: StreamOpener, chunks: Iterable[bytes]
) -> tuple[bytes, DecryptionFailed | None]:
    """Feed chunks until the opener fails; return what it released and why."""
    released = bytearray()
    try:
        for chunk in chunks:
            released += opener.update(chunk)
        released += opener.finalize()
    except DecryptionFailed as error:
        return bytes(released), error
    return bytes(released), None


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= mask
    return bytes(changed)


# --- round trips ---------------------------------------------------------


@pytest.mark.parametrize("size", [*ROUND_TRIP_SIZES, LARGE_SIZE])
def test_round_trip_one_chunk(size: int) -> None:
    sealed = sealed_of(size)
    assert len(sealed) == sealed_size(size)
    assert open_stream(sealed, size) == plaintext_of(size)


@pytest.mark.parametrize("size", ROUND_TRIP_SIZES)
def test_round_trip_one_byte_chunks(size: int) -> None:
    plaintext = plaintext_of(size)
    sealed = seal(plaintext, chunk_size=1)
    assert sealed == sealed_of(size)
    assert open_stream(sealed, size, chunk_size=1) == plaintext


@pytest.mark.parametrize("size", ROUND_TRIP_SIZES)
@pytest.mark.parametrize("chunk_size", [3, 4093, S - 1, S + 1, 3 * S + 7])
def test_round_trip_odd_chunks(size: int, chunk_size: int) -> None:
    plaintext = plaintext_of(size)
    sealed = seal(plaintext, chunk_size=chunk_size)
    assert sealed == sealed_of(size)
    assert open_stream(sealed, size, chunk_size=chunk_size) == plaintext


@pytest.mark.parametrize("chunk_size", [4093, S - 1, S + 1, MIB + 3])
def test_round_trip_large_odd_chunks(chunk_size: int) -> None:
    plaintext = plaintext_of(LARGE_SIZE)
    sealed = seal(plaintext, chunk_size=chunk_size)
    assert sealed == sealed_of(LARGE_SIZE)
    assert open_stream(sealed, LARGE_SIZE, chunk_size=chunk_size) == plaintext


@settings(deadline=None, max_examples=60)
@given(
    st.integers(min_value=0, max_value=3 * S + 100),
    st.lists(st.integers(min_value=0), max_size=12),
    st.lists(st.integers(min_value=0), max_size=12),
)
def test_round_trip_random_chunk_splits(
    size: int, plaintext_cuts: list[int], sealed_cuts: list[int]
) -> None:
    plaintext = plaintext_of(size)
    sealer = StreamSealer(KEY, NONCE_PREFIX, size)
    pieces = [sealer.update(chunk) for chunk in split_at(plaintext, plaintext_cuts)]
    sealed = b"".join(pieces) + sealer.finalize()
    assert sealed == sealed_of(size)

    opener = StreamOpener(KEY, NONCE_PREFIX, size)
    opened = [opener.update(chunk) for chunk in split_at(sealed, sealed_cuts)]
    assert b"".join(opened) + opener.finalize() == plaintext


def test_round_trip_accepts_buffer_types() -> None:
    numbers = array.array("I", range(40_000))
    plaintext = numbers.tobytes()
    expected = seal(plaintext)
    for chunk in (bytearray(plaintext), memoryview(plaintext), memoryview(numbers)):
        sealer = StreamSealer(KEY, NONCE_PREFIX, len(plaintext))
        assert sealer.update(chunk) + sealer.finalize() == expected
    opener = StreamOpener(KEY, NONCE_PREFIX, len(plaintext))
    assert opener.update(bytearray(expected)) + opener.finalize() == plaintext


def test_sealed_segments_follow_format() -> None:
    # Open each segment with AESGCM directly, using the nonce and the
    # associated data exactly as docs/format.md spells them out.
    size = S + 100
    plaintext = plaintext_of(size)
    sealed = sealed_of(size)
    aead = AESGCM(KEY)
    associated_data = b"byok-proxy/1 segment" + size.to_bytes(8, "big")
    first = sealed[:SEALED]
    last = sealed[SEALED:]
    nonce_0 = NONCE_PREFIX + (0).to_bytes(4, "big") + b"\x00"
    nonce_1 = NONCE_PREFIX + (1).to_bytes(4, "big") + b"\x01"
    opened = aead.decrypt(nonce_0, first, associated_data)
    opened += aead.decrypt(nonce_1, last, associated_data)
    assert opened == plaintext + hashlib.md5(plaintext).digest()


def test_segment_rejects_flipped_final_flag() -> None:
    sealed = sealed_of(S)
    aead = AESGCM(KEY)
    associated_data = b"byok-proxy/1 segment" + S.to_bytes(8, "big")
    final_nonce = NONCE_PREFIX + (0).to_bytes(4, "big") + b"\x01"
    with pytest.raises(InvalidTag):
        aead.decrypt(final_nonce, sealed[:SEALED], associated_data)


# --- incremental output and digests -------------------------------------


def test_sealer_releases_each_segment_when_complete() -> None:
    size = 3 * S + 5
    plaintext = plaintext_of(size)
    sealed = sealed_of(size)
    sealer = StreamSealer(KEY, NONCE_PREFIX, size)
    output = b""
    for fed, chunk in enumerate(split(plaintext, 4096), start=1):
        output += sealer.update(chunk)
        complete = min(fed * 4096, size) // S
        assert output == sealed[: complete * SEALED]
    assert output + sealer.finalize() == sealed


def test_sealer_defers_segment_with_digest() -> None:
    # With S - 15 bytes, segment 0 also contains 15 digest bytes, so nothing
    # can be sealed before finalize.
    size = S - 15
    sealer = StreamSealer(KEY, NONCE_PREFIX, size)
    assert sealer.update(plaintext_of(size)) == b""
    assert sealer.finalize() == sealed_of(size)


def test_sealer_seals_full_segment_before_the_digest() -> None:
    size = S
    sealer = StreamSealer(KEY, NONCE_PREFIX, size)
    assert sealer.update(plaintext_of(size)) == sealed_of(size)[:SEALED]


def test_opener_releases_each_segment_when_complete() -> None:
    size = 3 * S + 5
    plaintext = plaintext_of(size)
    opener = StreamOpener(KEY, NONCE_PREFIX, size)
    released = b""
    for index, segment in enumerate(segments_of(sealed_of(size))):
        assert opener.update(segment[:-1]) == b""
        released += opener.update(segment[-1:])
        assert released == plaintext[: min((index + 1) * S, size)]
    assert opener.finalize() == b""


@pytest.mark.parametrize("size", ROUND_TRIP_SIZES)
def test_digest_matches_md5(size: int) -> None:
    plaintext = plaintext_of(size)
    expected = hashlib.md5(plaintext).digest()
    sealer = StreamSealer(KEY, NONCE_PREFIX, size)
    sealer.update(plaintext)
    sealed = sealer.finalize()
    assert sealer.digest == expected

    opener = StreamOpener(KEY, NONCE_PREFIX, size)
    opener.update(sealed_of(size)[: -len(sealed)])
    opener.update(sealed)
    opener.finalize()
    assert opener.digest == expected


def test_opener_digest_absent_until_opened() -> None:
    size = S - 8
    opener = StreamOpener(KEY, NONCE_PREFIX, size)
    segment_0, segment_1 = segments_of(sealed_of(size))
    opener.update(segment_0)
    assert opener.digest is None
    opener.update(segment_1)
    assert opener.digest == hashlib.md5(plaintext_of(size)).digest()


@pytest.mark.parametrize("size", [0, 1, S - 16, S - 15, S - 1, S, 2 * S - 8])
@pytest.mark.parametrize("base_offset", [0, PART_SALT_SIZE])
def test_digest_span_opens_digest_only(size: int, base_offset: int) -> None:
    stored = bytes(base_offset) + sealed_of(size)
    span = digest_span(size, base_offset=base_offset)
    opener = StreamOpener(KEY, NONCE_PREFIX, size, span)
    released = opener.update(stored[span.stored_start : span.stored_end])
    assert released == b""
    assert opener.finalize() == b""
    assert opener.digest == hashlib.md5(plaintext_of(size)).digest()


def test_opener_span_without_digest_has_none() -> None:
    size = 3 * S
    opener = StreamOpener(KEY, NONCE_PREFIX, size, segment_span(0, 10, size))
    opener.update(sealed_of(size)[:SEALED])
    opener.finalize()
    assert opener.digest is None


# --- range reads ---------------------------------------------------------

SPAN_CASES = [
    (0, 0, 1),
    (0, S - 17, S - 16),
    (S - 16, S - 16, S - 15),
    (S - 1, S, 2 * S),
    (5, S + 5, 3 * S),
    (2 * S, 2 * S, 2 * S + 1),
    (S, 3 * S - 1, 3 * S),
    (0, 3 * S - 1, 3 * S),
]


@pytest.mark.parametrize(("first", "last", "size"), SPAN_CASES)
@pytest.mark.parametrize("base_offset", [0, PART_SALT_SIZE])
def test_span_opens_exact_range(
    first: int, last: int, size: int, base_offset: int
) -> None:
    stored = bytes(base_offset) + sealed_of(size)
    span = segment_span(first, last, size, base_offset=base_offset)
    fetched = stored[span.stored_start : span.stored_end]
    expected = plaintext_of(size)[first : last + 1]
    assert open_stream(fetched, size, span=span) == expected
    assert open_stream(fetched, size, chunk_size=1, span=span) == expected


@settings(deadline=None, max_examples=150)
@given(st.data())
def test_span_opens_exact_range_random(data: st.DataObject) -> None:
    size = data.draw(st.sampled_from([1, 17, S - 16, S - 15, S, 2 * S + 9, 3 * S]))
    first = data.draw(st.integers(min_value=0, max_value=size - 1))
    last = data.draw(st.integers(min_value=first, max_value=size - 1))
    base_offset = data.draw(st.sampled_from([0, PART_SALT_SIZE]))
    cuts = data.draw(st.lists(st.integers(min_value=0), max_size=6))

    stored = bytes(base_offset) + sealed_of(size)
    span = segment_span(first, last, size, base_offset=base_offset)
    fetched = stored[span.stored_start : span.stored_end]
    opener = StreamOpener(KEY, NONCE_PREFIX, size, span)
    released = b"".join(opener.update(chunk) for chunk in split_at(fetched, cuts))
    assert released + opener.finalize() == plaintext_of(size)[first : last + 1]


def test_span_rejects_bytes_from_wrong_offset() -> None:
    size = 3 * S
    span = segment_span(S, S + 10, size)
    shifted = sealed_of(size)[span.stored_start + SEALED : span.stored_end + SEALED]
    opener = StreamOpener(KEY, NONCE_PREFIX, size, span)
    released, error = open_collecting(opener, [shifted])
    assert released == b""
    assert error is not None
    assert "segment 1: authentication failed" in str(error)


def test_span_rejects_extra_bytes() -> None:
    size = 3 * S
    span = segment_span(0, 10, size)
    fetched = sealed_of(size)[: span.stored_end + 1]
    opener = StreamOpener(KEY, NONCE_PREFIX, size, span)
    with pytest.raises(DecryptionFailed, match="after the end"):
        opener.update(fetched)


# --- golden vectors ------------------------------------------------------


def load_vectors() -> dict[str, object]:
    loaded: dict[str, object] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    return loaded


def test_vectors_reproduced_by_sealing() -> None:
    stored = load_vectors()
    rebuilt = build_vectors()
    stored_cases = stored.pop("cases")
    rebuilt_cases = rebuilt.pop("cases")
    assert stored == rebuilt
    assert isinstance(stored_cases, list)
    assert [case["name"] for case in stored_cases] == [
        case["name"] for case in rebuilt_cases
    ]
    for stored_case, rebuilt_case in zip(stored_cases, rebuilt_cases, strict=True):
        for field, value in rebuilt_case.items():
            assert stored_case[field] == value, (stored_case["name"], field)
        assert stored_case.keys() == rebuilt_case.keys()


def test_vectors_file_text_reproduced() -> None:
    text = VECTORS_PATH.read_text(encoding="utf-8")
    assert text == render_vectors(build_vectors())


def test_vectors_cover_boundary_cases() -> None:
    cases = load_vectors()["cases"]
    assert isinstance(cases, list)
    sizes = {case["plaintext_size"] for case in cases if case["layout"] == "single"}
    assert {0, 1, S - 16, S - 15, S} <= sizes
    assert any(case["layout"] == "multipart" for case in cases)


def test_vectors_open_to_plaintext() -> None:
    vectors = load_vectors()
    data_key = vectors["data_key"]
    cases = vectors["cases"]
    assert isinstance(data_key, dict)
    assert isinstance(cases, list)
    bucket = vectors["bucket"]
    assert isinstance(bucket, str)
    dek = bytes.fromhex(data_key["dek"])

    for case in cases:
        header = Header.from_metadata(case["header"])
        keys = open_header(header, dek, bucket=bucket, key=case["key"])
        assert keys.content_key.hex() == case["content_key"]
        stored = base64.b64decode(case["stored"])
        assert len(stored) == case["stored_size"]
        plaintext = open_vector(header, keys, case, stored)

        assert len(plaintext) == case["plaintext_size"]
        assert hashlib.sha256(plaintext).hexdigest() == case["plaintext_sha256"]
        if "plaintext" in case:
            assert plaintext.hex() == case["plaintext"]


def open_vector(
    header: Header, keys: ObjectKeys, case: dict[str, object], stored: bytes
) -> bytes:
    if header.layout is Layout.SINGLE:
        stream_key = keys.content_key
        size = plaintext_size(len(stored))
        assert size == header.plaintext_size
        body = stored
    else:
        part_number = case["part_number"]
        assert isinstance(part_number, int)
        stream_key = part_key(keys, stored[:PART_SALT_SIZE], part_number)
        size = part_plaintext_size(len(stored))
        body = stored[PART_SALT_SIZE:]
    opener = StreamOpener(stream_key, header.nonce_prefix, size)
    plaintext = opener.update(body) + opener.finalize()
    assert opener.digest is not None
    assert opener.digest.hex() == case["plaintext_md5"]
    return plaintext


# --- tampering -----------------------------------------------------------

# Three full segments: every tamper below has segments on both sides.
TAMPER_SIZE = 3 * S - 16


def tamper_opener(size: int = TAMPER_SIZE) -> StreamOpener:
    return StreamOpener(KEY, NONCE_PREFIX, size)


def assert_rejected(
    result: tuple[bytes, DecryptionFailed | None], released: int, message: str
) -> None:
    """Check the failure and that only the first ``released`` bytes came out."""
    output, error = result
    assert error is not None
    assert message in str(error)
    assert output == plaintext_of(TAMPER_SIZE)[:released]


@pytest.mark.parametrize(("index", "released"), [(0, 0), (1, S), (2, 2 * S)])
def test_open_rejects_flipped_ciphertext_bit(index: int, released: int) -> None:
    sealed = flip(sealed_of(TAMPER_SIZE), index * SEALED + 1000)
    result = open_collecting(tamper_opener(), segments_of(sealed))
    assert_rejected(result, released, f"segment {index}: authentication failed")


@pytest.mark.parametrize(("index", "released"), [(0, 0), (1, S), (2, 2 * S)])
def test_open_rejects_flipped_tag_bit(index: int, released: int) -> None:
    sealed = flip(sealed_of(TAMPER_SIZE), (index + 1) * SEALED - 1, 0x80)
    result = open_collecting(tamper_opener(), segments_of(sealed))
    assert_rejected(result, released, f"segment {index}: authentication failed")


def test_open_rejects_truncation_at_segment_boundary() -> None:
    segments = segments_of(sealed_of(TAMPER_SIZE))
    result = open_collecting(tamper_opener(), segments[:2])
    assert_rejected(result, 2 * S, "segment 2: stream truncated")


def test_open_rejects_truncation_mid_segment() -> None:
    sealed = sealed_of(TAMPER_SIZE)
    result = open_collecting(tamper_opener(), [sealed[: SEALED + 500]])
    assert_rejected(result, S, "segment 1: stream truncated")


def test_open_rejects_appended_bytes() -> None:
    segments = segments_of(sealed_of(TAMPER_SIZE))
    result = open_collecting(tamper_opener(), [*segments, b"\x00"])
    assert_rejected(result, TAMPER_SIZE, "1 bytes after the end")


def test_open_rejects_appended_bytes_in_last_chunk() -> None:
    sealed = sealed_of(TAMPER_SIZE)
    result = open_collecting(tamper_opener(), [sealed + b"\x00" * 20])
    assert_rejected(result, 0, "20 bytes after the end")


def test_open_rejects_dropped_segment() -> None:
    segments = segments_of(sealed_of(TAMPER_SIZE))
    result = open_collecting(tamper_opener(), [segments[0], segments[2]])
    assert_rejected(result, S, "segment 1: authentication failed")


def test_open_rejects_duplicated_segment() -> None:
    segments = segments_of(sealed_of(TAMPER_SIZE))
    chunks = [segments[0], segments[0], segments[1], segments[2]]
    result = open_collecting(tamper_opener(), chunks)
    assert_rejected(result, S, "segment 1: authentication failed")


def test_open_rejects_reordered_segments() -> None:
    segments = segments_of(sealed_of(TAMPER_SIZE))
    chunks = [segments[1], segments[0], segments[2]]
    result = open_collecting(tamper_opener(), chunks)
    assert_rejected(result, 0, "segment 0: authentication failed")


def test_open_rejects_wrong_plaintext_size() -> None:
    # The size is in every segment's associated data.
    sealed = sealed_of(TAMPER_SIZE)
    opener = StreamOpener(KEY, NONCE_PREFIX, TAMPER_SIZE - 1)
    result = open_collecting(opener, segments_of(sealed))
    assert_rejected(result, 0, "segment 0: authentication failed")


def test_open_rejects_wrong_nonce_prefix() -> None:
    opener = StreamOpener(KEY, bytes(7), TAMPER_SIZE)
    result = open_collecting(opener, [sealed_of(TAMPER_SIZE)])
    assert_rejected(result, 0, "segment 0: authentication failed")


def test_open_rejects_final_flag_trick() -> None:
    # A two-segment stream cut to its first segment. Read as a part, the
    # stored length gives a one-segment stream of S - 16 bytes, so segment 0
    # would have to be final. It was sealed as not final, under another size.
    sealed = sealed_of(S)
    cut = sealed[:SEALED]
    size = plaintext_size(len(cut))
    assert size == S - 16
    released, error = open_collecting(StreamOpener(KEY, NONCE_PREFIX, size), [cut])
    assert released == b""
    assert error is not None
    assert "segment 0: authentication failed" in str(error)


def test_opener_rejects_calls_after_failure() -> None:
    sealed = flip(sealed_of(TAMPER_SIZE), 10)
    opener = tamper_opener()
    with pytest.raises(DecryptionFailed, match="segment 0"):
        opener.update(sealed)
    with pytest.raises(DecryptionFailed, match="already failed"):
        opener.update(b"")
    with pytest.raises(DecryptionFailed, match="already failed"):
        opener.finalize()


# --- tampering across objects and parts -----------------------------------

BUCKET = "tenant-files"


def make_data_key() -> DataKey:
    draw = random.Random(7).randbytes
    return DataKey(
        org_id=draw(16),
        purpose=Purpose.RECORDINGS,
        org_key_version=1,
        dek_version=1,
        key=draw(32),
        wrapped=draw(60),
    )


def seal_object(name: str, plaintext: bytes, seed: int) -> tuple[Header, bytes]:
    header, keys = seal_header(
        make_data_key(),
        layout=Layout.SINGLE,
        plaintext_size=len(plaintext),
        bucket=BUCKET,
        key=name,
        random=random.Random(seed).randbytes,
    )
    sealer = StreamSealer(keys.content_key, header.nonce_prefix, len(plaintext))
    return header, sealer.update(plaintext) + sealer.finalize()


def open_object(name: str, header: Header, body: bytes) -> tuple[bytes, Exception]:
    keys = open_header(header, make_data_key().key, bucket=BUCKET, key=name)
    opener = StreamOpener(keys.content_key, header.nonce_prefix, header.plaintext_size)
    released, error = open_collecting(opener, segments_of(body))
    assert error is not None
    return released, error


def test_open_rejects_swapped_bodies() -> None:
    plaintext_a = plaintext_of(2 * S)
    plaintext_b = bytes(2 * S)
    header_a, _ = seal_object("a.wav", plaintext_a, seed=1)
    _, body_b = seal_object("b.wav", plaintext_b, seed=2)
    released, error = open_object("a.wav", header_a, body_b)
    assert released == b""
    assert "segment 0: authentication failed" in str(error)


def test_open_rejects_swapped_headers() -> None:
    header_a, _ = seal_object("a.wav", plaintext_of(100), seed=1)
    header_b, _ = seal_object("b.wav", plaintext_of(100), seed=2)
    dek = make_data_key().key
    with pytest.raises(DecryptionFailed, match="header: tag mismatch"):
        open_header(header_b, dek, bucket=BUCKET, key="a.wav")
    with pytest.raises(DecryptionFailed, match="header: tag mismatch"):
        open_header(header_a, dek, bucket=BUCKET, key="b.wav")


def test_open_rejects_body_of_overwritten_version() -> None:
    # Both versions have the same name, so the old header opens, but the
    # new body was sealed under another salt and hence another key.
    old_header, _ = seal_object("a.wav", plaintext_of(S), seed=1)
    _, new_body = seal_object("a.wav", plaintext_of(S), seed=2)
    released, error = open_object("a.wav", old_header, new_body)
    assert released == b""
    assert "segment 0: authentication failed" in str(error)


def seal_part(
    keys: ObjectKeys, header: Header, part_number: int, plaintext: bytes, seed: int
) -> bytes:
    part_salt = seal_part_prefix(random.Random(seed).randbytes)
    stream_key = part_key(keys, part_salt, part_number)
    sealer = StreamSealer(stream_key, header.nonce_prefix, len(plaintext))
    return part_salt + sealer.update(plaintext) + sealer.finalize()


def open_part(
    keys: ObjectKeys, header: Header, part_number: int, stored: bytes
) -> tuple[bytes, DecryptionFailed | None]:
    try:
        size = part_plaintext_size(len(stored))
    except DecryptionFailed as error:
        return b"", error
    stream_key = part_key(keys, stored[:PART_SALT_SIZE], part_number)
    opener = StreamOpener(stream_key, header.nonce_prefix, size)
    return open_collecting(opener, [stored[PART_SALT_SIZE:]])


def multipart_upload(seed: int) -> tuple[Header, ObjectKeys]:
    return seal_header(
        make_data_key(),
        layout=Layout.MULTIPART,
        plaintext_size=0,
        bucket=BUCKET,
        key="big.wav",
        random=random.Random(seed).randbytes,
    )


PART_PLAINTEXT = random.Random(42).randbytes(2 * S + 300)


def test_part_round_trip() -> None:
    header, keys = multipart_upload(seed=1)
    stored = seal_part(keys, header, 2, PART_PLAINTEXT, seed=5)
    assert len(stored) == PART_SALT_SIZE + sealed_size(len(PART_PLAINTEXT))
    assert open_part(keys, header, 2, stored) == (PART_PLAINTEXT, None)


def test_part_range_read() -> None:
    header, keys = multipart_upload(seed=1)
    stored = seal_part(keys, header, 2, PART_PLAINTEXT, seed=5)
    size = len(PART_PLAINTEXT)
    span = segment_span(S - 3, S + 3, size, base_offset=PART_SALT_SIZE)
    stream_key = part_key(keys, stored[:PART_SALT_SIZE], 2)
    opener = StreamOpener(stream_key, header.nonce_prefix, size, span)
    released = opener.update(stored[span.stored_start : span.stored_end])
    assert released + opener.finalize() == PART_PLAINTEXT[S - 3 : S + 4]


def test_part_rejects_other_part_number() -> None:
    header, keys = multipart_upload(seed=1)
    stored = seal_part(keys, header, 2, PART_PLAINTEXT, seed=5)
    released, error = open_part(keys, header, 3, stored)
    assert released == b""
    assert error is not None
    assert "segment 0: authentication failed" in str(error)


def test_part_rejects_changed_part_salt() -> None:
    header, keys = multipart_upload(seed=1)
    stored = flip(seal_part(keys, header, 2, PART_PLAINTEXT, seed=5), 3)
    released, error = open_part(keys, header, 2, stored)
    assert released == b""
    assert error is not None
    assert "segment 0: authentication failed" in str(error)


def test_part_rejects_other_upload() -> None:
    header, keys = multipart_upload(seed=1)
    other_header, other_keys = multipart_upload(seed=2)
    stored = seal_part(other_keys, other_header, 2, PART_PLAINTEXT, seed=5)
    released, error = open_part(keys, header, 2, stored)
    assert released == b""
    assert error is not None


@pytest.mark.parametrize(
    "cut", [SEALED, SEALED + 100, 2 * SEALED, 2 * SEALED + 1, 2 * SEALED + 300]
)
def test_part_rejects_truncation(cut: int) -> None:
    # The size of a part comes from its stored length, so a cut either
    # leaves an impossible size or changes every segment's associated data.
    header, keys = multipart_upload(seed=1)
    stored = seal_part(keys, header, 2, PART_PLAINTEXT, seed=5)
    released, error = open_part(keys, header, 2, stored[: PART_SALT_SIZE + cut])
    assert released == b""
    assert error is not None


@pytest.mark.parametrize("extra", [1, 16, 17, SEALED])
def test_part_rejects_appended_bytes(extra: int) -> None:
    header, keys = multipart_upload(seed=1)
    stored = seal_part(keys, header, 2, PART_PLAINTEXT, seed=5)
    released, error = open_part(keys, header, 2, stored + bytes(extra))
    assert released == b""
    assert error is not None


def test_seal_part_prefix_draws_part_salt() -> None:
    assert seal_part_prefix(random.Random(3).randbytes) == random.Random(3).randbytes(
        16
    )
    assert len(seal_part_prefix()) == PART_SALT_SIZE
    assert seal_part_prefix() != seal_part_prefix()


def test_seal_part_prefix_rejects_short_random_source() -> None:
    with pytest.raises(ValueError, match="returned 8 bytes"):
        seal_part_prefix(lambda size: bytes(8))


# --- misuse --------------------------------------------------------------


def test_sealer_update_after_finalize_raises() -> None:
    sealer = StreamSealer(KEY, NONCE_PREFIX, 1)
    sealer.update(b"x")
    sealer.finalize()
    with pytest.raises(RuntimeError, match="finalized"):
        sealer.update(b"")


def test_sealer_finalize_twice_raises() -> None:
    sealer = StreamSealer(KEY, NONCE_PREFIX, 0)
    sealer.finalize()
    with pytest.raises(RuntimeError, match="finalized"):
        sealer.finalize()


def test_sealer_digest_before_finalize_raises() -> None:
    sealer = StreamSealer(KEY, NONCE_PREFIX, 0)
    with pytest.raises(RuntimeError, match="only after finalize"):
        _ = sealer.digest


def test_sealer_overfeed_raises_size_mismatch() -> None:
    sealer = StreamSealer(KEY, NONCE_PREFIX, 10)
    sealer.update(bytes(6))
    with pytest.raises(SizeMismatch, match="fed 11 bytes, more than"):
        sealer.update(bytes(5))
    with pytest.raises(RuntimeError, match="failed"):
        sealer.update(b"")
    with pytest.raises(RuntimeError, match="failed"):
        sealer.finalize()


def test_sealer_overfeed_in_one_chunk_raises_size_mismatch() -> None:
    sealer = StreamSealer(KEY, NONCE_PREFIX, S)
    with pytest.raises(SizeMismatch, match="more than the declared"):
        sealer.update(bytes(3 * S))


def test_sealer_underfeed_raises_size_mismatch() -> None:
    sealer = StreamSealer(KEY, NONCE_PREFIX, 2 * S)
    sealer.update(bytes(S + 1))
    with pytest.raises(SizeMismatch, match=f"fed {S + 1} bytes, fewer than"):
        sealer.finalize()
    with pytest.raises(RuntimeError, match="failed"):
        sealer.finalize()


def test_opener_update_after_finalize_raises() -> None:
    opener = StreamOpener(KEY, NONCE_PREFIX, 1)
    opener.update(sealed_of(1))
    opener.finalize()
    with pytest.raises(RuntimeError, match="after finalize"):
        opener.update(b"")
    with pytest.raises(RuntimeError, match="after finalize"):
        opener.finalize()


@pytest.mark.parametrize("cls", [StreamSealer, StreamOpener])
def test_stream_rejects_invalid_arguments(
    cls: type[StreamSealer] | type[StreamOpener],
) -> None:
    with pytest.raises(ValueError, match="key must be 32 bytes, got 16"):
        cls(bytes(16), NONCE_PREFIX, 1)
    with pytest.raises(ValueError, match="nonce_prefix must be 7 bytes, got 12"):
        cls(KEY, bytes(12), 1)
    with pytest.raises(ValueError, match="invalid plaintext size -1"):
        cls(KEY, NONCE_PREFIX, -1)
    with pytest.raises(ValueError, match="invalid plaintext size"):
        cls(KEY, NONCE_PREFIX, 2**48)


@pytest.mark.parametrize(
    "span",
    [
        # segments beyond the stream
        SegmentSpan(3, 3, 3 * SEALED, 4 * SEALED, 0, 1),
        # first segment after the last
        SegmentSpan(1, 0, SEALED, SEALED, 0, 0),
        # release past the end of the plaintext
        SegmentSpan(2, 2, 2 * SEALED, sealed_size(3 * S - 16), 0, S),
        # stored range of the wrong size
        SegmentSpan(0, 0, 0, SEALED + 1, 0, 1),
        # skip outside the segment
        SegmentSpan(0, 0, 0, SEALED, S, 0),
    ],
)
def test_opener_rejects_mismatched_span(span: SegmentSpan) -> None:
    with pytest.raises(ValueError, match="does not fit a stream"):
        StreamOpener(KEY, NONCE_PREFIX, 3 * S - 16, span)
