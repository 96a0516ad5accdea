"""CopyObject: the copy is plaintext-identical and sealed under its own keys."""

from __future__ import annotations

import hashlib
import os
import string
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.handlers import _quote_source_header_from_dict
from hypothesis import example, given
from hypothesis import strategies as st

from crypto.header import Header, Purpose
from proxy.copy_source import parse_copy_source
from proxy.errors import S3Error
from tests.conftest import Stack
from tests.payloads import put_multipart
from tests.stack import byok
from tests.test_versions import enable_versioning


def stored_header(backend_s3: Any, bucket: str, key: str) -> Header:
    metadata = backend_s3.head_object(Bucket=bucket, Key=key)["Metadata"]
    return Header.from_metadata(metadata["byok-header"])


def test_copy_same_bucket(s3: Any, backend_s3: Any, bucket: str) -> None:
    data = os.urandom(200_000)
    s3.put_object(
        Bucket=bucket,
        Key="src",
        Body=data,
        ContentType="text/csv",
        Metadata={"owner": "ana"},
    )
    result = s3.copy_object(
        Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"}
    )
    assert result["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == data
    assert got["ContentType"] == "text/csv"
    assert got["Metadata"] == {"owner": "ana"}
    # the same purpose: the store copied the ciphertext under a re-tagged header
    source = backend_s3.get_object(Bucket=bucket, Key="src")["Body"].read()
    copied = backend_s3.get_object(Bucket=bucket, Key="dst")["Body"].read()
    assert source == copied
    source_header = stored_header(backend_s3, bucket, "src")
    copied_header = stored_header(backend_s3, bucket, "dst")
    assert source_header.salt == copied_header.salt
    assert source_header.tag != copied_header.tag


def test_header_only_copy_is_bound_to_its_name(
    s3: Any, backend_s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"secret body")
    s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src")
    # swap the headers: each names the other object, so neither opens
    source_meta = backend_s3.head_object(Bucket=bucket, Key="src")["Metadata"]
    backend_s3.copy_object(
        Bucket=bucket,
        Key="dst",
        CopySource=f"{bucket}/dst",
        Metadata=source_meta,
        MetadataDirective="REPLACE",
    )
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="dst")["Body"].read()
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] >= 400
    assert s3.get_object(Bucket=bucket, Key="src")["Body"].read() == b"secret body"


def test_copy_replace_metadata_in_place(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="doc", Body=b"body", Metadata={"v": "1"})
    s3.copy_object(
        Bucket=bucket,
        Key="doc",
        CopySource={"Bucket": bucket, "Key": "doc"},
        MetadataDirective="REPLACE",
        Metadata={"v": "2"},
        ContentType="text/plain",
    )
    got = s3.get_object(Bucket=bucket, Key="doc")
    assert got["Body"].read() == b"body"
    assert got["Metadata"] == {"v": "2"}
    assert got["ContentType"] == "text/plain"


def test_copy_to_itself_without_change(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="same", Body=b"x")
    with pytest.raises(ClientError) as error:
        s3.copy_object(
            Bucket=bucket, Key="same", CopySource={"Bucket": bucket, "Key": "same"}
        )
    assert error.value.response["Error"]["Code"] == "InvalidRequest"


def test_copy_across_buckets_and_purposes(
    stack: Stack,
    s3: Any,
    backend_s3: Any,
    new_bucket: Callable[..., str],
) -> None:
    source_bucket, target_bucket = new_bucket(), new_bucket()
    byok(stack.data_dir, "route", "set", target_bucket, "calls/", "recordings")
    data = os.urandom(3 * 65536 + 1)
    s3.put_object(Bucket=source_bucket, Key="a.wav", Body=data)
    s3.copy_object(
        Bucket=target_bucket,
        Key="calls/a.wav",
        CopySource={"Bucket": source_bucket, "Key": "a.wav"},
    )
    assert s3.get_object(Bucket=target_bucket, Key="calls/a.wav")["Body"].read() == (
        data
    )
    header = stored_header(backend_s3, target_bucket, "calls/a.wav")
    assert header.purpose is Purpose.RECORDINGS
    # another purpose, another DEK: sealed again with a new salt
    assert header.salt != stored_header(backend_s3, source_bucket, "a.wav").salt


def test_copy_multipart_source(s3: Any, bucket: str) -> None:
    parts = [os.urandom(5 * 1024 * 1024 + 1), os.urandom(1000)]
    put_multipart(s3, bucket, "big", parts)
    s3.copy_object(
        Bucket=bucket, Key="big-copy", CopySource={"Bucket": bucket, "Key": "big"}
    )
    data = b"".join(parts)
    got = s3.get_object(Bucket=bucket, Key="big-copy", Range="bytes=5242870-5242890")
    assert got["Body"].read() == data[5242870:5242891]
    assert s3.head_object(Bucket=bucket, Key="big-copy")["ContentLength"] == len(data)


def test_copy_empty_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    s3.copy_object(Bucket=bucket, Key="empty-copy", CopySource=f"{bucket}/empty")
    assert s3.get_object(Bucket=bucket, Key="empty-copy")["Body"].read() == b""


