"""Objects the proxy did not write: rejected by default, readable by policy.

Each test stores an object straight into a proxy bucket with the object
store client, as a tool or an application did before the proxy was there.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Stack
from tests.stack import byok


def set_policy(stack: Stack, bucket: str, policy: str) -> None:
    byok(stack.data_dir, "bucket", "foreign-objects", bucket, policy)


def put_foreign(
    backend_s3: Any, bucket: str, key: str, data: bytes, **extra: Any
) -> str:
    """Store an object without the proxy; return the object store's ETag."""
    etag: str = backend_s3.put_object(Bucket=bucket, Key=key, Body=data, **extra)[
        "ETag"
    ]
    return etag


def error_of(error: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = error.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def test_foreign_get_rejected_by_default(s3: Any, backend_s3: Any, bucket: str) -> None:
    put_foreign(backend_s3, bucket, "doc", b"plain bytes")
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="doc")
    assert error_of(error) == (403, "InvalidObjectState")
    assert "foreign-objects policy" in error.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as error:
        s3.head_object(Bucket=bucket, Key="doc")
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_foreign_copy_rejected_by_default(
    s3: Any, backend_s3: Any, bucket: str
) -> None:
    put_foreign(backend_s3, bucket, "doc", b"plain bytes")
    with pytest.raises(ClientError) as error:
        s3.copy_object(
            Bucket=bucket, Key="doc", CopySource={"Bucket": bucket, "Key": "doc"}
        )
    assert error_of(error) == (403, "InvalidObjectState")
    stored = backend_s3.get_object(Bucket=bucket, Key="doc")
    assert stored["Body"].read() == b"plain bytes"


def test_foreign_get_under_read(
    stack: Stack, s3: Any, backend_s3: Any, bucket: str
) -> None:
    data = os.urandom(200_000)
    etag = put_foreign(
        backend_s3,
        bucket,
        "doc",
        data,
        ContentType="text/csv",
        Metadata={"owner": "ana"},
    )
    set_policy(stack, bucket, "read")
    got = s3.get_object(Bucket=bucket, Key="doc")
    assert got["Body"].read() == data
    assert got["ETag"] == etag
    assert got["ContentLength"] == len(data)
    assert got["ContentType"] == "text/csv"
    assert got["Metadata"] == {"owner": "ana"}


def test_foreign_head_under_read(
    stack: Stack, s3: Any, backend_s3: Any, bucket: str
) -> None:
    etag = put_foreign(backend_s3, bucket, "doc", b"0123456789")
    set_policy(stack, bucket, "read")
    head = s3.head_object(Bucket=bucket, Key="doc")
    assert head["ContentLength"] == 10
    assert head["ETag"] == etag


def test_foreign_range_under_read(
    stack: Stack, s3: Any, backend_s3: Any, bucket: str
) -> None:
    data = os.urandom(100_000)
    put_foreign(backend_s3, bucket, "doc", data)
    set_policy(stack, bucket, "read")
    got = s3.get_object(Bucket=bucket, Key="doc", Range="bytes=70000-70009")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == f"bytes 70000-70009/{len(data)}"
    assert got["Body"].read() == data[70000:70010]
    tail = s3.get_object(Bucket=bucket, Key="doc", Range="bytes=-5")
    assert tail["Body"].read() == data[-5:]


def test_foreign_conditions_under_read(
    stack: Stack, s3: Any, backend_s3: Any, bucket: str
) -> None:
    etag = put_foreign(backend_s3, bucket, "doc", b"data")
    set_policy(stack, bucket, "read")
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="doc", IfNoneMatch=etag)
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=bucket, Key="doc", IfMatch='"0000"')
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    got = s3.get_object(Bucket=bucket, Key="doc", IfMatch=etag)
    assert got["Body"].read() == b"data"


def test_foreign_hides_proxy_metadata_names(
    stack: Stack, s3: Any, backend_s3: Any, bucket: str
) -> None:
    metadata = {"byok-note": "set by someone else", "keep": "yes"}
    put_foreign(backend_s3, bucket, "doc", b"data", Metadata=metadata)
    set_policy(stack, bucket, "read")
    assert s3.get_object(Bucket=bucket, Key="doc")["Metadata"] == {"keep": "yes"}
    assert s3.head_object(Bucket=bucket, Key="doc")["Metadata"] == {"keep": "yes"}


def test_foreign_copy_onto_itself_encrypts(
    stack: Stack, s3: Any, backend_s3: Any, bucket: str
) -> None:
    data = os.urandom(150_000)
    put_foreign(
        backend_s3,
        bucket,
        "doc",
        data,
        ContentType="text/plain",
        Metadata={"owner": "ana"},
    )
    set_policy(stack, bucket, "read")
    result = s3.copy_object(
        Bucket=bucket, Key="doc", CopySource={"Bucket": bucket, "Key": "doc"}
    )
    plaintext_etag = f'"{hashlib.md5(data).hexdigest()}"'
    assert result["CopyObjectResult"]["ETag"] == plaintext_etag

    stored = backend_s3.get_object(Bucket=bucket, Key="doc")
    assert "byok-header" in stored["Metadata"]
    assert stored["Body"].read() != data
    got = s3.get_object(Bucket=bucket, Key="doc")
    assert got["Body"].read() == data
    assert got["ETag"] == plaintext_etag
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"owner": "ana"}


