"""No plaintext and no imported key reaches a file, for an organisation under BYOK.

A proxy with a data directory, TMPDIR and working directory of its own, run
under strace when strace is installed, serves an organisation whose master
key the customer imported through the admin API. Uploads, downloads and
copies move payloads made of one random 32-byte marker, repeated. While
they run and at the end, the module fixture scans every file in those
directories and every regular file the process has open, deleted ones
included. At the end it also scans every file that strace saw the process
open for writing, the object store's files and the proxy's log.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.load import MIB, AdminClient, import_through_api, new_customer_key
from tests.stack import (
    Backend,
    ProxyProcess,
    byok,
    free_port,
    start_backend,
    wait_for_port,
)

ORG = "disk-co"
BUCKET = "disk-check"
SEGMENT = 64 * 1024
PART = 5 * MIB
WINDOW = 16
SCAN_PERIOD = 0.1
# Files are read in blocks of this size. Consecutive blocks overlap by the
# longest needle, so a needle across a block boundary is still found.
SCAN_BLOCK = 16 * MIB
STRACE = shutil.which("strace")
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND", "O_TMPFILE")
# strace -y prints a file descriptor's path after it: AT_FDCWD</dir>, 5</dir>.
_OPEN_CALL = re.compile(
    r"\b(?P<call>open|openat|openat2|creat)\("
    r"(?:[A-Z_0-9]+<(?P<base>[^>]*)>, )?"
    r'"(?P<path>[^"]*)", (?P<flags>[^,)]*)'
)
_RENAME_CALL = re.compile(
    r"\b(?:rename|renameat|renameat2|link|linkat)\(.*?"
    r'(?:[A-Z_0-9]+<(?P<base>[^>]*)>, )?"(?P<path>[^"]*)"(?:, [A-Z_0-9]+)?\)'
)


# secrets and how to find them


@dataclass(frozen=True)
class Secrets:
    """The marker that payloads repeat and the key the customer imported."""

    marker: bytes
    key: bytes

    def payload(self, size: int) -> bytes:
        """Return `size` bytes of the marker, repeated."""
        return (self.marker * (size // len(self.marker) + 1))[:size]

    def raw_needles(self) -> dict[str, bytes]:
        """Every 16-byte window of any payload, and the key itself.

        A payload repeats the marker, so its 16-byte windows are the 32
        windows that start at each offset of one marker.
        """
        cycle = self.marker * 2
        needles = {
            f"payload window at {offset}": cycle[offset : offset + WINDOW]
            for offset in range(len(self.marker))
        }
        needles["imported key"] = self.key
        return needles

    def encoded_needles(self) -> dict[str, bytes]:
        """The raw needles, plus payload and key in hex and base64 text.

        Base64 encodes 3 bytes at a time, so the text of a payload contains
        the encoding of 48 bytes from each of the marker's 32 offsets.
        """
        needles = self.raw_needles()
        cycle = self.marker * 3
        for offset in range(len(self.marker)):
            window = cycle[offset : offset + WINDOW]
            needles[f"payload hex at {offset}"] = window.hex().encode()
            needles[f"payload HEX at {offset}"] = window.hex().upper().encode()
            span = cycle[offset : offset + 48]
            needles[f"payload base64 at {offset}"] = base64.b64encode(span)
            needles[f"payload base64url at {offset}"] = base64.urlsafe_b64encode(span)
        needles["imported key hex"] = self.key.hex().encode()
        needles["imported key HEX"] = self.key.hex().upper().encode()
        # Without the padding, which depends on what follows the key.
        needles["imported key base64"] = base64.b64encode(self.key)[:42]
        needles["imported key base64url"] = base64.urlsafe_b64encode(self.key)[:42]
        return needles


def scan_file(path: Path | str, needles: Mapping[str, bytes]) -> list[str]:
    """Return the names of the needles found in the file, read block by block."""
    overlap = max(len(needle) for needle in needles.values()) - 1
    found: set[str] = set()
    tail = b""
    with open(path, "rb") as file:
        while block := file.read(SCAN_BLOCK):
            data = tail + block
            found.update(name for name, needle in needles.items() if needle in data)
            tail = data[-overlap:]
    return sorted(found)


def files_under(directories: Iterable[Path]) -> list[Path]:
    """Return every regular file below the directories, symlinks not followed."""
    found = []
    for directory in directories:
        for base, _, names in os.walk(directory):
            for name in names:
                path = Path(base) / name
                if path.is_file() and not path.is_symlink():
                    found.append(path)
    return found


# watching the proxy while it runs


class Watcher:
    """A thread that scans the proxy's directories and open files repeatedly.

    `findings` names each file and needle found, `scanned` every file read,
    and `errors` what stopped the scanning thread, if anything did.
    """

    def __init__(self, pid: int, directories: list[Path], needles: dict[str, bytes]):
        self.pid = pid
        self.directories = directories
        self.needles = needles
        self.findings: set[str] = set()
        self.scanned: set[str] = set()
        self.passes = 0
        self.errors: list[str] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="disk-watcher")

    def start(self) -> None:
        """Start scanning in a thread of its own."""
        self._thread.start()

    def stop(self) -> None:
        """Let the current pass finish and stop."""
        self._stopping.set()
        self._thread.join()

    def scan_once(self) -> None:
        """Scan every file in the directories, then every file the process has open."""
        for path in files_under(self.directories):
            self._scan(str(path), str(path))
        for descriptor, target in _open_files(self.pid):
            self._scan(descriptor, f"open file {target}")
        self.passes += 1

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.scan_once()
            except Exception as error:
                self.errors.append(repr(error))
                return
            self._stopping.wait(SCAN_PERIOD)

    def _scan(self, path: str, label: str) -> None:
        try:
            found = scan_file(path, self.needles)
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            return  # removed or closed between listing and reading
        self.scanned.add(label)
        self.findings.update(f"{label}: {name}" for name in found)


def _open_files(pid: int) -> list[tuple[str, str]]:
    """Return (path to read, file it names) for each regular file `pid` has open."""
    directory = Path(f"/proc/{pid}/fd")
    files = []
    try:
        descriptors = list(directory.iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return []
    for descriptor in descriptors:
        try:
            if stat.S_ISREG(descriptor.stat().st_mode):
                files.append((str(descriptor), os.readlink(descriptor)))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return files


# the proxy process


@dataclass
class WatchedProxy:
    """A proxy started in its own working directory, under strace if installed."""

    proxy: ProxyProcess
    pid: int
    trace: Path | None

    def stop(self) -> None:
        """Stop the proxy itself, so that strace exits once its child has exited.

        Whatever is left of the process group afterwards is killed.
        """
        process = self.proxy.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                os.kill(self.pid, signal.SIGTERM)
                process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def start_watched_proxy(root: Path, backend: Backend) -> WatchedProxy:
    """Start `byok-proxy serve` with TMPDIR and working directory under `root`."""
    port = free_port()
    env = _proxy_environment(root, backend, port)
    command, trace = _proxy_command(root)
    log = root / "proxy.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root / "work",
            start_new_session=True,
        )
    proxy = ProxyProcess(f"http://127.0.0.1:{port}", root / "data", process, log, env)
    watched = WatchedProxy(proxy, process.pid, trace)

    try:
        wait_for_port(port, process, timeout=30)
        if trace is not None:
            watched.pid = _traced_child(process.pid)
    except BaseException:
        watched.stop()
        raise
    return watched


def _proxy_environment(root: Path, backend: Backend, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "BYOK_PROXY_DATA_DIR": str(root / "data"),
        "BYOK_PROXY_UPSTREAM_URL": backend.url,
        "BYOK_PROXY_UPSTREAM_ACCESS_KEY": backend.access_key,
        "BYOK_PROXY_UPSTREAM_SECRET_KEY": backend.secret_key,
        "BYOK_PROXY_LISTEN": f"127.0.0.1:{port}",
        "BYOK_PROXY_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
        "TMPDIR": str(root / "tmp"),
    }


def _proxy_command(root: Path) -> tuple[list[str], Path | None]:
    """Return the command that starts the proxy, and its trace file if any."""
    command = [sys.executable, "-m", "proxy", "serve"]
    if STRACE is None:
        return command, None
    # With seccomp-bpf only file calls stop the process. The flags and the
    # fd paths of each call show which files it opened for writing.
    trace = root / "strace.txt"
    tracing = ["-f", "--seccomp-bpf", "-qq", "-y", "-e", "trace=%file"]
    return [STRACE, *tracing, "-o", str(trace), "--", *command], trace


def _traced_child(strace_pid: int) -> int:
    """Return the pid of the process that strace started."""
    children = Path(f"/proc/{strace_pid}/task/{strace_pid}/children").read_text()
    (pid,) = children.split()
    return int(pid)


def written_paths(trace: Path, work_dir: Path) -> set[Path]:
    """Return every path that the trace shows opened for writing, or renamed to."""
    paths = set()
    for line in trace.read_text(errors="replace").splitlines():
        opened = _OPEN_CALL.search(line)
        if opened is not None:
            writes = opened["call"] == "creat" or any(
                flag in opened["flags"] for flag in _WRITE_FLAGS
            )
            if writes:
                paths.add(_resolve(opened["base"], opened["path"], work_dir))
            continue
        renamed = _RENAME_CALL.search(line)
        if renamed is not None:
            paths.add(_resolve(renamed["base"], renamed["path"], work_dir))
    return paths


def _resolve(base: str | None, path: str, work_dir: Path) -> Path:
    if path.startswith("/"):
        return Path(path)
    return Path(base or work_dir) / path


# what the clients do


# Ranged reads: within a segment, across segment and part boundaries, a
# suffix and an open end.
RANGES = [
    ("tiny", "bytes=0-99", slice(0, 100)),
    ("segment-plus-one", f"bytes={SEGMENT - 5}-{SEGMENT}", slice(SEGMENT - 5, None)),
    ("several-mib", "bytes=65530-65545", slice(65530, 65546)),
    ("parallel-parts", f"bytes={PART - 10}-{PART + 10}", slice(PART - 10, PART + 11)),
    ("parallel-parts", "bytes=-100", slice(-100, None)),
    ("transfer", f"bytes={8 * MIB - 4}-", slice(8 * MIB - 4, None)),
    ("part-copy", f"bytes={PART - 1}-{PART + 1}", slice(PART - 1, PART + 2)),
]


def exercise(client: Any, secrets: Secrets) -> tuple[dict[str, bool], int]:
    """Upload, download and copy marker payloads.

    Return which downloads matched, and how many plaintext bytes were stored.
    """
    expected: dict[str, bytes] = {}
    sizes = {"empty": 0, "tiny": 100, "segment-plus-one": SEGMENT + 1}
    sizes["several-mib"] = 6 * MIB + 7
    for key, size in sizes.items():
        expected[key] = secrets.payload(size)
        client.put_object(Bucket=BUCKET, Key=key, Body=expected[key])
    expected["parallel-parts"] = _upload_parts_out_of_order(client, secrets)
    expected["transfer"] = secrets.payload(9 * MIB + 3)
    client.upload_fileobj(BytesIO(expected["transfer"]), BUCKET, "transfer")
    for source in ("several-mib", "parallel-parts"):
        client.copy_object(
            Bucket=BUCKET, Key=f"copy-of-{source}", CopySource=_source(source)
        )
        expected[f"copy-of-{source}"] = expected[source]
    expected["part-copy"] = _copy_parts(client, expected)

    matches = {}
    for key, body in expected.items():
        got = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        matches[f"get {key}"] = got == body
        head = client.head_object(Bucket=BUCKET, Key=key)
        matches[f"head {key}"] = head["ContentLength"] == len(body)
    for key, text, part in RANGES:
        answer = client.get_object(Bucket=BUCKET, Key=key, Range=text)
        matches[f"get {key} {text}"] = answer["Body"].read() == expected[key][part]
    return matches, sum(len(body) for body in expected.values())


def _upload_parts_out_of_order(client: Any, secrets: Secrets) -> bytes:
    """Upload three parts from three threads, the last one first."""
    body = secrets.payload(2 * PART + 2 * MIB + 3)
    key = "parallel-parts"
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    chunks = {number: body[(number - 1) * PART : number * PART] for number in (1, 2, 3)}

    def upload(number: int) -> dict[str, Any]:
        answer = client.upload_part(
            Bucket=BUCKET,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=chunks[number],
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    with ThreadPoolExecutor(3) as pool:
        parts = list(pool.map(upload, (3, 1, 2)))
    client.complete_multipart_upload(
        Bucket=BUCKET,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": sorted(parts, key=lambda part: part["PartNumber"])},
    )
    return body


def _copy_parts(client: Any, expected: Mapping[str, bytes]) -> bytes:
    """Build an object from a range of one object and the whole of another."""
    key = "part-copy"
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    first = client.upload_part_copy(
        Bucket=BUCKET,
        Key=key,
        UploadId=upload_id,
        PartNumber=1,
        CopySource=_source("parallel-parts"),
        CopySourceRange=f"bytes=0-{PART - 1}",
    )
    second = client.upload_part_copy(
        Bucket=BUCKET,
        Key=key,
        UploadId=upload_id,
        PartNumber=2,
        CopySource=_source("segment-plus-one"),
    )
    parts = [
        {"PartNumber": 1, "ETag": first["CopyPartResult"]["ETag"]},
        {"PartNumber": 2, "ETag": second["CopyPartResult"]["ETag"]},
    ]
    client.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    return expected["parallel-parts"][:PART] + expected["segment-plus-one"]


def _source(key: str) -> dict[str, str]:
    return {"Bucket": BUCKET, "Key": key}


# the run


@dataclass
class Scene:
    """What the run did and what every scan found."""

    root: Path
    secrets: Secrets
    matches: dict[str, bool] = field(default_factory=dict)
    plaintext_bytes: int = 0
    watcher: Watcher | None = None
    end_findings: list[str] = field(default_factory=list)
    stopped_findings: list[str] = field(default_factory=list)
    traced: set[Path] | None = None
    traced_findings: list[str] = field(default_factory=list)
    store_findings: list[str] = field(default_factory=list)
    store_bytes: int = 0
    log_findings: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    root = tmp_path_factory.mktemp("disk")
    for name in ("data", "tmp", "work", "customer"):
        (root / name).mkdir()
    backend = start_backend(root / "seaweedfs")
    try:
        yield _run(root, backend)
    finally:
        backend.stop()


def _run(root: Path, backend: Backend) -> Scene:
    byok(root / "data", "org", "create", ORG)
    keys = json.loads(byok(root / "data", "credentials", "create", ORG, "--json"))
    scene = Scene(root, Secrets(os.urandom(32), new_customer_key(root / "customer")))
    watched = start_watched_proxy(root, backend)
    try:
        _run_watched(scene, watched, keys)
    finally:
        watched.stop()

    # SQLite folds its WAL into the database file when the proxy stops.
    needles = scene.secrets.encoded_needles()
    scene.stopped_findings = _scan_all(files_under(_proxy_dirs(root)), needles)
    if watched.trace is not None:
        scene.traced = written_paths(watched.trace, root / "work")
        existing = [path for path in scene.traced if path.is_file()]
        scene.traced_findings = _scan_all(existing, needles)
    scene.log_findings = _scan_all([watched.proxy.log], needles)
    backend.stop()
    store_files = files_under([root / "seaweedfs"])
    scene.store_findings = _scan_all(store_files, scene.secrets.raw_needles())
    scene.store_bytes = sum(path.stat().st_size for path in store_files)
    return scene


def _run_watched(scene: Scene, watched: WatchedProxy, keys: dict[str, str]) -> None:
    """Import the key, exercise the proxy under the watcher, scan it once more."""
    import_through_api(AdminClient.of(watched.proxy), ORG, scene.root / "customer")
    client = boto3.client(
        "s3",
        endpoint_url=watched.proxy.url,
        aws_access_key_id=keys["access_key_id"],
        aws_secret_access_key=keys["secret_access_key"],
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    needles = scene.secrets.encoded_needles()
    scene.watcher = Watcher(watched.pid, _proxy_dirs(scene.root), needles)
    scene.watcher.start()
    try:
        scene.matches, scene.plaintext_bytes = exercise(client, scene.secrets)
    finally:
        scene.watcher.stop()
    scene.end_findings = _scan_all(files_under(_proxy_dirs(scene.root)), needles)
    scene.end_findings += _scan_open_files(watched.pid, needles)


def _proxy_dirs(root: Path) -> list[Path]:
    """The proxy's data directory, TMPDIR and working directory."""
    return [root / "data", root / "tmp", root / "work"]


