"""DeleteObjects: per-object ETag, Size and LastModifiedTime on plaintext."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import Stack, Tenant
from tests.payloads import put_multipart
from tests.test_versions import enable_versioning

WRONG_ETAG = '"00000000000000000000000000000000"'


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def exists(s3: Any, bucket: str, key: str, version: str | None = None) -> bool:
    extra = {} if version is None else {"VersionId": version}
    try:
        s3.head_object(Bucket=bucket, Key=key, **extra)
    except ClientError as error:
        if error.response["ResponseMetadata"]["HTTPStatusCode"] in (404, 405):
            return False
        raise
    return True


def errors_by_key(result: dict[str, Any]) -> dict[str, str]:
    return {e["Key"]: e["Code"] for e in result.get("Errors", [])}


def deleted_keys(result: dict[str, Any]) -> set[str]:
    return {d["Key"] for d in result.get("Deleted", [])}


def post_delete(
    stack: Stack, tenant: Tenant, bucket: str, body: bytes, *, digest: bool = True
) -> tuple[int, str]:
    """POST ?delete with a raw body, signed; return the status and error code."""
    url = f"{stack.proxy.url}/{bucket}?delete"
    headers = {"Content-Type": "application/xml"}
    if digest:
        headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    credentials = Credentials(tenant.access_key_id, tenant.secret_access_key)
    S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, 60)
    try:
        connection.request(
            "POST", f"{parts.path}?{parts.query}", body, dict(request.headers)
        )
        response = connection.getresponse()
        status, data = response.status, response.read()
    finally:
        connection.close()
    code = ""
    if status >= 300:
        code = ElementTree.fromstring(data).findtext("Code") or ""
    return status, code


def test_bulk_delete_etag_match(s3: Any, bucket: str) -> None:
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"hello")["ETag"]
    assert etag == md5_etag(b"hello")
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "k", "ETag": etag}]}
    )
    assert deleted_keys(result) == {"k"}
    assert errors_by_key(result) == {}
    assert not exists(s3, bucket, "k")


def test_bulk_delete_etag_mismatch(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"hello")
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "k", "ETag": WRONG_ETAG}]}
    )
    assert errors_by_key(result) == {"k": "PreconditionFailed"}
    assert deleted_keys(result) == set()
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"hello"


def test_bulk_delete_stored_etag_mismatch(
    s3: Any, backend_s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"hello")
    stored_etag = backend_s3.head_object(Bucket=bucket, Key="k")["ETag"]
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "k", "ETag": stored_etag}]}
    )
    assert errors_by_key(result) == {"k": "PreconditionFailed"}
    assert exists(s3, bucket, "k")


def test_bulk_delete_mixed(s3: Any, bucket: str) -> None:
    etags = {
        key: s3.put_object(Bucket=bucket, Key=key, Body=key.encode())["ETag"]
        for key in ("match", "mismatch", "plain")
    }
    objects = [
        {"Key": "match", "ETag": etags["match"]},
        {"Key": "mismatch", "ETag": etags["match"]},
        {"Key": "plain"},
        {"Key": "missing", "ETag": WRONG_ETAG},
    ]
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
    assert deleted_keys(result) == {"match", "plain"}
    # the object store decides about a conditional delete of a missing key,
    # and SeaweedFS returns NoSuchKey, as AWS S3 does
    assert errors_by_key(result) == {
        "mismatch": "PreconditionFailed",
        "missing": "NoSuchKey",
    }
    assert not exists(s3, bucket, "match")
    assert not exists(s3, bucket, "plain")
    assert s3.get_object(Bucket=bucket, Key="mismatch")["Body"].read() == b"mismatch"


def test_bulk_delete_etag_any(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="present", Body=b"x")
    objects = [{"Key": "present", "ETag": "*"}, {"Key": "absent", "ETag": "*"}]
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
    assert deleted_keys(result) == {"present"}
    assert errors_by_key(result) == {"absent": "NoSuchKey"}
    assert not exists(s3, bucket, "present")


def test_bulk_delete_multipart_etag(s3: Any, bucket: str) -> None:
    etag = put_multipart(s3, bucket, "mp", [os.urandom(5 * 1024 * 1024), b"end"])[
        "ETag"
    ]
    assert etag.endswith('-2"')
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "mp", "ETag": etag}]}
    )
    assert deleted_keys(result) == {"mp"}
    assert not exists(s3, bucket, "mp")


def test_bulk_delete_size(s3: Any, backend_s3: Any, bucket: str) -> None:
    for key in ("plaintext", "stored"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"12345")
    stored_size = backend_s3.head_object(Bucket=bucket, Key="stored")["ContentLength"]
    assert stored_size != 5
    objects = [{"Key": "plaintext", "Size": 5}, {"Key": "stored", "Size": stored_size}]
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
    assert deleted_keys(result) == {"plaintext"}
    assert errors_by_key(result) == {"stored": "PreconditionFailed"}
    assert not exists(s3, bucket, "plaintext")
    assert exists(s3, bucket, "stored")


def test_bulk_delete_last_modified(s3: Any, bucket: str) -> None:
    for key in ("current", "old"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    modified = s3.head_object(Bucket=bucket, Key="current")["LastModified"]
    objects = [
        {"Key": "current", "LastModifiedTime": modified},
        {"Key": "old", "LastModifiedTime": datetime(2015, 1, 1, tzinfo=UTC)},
    ]
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
    assert deleted_keys(result) == {"current"}
    assert errors_by_key(result) == {"old": "PreconditionFailed"}
    assert exists(s3, bucket, "old")


def test_bulk_delete_version_etag(s3: Any, bucket: str) -> None:
    enable_versioning(s3, bucket)
    first = s3.put_object(Bucket=bucket, Key="doc", Body=b"first")
    second = s3.put_object(Bucket=bucket, Key="doc", Body=b"second")
    mismatch = {"Key": "doc", "VersionId": second["VersionId"], "ETag": first["ETag"]}
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [mismatch]})
    assert errors_by_key(result) == {"doc": "PreconditionFailed"}
    assert exists(s3, bucket, "doc", second["VersionId"])

    match = {"Key": "doc", "VersionId": first["VersionId"], "ETag": first["ETag"]}
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [match]})
    assert [d.get("VersionId") for d in result["Deleted"]] == [first["VersionId"]]
    assert "DeleteMarker" not in result["Deleted"][0]
    assert not exists(s3, bucket, "doc", first["VersionId"])
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"second"


def test_bulk_delete_current_version_etag(s3: Any, bucket: str) -> None:
    enable_versioning(s3, bucket)
    etag = s3.put_object(Bucket=bucket, Key="doc", Body=b"data")["ETag"]
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "doc", "ETag": etag}]}
    )
    assert deleted_keys(result) == {"doc"}
    assert result["Deleted"][0]["DeleteMarker"] is True

    # The current version is now a delete marker, which has no ETag. The
    # object store decides, and SeaweedFS returns NoSuchKey.
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "doc", "ETag": etag}]}
    )
    assert errors_by_key(result) == {"doc": "NoSuchKey"}
    markers = s3.list_object_versions(Bucket=bucket)["DeleteMarkers"]
    assert len(markers) == 1


def test_bulk_delete_quiet(s3: Any, bucket: str) -> None:
    etags = {
        key: s3.put_object(Bucket=bucket, Key=key, Body=key.encode())["ETag"]
        for key in ("match", "mismatch", "plain")
    }
    objects = [
        {"Key": "match", "ETag": etags["match"]},
        {"Key": "mismatch", "ETag": WRONG_ETAG},
        {"Key": "plain"},
        {"Key": "missing", "ETag": WRONG_ETAG},
    ]
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": objects, "Quiet": True}
    )
    assert "Deleted" not in result
    assert errors_by_key(result) == {
        "mismatch": "PreconditionFailed",
        "missing": "NoSuchKey",
    }
    assert not exists(s3, bucket, "match")
    assert not exists(s3, bucket, "plain")
    assert exists(s3, bucket, "mismatch")


def test_bulk_delete_quiet_all_local(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="kept", Body=b"x")
    objects = [{"Key": "kept", "ETag": WRONG_ETAG}, {"Key": "kept", "Size": 2}]
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": objects, "Quiet": True}
    )
    assert "Deleted" not in result
    assert [e["Code"] for e in result["Errors"]] == ["PreconditionFailed"] * 2
    assert exists(s3, bucket, "kept")


def test_bulk_delete_missing_size_only(s3: Any, bucket: str) -> None:
    # a Size-only condition on a missing key must not become an unconditional
    # delete, which in a versioned bucket would add a delete marker
    enable_versioning(s3, bucket)
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "missing", "Size": 1}]}
    )
    assert deleted_keys(result) == set()
    assert "DeleteMarkers" not in s3.list_object_versions(Bucket=bucket)


def test_bulk_delete_foreign_object(s3: Any, backend_s3: Any, bucket: str) -> None:
    etag = backend_s3.put_object(Bucket=bucket, Key="foreign", Body=b"raw")["ETag"]
    result = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": "foreign", "ETag": WRONG_ETAG}]},
    )
    assert errors_by_key(result) == {"foreign": "PreconditionFailed"}
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "foreign", "ETag": etag}]}
    )
    assert deleted_keys(result) == {"foreign"}
    assert backend_s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []


def test_bulk_delete_thousand_keys(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="key-0", Body=b"x")
    objects = [{"Key": f"key-{i}"} for i in range(1000)]
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": objects, "Quiet": True}
    )
    assert "Errors" not in result
    assert not exists(s3, bucket, "key-0")


@pytest.mark.parametrize("conditional", [False, True])
def test_bulk_delete_over_limit(s3: Any, bucket: str, conditional: bool) -> None:
    s3.put_object(Bucket=bucket, Key="key-0", Body=b"x")
    objects: list[dict[str, Any]] = [{"Key": f"key-{i}"} for i in range(1001)]
    if conditional:
        objects[0]["ETag"] = md5_etag(b"x")
    with pytest.raises(ClientError) as error:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error.value.response["Error"]["Code"] == "MalformedXML"
    assert exists(s3, bucket, "key-0")


MALFORMED = {
    "not_xml": b"this is not xml",
    "wrong_root": b"<Remove><Object><Key>k</Key></Object></Remove>",
    "no_objects": b"<Delete><Quiet>true</Quiet></Delete>",
    "no_key": b"<Delete><Object><ETag>x</ETag></Object></Delete>",
    "empty_key": b"<Delete><Object><Key></Key></Object></Delete>",
    "bad_quiet": b"<Delete><Quiet>maybe</Quiet><Object><Key>k</Key></Object></Delete>",
    "bad_size": b"<Delete><Object><Key>k</Key><Size>five</Size></Object></Delete>",
    "bad_time": (
        b"<Delete><Object><Key>k</Key>"
        b"<LastModifiedTime>yesterday</LastModifiedTime></Object></Delete>"
    ),
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_bulk_delete_malformed_xml(
    stack: Stack, tenant: Tenant, s3: Any, bucket: str, body: bytes
) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"kept")
    status, code = post_delete(stack, tenant, bucket, body)
    assert status == 400
    assert code == "MalformedXML"
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"kept"


def test_bulk_delete_requires_digest(
    stack: Stack, tenant: Tenant, s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"kept")
    body = b"<Delete><Object><Key>k</Key></Object></Delete>"
    status, code = post_delete(stack, tenant, bucket, body, digest=False)
    assert status == 400
    assert code == "InvalidRequest"
    assert exists(s3, bucket, "k")
    status, code = post_delete(stack, tenant, bucket, body)
    assert status == 200
    assert not exists(s3, bucket, "k")
