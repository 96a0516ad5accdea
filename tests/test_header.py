"""Tests of the header: byte layout, key derivation, name binding, tampering."""

import base64
import hashlib
import hmac
import random
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto.errors import DecryptionFailed
from crypto.header import (
    HEADER_SIZE,
    MAX_PART_NUMBER,
    METADATA_KEY,
    DataKey,
    Header,
    Layout,
    ObjectKeys,
    Purpose,
    open_header,
    part_key,
    reseal_header,
    seal_header,
)
from crypto.sizes import MAX_PLAINTEXT_SIZE

BUCKET = "tenant-files"
KEY = "reports/2024/q3.pdf"


def random_source(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def make_data_key(seed: int = 1, purpose: Purpose = Purpose.FILES) -> DataKey:
    draw = random_source(seed)
    return DataKey(
        org_id=draw(16),
        purpose=purpose,
        org_key_version=3,
        dek_version=7,
        key=draw(32),
        wrapped=draw(60),
    )


def make_header(
    *,
    layout: Layout = Layout.SINGLE,
    plaintext_size: int = 100_000,
    bucket: str = BUCKET,
    key: str = KEY,
    seed: int = 2,
) -> tuple[Header, ObjectKeys, DataKey]:
    dek = make_data_key()
    header, keys = seal_header(
        dek,
        layout=layout,
        plaintext_size=plaintext_size,
        bucket=bucket,
        key=key,
        random=random_source(seed),
    )
    return header, keys, dek


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 of RFC 5869, written out with the standard library."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm = b""
    block = b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= mask
    return bytes(changed)


# --- byte layout ---------------------------------------------------------


def test_header_metadata_key() -> None:
    assert METADATA_KEY == "byok-header"


def test_header_encode_size() -> None:
    header, _, _ = make_header()
    assert HEADER_SIZE == 200
    assert len(header.encode()) == 200
    assert len(header.to_metadata()) == 267


def test_header_fields_at_format_offsets() -> None:
    header, _, dek = make_header(plaintext_size=0x0102030405)
    data = header.encode()
    assert data[0] == 1
    assert data[1] == Layout.SINGLE
    assert data[2] == Purpose.FILES
    assert data[3] == 0
    assert data[4:20] == dek.org_id
    assert data[20:24] == (3).to_bytes(4, "big")
    assert data[24:28] == (7).to_bytes(4, "big")
    assert data[28] == 60
    assert data[29:89] == dek.wrapped
    assert data[89:121] == header.salt
    assert data[121:128] == header.nonce_prefix
    assert data[128:136] == (0x0102030405).to_bytes(8, "big")
    assert data[136:168] == header.commitment
    assert data[168:200] == header.tag


def test_header_decode_round_trip() -> None:
    header, _, _ = make_header()
    assert Header.decode(header.encode()) == header


def test_header_metadata_round_trip() -> None:
    header, _, _ = make_header()
    text = header.to_metadata()
    assert Header.from_metadata(text) == header


def test_header_metadata_is_unpadded_base64url() -> None:
    header, _, _ = make_header()
    text = header.to_metadata()
    assert "=" not in text
    assert set(text) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )
    assert base64.urlsafe_b64decode(text + "=") == header.encode()


@pytest.mark.parametrize("length", [1, 28, 29, 199, 201, 400])
def test_header_decode_rejects_wrong_length(length: int) -> None:
    header, _, _ = make_header()
    data = (header.encode() * 2)[:length]
    with pytest.raises(DecryptionFailed, match=f"{length} bytes, expected 200"):
        Header.decode(data)


def test_header_decode_rejects_empty() -> None:
    with pytest.raises(DecryptionFailed, match="empty"):
        Header.decode(b"")


@pytest.mark.parametrize("version", [0, 2, 255])
def test_header_decode_rejects_unknown_version(version: int) -> None:
    header, _, _ = make_header()
    data = bytes([version]) + header.encode()[1:]
    with pytest.raises(DecryptionFailed, match=f"unsupported version {version}"):
        Header.decode(data)


@pytest.mark.parametrize("layout", [0, 3, 255])
def test_header_decode_rejects_unknown_layout(layout: int) -> None:
    data = bytearray(make_header()[0].encode())
    data[1] = layout
    with pytest.raises(DecryptionFailed, match=f"unknown layout {layout}"):
        Header.decode(bytes(data))


