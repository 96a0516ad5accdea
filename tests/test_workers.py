"""Several worker processes on one port, sharing a key imported into one of them.

The supervisor keeps the imported key; the workers borrow it over private
pipes. Each request below opens a new connection, so the kernel spreads
them over both workers.
"""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack
from tests.stack import ProxyProcess, byok, start_proxy
from tests.test_byok_import import import_key, shell

REQUESTS = 40


@pytest.fixture
def two_workers(stack: Stack, tmp_path: Path) -> Iterator[ProxyProcess]:
    proxy = start_proxy(
        stack.data_dir,
        stack.backend,
        tmp_path / "workers.log",
        extra_env={"BYOK_PROXY_WORKERS": "2"},
    )
    yield proxy
    proxy.stop()


def statuses(s3: Any, bucket: str, key: str) -> list[int]:
    """GET the object through presigned URLs, one new connection each."""
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    found = []
    for _ in range(REQUESTS):
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                response.read()
                found.append(response.status)
        except urllib.error.HTTPError as error:
            found.append(error.code)
    return found


def worker_pids(log: Path) -> set[int]:
    return {
        int(pid) for pid in re.findall(r"worker\.serving pid=(\d+)", log.read_text())
    }


def served_by(log: Path) -> set[int]:
    """The workers that logged a successful GET of the test object."""
    lines = re.findall(r"\[(\d+)\] .*GET /workers-co-bucket/doc 200", log.read_text())
    return {int(pid) for pid in lines}


def test_workers_share_imported_key(
    stack: Stack, two_workers: ProxyProcess, tmp_path: Path
) -> None:
    tenant = stack.tenant("workers-co")
    s3 = stack.client(tenant, url=two_workers.url)
    s3.create_bucket(Bucket="workers-co-bucket")
    s3.put_object(Bucket="workers-co-bucket", Key="doc", Body=b"shared by workers")
    deadline = time.monotonic() + 30
    while len(worker_pids(two_workers.log)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(worker_pids(two_workers.log)) == 2

    shell("openssl rand -out key.bin 32", tmp_path)
    import_key(two_workers, "workers-co", tmp_path)

    assert statuses(s3, "workers-co-bucket", "doc") == [200] * REQUESTS
    assert served_by(two_workers.log) == worker_pids(two_workers.log)

    # a worker that dies is replaced, and the new one borrows the key too
    os.kill(min(worker_pids(two_workers.log)), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(worker_pids(two_workers.log)) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(worker_pids(two_workers.log)) == 3
    assert statuses(s3, "workers-co-bucket", "doc") == [200] * REQUESTS

    byok(stack.data_dir, "org", "revoke", "workers-co", "--yes")
    assert statuses(s3, "workers-co-bucket", "doc") == [403] * REQUESTS


def test_workers_without_the_key(stack: Stack, two_workers: ProxyProcess) -> None:
    tenant = stack.tenant("workers-unimported")
    s3 = stack.client(tenant, url=two_workers.url)
    s3.create_bucket(Bucket="workers-unimported-bucket")
    s3.put_object(Bucket="workers-unimported-bucket", Key="doc", Body=b"platform")

    assert statuses(s3, "workers-unimported-bucket", "doc") == [200] * REQUESTS
