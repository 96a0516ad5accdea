"""Fixtures: a real SeaweedFS, real proxy processes and real clients."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.stack import Backend, ProxyProcess, byok, start_backend, start_proxy


@dataclass(frozen=True)
class Tenant:
    """An organisation with one set of credentials."""

    name: str
    access_key_id: str
    secret_access_key: str


@dataclass
class Stack:
    """SeaweedFS with one proxy in front of it, sharing one data directory."""

    backend: Backend
    proxy: ProxyProcess
    data_dir: Path

    def tenant(self, name: str) -> Tenant:
        """Create an organisation and credentials for it."""
        byok(self.data_dir, "org", "create", name)
        keys = json.loads(byok(self.data_dir, "credentials", "create", name, "--json"))
        return Tenant(name, keys["access_key_id"], keys["secret_access_key"])

    def client(self, tenant: Tenant, url: str | None = None, **config: Any) -> Any:
        """A boto3 S3 client with default settings, pointed at the proxy."""
        return boto3.client(
            "s3",
            endpoint_url=url or self.proxy.url,
            aws_access_key_id=tenant.access_key_id,
            aws_secret_access_key=tenant.secret_access_key,
            region_name="us-east-1",
            **config,
        )

    def backend_client(self) -> Any:
        """A boto3 client straight to SeaweedFS, bypassing the proxy."""
        return boto3.client(
            "s3",
            endpoint_url=self.backend.url,
            aws_access_key_id=self.backend.access_key,
            aws_secret_access_key=self.backend.secret_key,
            region_name="us-east-1",
        )


@contextmanager
def separate_proxy(
    stack: Stack, root: Path, org: str
) -> Iterator[tuple[ProxyProcess, Any]]:
    """A proxy with its own data directory and organisation, and a client of it."""
    data_dir = root / "proxy"
    byok(data_dir, "org", "create", org)
    keys = json.loads(byok(data_dir, "credentials", "create", org, "--json"))
    proxy = start_proxy(data_dir, stack.backend, root / "proxy.log")
    client = boto3.client(
        "s3",
        endpoint_url=proxy.url,
        aws_access_key_id=keys["access_key_id"],
        aws_secret_access_key=keys["secret_access_key"],
        region_name="us-east-1",
    )
    try:
        yield proxy, client
    finally:
        proxy.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    backend = start_backend(root / "seaweedfs")
    try:
        data_dir = root / "proxy"
        proxy = start_proxy(data_dir, backend, root / "proxy.log")
        try:
            yield Stack(backend, proxy, data_dir)
        finally:
            proxy.stop()
    finally:
        backend.stop()


@pytest.fixture(scope="session")
def tenant(stack: Stack) -> Tenant:
    return stack.tenant("acme")


@pytest.fixture(scope="session")
def s3(stack: Stack, tenant: Tenant) -> Any:
    return stack.client(tenant)


@pytest.fixture(scope="session")
def backend_s3(stack: Stack) -> Any:
    return stack.backend_client()


def remove_bucket(client: Any, name: str) -> None:
    """Abort the uploads of a bucket, delete its objects, then the bucket.

    SeaweedFS gives every bucket that contains data a volume of its own and has
    a limited number of them, so tests delete the buckets they fill.
    """
    try:
        uploads = client.list_multipart_uploads(Bucket=name).get("Uploads", [])
    except ClientError as error:
        if error.response["Error"]["Code"] == "NoSuchBucket":
            return
        raise
    for upload in uploads:
        client.abort_multipart_upload(
            Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
        entries = page.get("Versions", []) + page.get("DeleteMarkers", [])
        keys = [{"Key": e["Key"], "VersionId": e["VersionId"]} for e in entries]
        if keys:
            client.delete_objects(Bucket=name, Delete={"Objects": keys})
    client.delete_bucket(Bucket=name)


@pytest.fixture
def new_bucket(s3: Any) -> Iterator[Callable[..., str]]:
    """Create buckets for one test, through `s3` or another client."""
    created: list[tuple[Any, str]] = []

    def make(client: Any = s3) -> str:
        name = "test-" + secrets.token_hex(6)
        client.create_bucket(Bucket=name)
        created.append((client, name))
        return name

    yield make
    for client, name in created:
        remove_bucket(client, name)


@pytest.fixture
def bucket(new_bucket: Callable[..., str]) -> str:
    return new_bucket()