@pytest.mark.parametrize("purpose", [0, 5, 255])
def test_header_decode_rejects_unknown_purpose(purpose: int) -> None:
    data = bytearray(make_header()[0].encode())
    data[2] = purpose
    with pytest.raises(DecryptionFailed, match=f"unknown purpose {purpose}"):
        Header.decode(bytes(data))


@pytest.mark.parametrize("reserved", [1, 128, 255])
def test_header_decode_rejects_reserved_byte(reserved: int) -> None:
    data = bytearray(make_header()[0].encode())
    data[3] = reserved
    with pytest.raises(DecryptionFailed, match="reserved byte"):
        Header.decode(bytes(data))


@pytest.mark.parametrize("size", [0, 59, 61, 255])
def test_header_decode_rejects_wrapped_dek_size(size: int) -> None:
    data = bytearray(make_header()[0].encode())
    data[28] = size
    with pytest.raises(DecryptionFailed, match="wrapped_dek_size"):
        Header.decode(bytes(data))


def test_header_decode_rejects_multipart_with_size() -> None:
    header, _, _ = make_header(layout=Layout.MULTIPART, plaintext_size=0)
    data = bytearray(header.encode())
    data[135] = 1
    with pytest.raises(DecryptionFailed, match="must be 0 for multipart"):
        Header.decode(bytes(data))


def test_header_decode_rejects_size_above_max() -> None:
    data = bytearray(make_header()[0].encode())
    data[128:136] = (MAX_PLAINTEXT_SIZE + 1).to_bytes(8, "big")
    with pytest.raises(DecryptionFailed, match="plaintext_size"):
        Header.decode(bytes(data))


def test_header_decode_accepts_max_size() -> None:
    header, _, _ = make_header(plaintext_size=MAX_PLAINTEXT_SIZE)
    assert Header.decode(header.encode()).plaintext_size == MAX_PLAINTEXT_SIZE


def test_header_from_metadata_rejects_invalid_text() -> None:
    text = make_header()[0].to_metadata()
    invalid = [
        "",
        text + "=",
        text[:-1],
        text[:100],
        text + "AAAA",
        "!" + text[1:],
        text[:10] + " " + text[11:],
        text[:10] + "\n" + text[11:],
        text[:10] + "é" + text[11:],
        base64.b64encode(make_header()[0].encode()).decode(),
    ]
    for value in invalid:
        with pytest.raises(DecryptionFailed):
            Header.from_metadata(value)


def test_header_from_metadata_rejects_standard_alphabet() -> None:
    # Find a header whose encoding uses "-" or "_", then use "+" and "/".
    for seed in range(100):
        text = make_header(seed=seed)[0].to_metadata()
        if "-" in text or "_" in text:
            break
    standard = text.replace("-", "+").replace("_", "/")
    with pytest.raises(DecryptionFailed, match="base64url"):
        Header.from_metadata(standard)


def test_header_from_metadata_rejects_non_canonical_text() -> None:
    # 200 bytes encode to 267 characters, and the last one carries 4 bits of
    # data and 2 unused bits. Setting an unused bit gives a second spelling.
    text = make_header()[0].to_metadata()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(text[-1])
    changed = text[:-1] + alphabet[last | 1]
    assert changed != text
    with pytest.raises(DecryptionFailed, match="canonical"):
        Header.from_metadata(changed)


@given(st.binary(max_size=400))
def test_header_decode_random_bytes(
    data: bytes,
) -> None:
    try:
        header = Header.decode(data)
    except DecryptionFailed:
        return
    assert header.encode() == data


@given(st.binary(min_size=HEADER_SIZE - 1, max_size=HEADER_SIZE - 1))
def test_header_decode_random_version_1_bytes(data: bytes) -> None:
    # With version 1 and the right length, decoding reaches the field checks.
    candidate = b"\x01" + data
    try:
        header = Header.decode(candidate)
    except DecryptionFailed:
        return
    assert header.encode() == candidate


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=HEADER_SIZE - 1),
            st.integers(min_value=1, max_value=255),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_header_decode_mutated_header(changes: list[tuple[int, int]]) -> None:
    data = bytearray(make_header()[0].encode())
    for offset, mask in changes:
        data[offset] ^= mask
    try:
        header = Header.decode(bytes(data))
    except DecryptionFailed:
        return
    assert header.encode() == bytes(data)


@given(st.text(max_size=300))
def test_header_from_metadata_random_text(
    text: str,
) -> None:
    try:
        header = Header.from_metadata(text)
    except DecryptionFailed:
        return
    assert header.to_metadata() == text


