"""Tests for the S3 checksum algorithms, checksum headers and Content-MD5."""

from __future__ import annotations

import base64
import hashlib

import pytest
from botocore import httpchecksum
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.checksums import (
    ALGORITHMS,
    Checksum,
    parse_content_md5,
    requested_checksums,
    verify_checksum,
    verify_content_md5,
)
from proxy.errors import S3Error

# botocore's own checksum classes, an implementation independent of ours
# (its CRC32C, CRC64NVME and xxhash classes wrap awscrt).
BOTOCORE_CLASSES = {
    "crc32": httpchecksum.Crc32Checksum,
    "crc32c": httpchecksum.CrtCrc32cChecksum,
    "crc64nvme": httpchecksum.CrtCrc64NvmeChecksum,
    "sha1": httpchecksum.Sha1Checksum,
    "sha256": httpchecksum.Sha256Checksum,
    "sha512": httpchecksum.Sha512Checksum,
    "xxhash64": httpchecksum.CrtXxhash64Checksum,
    "xxhash3": httpchecksum.CrtXxhash3Checksum,
    "xxhash128": httpchecksum.CrtXxhash128Checksum,
}

# Published check values: the CRC catalogue's value for b"123456789", and
# the xxHash reference values for empty input.
CHECK_VALUES = {
    ("crc32", b"123456789"): "cbf43926",
    ("crc32c", b"123456789"): "e3069283",
    ("crc64nvme", b"123456789"): "ae8b14860a799888",
    ("xxhash64", b""): "ef46db3751d8e999",
    ("xxhash3", b""): "2d06800538d394c2",
    ("xxhash128", b""): "99aa06d3014798d86001c324468d497f",
}

HELLO_WORLD = {
    "crc32": "DUoRhQ==",
    "crc32c": "yZRlqg==",
    "sha1": "Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
    "sha256": "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=",
}


def _checksum_of(algorithm: str, data: bytes) -> Checksum:
    checksum = Checksum.new(algorithm)
    checksum.update(data)
    return checksum


def test_algorithms_cover_botocore_classes() -> None:
    assert set(ALGORITHMS) == set(BOTOCORE_CLASSES)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("data", [b"", b"hello world", bytes(range(256)) * 300])
def test_checksum_matches_botocore(algorithm: str, data: bytes) -> None:
    expected = BOTOCORE_CLASSES[algorithm]()
    expected.update(data)
    assert _checksum_of(algorithm, data).b64digest() == expected.b64digest()


@pytest.mark.parametrize(("case", "hex_digest"), CHECK_VALUES.items())
def test_checksum_published_check_values(
    case: tuple[str, bytes], hex_digest: str
) -> None:
    algorithm, data = case
    assert _checksum_of(algorithm, data).digest().hex() == hex_digest


@pytest.mark.parametrize(("algorithm", "b64"), HELLO_WORLD.items())
def test_checksum_hello_world(algorithm: str, b64: str) -> None:
    assert _checksum_of(algorithm, b"hello world").b64digest() == b64


def test_checksum_sha_family_matches_hashlib() -> None:
    data = b"The quick brown fox"
    for name in ("sha1", "sha256", "sha512"):
        expected = base64.b64encode(hashlib.new(name, data).digest()).decode()
        assert _checksum_of(name, data).b64digest() == expected


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@given(data=st.binary(max_size=4096), cut=st.integers(min_value=0, max_value=4096))
def test_checksum_incremental_equals_one_shot(
    algorithm: str, data: bytes, cut: int
) -> None:
    split = Checksum.new(algorithm)
    split.update(data[:cut])
    split.update(memoryview(data)[cut:])
    assert split.b64digest() == _checksum_of(algorithm, data).b64digest()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_checksum_digest_repeatable(algorithm: str) -> None:
    checksum = _checksum_of(algorithm, b"abc")
    assert checksum.digest() == checksum.digest()


def test_checksum_new_is_case_insensitive() -> None:
    checksum = Checksum.new("CRC32")
    assert checksum.algorithm == "crc32"
    assert checksum.header_name == "x-amz-checksum-crc32"


def test_checksum_new_unknown_algorithm() -> None:
    with pytest.raises(S3Error) as caught:
        Checksum.new("md4")
    assert caught.value.code == "InvalidRequest"


def test_requested_checksums_returns_value() -> None:
    headers = {"X-Amz-Checksum-CRC32": "DUoRhQ==", "Content-Type": "text/plain"}
    assert requested_checksums(headers) == {"crc32": "DUoRhQ=="}