@pytest.mark.parametrize(
    ("condition", "value"),
    [("CopySourceIfMatch", '"0000"'), ("CopySourceIfNoneMatch", "SOURCE")],
)
def test_copy_source_conditions(
    s3: Any, bucket: str, condition: str, value: str
) -> None:
    etag = s3.put_object(Bucket=bucket, Key="cond", Body=b"data")["ETag"]
    with pytest.raises(ClientError) as error:
        s3.copy_object(
            Bucket=bucket,
            Key="cond-copy",
            CopySource={"Bucket": bucket, "Key": "cond"},
            **{condition: etag if value == "SOURCE" else value},
        )
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    s3.copy_object(
        Bucket=bucket,
        Key="cond-copy",
        CopySource={"Bucket": bucket, "Key": "cond"},
        CopySourceIfMatch=etag,
    )
    assert s3.get_object(Bucket=bucket, Key="cond-copy")["Body"].read() == b"data"


def test_copy_from_other_organisation(stack: Stack, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="private", Body=b"secret")
    other = stack.client(stack.tenant("copy-thief"))
    other.create_bucket(Bucket=bucket + "-thief")
    with pytest.raises(ClientError) as error:
        other.copy_object(
            Bucket=bucket + "-thief",
            Key="stolen",
            CopySource={"Bucket": bucket, "Key": "private"},
        )
    assert error.value.response["Error"]["Code"] == "AccessDenied"
    other.delete_bucket(Bucket=bucket + "-thief")


def test_upload_part_copy_ranges(s3: Any, bucket: str) -> None:
    data = os.urandom(7 * 1024 * 1024 + 3)
    s3.put_object(Bucket=bucket, Key="whole", Body=data)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="assembled")
    cut = 5 * 1024 * 1024 + 1
    ranges = [(0, cut - 1), (cut, len(data) - 1)]
    parts = []
    for number, (first, last) in enumerate(ranges, start=1):
        answer = s3.upload_part_copy(
            Bucket=bucket,
            Key="assembled",
            UploadId=upload["UploadId"],
            PartNumber=number,
            CopySource={"Bucket": bucket, "Key": "whole"},
            CopySourceRange=f"bytes={first}-{last}",
        )
        expected = hashlib.md5(data[first : last + 1]).hexdigest()
        assert answer["CopyPartResult"]["ETag"] == f'"{expected}"'
        parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="assembled",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": parts},
    )
    assert s3.get_object(Bucket=bucket, Key="assembled")["Body"].read() == data


def test_upload_part_copy_invalid_range(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="short", Body=b"0123456789")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="bad")
    with pytest.raises(ClientError) as error:
        s3.upload_part_copy(
            Bucket=bucket,
            Key="bad",
            UploadId=upload["UploadId"],
            PartNumber=1,
            CopySource={"Bucket": bucket, "Key": "short"},
            CopySourceRange="bytes=5-20",
        )
    assert error.value.response["Error"]["Code"] == "InvalidRange"


def test_managed_copy_large_object(s3: Any, bucket: str, tmp_path: Any) -> None:
    source = tmp_path / "large.bin"
    source.write_bytes(os.urandom(20 * 1024 * 1024 + 11))
    s3.upload_file(str(source), bucket, "large")
    s3.copy({"Bucket": bucket, "Key": "large"}, bucket, "large-copy")
    target = tmp_path / "copied.bin"
    s3.download_file(bucket, "large-copy", str(target))
    assert target.read_bytes() == source.read_bytes()


# Keys that clients must percent-encode in x-amz-copy-source, including
# the names ceph/s3-tests copies and keys that contain `?versionId`.
SPECIAL_KEYS = [
    " ",
    "_",
    "__",
    "?versionId",
    "foo?bar",
    "x?versionId=y",
    "100%",
    "100%25",
    "a+b c",
    "résumé/日本語.txt",
    "/leading",
]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("b/k", ("b", "k", None)),
        ("/b/k", ("b", "k", None)),
        ("b//k", ("b", "/k", None)),
        ("b/foo%3Fbar?versionId=v1", ("b", "foo?bar", "v1")),
        ("b/%3FversionId", ("b", "?versionId", None)),
        ("b/a%3FversionId%3Dx?versionId=v1", ("b", "a?versionId=x", "v1")),
        ("b/a?versionId=x?versionId=v1", ("b", "a?versionId=x", "v1")),
        ("b/foo?bar", ("b", "foo?bar", None)),
        ("b/a+b%20c", ("b", "a+b c", None)),
        ("b/100%25", ("b", "100%", None)),
        ("b/caf%C3%A9", ("b", "café", None)),
    ],
)
def test_copy_source_parse(header: str, expected: tuple[str, str, str | None]) -> None:
    assert parse_copy_source(header) == expected


@pytest.mark.parametrize(
    "header", ["b", "b/", "/k", "/", "b/k?versionId=", "b/%FF", "b/%C3"]
)
def test_copy_source_parse_invalid(header: str) -> None:
    with pytest.raises(S3Error) as error:
        parse_copy_source(header)
    assert error.value.code == "InvalidArgument"
    assert error.value.status == 400


