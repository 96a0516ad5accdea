"""A 1 GiB object streams through the proxy without sitting in memory."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack, separate_proxy
from tests.stack import ProxyProcess, peak_memory

GIB = 1024**3
MIB = 1024**2
PEAK_LIMIT = 100 * MIB


@pytest.fixture(scope="module")
def fresh_proxy(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ProxyProcess, Any]]:
    with separate_proxy(stack, tmp_path_factory.mktemp("memory"), "bulk") as made:
        yield made


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