def test_requested_checksums_accepts_multidict() -> None:
    headers = CIMultiDictProxy(
        CIMultiDict({"x-amz-checksum-sha1": HELLO_WORLD["sha1"]})
    )
    assert requested_checksums(headers) == {"sha1": HELLO_WORLD["sha1"]}


def test_requested_checksums_ignores_settings_headers() -> None:
    headers = {
        "x-amz-checksum-algorithm": "CRC32",
        "x-amz-checksum-type": "FULL_OBJECT",
        "x-amz-checksum-mode": "ENABLED",
        "x-amz-sdk-checksum-algorithm": "CRC32",
    }
    assert requested_checksums(headers) == {}


@pytest.mark.parametrize(
    "value",
    ["DUoRhQ", "DUoRhQ==x", "DUoR hQ==", "AAAAAAAA", "", "%%%%"],
)
def test_requested_checksums_malformed_value(value: str) -> None:
    with pytest.raises(S3Error) as caught:
        requested_checksums({"x-amz-checksum-crc32": value})
    assert caught.value.code == "InvalidRequest"
    assert "x-amz-checksum-crc32" in caught.value.message


def test_requested_checksums_wrong_length() -> None:
    with pytest.raises(S3Error) as caught:
        requested_checksums({"x-amz-checksum-sha256": "DUoRhQ=="})
    assert caught.value.code == "InvalidRequest"


def test_requested_checksums_two_algorithms() -> None:
    headers = {
        "x-amz-checksum-crc32": HELLO_WORLD["crc32"],
        "x-amz-checksum-sha1": HELLO_WORLD["sha1"],
    }
    with pytest.raises(S3Error) as caught:
        requested_checksums(headers)
    assert caught.value.code == "InvalidRequest"


def test_requested_checksums_repeated_header() -> None:
    headers = CIMultiDict(
        [("x-amz-checksum-crc32", "DUoRhQ=="), ("x-amz-checksum-crc32", "DUoRhQ==")]
    )
    with pytest.raises(S3Error) as caught:
        requested_checksums(headers)
    assert caught.value.code == "InvalidRequest"


def test_requested_checksums_unknown_algorithm() -> None:
    with pytest.raises(S3Error) as caught:
        requested_checksums({"x-amz-checksum-md5": "1B2M2Y8AsgTpgAmY7PhCfg=="})
    assert caught.value.code == "InvalidRequest"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_verify_checksum_accepts_match(algorithm: str) -> None:
    expected = _checksum_of(algorithm, b"payload").b64digest()
    verify_checksum(algorithm.upper(), expected, _checksum_of(algorithm, b"payload"))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_verify_checksum_mismatch_is_bad_digest(algorithm: str) -> None:
    expected = _checksum_of(algorithm, b"payload").b64digest()
    with pytest.raises(S3Error) as caught:
        verify_checksum(algorithm, expected, _checksum_of(algorithm, b"Payload"))
    assert caught.value.code == "BadDigest"
    assert caught.value.status == 400
    assert caught.value.message == (
        f"The x-amz-checksum-{algorithm} you specified did not match the "
        "calculated checksum."
    )


def test_verify_checksum_malformed_expected_value() -> None:
    with pytest.raises(S3Error) as caught:
        verify_checksum("crc32", "not base64!", _checksum_of("crc32", b""))
    assert caught.value.code == "InvalidRequest"


def test_verify_checksum_algorithm_mismatch() -> None:
    with pytest.raises(ValueError, match="does not match"):
        verify_checksum("sha1", HELLO_WORLD["sha1"], _checksum_of("crc32", b""))


def test_parse_content_md5_decodes_digest() -> None:
    digest = hashlib.md5(b"bar").digest()
    assert parse_content_md5(base64.b64encode(digest).decode()) == digest


def test_parse_content_md5_absent() -> None:
    assert parse_content_md5(None) is None


@pytest.mark.parametrize(
    "value",
    ["", "YWJjZA==", "not base64", hashlib.md5(b"bar").hexdigest(), "AAAA" * 6],
)
def test_parse_content_md5_invalid(value: str) -> None:
    with pytest.raises(S3Error) as caught:
        parse_content_md5(value)
    assert caught.value.code == "InvalidDigest"
    assert caught.value.status == 400


def test_verify_content_md5_accepts_match() -> None:
    digest = hashlib.md5(b"bar").digest()
    verify_content_md5(digest, hashlib.md5(b"bar").digest())


def test_verify_content_md5_mismatch_is_bad_digest() -> None:
    with pytest.raises(S3Error) as caught:
        verify_content_md5(hashlib.md5(b"bar").digest(), hashlib.md5(b"baz").digest())
    assert caught.value.code == "BadDigest"
