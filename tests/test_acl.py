"""ACL requests behave as on S3 with object ownership BucketOwnerEnforced.

Reads return the owning organisation with FULL_CONTROL. Writes that grant
the owner full control and nothing else succeed. Any other ACL fails with
400 AccessControlListNotSupported, and an unknown canned ACL with 400
InvalidArgument.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import Stack, Tenant
from tests.stack import byok

NOT_SUPPORTED = (400, "AccessControlListNotSupported")
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


@pytest.fixture(scope="module")
def org_id(stack: Stack, tenant: Tenant) -> str:
    """The tenant's organisation id in hexadecimal, from `org list`."""
    for line in byok(stack.data_dir, "org", "list").splitlines():
        name, _, hex_id, _ = line.split("\t")
        if name == tenant.name:
            return hex_id
    raise AssertionError(f"organisation {tenant.name} is not listed")


@pytest.fixture(scope="module")
def other_s3(stack: Stack) -> Any:
    other = stack.tenant("acl-other-" + secrets.token_hex(4))
    return stack.client(other, config=Config(retries={"total_max_attempts": 1}))


def _error(call: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(ClientError) as error:
        call()
    response = error.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def _owner_only(org_id: str, name: str) -> dict[str, Any]:
    owner = {"DisplayName": name, "ID": org_id}
    grantee = {**owner, "Type": "CanonicalUser"}
    return {
        "Owner": owner,
        "Grants": [{"Grantee": grantee, "Permission": "FULL_CONTROL"}],
    }


def _acl(answer: dict[str, Any]) -> dict[str, Any]:
    return {"Owner": answer["Owner"], "Grants": answer["Grants"]}


def _with_headers(client: Any, operation: str, headers: dict[str, str]) -> Any:
    """Set `headers` on every `operation` call of `client`, as s3-tests does."""

    def add(params: dict[str, Any], **kwargs: Any) -> None:
        params["headers"].update(headers)

    client.meta.events.register(f"before-call.s3.{operation}", add)
    return client


def test_bucket_acl_owner_only(
    s3: Any, tenant: Tenant, org_id: str, bucket: str
) -> None:
    answer = s3.get_bucket_acl(Bucket=bucket)
    assert _acl(answer) == _owner_only(org_id, tenant.name)


def test_object_acl_owner_only(
    s3: Any, tenant: Tenant, org_id: str, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    answer = s3.get_object_acl(Bucket=bucket, Key="k")
    assert _acl(answer) == _owner_only(org_id, tenant.name)


def test_object_acl_missing_object(s3: Any, bucket: str) -> None:
    get = partial(s3.get_object_acl, Bucket=bucket, Key="missing")
    assert _error(get) == (404, "NoSuchKey")
    put = partial(s3.put_object_acl, Bucket=bucket, Key="missing", ACL="private")
    assert _error(put) == (404, "NoSuchKey")


def test_object_acl_deleted_object(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    version = s3.put_object(Bucket=bucket, Key="gone", Body=b"x")["VersionId"]
    s3.delete_object(Bucket=bucket, Key="gone")
    get = partial(s3.get_object_acl, Bucket=bucket, Key="gone")
    assert _error(get) == (404, "NoSuchKey")
    answer = s3.get_object_acl(Bucket=bucket, Key="gone", VersionId=version)
    assert answer["Grants"][0]["Permission"] == "FULL_CONTROL"


@pytest.mark.parametrize("canned", ["private", "bucket-owner-full-control"])
def test_put_acl_owner_only_canned(
    s3: Any, tenant: Tenant, org_id: str, bucket: str, canned: str
) -> None:
    s3.put_bucket_acl(Bucket=bucket, ACL=canned)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    s3.put_object_acl(Bucket=bucket, Key="k", ACL=canned)
    assert _acl(s3.get_bucket_acl(Bucket=bucket)) == _owner_only(org_id, tenant.name)


def test_put_acl_round_trip(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    policy = _acl(s3.get_bucket_acl(Bucket=bucket))
    s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy=policy)
    s3.put_object_acl(Bucket=bucket, Key="k", AccessControlPolicy=policy)


@pytest.mark.parametrize(
    "canned", ["public-read", "public-read-write", "authenticated-read"]
)
def test_put_acl_rejects_canned(s3: Any, bucket: str, canned: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    put_bucket = partial(s3.put_bucket_acl, Bucket=bucket, ACL=canned)
    assert _error(put_bucket) == NOT_SUPPORTED
    put_object = partial(s3.put_object_acl, Bucket=bucket, Key="k", ACL=canned)
    assert _error(put_object) == NOT_SUPPORTED


def test_put_acl_rejects_grant_headers(s3: Any, org_id: str, bucket: str) -> None:
    grants = {
        "GrantRead": f"uri={ALL_USERS}",
        "GrantFullControl": f"id={org_id}",
    }
    for name, value in grants.items():
        put = partial(s3.put_bucket_acl, Bucket=bucket, **{name: value})
        assert _error(put) == NOT_SUPPORTED, name


def test_put_acl_rejects_other_grants(
    s3: Any, tenant: Tenant, org_id: str, bucket: str
) -> None:
    policy = _owner_only(org_id, tenant.name)
    public = {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"}
    other = {
        "Grantee": {"Type": "CanonicalUser", "ID": "0" * 32},
        "Permission": "FULL_CONTROL",
    }
    owner_read = {
        "Grantee": {"Type": "CanonicalUser", "ID": org_id},
        "Permission": "READ",
    }
    for grant in (public, other, owner_read):
        changed = {**policy, "Grants": [*policy["Grants"], grant]}
        put = partial(s3.put_bucket_acl, Bucket=bucket, AccessControlPolicy=changed)
        assert _error(put) == NOT_SUPPORTED, grant
    empty = {**policy, "Grants": []}
    put = partial(s3.put_bucket_acl, Bucket=bucket, AccessControlPolicy=empty)
    assert _error(put) == NOT_SUPPORTED


def test_put_acl_bad_canned(stack: Stack, tenant: Tenant, bucket: str) -> None:
    client = _with_headers(
        stack.client(tenant), "PutBucketAcl", {"x-amz-acl": "public-ready"}
    )
    put = partial(client.put_bucket_acl, Bucket=bucket, ACL="public-read")
    assert _error(put) == (400, "InvalidArgument")


def test_put_acl_needs_acl(s3: Any, bucket: str) -> None:
    put = partial(s3.put_bucket_acl, Bucket=bucket)
    assert _error(put) == (400, "MissingSecurityHeader")


def test_put_acl_malformed_policy(stack: Stack, tenant: Tenant, bucket: str) -> None:
    client = stack.client(tenant)

    def replace_body(params: dict[str, Any], **kwargs: Any) -> None:
        params["body"] = b"<AccessControlPolicy><Owner>"

    # first, so that the checksum botocore adds covers the replaced body
    client.meta.events.register_first("before-call.s3.PutBucketAcl", replace_body)
    put = partial(
        client.put_bucket_acl,
        Bucket=bucket,
        AccessControlPolicy={"Owner": {"ID": "x"}, "Grants": []},
    )
    assert _error(put) == (400, "MalformedACLError")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"ACL": "public-read"}, NOT_SUPPORTED),
        ({"ACL": "bucket-owner-read"}, NOT_SUPPORTED),
        ({"GrantRead": f"uri={ALL_USERS}"}, NOT_SUPPORTED),
        ({"ObjectOwnership": "ObjectWriter"}, (501, "NotImplemented")),
    ],
)
def test_create_bucket_rejects_acl(
    s3: Any, options: dict[str, str], expected: tuple[int, str]
) -> None:
    name = "acl-" + secrets.token_hex(6)
    create = partial(s3.create_bucket, Bucket=name, **options)
    assert _error(create) == expected
    assert _error(partial(s3.head_bucket, Bucket=name)) == (404, "404")


def test_create_bucket_owner_only(s3: Any, tenant: Tenant, org_id: str) -> None:
    name = "acl-" + secrets.token_hex(6)
    s3.create_bucket(Bucket=name, ACL="private", ObjectOwnership="BucketOwnerEnforced")
    try:
        assert _acl(s3.get_bucket_acl(Bucket=name)) == _owner_only(org_id, tenant.name)
    finally:
        s3.delete_bucket(Bucket=name)


@pytest.mark.parametrize(
    "options",
    [
        {"ACL": "public-read"},
        {"ACL": "authenticated-read"},
        {"GrantRead": f"uri={ALL_USERS}"},
    ],
)
def test_object_writes_reject_acl(
    s3: Any, bucket: str, options: dict[str, str]
) -> None:
    put = partial(s3.put_object, Bucket=bucket, Key="k", Body=b"x", **options)
    assert _error(put) == NOT_SUPPORTED
    assert _error(partial(s3.head_object, Bucket=bucket, Key="k")) == (404, "404")
    upload = partial(s3.create_multipart_upload, Bucket=bucket, Key="k", **options)
    assert _error(upload) == NOT_SUPPORTED
    s3.put_object(Bucket=bucket, Key="source", Body=b"x")
    for directive in ("COPY", "REPLACE"):
        copy = partial(
            s3.copy_object,
            Bucket=bucket,
            Key="copy",
            CopySource={"Bucket": bucket, "Key": "source"},
            MetadataDirective=directive,
            **options,
        )
        assert _error(copy) == NOT_SUPPORTED, directive
    assert _error(partial(s3.head_object, Bucket=bucket, Key="copy")) == (404, "404")


@pytest.mark.parametrize("canned", ["private", "bucket-owner-full-control"])
def test_object_writes_accept_owner_only(s3: Any, bucket: str, canned: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", ACL=canned)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"
    s3.copy_object(
        Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k"}, ACL=canned
    )
    assert s3.get_object(Bucket=bucket, Key="copy")["Body"].read() == b"x"


def test_object_write_bad_canned_acl(stack: Stack, tenant: Tenant, bucket: str) -> None:
    client = _with_headers(
        stack.client(tenant), "PutObject", {"x-amz-acl": "public-ready"}
    )
    put = partial(client.put_object, Bucket=bucket, Key="k", Body=b"x")
    assert _error(put) == (400, "InvalidArgument")


def test_ownership_controls(s3: Any, bucket: str) -> None:
    enforced = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    answer = s3.get_bucket_ownership_controls(Bucket=bucket)
    assert answer["OwnershipControls"] == enforced
    s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=enforced)
    writer = {"Rules": [{"ObjectOwnership": "ObjectWriter"}]}
    put = partial(
        s3.put_bucket_ownership_controls, Bucket=bucket, OwnershipControls=writer
    )
    assert _error(put) == (501, "NotImplemented")
    delete = partial(s3.delete_bucket_ownership_controls, Bucket=bucket)
    assert _error(delete) == (501, "NotImplemented")
    answer = s3.get_bucket_ownership_controls(Bucket=bucket)
    assert answer["OwnershipControls"] == enforced


def test_public_access_block(s3: Any, bucket: str) -> None:
    blocked = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    answer = s3.get_public_access_block(Bucket=bucket)
    assert answer["PublicAccessBlockConfiguration"] == blocked
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=blocked)
    for name in blocked:
        lifted = {**blocked, name: False}
        put = partial(
            s3.put_public_access_block,
            Bucket=bucket,
            PublicAccessBlockConfiguration=lifted,
        )
        assert _error(put) == (501, "NotImplemented"), name
    partial_block = {"BlockPublicAcls": True}
    put = partial(
        s3.put_public_access_block,
        Bucket=bucket,
        PublicAccessBlockConfiguration=partial_block,
    )
    assert _error(put) == (501, "NotImplemented")
    delete = partial(s3.delete_public_access_block, Bucket=bucket)
    assert _error(delete) == (501, "NotImplemented")