def test_header_constructor_rejects_invalid_fields() -> None:
    header, _, _ = make_header()
    invalid: list[dict[str, object]] = [
        {"version": 2},
        {"org_id": bytes(15)},
        {"org_key_version": -1},
        {"dek_version": 2**32},
        {"wrapped_dek": bytes(59)},
        {"salt": bytes(31)},
        {"nonce_prefix": bytes(8)},
        {"commitment": bytes(33)},
        {"tag": bytes(31)},
        {"plaintext_size": -1},
        {"plaintext_size": MAX_PLAINTEXT_SIZE + 1},
        {"layout": Layout.MULTIPART},
    ]
    for change in invalid:
        with pytest.raises(ValueError):
            replace(header, **change)  # type: ignore[arg-type]


# --- enums ---------------------------------------------------------------


@pytest.mark.parametrize("purpose", list(Purpose))
def test_purpose_parse_accepts_label(purpose: Purpose) -> None:
    assert Purpose.parse(purpose.label) is purpose


def test_purpose_labels() -> None:
    labels = [purpose.label for purpose in Purpose]
    assert labels == ["messages", "files", "recordings", "transcripts"]
    assert [int(purpose) for purpose in Purpose] == [1, 2, 3, 4]


@pytest.mark.parametrize("name", ["FILES", "Files", "file", "", " files"])
def test_purpose_parse_rejects_unknown_name(name: str) -> None:
    expected = "expected one of: messages, files, recordings, transcripts"
    with pytest.raises(ValueError, match=expected):
        Purpose.parse(name)


def test_layout_values() -> None:
    assert int(Layout.SINGLE) == 1
    assert int(Layout.MULTIPART) == 2


# --- keys ----------------------------------------------------------------


def test_object_keys_derive_matches_hkdf() -> None:
    dek = bytes(range(32))
    salt = bytes(range(100, 132))
    keys = ObjectKeys.derive(dek, salt)
    okm = hkdf_sha256(dek, salt, b"byok-proxy/1 object", 96)
    assert keys.content_key == okm[:32]
    assert keys.commitment == okm[32:64]
    assert keys.header_key == okm[64:]


def test_object_keys_repr_hides_key_bytes() -> None:
    keys = ObjectKeys.derive(bytes(32), bytes(32))
    text = repr(keys)
    for secret in (keys.content_key, keys.commitment, keys.header_key):
        assert repr(secret) not in text
        assert secret.hex() not in text


def test_object_keys_derive_rejects_wrong_sizes() -> None:
    with pytest.raises(ValueError, match="DEK must be 32 bytes"):
        ObjectKeys.derive(bytes(16), bytes(32))
    with pytest.raises(ValueError, match="salt must be 32 bytes"):
        ObjectKeys.derive(bytes(32), bytes(16))


def test_data_key_repr_hides_key() -> None:
    dek = make_data_key()
    text = repr(dek)
    assert repr(dek.key) not in text
    assert dek.key.hex() not in text
    assert "wrapped=" in text


def test_data_key_rejects_invalid_fields() -> None:
    dek = make_data_key()
    invalid: list[dict[str, object]] = [
        {"org_id": bytes(17)},
        {"key": bytes(31)},
        {"wrapped": bytes(61)},
        {"org_key_version": 2**32},
        {"dek_version": -1},
    ]
    for change in invalid:
        with pytest.raises(ValueError):
            replace(dek, **change)  # type: ignore[arg-type]


def test_part_key_matches_hkdf() -> None:
    _, keys, _ = make_header()
    part_salt = bytes(range(16))
    info = b"byok-proxy/1 part" + (513).to_bytes(4, "big")
    expected = hkdf_sha256(keys.content_key, part_salt, info, 32)
    assert part_key(keys, part_salt, 513) == expected


def test_part_key_differs_per_number_and_salt() -> None:
    _, keys, _ = make_header()
    salt_a = bytes(16)
    salt_b = bytes(15) + b"\x01"
    derived = {
        part_key(keys, salt_a, 1),
        part_key(keys, salt_a, 2),
        part_key(keys, salt_b, 1),
        keys.content_key,
    }
    assert len(derived) == 4


@pytest.mark.parametrize("number", [1, 2, MAX_PART_NUMBER])
def test_part_key_accepts_part_numbers(number: int) -> None:
    _, keys, _ = make_header()
    assert len(part_key(keys, bytes(16), number)) == 32