def test_foreign_copy_to_other_bucket(
    stack: Stack,
    s3: Any,
    backend_s3: Any,
    new_bucket: Callable[..., str],
) -> None:
    source, target = new_bucket(), new_bucket()
    data = os.urandom(70_000)
    etag = put_foreign(backend_s3, source, "doc", data)
    set_policy(stack, source, "read")
    s3.copy_object(
        Bucket=target,
        Key="copy",
        CopySource={"Bucket": source, "Key": "doc"},
        CopySourceIfMatch=etag,
    )
    assert s3.get_object(Bucket=target, Key="copy")["Body"].read() == data
    stored = backend_s3.get_object(Bucket=target, Key="copy")
    assert "byok-header" in stored["Metadata"]
    assert backend_s3.get_object(Bucket=source, Key="doc")["Body"].read() == data


def test_foreign_upload_part_copy(
    stack: Stack, s3: Any, backend_s3: Any, bucket: str
) -> None:
    data = os.urandom(6 * 1024 * 1024)
    put_foreign(backend_s3, bucket, "doc", data)
    set_policy(stack, bucket, "read")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="assembled")
    ranges = [(0, 5 * 1024 * 1024 - 1), (5 * 1024 * 1024, len(data) - 1)]
    parts = []
    for number, (first, last) in enumerate(ranges, start=1):
        answer = s3.upload_part_copy(
            Bucket=bucket,
            Key="assembled",
            UploadId=upload["UploadId"],
            PartNumber=number,
            CopySource={"Bucket": bucket, "Key": "doc"},
            CopySourceRange=f"bytes={first}-{last}",
        )
        etag = answer["CopyPartResult"]["ETag"]
        assert etag == f'"{hashlib.md5(data[first : last + 1]).hexdigest()}"'
        parts.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="assembled",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": parts},
    )
    assert s3.get_object(Bucket=bucket, Key="assembled")["Body"].read() == data


def test_foreign_policy_per_bucket(
    stack: Stack,
    s3: Any,
    backend_s3: Any,
    new_bucket: Callable[..., str],
) -> None:
    readable, rejecting = new_bucket(), new_bucket()
    for name in (readable, rejecting):
        put_foreign(backend_s3, name, "doc", b"data")
    set_policy(stack, readable, "read")
    assert s3.get_object(Bucket=readable, Key="doc")["Body"].read() == b"data"
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=rejecting, Key="doc")
    assert error_of(error) == (403, "InvalidObjectState")

    set_policy(stack, readable, "refuse")
    with pytest.raises(ClientError) as error:
        s3.get_object(Bucket=readable, Key="doc")
    assert error_of(error) == (403, "InvalidObjectState")


def test_foreign_policy_keeps_proxy_objects(
    stack: Stack, s3: Any, backend_s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="sealed", Body=b"secret")
    set_policy(stack, bucket, "read")
    assert s3.get_object(Bucket=bucket, Key="sealed")["Body"].read() == b"secret"
    stored = backend_s3.get_object(Bucket=bucket, Key="sealed")["Body"].read()
    assert b"secret" not in stored


def test_foreign_listed_as_stored_and_recorded_once(
    stack: Stack, s3: Any, backend_s3: Any, bucket: str
) -> None:
    data = os.urandom(70_000)
    etag = put_foreign(backend_s3, bucket, "legacy", data)
    s3.put_object(Bucket=bucket, Key="sealed", Body=b"through the proxy")
    for _ in range(2):
        listed = {e["Key"]: e for e in s3.list_objects_v2(Bucket=bucket)["Contents"]}
        assert (listed["legacy"]["ETag"], listed["legacy"]["Size"]) == (etag, len(data))
        assert listed["sealed"]["Size"] == len(b"through the proxy")
    with sqlite3.connect(stack.data_dir / "catalogue.sqlite3") as db:
        rows = db.execute(
            "SELECT backend_etag, plaintext_size, header FROM objects "
            "WHERE bucket = ? AND key = 'legacy'",
            (bucket,),
        ).fetchall()
    assert rows == [(etag, len(data), b"")]


@pytest.mark.parametrize("policy", ["refuse", "read"])
def test_foreign_conditional_overwrite(
    stack: Stack, s3: Any, backend_s3: Any, bucket: str, policy: str
) -> None:
    etag = put_foreign(backend_s3, bucket, "doc", b"plain bytes")
    set_policy(stack, bucket, policy)

    with pytest.raises(ClientError) as error:
        s3.put_object(
            Bucket=bucket, Key="doc", Body=b"new", IfMatch='"' + "0" * 32 + '"'
        )
    assert error_of(error) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as error:
        s3.put_object(Bucket=bucket, Key="doc", Body=b"new", IfNoneMatch=etag)
    assert error_of(error) == (412, "PreconditionFailed")

    s3.put_object(Bucket=bucket, Key="doc", Body=b"encrypted now", IfMatch=etag)

    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"encrypted now"
    stored = backend_s3.get_object(Bucket=bucket, Key="doc")["Body"].read()
    assert b"encrypted now" not in stored