def test_other_organisation_denied(s3: Any, other_s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    calls: dict[str, Callable[[], object]] = {
        "get bucket acl": partial(other_s3.get_bucket_acl, Bucket=bucket),
        "put bucket acl": partial(
            other_s3.put_bucket_acl, Bucket=bucket, ACL="private"
        ),
        "get object acl": partial(other_s3.get_object_acl, Bucket=bucket, Key="k"),
        "put object acl": partial(
            other_s3.put_object_acl, Bucket=bucket, Key="k", ACL="private"
        ),
        "get ownership": partial(other_s3.get_bucket_ownership_controls, Bucket=bucket),
        "get public access block": partial(
            other_s3.get_public_access_block, Bucket=bucket
        ),
    }
    for name, call in calls.items():
        assert _error(call) == (403, "AccessDenied"), name


def test_unknown_bucket(s3: Any) -> None:
    name = "absent-" + secrets.token_hex(6)
    get = partial(s3.get_bucket_acl, Bucket=name)
    assert _error(get) == (404, "NoSuchBucket")
    put = partial(s3.put_object_acl, Bucket=name, Key="k", ACL="private")
    assert _error(put) == (404, "NoSuchBucket")


def test_listings_name_the_organisation_as_owner(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    owner = s3.get_bucket_acl(Bucket=bucket)["Owner"]
    assert s3.list_buckets()["Owner"]["ID"] == owner["ID"]
    listed = s3.list_objects_v2(Bucket=bucket, FetchOwner=True)["Contents"]
    assert [entry["Owner"]["ID"] for entry in listed] == [owner["ID"]]
    assert s3.get_object_acl(Bucket=bucket, Key="k")["Owner"] == owner
