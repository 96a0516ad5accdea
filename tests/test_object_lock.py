"""Object lock (WORM) settings pass through the proxy to the object store.

Each behaviour asserted here was first checked directly against SeaweedFS
4.48, which supports lock configurations, retention, legal holds and the
governance bypass, and rejects a locked delete with 403 AccessDenied.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import Stack, Tenant

LOCKED = {"ObjectLockEnabled": "Enabled"}


@pytest.fixture(scope="module")
def other_s3(stack: Stack) -> Any:
    other = stack.tenant("lock-other-" + secrets.token_hex(4))
    return stack.client(other, config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture
def locked_bucket(s3: Any) -> Iterator[str]:
    """A bucket created with object lock enabled, emptied of locks afterwards."""
    name = "locked-" + secrets.token_hex(6)
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    yield name
    _remove_locked_bucket(s3, name)


def _remove_locked_bucket(s3: Any, name: str) -> None:
    """Lift legal holds, delete every version past GOVERNANCE, then the bucket.

    A test that stores a COMPLIANCE version waits for its retention to end.
    """
    versions = s3.list_object_versions(Bucket=name)
    entries = versions.get("Versions", []) + versions.get("DeleteMarkers", [])
    keys = [{"Key": e["Key"], "VersionId": e["VersionId"]} for e in entries]
    for entry in versions.get("Versions", []):
        s3.put_object_legal_hold(
            Bucket=name,
            Key=entry["Key"],
            VersionId=entry["VersionId"],
            LegalHold={"Status": "OFF"},
        )
    if keys:
        answer = s3.delete_objects(
            Bucket=name, BypassGovernanceRetention=True, Delete={"Objects": keys}
        )
        assert answer.get("Errors", []) == []
    s3.delete_bucket(Bucket=name)


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _error(call: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(ClientError) as error:
        call()
    response = error.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def _put_locked(s3: Any, bucket: str, key: str, mode: str, until: datetime) -> str:
    answer = s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=b"locked plaintext",
        ObjectLockMode=mode,
        ObjectLockRetainUntilDate=until,
    )
    return str(answer["VersionId"])


def test_create_bucket_enables_lock(s3: Any, locked_bucket: str) -> None:
    configuration = s3.get_object_lock_configuration(Bucket=locked_bucket)
    assert configuration["ObjectLockConfiguration"] == LOCKED
    versioning = s3.get_bucket_versioning(Bucket=locked_bucket)
    assert versioning["Status"] == "Enabled"


def test_lock_configuration_default_retention(s3: Any, locked_bucket: str) -> None:
    rule = {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}
    s3.put_object_lock_configuration(
        Bucket=locked_bucket,
        ObjectLockConfiguration={**LOCKED, "Rule": rule},
    )
    configuration = s3.get_object_lock_configuration(Bucket=locked_bucket)
    assert configuration["ObjectLockConfiguration"]["Rule"] == rule
    s3.put_object(Bucket=locked_bucket, Key="defaulted", Body=b"x")
    head = s3.head_object(Bucket=locked_bucket, Key="defaulted")
    assert head["ObjectLockMode"] == "GOVERNANCE"


def test_lock_configuration_needs_locked_bucket(s3: Any, bucket: str) -> None:
    status, code = _error(lambda: s3.get_object_lock_configuration(Bucket=bucket))
    assert (status, code) == (404, "ObjectLockConfigurationNotFoundError")
    status, code = _error(
        lambda: s3.put_object_lock_configuration(
            Bucket=bucket, ObjectLockConfiguration=LOCKED
        )
    )
    assert (status, code) == (409, "InvalidBucketState")
    status, code = _error(lambda: _put_locked(s3, bucket, "k", "GOVERNANCE", _in(3600)))
    assert (status, code) == (400, "InvalidRequest")


def test_compliance_retention_blocks_delete(s3: Any, locked_bucket: str) -> None:
    until = _in(6)
    version = _put_locked(s3, locked_bucket, "kept", "COMPLIANCE", until)
    delete = partial(
        s3.delete_object, Bucket=locked_bucket, Key="kept", VersionId=version
    )
    try:
        head = s3.head_object(Bucket=locked_bucket, Key="kept")
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert abs(head["ObjectLockRetainUntilDate"] - until) < timedelta(seconds=1)
        got = s3.get_object(Bucket=locked_bucket, Key="kept")
        assert got["ObjectLockMode"] == "COMPLIANCE"
        assert got["Body"].read() == b"locked plaintext"
        retention = s3.get_object_retention(
            Bucket=locked_bucket, Key="kept", VersionId=version
        )
        assert retention["Retention"]["Mode"] == "COMPLIANCE"

        assert _error(delete) == (403, "AccessDenied")
        # the governance bypass does not lift COMPLIANCE retention
        bypassed = s3.delete_objects(
            Bucket=locked_bucket,
            BypassGovernanceRetention=True,
            Delete={"Objects": [{"Key": "kept", "VersionId": version}]},
        )
        assert [e["Code"] for e in bypassed["Errors"]] == ["AccessDenied"]
        still = s3.get_object(Bucket=locked_bucket, Key="kept", VersionId=version)
        assert still["Body"].read() == b"locked plaintext"
    finally:
        # the bucket can be removed only once the retention has ended
        time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1)
    delete()


def test_governance_retention_needs_bypass(s3: Any, locked_bucket: str) -> None:
    version = _put_locked(s3, locked_bucket, "governed", "GOVERNANCE", _in(86400))
    entry = {"Key": "governed", "VersionId": version}
    delete = partial(
        s3.delete_object, Bucket=locked_bucket, Key="governed", VersionId=version
    )
    assert _error(delete) == (403, "AccessDenied")

    rejected = s3.delete_objects(Bucket=locked_bucket, Delete={"Objects": [entry]})
    assert [e["Code"] for e in rejected["Errors"]] == ["AccessDenied"]

    bypassed = s3.delete_objects(
        Bucket=locked_bucket,
        BypassGovernanceRetention=True,
        Delete={"Objects": [entry]},
    )
    assert bypassed.get("Errors", []) == []
    assert [d["VersionId"] for d in bypassed["Deleted"]] == [version]


def test_delete_object_bypasses_governance(s3: Any, locked_bucket: str) -> None:
    version = _put_locked(s3, locked_bucket, "governed", "GOVERNANCE", _in(86400))
    s3.delete_object(
        Bucket=locked_bucket,
        Key="governed",
        VersionId=version,
        BypassGovernanceRetention=True,
    )


def test_retention_round_trip_by_version(s3: Any, locked_bucket: str) -> None:
    first = s3.put_object(Bucket=locked_bucket, Key="doc", Body=b"one")["VersionId"]
    s3.put_object(Bucket=locked_bucket, Key="doc", Body=b"two")
    until = _in(86400)
    s3.put_object_retention(
        Bucket=locked_bucket,
        Key="doc",
        VersionId=first,
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until},
    )
    retention = s3.get_object_retention(
        Bucket=locked_bucket, Key="doc", VersionId=first
    )["Retention"]
    assert retention["Mode"] == "GOVERNANCE"
    assert abs(retention["RetainUntilDate"] - until) < timedelta(seconds=1)
    latest = s3.head_object(Bucket=locked_bucket, Key="doc")
    assert "ObjectLockMode" not in latest

    shorter = {"Mode": "GOVERNANCE", "RetainUntilDate": _in(3600)}
    shorten = partial(
        s3.put_object_retention,
        Bucket=locked_bucket,
        Key="doc",
        VersionId=first,
        Retention=shorter,
    )
    assert _error(shorten) == (403, "AccessDenied")
    shorten(BypassGovernanceRetention=True)
    retention = s3.get_object_retention(
        Bucket=locked_bucket, Key="doc", VersionId=first
    )["Retention"]
    assert retention["RetainUntilDate"] < until - timedelta(hours=12)


def test_legal_hold_round_trip(s3: Any, locked_bucket: str) -> None:
    version = s3.put_object(Bucket=locked_bucket, Key="held", Body=b"evidence")[
        "VersionId"
    ]
    s3.put_object_legal_hold(
        Bucket=locked_bucket, Key="held", VersionId=version, LegalHold={"Status": "ON"}
    )
    hold = s3.get_object_legal_hold(Bucket=locked_bucket, Key="held")
    assert hold["LegalHold"] == {"Status": "ON"}
    head = s3.head_object(Bucket=locked_bucket, Key="held")
    assert head["ObjectLockLegalHoldStatus"] == "ON"

    delete = partial(
        s3.delete_object, Bucket=locked_bucket, Key="held", VersionId=version
    )
    assert _error(delete) == (403, "AccessDenied")
    s3.put_object_legal_hold(
        Bucket=locked_bucket,
        Key="held",
        VersionId=version,
        LegalHold={"Status": "OFF"},
    )
    delete()


def test_legal_hold_header_on_put(s3: Any, locked_bucket: str) -> None:
    s3.put_object(
        Bucket=locked_bucket, Key="held", Body=b"x", ObjectLockLegalHoldStatus="ON"
    )
    hold = s3.get_object_legal_hold(Bucket=locked_bucket, Key="held")
    assert hold["LegalHold"] == {"Status": "ON"}


def test_legal_hold_invalid_status(s3: Any, locked_bucket: str) -> None:
    s3.put_object(Bucket=locked_bucket, Key="k", Body=b"x")
    status, code = _error(
        lambda: s3.put_object_legal_hold(
            Bucket=locked_bucket, Key="k", LegalHold={"Status": "abc"}
        )
    )
    assert (status, code) == (400, "MalformedXML")


def test_multipart_upload_keeps_lock(s3: Any, locked_bucket: str) -> None:
    upload = s3.create_multipart_upload(
        Bucket=locked_bucket,
        Key="big",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=_in(86400),
    )
    part = s3.upload_part(
        Bucket=locked_bucket,
        Key="big",
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=b"part one",
    )
    s3.complete_multipart_upload(
        Bucket=locked_bucket,
        Key="big",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    head = s3.head_object(Bucket=locked_bucket, Key="big")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    got = s3.get_object(Bucket=locked_bucket, Key="big")["Body"].read()
    assert got == b"part one"


def test_copy_replace_keeps_lock(s3: Any, locked_bucket: str) -> None:
    s3.put_object(Bucket=locked_bucket, Key="source", Body=b"copied")
    s3.copy_object(
        Bucket=locked_bucket,
        Key="copy",
        CopySource={"Bucket": locked_bucket, "Key": "source"},
        MetadataDirective="REPLACE",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=_in(86400),
    )
    head = s3.head_object(Bucket=locked_bucket, Key="copy")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    got = s3.get_object(Bucket=locked_bucket, Key="copy")["Body"].read()
    assert got == b"copied"


def test_copy_keeps_lock(s3: Any, locked_bucket: str) -> None:
    s3.put_object(Bucket=locked_bucket, Key="source", Body=b"copied")
    s3.copy_object(
        Bucket=locked_bucket,
        Key="copy",
        CopySource={"Bucket": locked_bucket, "Key": "source"},
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=_in(86400),
    )
    head = s3.head_object(Bucket=locked_bucket, Key="copy")
    assert head["ObjectLockMode"] == "GOVERNANCE"


def test_locked_bucket_keeps_versioning(s3: Any, locked_bucket: str) -> None:
    status, code = _error(
        lambda: s3.put_bucket_versioning(
            Bucket=locked_bucket, VersioningConfiguration={"Status": "Suspended"}
        )
    )
    assert (status, code) == (409, "InvalidBucketState")


def _with_query(client: Any, operation: str, query: str) -> Any:
    """Append `query` to the URL of `operation` before the client signs it."""

    def add(request: Any, **kwargs: Any) -> None:
        separator = "&" if "?" in request.url else "?"
        request.url += separator + query

    client.meta.events.register(f"before-sign.s3.{operation}", add)
    return client


@pytest.mark.parametrize(
    ("operation", "query"),
    [
        ("GetObject", "object-lock"),
        ("GetObject", "publicAccessBlock"),
        ("ListObjects", "retention"),
        ("ListObjects", "legal-hold"),
    ],
)
def test_subresource_on_wrong_resource(
    stack: Stack,
    tenant: Tenant,
    s3: Any,
    locked_bucket: str,
    operation: str,
    query: str,
) -> None:
    s3.put_object(Bucket=locked_bucket, Key="k", Body=b"x")
    client = _with_query(stack.client(tenant), operation, query)
    call: Callable[[], object] = partial(client.list_objects, Bucket=locked_bucket)
    if operation == "GetObject":
        call = partial(client.get_object, Bucket=locked_bucket, Key="k")
    assert _error(call) == (405, "MethodNotAllowed")


def test_other_organisation_denied(s3: Any, other_s3: Any, locked_bucket: str) -> None:
    s3.put_object(Bucket=locked_bucket, Key="k", Body=b"x")
    calls: dict[str, Callable[[], object]] = {
        "get lock": lambda: other_s3.get_object_lock_configuration(
            Bucket=locked_bucket
        ),
        "put lock": lambda: other_s3.put_object_lock_configuration(
            Bucket=locked_bucket, ObjectLockConfiguration=LOCKED
        ),
        "get retention": lambda: other_s3.get_object_retention(
            Bucket=locked_bucket, Key="k"
        ),
        "put retention": lambda: other_s3.put_object_retention(
            Bucket=locked_bucket,
            Key="k",
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": _in(60)},
        ),
        "get legal hold": lambda: other_s3.get_object_legal_hold(
            Bucket=locked_bucket, Key="k"
        ),
        "put legal hold": lambda: other_s3.put_object_legal_hold(
            Bucket=locked_bucket, Key="k", LegalHold={"Status": "ON"}
        ),
    }
    for name, call in calls.items():
        assert _error(call) == (403, "AccessDenied"), name
    assert "ObjectLockMode" not in s3.head_object(Bucket=locked_bucket, Key="k")