@given(
    bucket=st.from_regex(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", fullmatch=True),
    key=st.text(st.characters(codec="utf-8"), min_size=1),
    version=st.none()
    | st.text(string.ascii_letters + string.digits + "._-", min_size=1),
)
@example(bucket="abc", key="a?versionId=x", version="v1")
@example(bucket="abc", key="a?versionId=x", version=None)
@example(bucket="abc", key="%3F/?%", version=None)
def test_copy_source_parse_botocore_round_trip(
    bucket: str, key: str, version: str | None
) -> None:
    source = {"Bucket": bucket, "Key": key}
    if version is not None:
        source["VersionId"] = version
    # the function botocore runs on a CopySource dict before sending it
    header = _quote_source_header_from_dict(source)
    assert parse_copy_source(header) == (bucket, key, version)


@pytest.mark.parametrize("key", SPECIAL_KEYS)
def test_copy_special_key(s3: Any, bucket: str, key: str) -> None:
    data = os.urandom(1000)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    result = s3.copy_object(
        Bucket=bucket, Key="copied", CopySource={"Bucket": bucket, "Key": key}
    )
    assert result["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key="copied")["Body"].read() == data


@pytest.mark.parametrize("key", SPECIAL_KEYS)
def test_upload_part_copy_special_key(s3: Any, bucket: str, key: str) -> None:
    data = os.urandom(10)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="assembled")
    answer = s3.upload_part_copy(
        Bucket=bucket,
        Key="assembled",
        UploadId=upload["UploadId"],
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": key},
        CopySourceRange="bytes=0-0",
    )
    etag = answer["CopyPartResult"]["ETag"]
    assert etag == f'"{hashlib.md5(data[:1]).hexdigest()}"'
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="assembled",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    assert s3.get_object(Bucket=bucket, Key="assembled")["Body"].read() == data[:1]


def test_upload_part_copy_percent_encoded_key(s3: Any, bucket: str) -> None:
    # "%.txt" names another key than "%25.txt": one decoding, never two
    s3.put_object(Bucket=bucket, Key="name%25.txt", Body=b"foo")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="target")
    with pytest.raises(ClientError) as error:
        s3.upload_part_copy(
            Bucket=bucket,
            Key="target",
            UploadId=upload["UploadId"],
            PartNumber=1,
            CopySource={"Bucket": bucket, "Key": "name%.txt"},
        )
    assert error.value.response["Error"]["Code"] == "NoSuchKey"


@pytest.mark.parametrize("key", ["foo?bar", "plain", "v?versionId=x"])
def test_copy_versioned_source(s3: Any, bucket: str, key: str) -> None:
    enable_versioning(s3, bucket)
    first = s3.put_object(Bucket=bucket, Key=key, Body=b"first version")
    s3.put_object(Bucket=bucket, Key=key, Body=b"second version")
    source = {"Bucket": bucket, "Key": key, "VersionId": first["VersionId"]}
    result = s3.copy_object(Bucket=bucket, Key="bar&foo", CopySource=source)
    assert result["CopySourceVersionId"] == first["VersionId"]
    got = s3.get_object(Bucket=bucket, Key="bar&foo")
    assert got["Body"].read() == b"first version"


def test_upload_part_copy_versioned_source(s3: Any, bucket: str) -> None:
    enable_versioning(s3, bucket)
    first = s3.put_object(Bucket=bucket, Key="foo?bar", Body=b"first version")
    s3.put_object(Bucket=bucket, Key="foo?bar", Body=b"second version")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="assembled")
    answer = s3.upload_part_copy(
        Bucket=bucket,
        Key="assembled",
        UploadId=upload["UploadId"],
        PartNumber=1,
        CopySource={
            "Bucket": bucket,
            "Key": "foo?bar",
            "VersionId": first["VersionId"],
        },
    )
    assert answer["CopySourceVersionId"] == first["VersionId"]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="assembled",
        UploadId=upload["UploadId"],
        MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": answer["CopyPartResult"]["ETag"]}]
        },
    )
    got = s3.get_object(Bucket=bucket, Key="assembled")
    assert got["Body"].read() == b"first version"


def test_copy_restores_older_version(s3: Any, bucket: str) -> None:
    enable_versioning(s3, bucket)
    first = s3.put_object(Bucket=bucket, Key="doc", Body=b"first version")
    s3.put_object(Bucket=bucket, Key="doc", Body=b"second version")
    s3.copy_object(
        Bucket=bucket,
        Key="doc",
        CopySource={"Bucket": bucket, "Key": "doc", "VersionId": first["VersionId"]},
    )
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"first version"


def test_copy_missing_version(s3: Any, bucket: str) -> None:
    enable_versioning(s3, bucket)
    s3.put_object(Bucket=bucket, Key="doc", Body=b"data")
    source = {"Bucket": bucket, "Key": "doc", "VersionId": "no-such-version"}
    with pytest.raises(ClientError) as error:
        s3.copy_object(Bucket=bucket, Key="copy", CopySource=source)
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 404)
