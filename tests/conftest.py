"""Fixtures: a real SeaweedFS, real proxy processes and real clients."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

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


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    backend = start_backend(root / "seaweedfs")
    data_dir = root / "proxy"
    byok(data_dir, "status")
    proxy = start_proxy(data_dir, backend, root / "proxy.log")
    try:
        yield Stack(backend, proxy, data_dir)
    finally:
        proxy.stop()
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


@pytest.fixture
def bucket(s3: Any) -> str:
    name = "test-" + secrets.token_hex(6)
    s3.create_bucket(Bucket=name)
    return name
