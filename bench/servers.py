"""SeaweedFS, the proxies and the credentials of one bench run, on loopback.

Everything is started through the test suite's `tests.stack`, so SeaweedFS
binds 127.0.0.1 only, with telemetry off. Three proxy processes can share
one data directory and key store: the main one that every timed
measurement uses, one whose upstream is the counting relay, and one with
several workers when `serve --workers` exists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench.client import Endpoint
from bench.procstat import process_tree
from bench.relay import CountingRelay
from tests.stack import Backend, ProxyProcess, byok, start_backend, start_proxy

__all__ = ["Lab", "running_lab", "supports_workers", "worker_proxy"]

ORGANISATION = "bench"


@dataclass
class Lab:
    """The servers and endpoints of one run."""

    root: Path
    backend: Backend
    proxy: ProxyProcess
    relay: CountingRelay
    relayed_proxy: ProxyProcess
    direct: Endpoint
    via_proxy: Endpoint
    via_relay: Endpoint
    tenant_keys: tuple[str, str]

    @property
    def proxy_pid(self) -> int:
        """Process id of the main proxy."""
        return self.proxy.process.pid

    def path_pids(self, side: str) -> list[int]:
        """Return the server processes a request of `side` runs through.

        "direct" is SeaweedFS alone, any other side the main proxy too.
        """
        pids = process_tree(self.backend.process.pid)
        if side != "direct":
            pids.append(self.proxy_pid)
        return pids


@contextlib.contextmanager
def running_lab(root: Path) -> Iterator[Lab]:
    """Start SeaweedFS, the relay and two proxies; stop them all on exit."""
    with contextlib.ExitStack() as stack:
        backend = start_backend(root / "seaweedfs")
        stack.callback(backend.stop)
        data_dir = root / "proxy"
        byok(data_dir, "org", "create", ORGANISATION)
        keys = json.loads(
            byok(data_dir, "credentials", "create", ORGANISATION, "--json")
        )
        tenant = (keys["access_key_id"], keys["secret_access_key"])
        proxy = start_proxy(data_dir, backend, root / "proxy.log")
        stack.callback(proxy.stop)
        backend_port = urlsplit(backend.url).port
        assert backend_port is not None
        relay = CountingRelay(backend_port)
        relay.start()
        stack.callback(relay.stop)
        relayed_backend = dataclasses.replace(backend, url=relay.url)
        relayed_proxy = start_proxy(data_dir, relayed_backend, root / "relayed.log")
        stack.callback(relayed_proxy.stop)
        yield Lab(
            root=root,
            backend=backend,
            proxy=proxy,
            relay=relay,
            relayed_proxy=relayed_proxy,
            direct=Endpoint.from_url(
                "direct", backend.url, backend.access_key, backend.secret_key
            ),
            via_proxy=Endpoint.from_url("proxy", proxy.url, *tenant),
            via_relay=Endpoint.from_url("relayed proxy", relayed_proxy.url, *tenant),
            tenant_keys=tenant,
        )


def supports_workers() -> bool:
    """Return whether this proxy's `serve` has a --workers option."""
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    return "--workers" in result.stdout


@contextlib.contextmanager
def worker_proxy(lab: Lab, workers: int) -> Iterator[tuple[ProxyProcess, Endpoint]]:
    """Run another proxy with `workers` worker processes on the lab's key store.

    It is started with BYOK_PROXY_WORKERS, the variable of `--workers`.
    """
    proxy = start_proxy(
        lab.proxy.data_dir,
        lab.backend,
        lab.root / f"proxy-{workers}-workers.log",
        extra_env={"BYOK_PROXY_WORKERS": str(workers)},
    )
    try:
        _wait_for_workers(proxy, workers)
        yield (
            proxy,
            Endpoint.from_url(f"proxy, {workers} workers", proxy.url, *lab.tenant_keys),
        )
    finally:
        proxy.stop()


def _wait_for_workers(proxy: ProxyProcess, workers: int, timeout: float = 30) -> None:
    """Wait until the supervisor has started its workers, and they listen.

    The port accepts connections as soon as the first worker listens, so
    the others get a moment more to reach their own accept loop.
    """
    deadline = time.monotonic() + timeout
    while len(process_tree(proxy.process.pid)) < workers + 1:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the proxy started with {workers} workers runs only "
                f"{len(process_tree(proxy.process.pid)) - 1} child processes "
                f"after {timeout} s; see {proxy.log}"
            )
        time.sleep(0.2)
    time.sleep(2)
