"""PUT, GET, HEAD, DELETE and listings through the proxy with boto3 defaults."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from botocore.exceptions import ClientError

from crypto.header import Header, Purpose
from crypto.sizes import SEGMENT_SIZE, sealed_size
from tests.conftest import Stack
from tests.payloads import put_multipart
from tests.stack import byok

S = SEGMENT_SIZE
SIZES = [0, 1, 15, 16, 17, S - 17, S - 16, S - 15, S - 1, S, S + 1, 2 * S, 3 * S + 7]


@pytest.mark.parametrize("size", SIZES)
def test_put_get_round_trip(s3: Any, backend_s3: Any, bucket: str, size: int) -> None:
    data = os.urandom(size)
    put = s3.put_object(Bucket=bucket, Key=f"obj-{size}", Body=data)
    got = s3.get_object(Bucket=bucket, Key=f"obj-{size}")
    assert got["Body"].read() == data
    assert got["ContentLength"] == size
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert got["ETag"] == put["ETag"]
    stored = backend_s3.head_object(Bucket=bucket, Key=f"obj-{size}")
    assert stored["ContentLength"] == sealed_size(size)


def test_head_reports_plaintext(s3: Any, bucket: str) -> None:
    data = os.urandom(3 * S + 5)
    s3.put_object(
        Bucket=bucket,
        Key="head",
        Body=data,
        ContentType="text/plain",
        Metadata={"colour": "blue"},
    )
    head = s3.head_object(Bucket=bucket, Key="head")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert head["ContentType"] == "text/plain"
    assert head["Metadata"] == {"colour": "blue"}


def test_backend_holds_ciphertext_only(s3: Any, backend_s3: Any, bucket: str) -> None:
    data = b"top secret quarterly figures " * 5000
    s3.put_object(Bucket=bucket, Key="secret.txt", Body=data)
    stored = backend_s3.get_object(Bucket=bucket, Key="secret.txt")["Body"].read()
    assert b"top secret" not in stored
    assert b"quarterly" not in stored
    assert len(stored) == sealed_size(len(data))


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=5-9", 5, 9),
        (f"bytes={S - 1}-{S}", S - 1, S),
        (f"bytes={S}-", S, 3 * S + 99),
        ("bytes=-7", 3 * S + 93, 3 * S + 99),
        (f"bytes=0-{10 * S}", 0, 3 * S + 99),
    ],
)
def test_range_reads(s3: Any, bucket: str, spec: str, first: int, last: int) -> None:
    data = os.urandom(3 * S + 100)
    s3.put_object(Bucket=bucket, Key="ranged", Body=data)
    got = s3.get_object(Bucket=bucket, Key="ranged", Range=spec)
    assert got["Body"].read() == data[first : last + 1]
    assert got["ContentRange"] == f"bytes {first}-{last}/{len(data)}"


def test_range_unsatisfiable(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="small", Body=b"0123456789")
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="small", Range="bytes=40-50")
    assert error.value.response["Error"]["Code"] == "InvalidRange"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416


def test_list_objects_plaintext_sizes(s3: Any, bucket: str) -> None:
    sizes = {"a": 0, "b": 10, "c": S + 1}
    for key, size in sizes.items():
        s3.put_object(Bucket=bucket, Key=key, Body=os.urandom(size))
    v2 = s3.list_objects_v2(Bucket=bucket)
    assert {o["Key"]: o["Size"] for o in v2["Contents"]} == sizes
    v1 = s3.list_objects(Bucket=bucket)
    assert {o["Key"]: o["Size"] for o in v1["Contents"]} == sizes


def test_delete_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="gone", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="gone")
    with pytest.raises(ClientError) as error:
        s3.head_object(Bucket=bucket, Key="gone")
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_delete_objects(s3: Any, bucket: str) -> None:
    for key in ("one", "two"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "one"}, {"Key": "two"}]}
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == ["one", "two"]
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []


def test_multipart_unaligned_parts(s3: Any, backend_s3: Any, bucket: str) -> None:
    part_size = 5 * 1024 * 1024 + 1
    parts_data = [os.urandom(part_size), os.urandom(part_size), os.urandom(1000)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")
    etags = {}
    for number in (3, 1, 2):  # out of order
        answer = s3.upload_part(
            Bucket=bucket,
            Key="mp",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=parts_data[number - 1],
        )
        etags[number] = answer["ETag"]

    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=upload["UploadId"],
        MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": etags[n]} for n in (1, 2, 3)]
        },
    )

    # whole object, HEAD and listing
    data = b"".join(parts_data)
    digests = b"".join(hashlib.md5(p).digest() for p in parts_data)
    assert done["ETag"] == f'"{hashlib.md5(digests).hexdigest()}-3"'
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == data
    head = s3.head_object(Bucket=bucket, Key="mp")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == done["ETag"]
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"][0]
    assert listed["Size"] == len(data)

    # ranges across part boundaries, and ciphertext only in the store
    for first in (0, part_size - 1, part_size, part_size + 1, 2 * part_size - 2):
        last = min(first + part_size, len(data) - 1)
        got = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={first}-{last}")
        assert got["Body"].read() == data[first : last + 1], first
    stored = backend_s3.get_object(Bucket=bucket, Key="mp")["Body"].read()
    assert parts_data[2][:64] not in stored


def test_route_sets_header_purpose(
    stack: Stack, s3: Any, backend_s3: Any, bucket: str
) -> None:
    byok(stack.data_dir, "route", "set", bucket, "calls/", "recordings")
    s3.put_object(Bucket=bucket, Key="calls/1.wav", Body=b"RIFF....WAVE")
    s3.put_object(Bucket=bucket, Key="notes.txt", Body=b"hello")
    purposes = {}
    for key in ("calls/1.wav", "notes.txt"):
        metadata = backend_s3.head_object(Bucket=bucket, Key=key)["Metadata"]
        purposes[key] = Header.from_metadata(metadata["byok-header"]).purpose
    assert purposes["calls/1.wav"] is Purpose.RECORDINGS
    assert purposes["notes.txt"] is Purpose.FILES
    assert s3.get_object(Bucket=bucket, Key="calls/1.wav")["Body"].read() == (
        b"RIFF....WAVE"
    )


def test_user_metadata_hides_header(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="meta", Body=b"x", Metadata={"a": "1"})
    got = s3.get_object(Bucket=bucket, Key="meta")
    assert got["Metadata"] == {"a": "1"}


def test_get_head_part_number(s3: Any, bucket: str) -> None:
    parts_data = [
        os.urandom(5 * 1024 * 1024),
        os.urandom(5 * 1024 * 1024 + 7),
        b"x" * 33,
    ]
    put_multipart(s3, bucket, "parts", parts_data)
    total = sum(len(p) for p in parts_data)
    second = s3.get_object(Bucket=bucket, Key="parts", PartNumber=2)
    assert second["Body"].read() == parts_data[1]
    assert second["PartsCount"] == 3
    first = len(parts_data[0])
    last = first + len(parts_data[1]) - 1
    assert second["ContentRange"] == f"bytes {first}-{last}/{total}"
    third = s3.head_object(Bucket=bucket, Key="parts", PartNumber=3)
    assert third["ContentLength"] == 33
    assert third["PartsCount"] == 3
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="parts", PartNumber=4)
    assert error.value.response["Error"]["Code"] == "InvalidPartNumber"


def test_part_number_single_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="single", Body=b"0123456789")
    got = s3.get_object(Bucket=bucket, Key="single", PartNumber=1)
    assert got["Body"].read() == b"0123456789"
    assert "PartsCount" not in got
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="single", PartNumber=1, Range="bytes=0-1")
    assert error.value.response["Error"]["Code"] == "InvalidRequest"


def test_put_if_none_match(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="once", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as error:
        s3.put_object(Bucket=bucket, Key="once", Body=b"second", IfNoneMatch="*")
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket=bucket, Key="once")["Body"].read() == b"first"


def test_put_if_match(s3: Any, bucket: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="guarded", Body=b"v1")["ETag"]
    s3.put_object(Bucket=bucket, Key="guarded", Body=b"v2", IfMatch=etag)
    assert s3.get_object(Bucket=bucket, Key="guarded")["Body"].read() == b"v2"
    with pytest.raises(ClientError) as error:
        s3.put_object(Bucket=bucket, Key="guarded", Body=b"v3", IfMatch=etag)
    assert error.value.response["Error"]["Code"] == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key="guarded")["Body"].read() == b"v2"
