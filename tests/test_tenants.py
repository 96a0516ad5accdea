"""Organisation isolation and the S3 error documents the proxy returns.

Tenant B has valid credentials of another organisation, and every request of
B on tenant A's bucket must fail with 403 AccessDenied. Error documents must
carry Code, Message and a RequestId equal to the x-amz-request-id header.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from defusedxml import ElementTree

from tests.conftest import Stack, Tenant
from tests.stack import start_proxy

Call = Callable[[Any, str], object]


@pytest.fixture(scope="module")
def other(stack: Stack) -> Tenant:
    return stack.tenant("other-" + secrets.token_hex(4))


@pytest.fixture(scope="module")
def other_s3(stack: Stack, other: Tenant) -> Any:
    return stack.client(other, config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture(scope="module")
def owned(s3: Any) -> str:
    """Tenant A's bucket with one object and one multipart upload in it.

    Every test of B on it must leave it unchanged, so the tests share it.
    """
    name = "owned-" + secrets.token_hex(6)
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="secret", Body=b"tenant A only")
    s3.create_multipart_upload(Bucket=name, Key="pending")
    return name


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    """One bucket for the error tests, which add no keys but "present".

    SeaweedFS gives each bucket volumes of its own, so a bucket per test
    costs a volume per test.
    """
    name = "errors-" + secrets.token_hex(6)
    s3.create_bucket(Bucket=name)
    return name


def upload_id(s3: Any, bucket: str) -> str:
    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    return str(uploads[0]["UploadId"])


def failure(call: Callable[[], object]) -> dict[str, Any]:
    with pytest.raises(ClientError) as error:
        call()
    response: dict[str, Any] = error.value.response
    return response


ISOLATED: dict[str, Call] = {
    "list v2": lambda c, b: c.list_objects_v2(Bucket=b),
    "list v1": lambda c, b: c.list_objects(Bucket=b),
    "get": lambda c, b: c.get_object(Bucket=b, Key="secret"),
    "get range": lambda c, b: c.get_object(Bucket=b, Key="secret", Range="bytes=0-3"),
    "put": lambda c, b: c.put_object(Bucket=b, Key="planted", Body=b"x"),
    "overwrite": lambda c, b: c.put_object(Bucket=b, Key="secret", Body=b"x"),
    "delete": lambda c, b: c.delete_object(Bucket=b, Key="secret"),
    "delete objects": lambda c, b: c.delete_objects(
        Bucket=b, Delete={"Objects": [{"Key": "secret"}]}
    ),
    "delete bucket": lambda c, b: c.delete_bucket(Bucket=b),
    "create upload": lambda c, b: c.create_multipart_upload(Bucket=b, Key="x"),
    "list uploads": lambda c, b: c.list_multipart_uploads(Bucket=b),
    "location": lambda c, b: c.get_bucket_location(Bucket=b),
    "versioning": lambda c, b: c.get_bucket_versioning(Bucket=b),
}


@pytest.mark.parametrize("operation", ISOLATED)
def test_isolation_denied(s3: Any, other_s3: Any, owned: str, operation: str) -> None:
    response = failure(lambda: ISOLATED[operation](other_s3, owned))
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert response["Error"]["Code"] == "AccessDenied"
    got = s3.get_object(Bucket=owned, Key="secret")["Body"].read()
    assert got == b"tenant A only"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=owned)["Contents"]]
    assert keys == ["secret"]


@pytest.mark.parametrize("operation", ["head object", "head bucket"])
def test_isolation_head_denied(other_s3: Any, owned: str, operation: str) -> None:
    if operation == "head object":
        response = failure(lambda: other_s3.head_object(Bucket=owned, Key="secret"))
    else:
        response = failure(lambda: other_s3.head_bucket(Bucket=owned))
    # a HEAD error has no body, so botocore reports the status as the code
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert response["Error"]["Code"] == "403"


UPLOAD_CALLS: dict[str, Callable[[Any, str, str], object]] = {
    "upload part": lambda c, b, u: c.upload_part(
        Bucket=b, Key="pending", UploadId=u, PartNumber=1, Body=b"x"
    ),
    "list parts": lambda c, b, u: c.list_parts(Bucket=b, Key="pending", UploadId=u),
    "complete": lambda c, b, u: c.complete_multipart_upload(
        Bucket=b,
        Key="pending",
        UploadId=u,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"0"'}]},
    ),
    "abort": lambda c, b, u: c.abort_multipart_upload(
        Bucket=b, Key="pending", UploadId=u
    ),
}


@pytest.mark.parametrize("operation", UPLOAD_CALLS)
def test_isolation_upload_denied(
    s3: Any, other_s3: Any, owned: str, operation: str
) -> None:
    uploaded = upload_id(s3, owned)
    response = failure(lambda: UPLOAD_CALLS[operation](other_s3, owned, uploaded))
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert response["Error"]["Code"] == "AccessDenied"
    assert upload_id(s3, owned) == uploaded


def test_isolation_list_buckets_own_only(s3: Any, other_s3: Any, owned: str) -> None:
    mine = "other-bucket-" + secrets.token_hex(4)
    other_s3.create_bucket(Bucket=mine)
    other_names = [b["Name"] for b in other_s3.list_buckets()["Buckets"]]
    assert other_names == [mine]
    own_names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert owned in own_names
    assert mine not in own_names


def test_isolation_create_taken_bucket(other_s3: Any, owned: str) -> None:
    response = failure(lambda: other_s3.create_bucket(Bucket=owned))
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert response["Error"]["Code"] == "BucketAlreadyExists"


def test_create_own_bucket_again(s3: Any, bucket: str) -> None:
    response = failure(lambda: s3.create_bucket(Bucket=bucket))
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert response["Error"]["Code"] == "BucketAlreadyOwnedByYou"


# error documents


class RawResponses:
    """Keeps the last raw response a botocore client received."""

    def __init__(self, client: Any) -> None:
        self.last: dict[str, Any] = {}
        client.meta.events.register("before-parse.s3.*", self._keep)

    def _keep(self, response_dict: dict[str, Any], **_: Any) -> None:
        self.last = response_dict


def client_with_raw(stack: Stack, tenant: Tenant) -> tuple[Any, RawResponses]:
    client = stack.client(tenant, config=Config(retries={"total_max_attempts": 1}))
    return client, RawResponses(client)


def _unknown_key(tenant: Tenant) -> Tenant:
    return Tenant(tenant.name, "BYOK" + "A" * 16, tenant.secret_access_key)


def _wrong_secret(tenant: Tenant) -> Tenant:
    return Tenant(tenant.name, tenant.access_key_id, "x" * 40)


ERRORS: dict[str, tuple[Call, int, str]] = {
    "no such key": (
        lambda c, b: c.get_object(Bucket=b, Key="missing"),
        404,
        "NoSuchKey",
    ),
    "no such bucket": (
        lambda c, b: c.list_objects_v2(Bucket="missing-" + b),
        404,
        "NoSuchBucket",
    ),
    "invalid range": (
        lambda c, b: c.get_object(Bucket=b, Key="present", Range="bytes=100-200"),
        416,
        "InvalidRange",
    ),
    "precondition": (
        lambda c, b: c.get_object(Bucket=b, Key="present", IfMatch='"0"'),
        412,
        "PreconditionFailed",
    ),
    "bucket not empty": (
        lambda c, b: c.delete_bucket(Bucket=b),
        409,
        "BucketNotEmpty",
    ),
    "invalid bucket name": (
        lambda c, b: c.create_bucket(Bucket="Not_Valid"),
        400,
        "InvalidBucketName",
    ),
    "no such upload": (
        lambda c, b: c.list_parts(Bucket=b, Key="present", UploadId="missing"),
        404,
        "NoSuchUpload",
    ),
    "cors not implemented": (
        lambda c, b: c.get_bucket_cors(Bucket=b),
        501,
        "NotImplemented",
    ),
    "reserved metadata": (
        lambda c, b: c.put_object(
            Bucket=b, Key="meta", Body=b"x", Metadata={"byok-header": "x"}
        ),
        400,
        "InvalidArgument",
    ),
}


@pytest.mark.parametrize("case", ERRORS)
def test_error_document(
    stack: Stack, tenant: Tenant, s3: Any, bucket: str, case: str
) -> None:
    s3.put_object(Bucket=bucket, Key="present", Body=b"0123456789")
    client, raw = client_with_raw(stack, tenant)
    call, status, code = ERRORS[case]

    response = failure(lambda: call(client, bucket))

    header_id = raw.last["headers"]["x-amz-request-id"]
    document = ElementTree.fromstring(raw.last["body"])
    assert raw.last["status_code"] == status
    assert document.tag == "Error"
    assert document.findtext("Code") == code
    assert document.findtext("Message")
    assert document.findtext("RequestId") == header_id
    assert response["Error"]["Code"] == code
    assert response["ResponseMetadata"]["RequestId"] == header_id


@pytest.mark.parametrize(
    ("credentials", "code"),
    [(_unknown_key, "InvalidAccessKeyId"), (_wrong_secret, "SignatureDoesNotMatch")],
)
def test_error_document_authentication(
    stack: Stack,
    tenant: Tenant,
    bucket: str,
    credentials: Callable[[Tenant], Tenant],
    code: str,
) -> None:
    client, raw = client_with_raw(stack, credentials(tenant))

    response = failure(lambda: client.list_objects_v2(Bucket=bucket))

    header_id = raw.last["headers"]["x-amz-request-id"]
    document = ElementTree.fromstring(raw.last["body"])
    assert raw.last["status_code"] == 403
    assert document.findtext("Code") == code
    assert document.findtext("Message")
    assert document.findtext("RequestId") == header_id
    assert response["ResponseMetadata"]["RequestId"] == header_id


def test_error_head_request_id(stack: Stack, tenant: Tenant, bucket: str) -> None:
    client, raw = client_with_raw(stack, tenant)
    response = failure(lambda: client.head_object(Bucket=bucket, Key="missing"))
    header_id = raw.last["headers"]["x-amz-request-id"]
    assert raw.last["status_code"] == 404
    assert raw.last["body"] == b""
    assert response["ResponseMetadata"]["RequestId"] == header_id


def test_error_request_ids_differ(stack: Stack, tenant: Tenant, bucket: str) -> None:
    client, raw = client_with_raw(stack, tenant)
    seen = set()
    for _ in range(5):
        failure(lambda: client.get_object(Bucket=bucket, Key="missing"))
        seen.add(raw.last["headers"]["x-amz-request-id"])
    assert len(seen) == 5


def test_wrong_upstream_secret_blames_proxy(
    stack: Stack, tenant: Tenant, tmp_path: Path
) -> None:
    proxy = start_proxy(
        stack.data_dir,
        stack.backend,
        tmp_path / "proxy.log",
        extra_env={"BYOK_PROXY_UPSTREAM_SECRET_KEY": "not-the-secret"},
    )
    try:
        client = stack.client(tenant, url=proxy.url)
        with pytest.raises(ClientError) as error:
            client.list_buckets()
    finally:
        proxy.stop()
    response = error.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 502
    assert response["Error"]["Code"] == "InternalError"
    assert "proxy's own credentials" in response["Error"]["Message"]
    log = (tmp_path / "proxy.log").read_text()
    assert "upstream.check_failed" in log
    assert "upstream.rejected_credentials" in log
