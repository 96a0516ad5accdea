"""A steady S3 load on a proxy, and helpers for its admin API and key imports.

`Workload` runs threads that write, read, copy and stat objects through boto3
clients with default settings, and records every failed request, including
those that boto3 retried and that later succeeded. The import helpers play
the customer's side with the real openssl commands, as a customer would.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from tests.stack import ProxyProcess

__all__ = [
    "MIB",
    "PART_SIZE",
    "AdminClient",
    "ContentMismatch",
    "Failure",
    "StoredObject",
    "VersionBounds",
    "Workload",
    "import_through_api",
    "import_through_cli",
    "new_customer_key",
    "payload",
    "run_cli",
    "wait_until",
]

MIB = 1024 * 1024
PART_SIZE = 5 * MIB
SEGMENT = 64 * 1024
# boto3's TransferConfig uploads files of 8 MiB or more in parts of 8 MiB.
TRANSFER_THRESHOLD = 8 * MIB
_ADMIN_TIMEOUT = 30.0
_MAX_RANGE = 3 * MIB
# Sizes around the 64 KiB segment, where off-by-one errors in the size
# arithmetic would show. Other single uploads draw a random size.
_EDGE_SIZES = (0, 1, 15, 16, 17, SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT + 5)


def payload(seed: int, size: int) -> bytes:
    """Return `size` pseudo-random bytes that the same `seed` always reproduces."""
    return random.Random(seed).randbytes(size)


# versions a write may use


class VersionBounds:
    """The lowest and highest key versions that a write starting now may use.

    The test raises the upper bound before it starts a rotation and the
    lower bound once the rotation returned. A write that starts after the
    lower bound was raised must use the new version. Names are
    "organisation" for the organisation key and purpose labels for DEKs.
    """

    def __init__(self, versions: Mapping[str, int]) -> None:
        self._lock = threading.Lock()
        self._low = dict(versions)
        self._high = dict(versions)

    def rotating(self, name: str, highest: int) -> None:
        """Allow writes from now on to use versions up to `highest`."""
        with self._lock:
            self._high[name] = highest

    def rotated(self, name: str, version: int) -> None:
        """Require writes from now on to use exactly `version`."""
        with self._lock:
            self._low[name] = version
            self._high[name] = version

    def low(self) -> dict[str, int]:
        """Return a copy of the lower bounds."""
        with self._lock:
            return dict(self._low)

    def high(self) -> dict[str, int]:
        """Return a copy of the upper bounds."""
        with self._lock:
            return dict(self._high)

    def current(self, name: str) -> int:
        """Return the upper bound of one key, its latest version as far as known."""
        with self._lock:
            return self._high[name]


# records


@dataclass(frozen=True)
class StoredObject:
    """An object the load wrote, with the key versions its write could use.

    `kind` is "put", "multipart", "transfer" (boto3's upload_fileobj) or
    "copy". A copy's bounds are those of its own write, but a copy may
    keep the DEK of its source.
    """

    key: str
    seed: int
    size: int
    purpose: str
    kind: str
    low: Mapping[str, int]
    high: Mapping[str, int]

    def body(self) -> bytes:
        """Return the bytes that were written."""
        return payload(self.seed, self.size)


@dataclass(frozen=True)
class Failure:
    """One failed request or a response whose content was wrong."""

    thread: str
    operation: str
    detail: str


class ContentMismatch(Exception):
    """A response returned other bytes or another size than were written."""


# the load


@dataclass
class _Counter:
    value: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self) -> None:
        with self.changed:
            self.value += 1
            self.changed.notify_all()


class Workload:
    """Threads that put, get, head and copy objects until `stop` is called.

    Each client gets one thread. `prefixes` maps each DEK purpose to the
    key prefix that the bucket routes to it.
    """

    def __init__(
        self,
        clients: Sequence[Any],
        bucket: str,
        prefixes: Mapping[str, str],
        bounds: VersionBounds,
        seed: int,
    ) -> None:
        self._clients = list(clients)
        self._bucket = bucket
        self._prefixes = dict(prefixes)
        self._bounds = bounds
        self._seed = seed
        self._lock = threading.Lock()
        self._objects: list[StoredObject] = []
        self._failures: list[Failure] = []
        self._completed = _Counter()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        for client in self._clients:
            self.watch(client)

    @property
    def objects(self) -> list[StoredObject]:
        """Every object written so far."""
        with self._lock:
            return list(self._objects)

    @property
    def failures(self) -> list[Failure]:
        """Every failed request and wrong response so far."""
        with self._lock:
            return list(self._failures)

    @property
    def completed(self) -> int:
        """How many operations finished without an error."""
        with self._completed.changed:
            return self._completed.value

    def watch(self, client: Any) -> None:
        """Record the failed requests of another client among the failures."""
        client.meta.events.register("needs-retry.s3", self._observe_attempt)

    def start(self) -> None:
        """Start one thread per client."""
        for index, client in enumerate(self._clients):
            thread = threading.Thread(
                target=self._run, args=(index, client), name=f"load-{index}"
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Let every thread finish its current operation, then wait for it."""
        self._stopping.set()
        for thread in self._threads:
            thread.join()

    def wait_for_operations(self, count: int, timeout: float) -> None:
        """Wait until `count` more operations have finished since the call.

        Raise TimeoutError after `timeout` seconds, with the failures so far.
        """
        with self._completed.changed:
            target = self._completed.value + count
            finished = self._completed.changed.wait_for(
                lambda: self._completed.value >= target, timeout
            )
        if not finished:
            raise TimeoutError(
                f"the load finished fewer than {count} operations in {timeout}s; "
                f"failures so far: {self.failures[:5]}"
            )

    # threads

    def _run(self, index: int, client: Any) -> None:
        rng = random.Random(self._seed * 1000 + index)
        serial = 0
        while not self._stopping.is_set():
            serial += 1
            name, operation = self._choose(rng)
            try:
                operation(client, rng, f"w{index}-{serial}")
            except Exception as error:
                self._record(
                    Failure(threading.current_thread().name, name, repr(error))
                )
            else:
                self._completed.add()

    def _choose(self, rng: random.Random) -> tuple[str, Callable[..., None]]:
        if not self._objects:
            return "put", self._put
        operations: list[tuple[str, Callable[..., None], int]] = [
            ("put", self._put, 30),
            ("multipart", self._multipart, 7),
            ("transfer", self._transfer, 3),
            ("get", self._get, 20),
            ("get-range", self._get_range, 18),
            ("head", self._head, 12),
            ("copy", self._copy, 10),
        ]
        weights = [weight for _, _, weight in operations]
        name, operation, _ = rng.choices(operations, weights)[0]
        return name, operation

    def _observe_attempt(
        self,
        response: tuple[Any, Any] | None,
        caught_exception: Exception | None,
        operation: Any,
        **kwargs: Any,
    ) -> None:
        """Record an attempt that failed, even if boto3 retries it."""
        name = getattr(operation, "name", "unknown")
        if caught_exception is not None:
            detail = repr(caught_exception)
        elif response is not None and response[0].status_code >= 400:
            error = response[1].get("Error", {}) if response[1] else {}
            detail = f"HTTP {response[0].status_code} {error.get('Code', '')}"
        else:
            return
        self._record(Failure(threading.current_thread().name, name, detail))

    def _record(self, failure: Failure) -> None:
        with self._lock:
            self._failures.append(failure)

    def _remember(self, stored: StoredObject) -> None:
        with self._lock:
            self._objects.append(stored)

    def _pick(self, rng: random.Random) -> StoredObject:
        """Pick an earlier object, half the time from the oldest fifth."""
        with self._lock:
            objects = self._objects
            if rng.random() < 0.5:
                return rng.choice(objects[: max(len(objects) // 5, 1)])
            return rng.choice(objects)

    def _new_name(self, rng: random.Random, name: str) -> tuple[str, str]:
        purpose = rng.choice(sorted(self._prefixes))
        return purpose, f"{self._prefixes[purpose]}{name}"

    # writes

    def _write(
        self,
        rng: random.Random,
        name: str,
        kind: str,
        size: int,
        upload: Callable[[str, bytes], None],
    ) -> None:
        purpose, key = self._new_name(rng, name)
        seed = rng.getrandbits(64)
        low = self._bounds.low()
        upload(key, payload(seed, size))
        high = self._bounds.high()
        self._remember(StoredObject(key, seed, size, purpose, kind, low, high))

    def _put(self, client: Any, rng: random.Random, name: str) -> None:
        if rng.random() < 0.5:
            size = rng.choice(_EDGE_SIZES)
        else:
            size = rng.randrange(1, MIB + SEGMENT)

        def upload(key: str, body: bytes) -> None:
            client.put_object(Bucket=self._bucket, Key=key, Body=body)

        self._write(rng, name, "put", size, upload)

    def _multipart(self, client: Any, rng: random.Random, name: str) -> None:
        size = PART_SIZE + rng.randrange(1, 700 * 1024)

        def upload(key: str, body: bytes) -> None:
            upload_id = client.create_multipart_upload(Bucket=self._bucket, Key=key)[
                "UploadId"
            ]
            parts = []
            for number, start in enumerate(range(0, len(body), PART_SIZE), start=1):
                answer = client.upload_part(
                    Bucket=self._bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body[start : start + PART_SIZE],
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )

        self._write(rng, name, "multipart", size, upload)

    def _transfer(self, client: Any, rng: random.Random, name: str) -> None:
        # Just over the threshold, so boto3 sends two parts in parallel.
        size = TRANSFER_THRESHOLD + rng.randrange(1, MIB)

        def upload(key: str, body: bytes) -> None:
            client.upload_fileobj(BytesIO(body), self._bucket, key)

        self._write(rng, name, "transfer", size, upload)

    def _copy(self, client: Any, rng: random.Random, name: str) -> None:
        source = self._pick(rng)
        purpose, key = self._new_name(rng, name)
        low = self._bounds.low()
        client.copy_object(
            Bucket=self._bucket,
            Key=key,
            CopySource={"Bucket": self._bucket, "Key": source.key},
        )
        high = self._bounds.high()
        copied = StoredObject(key, source.seed, source.size, purpose, "copy", low, high)
        self._remember(copied)

    # reads

    def _get(self, client: Any, rng: random.Random, name: str) -> None:
        stored = self._pick(rng)
        body = client.get_object(Bucket=self._bucket, Key=stored.key)["Body"].read()
        if body != stored.body():
            raise ContentMismatch(
                f"GetObject {stored.key} returned {len(body)} bytes that differ "
                f"from the {stored.size} bytes written"
            )

    def _get_range(self, client: Any, rng: random.Random, name: str) -> None:
        stored = self._pick(rng)
        if stored.size == 0:
            self._head(client, rng, name)
            return
        first = rng.randrange(stored.size)
        last = rng.randrange(first, min(stored.size, first + _MAX_RANGE))
        answer = client.get_object(
            Bucket=self._bucket, Key=stored.key, Range=f"bytes={first}-{last}"
        )
        body = answer["Body"].read()
        if body != stored.body()[first : last + 1]:
            raise ContentMismatch(
                f"GetObject {stored.key} bytes={first}-{last} returned "
                f"{len(body)} bytes that differ from the written range"
            )

    def _head(self, client: Any, rng: random.Random, name: str) -> None:
        stored = self._pick(rng)
        answer = client.head_object(Bucket=self._bucket, Key=stored.key)
        if answer["ContentLength"] != stored.size:
            raise ContentMismatch(
                f"HeadObject {stored.key} returned ContentLength "
                f"{answer['ContentLength']}, expected {stored.size}"
            )


# the admin API


class AdminClient:
    """A client of one proxy's admin API, with the token from its data directory."""

    def __init__(self, url: str, token: str) -> None:
        self._url = url.rstrip("/")
        self._token = token

    @classmethod
    def of(cls, proxy: ProxyProcess) -> AdminClient:
        """Return a client for `proxy`, which wrote its token when it started."""
        token = (proxy.data_dir / "admin.token").read_text().strip()
        return cls(proxy.admin_url, token)

    def request(
        self, method: str, path: str, body: Any = None
    ) -> tuple[int, dict[str, Any]]:
        """Send one request and return the status and the JSON body."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self._url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=_ADMIN_TIMEOUT) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.load(error)

    def ok(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """Send one request and return its JSON; raise AssertionError on an error."""
        status, answer = self.request(method, path, body)
        if status >= 400:
            raise AssertionError(f"{method} {path} failed with {status}: {answer}")
        return answer


# the customer's side of an import


def new_customer_key(directory: Path) -> bytes:
    """Create key.bin in `directory` with openssl, as the customer would."""
    directory.mkdir(parents=True, exist_ok=True)
    _shell("openssl rand -out key.bin 32", directory)
    return (directory / "key.bin").read_bytes()


def _wrap_like_customer(directory: Path, public_key_pem: str) -> tuple[bytes, str]:
    """Wrap key.bin for the job's public key; return it and its check value."""
    (directory / "job.pem").write_text(public_key_pem)
    _shell(
        "openssl pkeyutl -encrypt -pubin -inkey job.pem -in key.bin "
        "-out key.wrapped -pkeyopt rsa_padding_mode:oaep "
        "-pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256",
        directory,
    )
    check_value = _shell(
        'KEY_HEX=$(od -An -tx1 -v key.bin | tr -d " \\n"); '
        'head -c 16 /dev/zero | openssl enc -aes-256-ecb -nopad -K "$KEY_HEX" '
        '| head -c 3 | od -An -tx1 | tr -d " "',
        directory,
    )
    return (directory / "key.wrapped").read_bytes(), check_value


def import_through_api(admin: AdminClient, org: str, directory: Path) -> dict[str, Any]:
    """Import key.bin of `directory` with two admin API calls; return the org."""
    job = admin.ok("POST", f"/v1/organisations/{org}/import-jobs", {})
    wrapped, check_value = _wrap_like_customer(directory, job["public_key_pem"])
    body = {
        "token": job["token"],
        "wrapped_key": base64.b64encode(wrapped).decode("ascii"),
        "check_value": check_value,
    }
    return admin.ok("POST", f"/v1/import-jobs/{job['job_id']}", body)


def import_through_cli(proxy: ProxyProcess, org: str, directory: Path) -> str:
    """Import key.bin of `directory` with `byok-proxy import start` and `finish`."""
    environment = {"BYOK_PROXY_ADMIN_URL": proxy.admin_url}
    started = run_cli(
        proxy.data_dir,
        "import",
        "start",
        org,
        "--public-key",
        str(directory / "job.pem"),
        env=environment,
    )
    fields = dict(line.split(":", 1) for line in started.splitlines() if ":  " in line)
    public_key_pem = (directory / "job.pem").read_text()
    _, check_value = _wrap_like_customer(directory, public_key_pem)
    return run_cli(
        proxy.data_dir,
        "import",
        "finish",
        fields["job id"].strip(),
        "--token",
        fields["token"].strip(),
        "--wrapped-key",
        str(directory / "key.wrapped"),
        "--check-value",
        check_value,
        env=environment,
    )


def run_cli(data_dir: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run `byok-proxy ARGS --data-dir DATA_DIR` with extra environment; return stdout.

    Raise RuntimeError with the command's stderr if it fails.
    """
    result = subprocess.run(
        [sys.executable, "-m", "proxy", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if result.returncode != 0:
        # Only the first words: later ones may be an import token.
        raise RuntimeError(
            f"byok-proxy {' '.join(args[:3])} failed ({result.returncode}): "
            f"{result.stderr.strip()}"
        )
    return result.stdout


def _shell(command: str, directory: Path) -> str:
    return subprocess.run(
        ["sh", "-ec", command],
        cwd=directory,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def wait_until(condition: Callable[[], bool], timeout: float, event: str) -> None:
    """Poll `condition` every 0.1 s until it is true.

    Raise TimeoutError naming `event` if it is still false after `timeout` s.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{event} did not happen within {timeout}s")
        time.sleep(0.1)