def _scan_all(paths: Iterable[Path], needles: Mapping[str, bytes]) -> list[str]:
    return [f"{path}: {name}" for path in paths for name in scan_file(path, needles)]


def _scan_open_files(pid: int, needles: Mapping[str, bytes]) -> list[str]:
    return [
        f"open file {target}: {name}"
        for descriptor, target in _open_files(pid)
        for name in scan_file(descriptor, needles)
    ]


# the checks


def test_operations_return_plaintext(scene: Scene) -> None:
    wrong = [name for name, matched in scene.matches.items() if not matched]
    assert wrong == []


def test_scan_finds_planted_secrets(scene: Scene, tmp_path: Path) -> None:
    """The scanner finds the payload, the key and their text forms in a file."""
    planted = tmp_path / "planted"
    payload = scene.secrets.payload(1000)
    key = scene.secrets.key
    planted.write_bytes(
        b"x" * 7
        + payload[5:40]
        + key
        + payload.hex().encode()
        + base64.b64encode(b"y" + payload)
        + key.hex().encode()
    )

    found = scan_file(planted, scene.secrets.encoded_needles())

    assert "payload window at 5" in found
    assert "imported key" in found
    assert "imported key hex" in found
    assert any(name.startswith("payload hex at") for name in found)
    assert any(name.startswith("payload base64 at") for name in found)


