"""Virtual-hosted style requests to a proxy started with a domain.

A second proxy shares the session's data directory and object store and is
started with `BYOK_PROXY_DOMAIN=localhost`, so `BUCKET.localhost` addresses a
bucket. Names under `localhost` other than `localhost` itself do not resolve
on every machine. So boto3 signs for `BUCKET.localhost:PORT`, and a
`before-send` hook sends the request to 127.0.0.1 with that Host header.
curl does the same with `--connect-to`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
import pytest
from botocore.config import Config

from tests.conftest import Stack, Tenant
from tests.payloads import MIB, sha256_file, write_sample_file
from tests.stack import ProxyProcess, start_proxy

DOMAIN = "localhost"


@pytest.fixture(scope="module")
def domain_proxy(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    log = tmp_path_factory.mktemp("virtual-host") / "proxy.log"
    proxy = start_proxy(
        stack.data_dir, stack.backend, log, {"BYOK_PROXY_DOMAIN": DOMAIN}
    )
    try:
        yield proxy
    finally:
        proxy.stop()


class LoopbackRouter:
    """A boto3 `before-send` hook that connects to 127.0.0.1, keeping Host.

    It records the Host header of every request it routes.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.hosts: list[str] = []

    def __call__(self, request: Any, **_: Any) -> None:
        parts = urlsplit(request.url)
        request.headers["Host"] = parts.netloc
        self.hosts.append(parts.netloc)
        request.url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.port}"))


@pytest.fixture(scope="module")
def router(domain_proxy: ProxyProcess) -> LoopbackRouter:
    port = urlsplit(domain_proxy.url).port
    assert port is not None
    return LoopbackRouter(port)


@pytest.fixture(scope="module")
def virtual(tenant: Tenant, router: LoopbackRouter) -> Any:
    """A default boto3 client that addresses buckets as `BUCKET.localhost`."""
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{DOMAIN}:{router.port}",
        aws_access_key_id=tenant.access_key_id,
        aws_secret_access_key=tenant.secret_access_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "virtual"}),
    )
    client.meta.events.register_first("before-send.s3", router)
    return client


def test_virtual_host_put_get(
    virtual: Any, router: LoopbackRouter, bucket: str
) -> None:
    data = os.urandom(70000)
    router.hosts.clear()
    virtual.put_object(Bucket=bucket, Key="dir/a b+c", Body=data)
    got = virtual.get_object(Bucket=bucket, Key="dir/a b+c")["Body"].read()
    assert got == data
    assert router.hosts == [f"{bucket}.{DOMAIN}:{router.port}"] * 2


def test_virtual_host_head_list_delete(virtual: Any, bucket: str) -> None:
    virtual.put_object(Bucket=bucket, Key="dir/one", Body=b"12345")
    head = virtual.head_object(Bucket=bucket, Key="dir/one")
    assert head["ContentLength"] == 5
    listed = virtual.list_objects_v2(Bucket=bucket, Prefix="dir/")["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("dir/one", 5)]
    virtual.delete_object(Bucket=bucket, Key="dir/one")
    assert virtual.list_objects_v2(Bucket=bucket).get("Contents", []) == []


def test_virtual_host_shares_objects_with_path_style(
    virtual: Any, s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="from-path", Body=b"path style")
    virtual.put_object(Bucket=bucket, Key="from-host", Body=b"virtual host")
    from_path = virtual.get_object(Bucket=bucket, Key="from-path")["Body"].read()
    assert from_path == b"path style"
    from_host = s3.get_object(Bucket=bucket, Key="from-host")["Body"].read()
    assert from_host == b"virtual host"


def test_virtual_host_transfer_manager(
    virtual: Any, bucket: str, tmp_path: Path
) -> None:
    source = write_sample_file(tmp_path / "source", 20 * MIB + 9)
    virtual.upload_file(str(source), bucket, "big")
    virtual.download_file(bucket, "big", str(tmp_path / "copy"))
    assert sha256_file(tmp_path / "copy") == sha256_file(source)


def test_virtual_host_create_bucket(
    virtual: Any, s3: Any, router: LoopbackRouter
) -> None:
    name = "vhost-" + os.urandom(6).hex()
    router.hosts.clear()
    virtual.create_bucket(Bucket=name)
    assert router.hosts == [f"{name}.{DOMAIN}:{router.port}"]
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_virtual_host_path_style_still_served(
    domain_proxy: ProxyProcess, stack: Stack, tenant: Tenant, bucket: str
) -> None:
    path_style = stack.client(tenant, url=domain_proxy.url)
    path_style.put_object(Bucket=bucket, Key="plain", Body=b"path")
    assert path_style.get_object(Bucket=bucket, Key="plain")["Body"].read() == b"path"


def test_virtual_host_presigned_curl(
    stack: Stack, tenant: Tenant, router: LoopbackRouter, bucket: str
) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    signer = stack.client(
        tenant,
        url=f"http://{DOMAIN}:{router.port}",
        config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"}),
    )
    stack.client(tenant).put_object(Bucket=bucket, Key="shared", Body=b"presigned")
    url = signer.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared"}
    )
    host = f"{bucket}.{DOMAIN}:{router.port}"
    assert urlsplit(url).netloc == host
    result = subprocess.run(
        [
            curl, "-sS", "--fail", "--noproxy", "*",
            "--connect-to", f"{host}:127.0.0.1:{router.port}", url,
        ],
        capture_output=True,
        check=True,
    )  # fmt: skip
    assert result.stdout == b"presigned"
