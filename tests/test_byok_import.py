"""A customer imports its own master key into a running proxy, end to end.

The customer's side runs the real openssl commands; the operator's side runs
`byok-proxy import start` and `import finish` against the proxy's admin API.
The key lives only in that proxy's memory: after a restart the organisation
is unavailable (503, retryable) until the key is imported again, and after
a revocation it is gone for good (403).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Stack, Tenant
from tests.load import import_through_cli as import_key
from tests.stack import ProxyProcess, byok, start_proxy


def cli(proxy: ProxyProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args, "--data-dir", str(proxy.data_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "BYOK_PROXY_ADMIN_URL": proxy.admin_url},
        check=False,
    )


def shell(command: str, directory: Path) -> str:
    return subprocess.run(
        ["sh", "-ec", command],
        cwd=directory,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture
def own_proxy() -> Iterator[list[ProxyProcess]]:
    """Proxies of this test on the shared data directory, stopped at the end."""
    started: list[ProxyProcess] = []
    yield started
    for proxy in started:
        proxy.stop()


def error_of(call: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as raised:
        call()
    response = raised.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def test_import_restart_and_revoke(
    stack: Stack, tmp_path: Path, own_proxy: list[ProxyProcess]
) -> None:
    tenant: Tenant = stack.tenant("imported-co")
    proxy = start_proxy(stack.data_dir, stack.backend, tmp_path / "first.log")
    own_proxy.append(proxy)
    s3 = stack.client(tenant, url=proxy.url)
    s3.create_bucket(Bucket="imported-co-bucket")
    s3.put_object(Bucket="imported-co-bucket", Key="before", Body=b"written before")
    shell("openssl rand -out key.bin 32", tmp_path)

    output = import_key(proxy, "imported-co", tmp_path)

    assert "now uses its imported master key" in output
    listed = byok(stack.data_dir, "org", "list")
    assert "imported-co\tactive\t" in listed
    line = next(line for line in listed.splitlines() if "imported-co" in line)
    assert line.endswith("\timported")
    get = s3.get_object(Bucket="imported-co-bucket", Key="before")
    assert get["Body"].read() == b"written before"
    s3.put_object(Bucket="imported-co-bucket", Key="after", Body=b"written after")

    # a restarted proxy has no copy of the key: unavailable, and retryable
    proxy.stop()
    proxy = start_proxy(stack.data_dir, stack.backend, tmp_path / "second.log")
    own_proxy.append(proxy)
    s3 = stack.client(tenant, url=proxy.url)
    unavailable = error_of(
        lambda: s3.get_object(Bucket="imported-co-bucket", Key="after")
    )
    assert unavailable == (503, "KeyUnavailable")

    # another key cannot replace a key that is not held; the same key can
    shell("cp key.bin right.bin && openssl rand -out key.bin 32", tmp_path)
    with pytest.raises(RuntimeError, match="KeyUnavailable"):
        import_key(proxy, "imported-co", tmp_path)
    shell("cp right.bin key.bin", tmp_path)
    import_key(proxy, "imported-co", tmp_path)
    get = s3.get_object(Bucket="imported-co-bucket", Key="after")
    assert get["Body"].read() == b"written after"

    # revocation is permanent: no command brings the data back
    byok(stack.data_dir, "org", "revoke", "imported-co", "--yes")
    assert error_of(
        lambda: s3.get_object(Bucket="imported-co-bucket", Key="before")
    ) == (403, "KeyRevoked")
    again = cli(proxy, "import", "start", "imported-co")
    assert again.returncode == 1
    assert "KeyRevoked" in again.stderr
    stored = stack.backend_client().get_object(
        Bucket="imported-co-bucket", Key="before"
    )
    assert b"written before" not in stored["Body"].read()
