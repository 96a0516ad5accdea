"""Versioned buckets: every version stays readable under its own header."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from tests.payloads import put_multipart


def enable_versioning(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    status = s3.get_bucket_versioning(Bucket=bucket)["Status"]
    assert status == "Enabled"


def test_versions_read_each(s3: Any, bucket: str) -> None:
    enable_versioning(s3, bucket)
    first = s3.put_object(Bucket=bucket, Key="doc", Body=b"first version")
    second = s3.put_object(Bucket=bucket, Key="doc", Body=b"second, longer version")
    old = s3.get_object(Bucket=bucket, Key="doc", VersionId=first["VersionId"])
    assert old["Body"].read() == b"first version"
    assert old["ETag"] == f'"{hashlib.md5(b"first version").hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == (
        b"second, longer version"
    )
    head = s3.head_object(Bucket=bucket, Key="doc", VersionId=second["VersionId"])
    assert head["ContentLength"] == len(b"second, longer version")


def test_versions_listing_plaintext(s3: Any, bucket: str) -> None:
    enable_versioning(s3, bucket)
    bodies = [b"a" * 10, os.urandom(70000)]
    for body in bodies:
        s3.put_object(Bucket=bucket, Key="listed", Body=body)
    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    sizes = sorted(v["Size"] for v in versions)
    assert sizes == sorted(len(b) for b in bodies)
    etags = {v["ETag"] for v in versions}
    assert etags == {f'"{hashlib.md5(b).hexdigest()}"' for b in bodies}


def test_versions_survive_delete(s3: Any, bucket: str) -> None:
    enable_versioning(s3, bucket)
    parts = [os.urandom(5 * 1024 * 1024), os.urandom(100)]
    put_multipart(s3, bucket, "kept", parts)
    version = s3.head_object(Bucket=bucket, Key="kept")["VersionId"]
    marker = s3.delete_object(Bucket=bucket, Key="kept")
    assert marker["DeleteMarker"] is True
    got = s3.get_object(Bucket=bucket, Key="kept", VersionId=version)
    assert got["Body"].read() == b"".join(parts)
    s3.delete_object(Bucket=bucket, Key="kept", VersionId=marker["VersionId"])
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"".join(parts)