def test_watcher_scanned_during_run(scene: Scene) -> None:
    assert scene.watcher is not None
    assert scene.watcher.errors == []
    assert scene.watcher.passes >= 2


def test_watcher_scanned_open_files(scene: Scene) -> None:
    assert scene.watcher is not None
    open_files = [
        label for label in scene.watcher.scanned if label.startswith("open file ")
    ]
    assert any(label.endswith("keys.sqlite3") for label in open_files)


def test_watcher_scanned_wal_files(scene: Scene) -> None:
    assert scene.watcher is not None
    wal_files = {path for path in scene.watcher.scanned if path.endswith("-wal")}
    assert any(path.endswith("keys.sqlite3-wal") for path in wal_files)
    assert any(path.endswith("catalogue.sqlite3-wal") for path in wal_files)


def test_proxy_files_clean_during_run(scene: Scene) -> None:
    assert scene.watcher is not None
    assert sorted(scene.watcher.findings) == []


def test_proxy_files_clean_at_end(scene: Scene) -> None:
    assert scene.end_findings == []


def test_proxy_files_clean_after_stop(scene: Scene) -> None:
    assert scene.stopped_findings == []


@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
def test_traced_writes_clean(scene: Scene) -> None:
    assert scene.traced is not None
    data_dir = scene.root / "data"
    assert data_dir / "keys.sqlite3" in scene.traced
    assert data_dir / "catalogue.sqlite3" in scene.traced
    assert scene.traced_findings == []


@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
def test_traced_writes_stay_in_proxy_dirs(scene: Scene) -> None:
    """The proxy writes only in its own directories, and Python in __pycache__.

    Python writes the bytecode of a module it imports into __pycache__.
    """
    assert scene.traced is not None
    outside = [
        path
        for path in scene.traced
        if not any(path.is_relative_to(d) for d in _proxy_dirs(scene.root))
        and path.parent.name != "__pycache__"
    ]
    assert outside == []


def test_object_store_holds_no_plaintext(scene: Scene) -> None:
    assert scene.store_bytes > scene.plaintext_bytes
    assert scene.store_findings == []


def test_proxy_log_holds_no_secret(scene: Scene) -> None:
    assert scene.log_findings == []
