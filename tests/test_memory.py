"""A 1 GiB object streams through the proxy without sitting in memory."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import Stack
from tests.stack import ProxyProcess, byok, start_proxy

GIB = 1024**3
MIB = 1024**2
PEAK_LIMIT = 100 * MIB


def peak_memory(process: ProxyProcess) -> int:
    """The proxy's peak resident set size (VmHWM), in bytes."""
    for line in Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("VmHWM missing from /proc status")


@pytest.fixture(scope="module")
def fresh_proxy(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ProxyProcess, Any]]:
    root = tmp_path_factory.mktemp("memory")
    data_dir = root / "proxy"
    byok(data_dir, "org", "create", "bulk")
    keys = json.loads(byok(data_dir, "credentials", "create", "bulk", "--json"))
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


def write_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(MIB)
    with path.open("wb") as file:
        for index in range(size // MIB):
            chunk = index.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            file.write(chunk)
    return digest.hexdigest()


@pytest.mark.slow
def test_memory_one_gib_put_and_get(
    fresh_proxy: tuple[ProxyProcess, Any], tmp_path: Path
) -> None:
    proxy, client = fresh_proxy
    source = tmp_path / "big.bin"
    expected = write_file(source, GIB)
    client.create_bucket(Bucket="memory-test")
    with source.open("rb") as body:
        client.put_object(Bucket="memory-test", Key="big", Body=body)
    source.unlink()
    after_put = peak_memory(proxy)

    response = client.get_object(Bucket="memory-test", Key="big")
    digest = hashlib.sha256()
    for chunk in response["Body"].iter_chunks(MIB):
        digest.update(chunk)
    assert digest.hexdigest() == expected
    assert after_put < PEAK_LIMIT, f"peak {after_put / MIB:.0f} MiB after PUT"
    assert peak_memory(proxy) < PEAK_LIMIT, "peak after GET"
