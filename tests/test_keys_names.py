"""Object keys that need escaping, through boto3 and the AWS CLI.

Each key is written, read, HEADed, listed and deleted under its own name.
The header binds an object to its key, so a key that the proxy decoded
differently from the client would fail to open.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from botocore.exceptions import ClientError

from tests.awscli_runner import AWS, AwsCli
from tests.conftest import Stack, Tenant
from tests.payloads import put_multipart

NAMES = [
    "with space",
    "two  spaces ",
    "plus+sign",
    "per%cent",
    "literal%2Fslash",
    "literal%20space",
    "tilde~",
    "eq=als&amp",
    "question?mark",
    "hash#tag",
    'double"quote',
    "single'quote",
    "semicolon;comma,at@dollar$",
    "brackets[]{}()<>",
    "star*bang!caret^pipe|backtick`",
    "colon:",
    "tab\tin key",
    "caf\u00e9",
    "\u65e5\u672c/\u8a9e/\u30d5\u30a1\u30a4\u30eb",
    "emoji \U0001f600\U0001f680",
    "nested/a/b/c/d/e",
    "-dash",
    ".dotfile",
    "..double-dot",
    "/".join(["long" + "x" * 196] * 4),
]


# SeaweedFS 4.48 stores these under another name or rejects them, so the
# proxy, which forwards keys unchanged, cannot round-trip them either.
def _backend_mangled(name: str, reason: str) -> Any:
    return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=reason))


_NORMALISED = "SeaweedFS 4.48 collapses '//' and turns '\\' into '/' in keys"
BACKEND_MANGLED = [
    _backend_mangled("/leading-slash", _NORMALISED),
    _backend_mangled("double//slash", _NORMALISED),
    _backend_mangled("back\\slash", _NORMALISED),
    _backend_mangled("dot/./segment", "SeaweedFS 4.48 rejects '.' path segments"),
    _backend_mangled(
        "z" * 300, "SeaweedFS 4.48 rejects a path segment longer than 255 bytes"
    ),
    _backend_mangled(
        "folder-marker/",
        "SeaweedFS 4.48 stores a key ending in '/' as a directory and drops "
        "its body and metadata",
    ),
]


def list_keys(s3: Any, bucket: str, prefix: str, **options: Any) -> list[str]:
    """Return the keys under `prefix` from every page of ListObjectsV2."""
    keys: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, **options):
        keys += [entry["Key"] for entry in page.get("Contents", [])]
    return keys


@pytest.fixture(scope="module")
def trip_bucket(s3: Any) -> str:
    """One bucket for all round trips, each under a prefix of its own.

    SeaweedFS gives each bucket volumes of its own, so a bucket per name
    would cost a volume per name.
    """
    name = "names-" + secrets.token_hex(6)
    s3.create_bucket(Bucket=name)
    return name


@pytest.mark.parametrize("name", NAMES + BACKEND_MANGLED)
def test_key_round_trip_boto3(s3: Any, trip_bucket: str, name: str) -> None:
    prefix = hashlib.sha256(name.encode()).hexdigest()[:12] + "/"
    key = prefix + name
    data = name.encode() + os.urandom(100)
    s3.put_object(Bucket=trip_bucket, Key=key, Body=data)

    got = s3.get_object(Bucket=trip_bucket, Key=key)["Body"].read()
    assert got == data
    head = s3.head_object(Bucket=trip_bucket, Key=key)
    assert head["ContentLength"] == len(data)
    assert list_keys(s3, trip_bucket, prefix) == [key]
    v1 = s3.list_objects(Bucket=trip_bucket, Prefix=prefix)["Contents"]
    assert [entry["Key"] for entry in v1] == [key]

    s3.delete_object(Bucket=trip_bucket, Key=key)
    with pytest.raises(ClientError) as error:
        s3.head_object(Bucket=trip_bucket, Key=key)
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert list_keys(s3, trip_bucket, prefix) == []


def test_key_listing_url_encoded(s3: Any, bucket: str) -> None:
    for name in NAMES:
        s3.put_object(Bucket=bucket, Key=f"names/{name}", Body=name.encode())
    expected = sorted(f"names/{name}" for name in NAMES)

    # botocore decodes keys only when it chose the encoding itself
    raw = list_keys(s3, bucket, "names/", EncodingType="url")
    assert sorted(unquote_plus(key) for key in raw) == expected
    assert sorted(list_keys(s3, bucket, "names/")) == expected
    sizes = {e["Key"]: e["Size"] for e in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert sizes == {f"names/{name}": len(name.encode()) for name in NAMES}


def test_key_delete_objects_batch(s3: Any, bucket: str) -> None:
    for name in NAMES:
        s3.put_object(Bucket=bucket, Key=f"names/{name}", Body=b"x")
    answer = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": f"names/{name}"} for name in NAMES]},
    )
    deleted = sorted(entry["Key"] for entry in answer["Deleted"])
    assert deleted == sorted(f"names/{name}" for name in NAMES)
    assert list_keys(s3, bucket, "names/") == []


def test_key_multipart_listing_url_encoded(s3: Any, bucket: str) -> None:
    # the listing's plaintext size of a multipart object comes from the
    # catalogue, found by the decoded key
    key = "names/multi part caf\u00e9+%"
    part = os.urandom(5 * 1024 * 1024)
    done = put_multipart(s3, bucket, key, [part, part])
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="names/")["Contents"]
    assert [(entry["Key"], entry["Size"]) for entry in listed] == [(key, 2 * len(part))]
    assert listed[0]["ETag"] == done["ETag"]


# AWS CLI


@pytest.fixture(scope="module")
def aws(
    stack: Stack, tenant: Tenant, tmp_path_factory: pytest.TempPathFactory
) -> AwsCli:
    if not AWS.exists():
        pytest.skip("the AWS CLI is not installed in the environment")
    return AwsCli(stack.proxy.url, tenant, tmp_path_factory.mktemp("aws-home"))


def test_key_cp_recursive_awscli(
    aws: AwsCli, s3: Any, bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "up"
    for name in NAMES:
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode() * 3)
    aws.run(
        "s3",
        "cp",
        "--recursive",
        "--only-show-errors",
        str(source),
        f"s3://{bucket}/cli",
    )

    expected = sorted(f"cli/{name}" for name in NAMES)
    assert sorted(list_keys(s3, bucket, "cli/")) == expected
    target = tmp_path / "down"
    aws.run(
        "s3",
        "cp",
        "--recursive",
        "--only-show-errors",
        f"s3://{bucket}/cli",
        str(target),
    )
    for name in NAMES:
        assert (target / name).read_bytes() == name.encode() * 3, name


def test_key_cp_single_awscli(
    aws: AwsCli, s3: Any, bucket: str, tmp_path: Path
) -> None:
    name = "r\u00e9sum\u00e9 #1 + notes & more?.txt"
    (tmp_path / "source").write_bytes(b"single file")
    aws.run(
        "s3",
        "cp",
        "--only-show-errors",
        str(tmp_path / "source"),
        f"s3://{bucket}/{name}",
    )
    assert list_keys(s3, bucket, "") == [name]
    aws.run(
        "s3",
        "cp",
        "--only-show-errors",
        f"s3://{bucket}/{name}",
        str(tmp_path / "copy"),
    )
    assert (tmp_path / "copy").read_bytes() == b"single file"
    listing = aws.run("s3", "ls", f"s3://{bucket}/").decode()
    assert listing.rstrip("\n").endswith(f" 11 {name}")
