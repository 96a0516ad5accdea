"""CopyObject: the copy is plaintext-identical and sealed under its own keys."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from crypto.header import Header, Purpose
from tests.conftest import Stack
from tests.payloads import put_multipart
from tests.stack import byok


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
    source = backend_s3.get_object(Bucket=bucket, Key="src")["Body"].read()
    copied = backend_s3.get_object(Bucket=bucket, Key="dst")["Body"].read()
    assert source != copied
    assert stored_header(backend_s3, bucket, "src").salt != (
        stored_header(backend_s3, bucket, "dst").salt
    )


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
