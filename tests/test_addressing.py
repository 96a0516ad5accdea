"""Bucket and key from path-style and virtual-hosted-style requests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.addressing import Target, encode_key, parse_target, validate_bucket_name
from proxy.errors import S3Error


@pytest.mark.parametrize(
    ("path", "host", "domain", "expected"),
    [
        ("/", "127.0.0.1:8080", "", Target()),
        ("/bucket", "127.0.0.1:8080", "", Target("bucket")),
        ("/bucket/", "127.0.0.1:8080", "", Target("bucket")),
        ("/bucket/a/b.txt", "h", "", Target("bucket", "a/b.txt")),
        ("/bucket/a%20b%2Bc", "h", "", Target("bucket", "a b+c")),
        ("/bucket/caf%C3%A9", "h", "", Target("bucket", "café")),
        ("/bucket/a+b", "h", "", Target("bucket", "a+b")),
        ("/bucket//double", "h", "", Target("bucket", "/double")),
        ("/key.txt", "photos.s3.local:8080", "s3.local", Target("photos", "key.txt")),
        ("/", "photos.s3.local", "s3.local", Target("photos")),
        ("/photos/key", "s3.local:8080", "s3.local", Target("photos", "key")),
        ("/b/k?x=1", "h", "", Target("b", "k")),
    ],
)
def test_parse_target_table(
    path: str, host: str, domain: str, expected: Target
) -> None:
    assert parse_target(path, host, domain) == expected


def test_parse_target_invalid_utf8() -> None:
    with pytest.raises(S3Error) as error:
        parse_target("/bucket/%FF", "h", "")
    assert error.value.code == "InvalidURI"


@given(st.text(min_size=1, max_size=60))
def test_encode_key_round_trip(key: str) -> None:
    target = parse_target("/bucket/" + encode_key(key), "h", "")
    assert target == Target("bucket", key)


@pytest.mark.parametrize("name", ["abc", "my-bucket.logs", "a" * 63, "0ab"])
def test_validate_bucket_name_accepts(name: str) -> None:
    validate_bucket_name(name)


@pytest.mark.parametrize(
    "name", ["ab", "a" * 64, "Upper", "-abc", "abc-", "a..b", "192.168.1.1", "a_b"]
)
def test_validate_bucket_name_rejects(name: str) -> None:
    with pytest.raises(S3Error) as error:
        validate_bucket_name(name)
    assert error.value.code == "InvalidBucketName"
