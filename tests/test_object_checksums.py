"""Stored S3 checksums: verified on upload, sealed, returned in checksum mode."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import S3Error
from proxy.object_checksums import combine, upload_checksum
from tests.payloads import MIB

PART = 5 * MIB


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def crc32(data: bytes) -> str:
    return b64(zlib.crc32(data).to_bytes(4, "big"))


def sha256(data: bytes) -> str:
    return b64(hashlib.sha256(data).digest())


# Published by ceph/s3-tests: three 5 MiB parts of b"A", b"B" and b"C".
COMPOSITE_SHA256_ABC = "uWBwpe1dxI4Vw8Gf0X9ynOdw/SS6VBzfWm9giiv1sf4=-3"
COMPOSITE_ETAG_ABC = '"b2add96cc9702bbf4efb0ccdfc6b7747-3"'


def test_composite_matches_published_vector() -> None:
    parts = [(hashlib.sha256(c * PART).digest(), PART) for c in (b"A", b"B", b"C")]
    assert combine("sha256/COMPOSITE", parts).value == COMPOSITE_SHA256_ABC


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_full_object_crc_equals_crc_of_whole(pieces: list[bytes]) -> None:
    parts = [(zlib.crc32(p).to_bytes(4, "big"), len(p)) for p in pieces]
    checksum = combine("crc32/FULL_OBJECT", parts)
    assert checksum.value == crc32(b"".join(pieces))
    assert checksum.parts == tuple(crc32(p) for p in pieces)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, ""),
        ({"x-amz-checksum-algorithm": "SHA256"}, "sha256/COMPOSITE"),
        ({"x-amz-checksum-algorithm": "CRC64NVME"}, "crc64nvme/FULL_OBJECT"),
        (
            {"x-amz-checksum-algorithm": "crc32", "x-amz-checksum-type": "FULL_OBJECT"},
            "crc32/FULL_OBJECT",
        ),
    ],
)
def test_upload_checksum_defaults(headers: dict[str, str], expected: str) -> None:
    assert upload_checksum(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {"x-amz-checksum-type": "COMPOSITE"},
        {"x-amz-checksum-algorithm": "MD4"},
        {"x-amz-checksum-algorithm": "SHA1", "x-amz-checksum-type": "FULL_OBJECT"},
        {"x-amz-checksum-algorithm": "CRC64NVME", "x-amz-checksum-type": "COMPOSITE"},
        {"x-amz-checksum-algorithm": "CRC32", "x-amz-checksum-type": "PARTIAL"},
    ],
)
def test_upload_checksum_rejects(headers: dict[str, str]) -> None:
    with pytest.raises(S3Error) as caught:
        upload_checksum(headers)
    assert caught.value.code == "InvalidRequest"


@pytest.mark.parametrize(
    "algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"]
)
def test_put_checksum_returned_only_in_checksum_mode(
    s3: Any, bucket: str, algorithm: str
) -> None:
    data = os.urandom(70_000)
    put = s3.put_object(Bucket=bucket, Key="k", Body=data, ChecksumAlgorithm=algorithm)
    field = f"Checksum{algorithm}"
    assert field in put
    assert field not in s3.head_object(Bucket=bucket, Key="k")
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head[field] == put[field]
    assert head["ChecksumType"] == "FULL_OBJECT"
    # botocore checks the body against the returned checksum as it reads
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got[field] == put[field]
    assert got["Body"].read() == data


def test_put_checksum_values_are_of_plaintext(s3: Any, bucket: str) -> None:
    data = b"A" * 1024
    value = "arcu6553sHVAiX4MjW0j7I7vD4w6R+Gz9Ok0Q9lTa+0="
    assert value == sha256(data)
    s3.put_object(Bucket=bucket, Key="k", Body=data, ChecksumSHA256=value)
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == value


def test_put_bad_checksum_is_refused(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", ChecksumSHA256=sha256(b"y"))
    assert caught.value.response["Error"]["Code"] == "BadDigest"
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=bucket, Key="k")
    assert missing.value.response["Error"]["Code"] == "404"


def test_ranged_get_has_no_checksum(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"0123456789", ChecksumAlgorithm="CRC32")
    got = s3.get_object(
        Bucket=bucket, Key="k", Range="bytes=2-4", ChecksumMode="ENABLED"
    )
    assert "ChecksumCRC32" not in got
    assert got["Body"].read() == b"234"


def _upload(
    s3: Any,
    bucket: str,
    key: str,
    bodies: list[bytes],
    **create: Any,
) -> tuple[str, list[dict[str, Any]]]:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    parts = []
    for number, body in enumerate(bodies, start=1):
        extra = {}
        if "ChecksumAlgorithm" in create:
            extra["ChecksumAlgorithm"] = create["ChecksumAlgorithm"]
        answer = s3.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
            **extra,
        )
        part = {"PartNumber": number, "ETag": answer["ETag"]}
        part.update({k: v for k, v in answer.items() if k.startswith("Checksum")})
        parts.append(part)
    return upload_id, parts


def _complete(
    s3: Any, bucket: str, key: str, upload_id: str, parts: list[dict[str, Any]]
) -> Any:
    return s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )


def test_multipart_composite_sha256(s3: Any, bucket: str) -> None:
    bodies = [c * PART for c in (b"A", b"B", b"C")]
    create = s3.create_multipart_upload(
        Bucket=bucket, Key="m", ChecksumAlgorithm="SHA256"
    )
    assert create["ChecksumAlgorithm"] == "SHA256"
    s3.abort_multipart_upload(Bucket=bucket, Key="m", UploadId=create["UploadId"])

    upload_id, parts = _upload(s3, bucket, "m", bodies, ChecksumAlgorithm="SHA256")
    assert [p["ChecksumSHA256"] for p in parts] == [sha256(b) for b in bodies]
    listed = s3.list_parts(Bucket=bucket, Key="m", UploadId=upload_id)
    assert [p["ChecksumSHA256"] for p in listed["Parts"]] == [sha256(b) for b in bodies]

    done = _complete(s3, bucket, "m", upload_id, parts)
    assert done["ETag"] == COMPOSITE_ETAG_ABC
    assert done["ChecksumSHA256"] == COMPOSITE_SHA256_ABC
    assert done["ChecksumType"] == "COMPOSITE"
    head = s3.head_object(Bucket=bucket, Key="m", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == COMPOSITE_SHA256_ABC
    part = s3.head_object(Bucket=bucket, Key="m", PartNumber=2, ChecksumMode="ENABLED")
    assert part["ChecksumSHA256"] == sha256(bodies[1])

    # a client that lost the response completes again and gets the same one
    again = _complete(s3, bucket, "m", upload_id, parts)
    assert (again["ETag"], again["ChecksumSHA256"]) == (
        done["ETag"],
        done["ChecksumSHA256"],
    )


def test_multipart_full_object_crc32(s3: Any, bucket: str) -> None:
    bodies = [os.urandom(PART), os.urandom(1234)]
    upload_id, parts = _upload(
        s3, bucket, "m", bodies, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT"
    )
    done = _complete(s3, bucket, "m", upload_id, parts)
    assert done["ChecksumCRC32"] == crc32(b"".join(bodies))
    assert done["ChecksumType"] == "FULL_OBJECT"
    got = s3.get_object(Bucket=bucket, Key="m", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32"] == crc32(b"".join(bodies))
    assert got["Body"].read() == b"".join(bodies)


def test_multipart_wrong_object_checksum_is_refused(s3: Any, bucket: str) -> None:
    upload_id, parts = _upload(
        s3, bucket, "m", [b"A" * 1024], ChecksumAlgorithm="SHA256"
    )
    with pytest.raises(ClientError) as caught:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="m",
            UploadId=upload_id,
            ChecksumSHA256="bad",
            MultipartUpload={"Parts": parts},
        )
    assert caught.value.response["Error"]["Code"] == "BadDigest"
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="m",
        UploadId=upload_id,
        ChecksumSHA256="Ok6Cs5b96ux6+MWQkJO7UBT5sKPBeXBLwvj/hK89smg=-1",
        MultipartUpload={"Parts": parts},
    )
    assert done["ChecksumSHA256"] == "Ok6Cs5b96ux6+MWQkJO7UBT5sKPBeXBLwvj/hK89smg=-1"


def test_multipart_wrong_part_checksum_is_refused(s3: Any, bucket: str) -> None:
    upload_id, parts = _upload(s3, bucket, "m", [b"part"], ChecksumAlgorithm="SHA256")
    parts[0]["ChecksumSHA256"] = sha256(b"other")
    with pytest.raises(ClientError) as caught:
        _complete(s3, bucket, "m", upload_id, parts)
    assert caught.value.response["Error"]["Code"] == "InvalidPart"


def test_repeated_complete_after_replacement_is_gone(s3: Any, bucket: str) -> None:
    upload_id, parts = _upload(s3, bucket, "m", [b"first"])
    _complete(s3, bucket, "m", upload_id, parts)
    s3.put_object(Bucket=bucket, Key="m", Body=b"second")
    with pytest.raises(ClientError) as caught:
        _complete(s3, bucket, "m", upload_id, parts)
    assert caught.value.response["Error"]["Code"] == "NoSuchUpload"
    with pytest.raises(ClientError) as upload:
        s3.upload_part(
            Bucket=bucket, Key="m", UploadId=upload_id, PartNumber=1, Body=b"x"
        )
    assert upload.value.response["Error"]["Code"] == "NoSuchUpload"


def test_repeated_part_number_last_entry_wins(s3: Any, bucket: str) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    first = s3.upload_part(
        Bucket=bucket, Key="m", UploadId=upload_id, PartNumber=1, Body=b"B" * 8
    )
    second = s3.upload_part(
        Bucket=bucket, Key="m", UploadId=upload_id, PartNumber=1, Body=b"A" * 8
    )
    parts = [
        {"PartNumber": 1, "ETag": first["ETag"]},
        {"PartNumber": 1, "ETag": second["ETag"]},
    ]
    _complete(s3, bucket, "m", upload_id, parts)
    assert s3.get_object(Bucket=bucket, Key="m")["Body"].read() == b"A" * 8


def test_complete_if_none_match(s3: Any, bucket: str) -> None:
    upload_id, parts = _upload(s3, bucket, "m", [b"one"])
    first = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="m",
        UploadId=upload_id,
        IfNoneMatch="*",
        MultipartUpload={"Parts": parts},
    )
    for condition in ("*", first["ETag"]):
        upload_id, parts = _upload(s3, bucket, "m", [b"two"])
        with pytest.raises(ClientError) as caught:
            s3.complete_multipart_upload(
                Bucket=bucket,
                Key="m",
                UploadId=upload_id,
                IfNoneMatch=condition,
                MultipartUpload={"Parts": parts},
            )
        assert caught.value.response["Error"]["Code"] == "PreconditionFailed"
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="m",
        UploadId=upload_id,
        IfNoneMatch='"some-other-etag"',
        MultipartUpload={"Parts": parts},
    )
    assert s3.get_object(Bucket=bucket, Key="m")["Body"].read() == b"two"


def test_complete_returns_version_id(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    upload_id, parts = _upload(s3, bucket, "m", [b"versioned"])
    done = _complete(s3, bucket, "m", upload_id, parts)
    assert done["VersionId"]
    head = s3.head_object(Bucket=bucket, Key="m", VersionId=done["VersionId"])
    assert head["ContentLength"] == len(b"versioned")


def test_put_if_none_match_etag(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"absent is fine", IfNoneMatch='"x"')
    current = s3.put_object(Bucket=bucket, Key="k", Body=b"current")["ETag"]
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=bucket, Key="k", Body=b"new", IfNoneMatch=current)
    assert caught.value.response["Error"]["Code"] == "PreconditionFailed"
    s3.put_object(Bucket=bucket, Key="k", Body=b"new", IfNoneMatch='"other"')
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"new"


ATTRIBUTES = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]


def test_attributes_of_single_object(s3: Any, bucket: str) -> None:
    data = b"A" * 1024
    put = s3.put_object(Bucket=bucket, Key="k", Body=data, ChecksumSHA256=sha256(data))
    got = s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=ATTRIBUTES)
    assert got["ETag"] == put["ETag"].strip('"')
    assert got["ObjectSize"] == len(data)
    assert got["StorageClass"] == "STANDARD"
    assert got["Checksum"] == {
        "ChecksumSHA256": sha256(data),
        "ChecksumType": "FULL_OBJECT",
    }
    assert "ObjectParts" not in got
    assert "VersionId" not in got


def test_attributes_of_multipart_object_by_page(s3: Any, bucket: str) -> None:
    bodies = [os.urandom(PART) for _ in range(5)] + [b"tail"]
    upload_id, parts = _upload(s3, bucket, "m", bodies, ChecksumAlgorithm="SHA256")
    done = _complete(s3, bucket, "m", upload_id, parts)
    got = s3.get_object_attributes(
        Bucket=bucket,
        Key="m",
        ObjectAttributes=ATTRIBUTES,
        MaxParts=1,
        PartNumberMarker=3,
    )
    assert got["ETag"] == done["ETag"].strip('"')
    assert got["ObjectSize"] == sum(len(b) for b in bodies)
    assert got["Checksum"]["ChecksumSHA256"] == done["ChecksumSHA256"]
    page = got["ObjectParts"]
    assert page["TotalPartsCount"] == 6
    assert (page["MaxParts"], page["PartNumberMarker"]) == (1, 3)
    assert (page["IsTruncated"], page["NextPartNumberMarker"]) == (True, 4)
    assert page["Parts"] == [
        {"PartNumber": 4, "Size": PART, "ChecksumSHA256": sha256(bodies[3])}
    ]
    rest = s3.get_object_attributes(
        Bucket=bucket, Key="m", ObjectAttributes=["ObjectParts"], PartNumberMarker=4
    )["ObjectParts"]
    assert [p["PartNumber"] for p in rest["Parts"]] == [5, 6]
    assert rest["Parts"][-1]["Size"] == 4
    assert rest["IsTruncated"] is False


def test_attributes_of_a_version(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"foo")
    s3.put_object(Bucket=bucket, Key="k", Body=b"longer body")
    got = s3.get_object_attributes(
        Bucket=bucket,
        Key="k",
        VersionId=first["VersionId"],
        ObjectAttributes=["ETag", "ObjectSize"],
    )
    assert got["VersionId"] == first["VersionId"]
    assert (got["ETag"], got["ObjectSize"]) == (first["ETag"].strip('"'), 3)


def test_attributes_errors(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as missing:
        s3.get_object_attributes(Bucket=bucket, Key="none", ObjectAttributes=["ETag"])
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as bad:
        s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=["Colour"])
    assert bad.value.response["Error"]["Code"] == "InvalidArgument"


def test_copy_keeps_the_source_algorithm(s3: Any, bucket: str) -> None:
    data = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="src", Body=data, ChecksumAlgorithm="SHA1")
    copied = s3.copy_object(
        Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"}
    )
    expected = b64(hashlib.sha1(data).digest())
    assert copied["CopyObjectResult"]["ChecksumSHA1"] == expected
    head = s3.head_object(Bucket=bucket, Key="dst", ChecksumMode="ENABLED")
    assert head["ChecksumSHA1"] == expected


def test_copy_with_requested_algorithm(s3: Any, bucket: str) -> None:
    data = os.urandom(1000)
    s3.put_object(Bucket=bucket, Key="src", Body=data)
    s3.copy_object(
        Bucket=bucket,
        Key="dst",
        CopySource={"Bucket": bucket, "Key": "src"},
        ChecksumAlgorithm="CRC32",
    )
    head = s3.head_object(Bucket=bucket, Key="dst", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc32(data)


def test_upload_part_copy_gets_part_checksum(s3: Any, bucket: str) -> None:
    data = os.urandom(PART + 10)
    s3.put_object(Bucket=bucket, Key="src", Body=data)
    upload_id = s3.create_multipart_upload(
        Bucket=bucket, Key="m", ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT"
    )["UploadId"]
    copied = s3.upload_part_copy(
        Bucket=bucket,
        Key="m",
        UploadId=upload_id,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange=f"bytes=0-{PART - 1}",
    )["CopyPartResult"]
    assert copied["ChecksumCRC32"] == crc32(data[:PART])
    tail = s3.upload_part(
        Bucket=bucket,
        Key="m",
        UploadId=upload_id,
        PartNumber=2,
        Body=data[PART:],
        ChecksumAlgorithm="CRC32",
    )
    parts = [
        {
            "PartNumber": 1,
            "ETag": copied["ETag"],
            "ChecksumCRC32": copied["ChecksumCRC32"],
        },
        {"PartNumber": 2, "ETag": tail["ETag"], "ChecksumCRC32": tail["ChecksumCRC32"]},
    ]
    done = _complete(s3, bucket, "m", upload_id, parts)
    assert done["ChecksumCRC32"] == crc32(data)