@pytest.mark.parametrize("number", [0, -1, MAX_PART_NUMBER + 1, 2**32])
def test_part_key_rejects_part_numbers(number: int) -> None:
    _, keys, _ = make_header()
    with pytest.raises(ValueError, match="must be 1 to 10000"):
        part_key(keys, bytes(16), number)


def test_part_key_rejects_salt_size() -> None:
    _, keys, _ = make_header()
    with pytest.raises(ValueError, match="part_salt must be 16 bytes"):
        part_key(keys, bytes(15), 1)


# --- seal and open -------------------------------------------------------


def test_seal_header_copies_data_key_fields() -> None:
    header, keys, dek = make_header()
    assert header.version == 1
    assert header.layout is Layout.SINGLE
    assert header.purpose is dek.purpose
    assert header.org_id == dek.org_id
    assert header.org_key_version == dek.org_key_version
    assert header.dek_version == dek.dek_version
    assert header.wrapped_dek == dek.wrapped
    assert header.plaintext_size == 100_000
    assert header.commitment == keys.commitment


def test_seal_header_draws_salt_then_nonce_prefix() -> None:
    header, _, _ = make_header(seed=5)
    draw = random_source(5)
    assert header.salt == draw(32)
    assert header.nonce_prefix == draw(7)


def test_seal_header_draws_fresh_salt() -> None:
    dek = make_data_key()
    salts = set()
    for _ in range(20):
        header, _ = seal_header(
            dek, layout=Layout.SINGLE, plaintext_size=1, bucket=BUCKET, key=KEY
        )
        salts.add(header.salt)
    assert len(salts) == 20


def test_seal_header_tag_matches_format() -> None:
    header, keys, _ = make_header()
    bucket = BUCKET.encode()
    key = KEY.encode()
    message = (
        header.encode()[:168]
        + len(bucket).to_bytes(2, "big")
        + bucket
        + len(key).to_bytes(4, "big")
        + key
    )
    expected = hmac.new(keys.header_key, message, hashlib.sha256).digest()
    assert header.tag == expected


def test_seal_header_rejects_multipart_size() -> None:
    with pytest.raises(ValueError, match="must be 0 for multipart"):
        make_header(layout=Layout.MULTIPART, plaintext_size=5)


def test_seal_header_rejects_short_random_source() -> None:
    with pytest.raises(ValueError, match="random source returned 16 bytes"):
        seal_header(
            make_data_key(),
            layout=Layout.SINGLE,
            plaintext_size=1,
            bucket=BUCKET,
            key=KEY,
            random=lambda size: bytes(16),
        )


def test_seal_header_rejects_overlong_names() -> None:
    with pytest.raises(ValueError, match="bucket is too long"):
        make_header(bucket="b" * 65536)
    with pytest.raises(ValueError, match="object key is not valid UTF-8"):
        make_header(key="bad\udc80key")


def test_open_header_returns_object_keys() -> None:
    header, keys, dek = make_header()
    assert open_header(header, dek.key, bucket=BUCKET, key=KEY) == keys


def test_open_header_accepts_unicode_names() -> None:
    header, keys, dek = make_header(key="Berichte/Größe 日本.pdf")
    opened = open_header(header, dek.key, bucket=BUCKET, key="Berichte/Größe 日本.pdf")
    assert opened == keys


def test_open_header_rejects_wrong_dek() -> None:
    header, _, _ = make_header()
    other = make_data_key(seed=99)
    with pytest.raises(DecryptionFailed, match="key commitment mismatch"):
        open_header(header, other.key, bucket=BUCKET, key=KEY)


def test_open_header_rejects_wrong_bucket() -> None:
    header, _, dek = make_header()
    with pytest.raises(DecryptionFailed, match="tag mismatch"):
        open_header(header, dek.key, bucket="other-bucket", key=KEY)


def test_open_header_rejects_wrong_key() -> None:
    header, _, dek = make_header()
    with pytest.raises(DecryptionFailed, match="tag mismatch"):
        open_header(header, dek.key, bucket=BUCKET, key=KEY + "x")


def test_open_header_binds_name_boundary() -> None:
    # The length prefixes keep ("ab", "c") apart from ("a", "bc").
    header, _, dek = make_header(bucket="ab", key="c")
    with pytest.raises(DecryptionFailed, match="tag mismatch"):
        open_header(header, dek.key, bucket="a", key="bc")


def test_open_header_rejects_swapped_headers() -> None:
    header_a, _, dek = make_header(key="a.txt", seed=10)
    header_b, _, _ = make_header(key="b.txt", seed=11)
    with pytest.raises(DecryptionFailed, match="tag mismatch"):
        open_header(header_b, dek.key, bucket=BUCKET, key="a.txt")
    with pytest.raises(DecryptionFailed, match="tag mismatch"):
        open_header(header_a, dek.key, bucket=BUCKET, key="b.txt")


# One case per field: (field, offset, XOR mask, expected message). Where a
# valid value exists, the mask produces one, so that the commitment or the
# tag has to catch the change rather than the decoder.
FIELD_TAMPERS = [
    ("version", 0, 0x03, "unsupported version"),
    ("layout", 1, 0x03, "tag mismatch"),
    ("purpose", 2, 0x01, "tag mismatch"),
    ("reserved", 3, 0x01, "reserved byte"),
    ("org_id", 4, 0x80, "tag mismatch"),
    ("org_key_version", 23, 0x01, "tag mismatch"),
    ("dek_version", 27, 0x01, "tag mismatch"),
    ("wrapped_dek_size", 28, 0x01, "wrapped_dek_size"),
    ("wrapped_dek", 50, 0x10, "tag mismatch"),
    ("salt", 100, 0x01, "key commitment mismatch"),
    ("nonce_prefix", 127, 0x01, "tag mismatch"),
    ("plaintext_size", 135, 0x01, "tag mismatch"),
    ("commitment", 140, 0x01, "key commitment mismatch"),
    ("tag", 199, 0x01, "tag mismatch"),
]


@pytest.mark.parametrize(
    ("field", "offset", "mask", "message"),
    FIELD_TAMPERS,
    ids=[case[0] for case in FIELD_TAMPERS],
)
def test_open_header_rejects_tampered_field(
    field: str, offset: int, mask: int, message: str
) -> None:
    # A multipart header has plaintext_size 0, so the layout can flip to
    # SINGLE and still decode; a single header lets the size change.
    layout = Layout.MULTIPART if field == "layout" else Layout.SINGLE
    size = 0 if layout is Layout.MULTIPART else 100_000
    header, _, dek = make_header(layout=layout, plaintext_size=size)
    tampered = flip(header.encode(), offset, mask)
    with pytest.raises(DecryptionFailed, match=message):
        open_header(Header.decode(tampered), dek.key, bucket=BUCKET, key=KEY)


def test_field_tampers_cover_every_field() -> None:
    fields = [case[0] for case in FIELD_TAMPERS]
    expected = ["version", "layout", "purpose", "reserved"]
    expected += [name for name in Header.__dataclass_fields__ if name not in expected]
    expected.insert(expected.index("wrapped_dek"), "wrapped_dek_size")
    assert fields == expected


# --- reseal ----------------------------------------------------------------


def test_reseal_header_binds_new_name() -> None:
    header, keys, dek = make_header()
    copied = reseal_header(header, keys, bucket="archive", key="copy.pdf")
    assert open_header(copied, dek.key, bucket="archive", key="copy.pdf") == keys
    assert copied.salt == header.salt
    assert copied.nonce_prefix == header.nonce_prefix
    with pytest.raises(DecryptionFailed, match="tag mismatch"):
        open_header(copied, dek.key, bucket=BUCKET, key=KEY)


def test_reseal_header_rewraps_dek() -> None:
    header, keys, dek = make_header()
    rewrapped = bytes(range(60))
    resealed = reseal_header(
        header, keys, bucket=BUCKET, key=KEY, wrapped_dek=rewrapped, org_key_version=4
    )
    assert resealed.wrapped_dek == rewrapped
    assert resealed.org_key_version == 4
    assert resealed.dek_version == header.dek_version
    assert open_header(resealed, dek.key, bucket=BUCKET, key=KEY) == keys


def test_reseal_header_requires_both_rewrap_fields() -> None:
    header, keys, _ = make_header()
    with pytest.raises(ValueError, match="together"):
        reseal_header(header, keys, bucket=BUCKET, key=KEY, wrapped_dek=bytes(60))
    with pytest.raises(ValueError, match="together"):
        reseal_header(header, keys, bucket=BUCKET, key=KEY, org_key_version=4)


def test_reseal_header_rejects_keys_of_another_header() -> None:
    header, _, _ = make_header(seed=20)
    _, other_keys, _ = make_header(seed=21)
    with pytest.raises(ValueError, match="do not belong to this header"):
        reseal_header(header, other_keys, bucket=BUCKET, key=KEY)
