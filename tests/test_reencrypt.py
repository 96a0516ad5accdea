"""`byok-proxy reencrypt`: objects move onto the active keys and read back the same.

The module fixture populates a bucket (see tests/test_report.py), runs a
dry run and then a real run in-process, and snapshots the stored objects in
SeaweedFS before and after each. Runs that must be interrupted, or that race
a client, run as separate processes on organisations of their own.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from crypto.audit import AuditLog, AuditRecord
from crypto.header import Header
from proxy.cli_objects import reencrypt
from proxy.report import format_bytes
from tests.conftest import Stack, remove_bucket
from tests.stack import byok
from tests.test_report import (
    FOREIGN_BODY,
    FOREIGN_KEY,
    Populated,
    org_id_of,
    populate,
    put,
    report_json,
    run_command,
)

REPOSITORY = Path(__file__).resolve().parents[1]
REENCRYPT_PROCESS = (
    "from proxy.cli_objects import reencrypt; "
    "reencrypt(prog_name='byok-proxy reencrypt')"
)
REWRAPPED = {"msg/one", "msg/multi", "rec/empty"}
REENCRYPTED = {
    "files/empty",
    "files/small",
    "files/segments",
    "files/multi",
    "files/after-org",
}
CURRENT = {"msg/after-org", "files/after-dek"}


@dataclass(frozen=True)
class Stored:
    """One object as SeaweedFS stores it: body, header and ETag."""

    body: bytes
    header: Header | None
    etag: str
    last_modified: Any


def snapshot(backend_s3: Any, bucket: str) -> dict[str, Stored]:
    """Read every object of `bucket` straight from SeaweedFS."""
    stored = {}
    listing = backend_s3.list_objects_v2(Bucket=bucket)
    for entry in listing.get("Contents", []):
        got = backend_s3.get_object(Bucket=bucket, Key=entry["Key"])
        text = got["Metadata"].get("byok-header")
        header = Header.from_metadata(text) if text else None
        stored[entry["Key"]] = Stored(
            got["Body"].read(), header, got["ETag"], got["LastModified"]
        )
    return stored


def summary_of(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def audit_records(stack: Stack, org_id: str, action: str) -> list[AuditRecord]:
    with AuditLog.open(stack.data_dir) as audit:
        return [r for r in audit.records(org_id) if r.action == action]


def checkpoint_path(stack: Stack, org_id: str) -> Path:
    return stack.data_dir / f"reencrypt-{org_id}.json"


@dataclass
class Moved:
    """The populated bucket, snapshotted around a dry run and a real run."""

    populated: Populated
    before: dict[str, Stored]
    proxy_before: dict[str, dict[str, Any]]
    dry_run_text: Result
    dry_run: dict[str, Any]
    after_dry_run: dict[str, Stored]
    run: dict[str, Any]
    after: dict[str, Stored]


def proxy_view(populated: Populated) -> dict[str, dict[str, Any]]:
    """What a client sees of each object through the proxy, without the body."""
    client, bucket = populated.client, populated.bucket
    seen = {}
    for key in populated.objects:
        head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        tags = client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        seen[key] = {
            "etag": head["ETag"],
            "size": head["ContentLength"],
            "type": head["ContentType"],
            "metadata": head["Metadata"],
            "crc32": head.get("ChecksumCRC32"),
            "tags": tags,
        }
    return seen


@pytest.fixture(scope="module")
def moved(stack: Stack, backend_s3: Any) -> Iterator[Moved]:
    populated = populate(stack, backend_s3, "reencrypt")
    bucket, name = populated.bucket, populated.name
    before = snapshot(backend_s3, bucket)
    proxy_before = proxy_view(populated)
    dry_run_text = run_command(stack, reencrypt, name, "--dry-run")
    dry_run = summary_of(run_command(stack, reencrypt, name, "--dry-run", "--json"))
    after_dry_run = snapshot(backend_s3, bucket)
    run = summary_of(run_command(stack, reencrypt, name, "--json"))
    after = snapshot(backend_s3, bucket)
    yield Moved(
        populated,
        before,
        proxy_before,
        dry_run_text,
        dry_run,
        after_dry_run,
        run,
        after,
    )
    remove_bucket(populated.client, bucket)


def test_dry_run_writes_nothing(moved: Moved) -> None:
    assert moved.after_dry_run == moved.before


def test_dry_run_counts_planned_moves(moved: Moved) -> None:
    summary = moved.dry_run
    assert summary["dry_run"] is True
    assert summary["finished"] is True
    assert summary["rewrap"] == len(REWRAPPED)
    assert summary["reencrypt"] == len(REENCRYPTED)
    assert summary["current"] == len(CURRENT)
    assert summary["foreign"] == 1
    assert summary["examined"] == 11


def test_dry_run_lists_each_move(moved: Moved) -> None:
    result = moved.dry_run_text
    assert result.exit_code == 0, result.stderr
    bucket = moved.populated.bucket
    lines = result.stdout.splitlines()
    rewraps = {
        line.split(":")[0].split(f"{bucket}/")[1]
        for line in lines
        if line.startswith("rewrap ")
    }
    reencrypts = {
        line.split(":")[0].split(f"{bucket}/")[1]
        for line in lines
        if line.startswith("re-encrypt ")
    }
    assert rewraps == REWRAPPED
    assert reencrypts == REENCRYPTED
    assert (
        f"rewrap {bucket}/msg/one: messages DEK v1, organisation key v1 -> v2" in lines
    )
    assert (
        f"re-encrypt {bucket}/files/after-org: files DEK v1 -> v2, "
        "organisation key v2 -> v2" in lines
    )
    planned = sum(len(moved.before[key].body) for key in REWRAPPED | REENCRYPTED)
    assert lines[-1] == f"would move {format_bytes(planned)} of stored objects"


def test_run_counts_moves(moved: Moved) -> None:
    summary = moved.run
    assert summary["dry_run"] is False
    assert summary["finished"] is True
    assert summary["resumed_after"] is None
    assert summary["rewrap"] == len(REWRAPPED)
    assert summary["reencrypt"] == len(REENCRYPTED)
    assert summary["current"] == len(CURRENT)
    assert summary["foreign"] == 1
    assert summary["changed"] == 0
    assert summary["failed"] == 0
    moved_keys = REWRAPPED | REENCRYPTED
    assert summary["moved_bytes"] == sum(
        len(moved.before[key].body) for key in moved_keys
    )


def test_report_after_run_shows_active_versions(stack: Stack, moved: Moved) -> None:
    document = report_json(stack, moved.populated.name)
    rows = [
        (row["purpose"], row["org_key_version"], row["dek_version"], row["objects"])
        for row in document["by_key_version"]
    ]
    assert rows == [("messages", 2, 1, 3), ("files", 2, 2, 6), ("recordings", 2, 1, 1)]
    assert all(row["current"] for row in document["by_key_version"])


def test_objects_read_back_identical(moved: Moved) -> None:
    client, bucket = moved.populated.client, moved.populated.bucket
    for key, written in moved.populated.objects.items():
        got = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert got == written.data, f"{key} changed"


def test_ranged_reads_after_run(moved: Moved) -> None:
    client, bucket = moved.populated.client, moved.populated.bucket
    for key, written in moved.populated.objects.items():
        size = len(written.data)
        if size < 2:
            continue
        for first, last in ((0, 0), (size // 3, size - 2), (size - 1, size - 1)):
            answer = client.get_object(
                Bucket=bucket, Key=key, Range=f"bytes={first}-{last}"
            )
            got = answer["Body"].read()
            assert got == written.data[first : last + 1], f"{key} {first}-{last}"


def test_client_view_kept(moved: Moved) -> None:
    assert proxy_view(moved.populated) == moved.proxy_before
    assert moved.proxy_before["files/small"]["tags"] == [
        {"Key": "team", "Value": "blue"}
    ]
    assert moved.proxy_before["msg/one"]["metadata"] == {"thread": "42"}
    assert moved.proxy_before["files/segments"]["crc32"] is not None


def test_rewrap_keeps_ciphertext(moved: Moved) -> None:
    for key in REWRAPPED:
        before, after = moved.before[key], moved.after[key]
        assert before.header is not None and after.header is not None
        assert after.body == before.body, key
        assert after.header.org_key_version == 2
        assert after.header.dek_version == before.header.dek_version
        assert after.header.salt == before.header.salt
        assert after.header.wrapped_dek != before.header.wrapped_dek
        assert after.header.tag != before.header.tag


def test_reencrypt_replaces_ciphertext(moved: Moved) -> None:
    for key in REENCRYPTED:
        before, after = moved.before[key], moved.after[key]
        assert before.header is not None and after.header is not None
        assert after.body != before.body, key
        assert len(after.body) == len(before.body), key
        assert after.header.dek_version == 2
        assert after.header.org_key_version == 2
        assert after.header.layout == before.header.layout
        assert after.header.salt != before.header.salt


def test_current_objects_untouched(moved: Moved) -> None:
    for key in CURRENT:
        assert moved.after[key] == moved.before[key], key


def test_foreign_object_untouched(moved: Moved) -> None:
    foreign = moved.after[FOREIGN_KEY]
    assert foreign == moved.before[FOREIGN_KEY]
    assert foreign.body == FOREIGN_BODY
    assert foreign.header is None


def test_second_run_moves_nothing(stack: Stack, moved: Moved) -> None:
    summary = summary_of(run_command(stack, reencrypt, moved.populated.name, "--json"))
    assert summary["rewrap"] == 0
    assert summary["reencrypt"] == 0
    assert summary["current"] == 10
    assert snapshot(stack.backend_client(), moved.populated.bucket) == moved.after


def test_run_is_audited(stack: Stack, moved: Moved) -> None:
    org_id = moved.populated.org_id
    starts = audit_records(stack, org_id, "reencrypt.start")
    finishes = audit_records(stack, org_id, "reencrypt.finish")
    assert len(starts) >= 3
    assert len(finishes) == len(starts)
    runs = [record for record in finishes if record.keys["dry_run"] is False]
    first = runs[0]
    assert first.outcome == "ok"
    assert first.keys["rewrap"] == len(REWRAPPED)
    assert first.keys["reencrypt"] == len(REENCRYPTED)
    assert all(record.keys["dry_run"] for record in finishes[:2])


def test_no_checkpoint_after_finished_run(stack: Stack, moved: Moved) -> None:
    assert not checkpoint_path(stack, moved.populated.org_id).exists()


@dataclass(frozen=True)
class Small:
    """An organisation with a few objects, after an org key and a DEK rotation."""

    name: str
    org_id: str
    client: Any
    bucket: str
    data: dict[str, bytes]


@pytest.fixture
def small_org(stack: Stack) -> Iterator[Callable[[list[str]], Small]]:
    created: list[Small] = []

    def make(keys: list[str]) -> Small:
        name = f"small-{secrets.token_hex(4)}"
        client = stack.client(stack.tenant(name))
        bucket = f"small-{secrets.token_hex(6)}"
        client.create_bucket(Bucket=bucket)
        byok(stack.data_dir, "route", "set", bucket, "msg/", "messages")
        data = {key: os.urandom(20_000) for key in keys}
        for key, body in data.items():
            put(client, bucket, key, body)
        byok(stack.data_dir, "org", "rotate", name)
        byok(stack.data_dir, "org", "rotate-dek", name, "files")
        small = Small(name, org_id_of(stack, name), client, bucket, data)
        created.append(small)
        return small

    yield make
    for small in created:
        remove_bucket(small.client, small.bucket)


def start_reencrypt(stack: Stack, name: str, *args: str) -> subprocess.Popen[str]:
    """Run reencrypt as a process of its own, so that a test can stop it."""
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            REENCRYPT_PROCESS,
            name,
            "--data-dir",
            str(stack.data_dir),
            *args,
        ],
        env=stack.proxy.env,
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(
    path: Path,
    reached: Callable[[dict[str, Any]], bool],
    process: subprocess.Popen[str],
    timeout: float = 60,
) -> dict[str, Any]:
    """Poll the checkpoint file until `reached` accepts it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"the run ended before the checkpoint: {stderr}")
        try:
            saved: dict[str, Any] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            saved = {}
        if saved and reached(saved):
            return saved
        time.sleep(0.02)
    raise AssertionError(f"the checkpoint did not advance in {timeout} s")


def read(small: Small, key: str) -> bytes:
    body: bytes = small.client.get_object(Bucket=small.bucket, Key=key)["Body"].read()
    return body


def test_interrupted_run_resumes(
    stack: Stack, small_org: Callable[[list[str]], Small]
) -> None:
    keys = [f"k{index}" for index in range(8)]
    small = small_org(keys)
    path = checkpoint_path(stack, small.org_id)

    # SIGTERM stops the first run between two objects
    first = start_reencrypt(stack, small.name, "--rate", "2", "--json")
    wait_for_checkpoint(path, lambda saved: saved["key"] >= "k1", first)
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=30)
    assert first.returncode == 130, stderr
    assert "interrupted" in stderr
    finish = audit_records(stack, small.org_id, "reencrypt.finish")[-1]
    assert finish.outcome == "failed: CancelledError"
    stopped = json.loads(path.read_text())

    # the second run continues there, and is killed without warning
    second = start_reencrypt(stack, small.name, "--rate", "2", "--json")
    wait_for_checkpoint(path, lambda saved: saved["key"] >= "k5", second)
    second.kill()
    _, stderr = second.communicate(timeout=30)
    assert f"resuming after {small.bucket}/{stopped['key']}" in stderr
    killed = json.loads(path.read_text())

    # the third run starts after the last object the killed run finished
    summary = summary_of(run_command(stack, reencrypt, small.name, "--json"))
    assert summary["resumed_after"] == {"bucket": small.bucket, "key": killed["key"]}
    assert summary["examined"] == len(keys) - keys.index(killed["key"]) - 1
    assert summary["failed"] == 0
    assert summary["finished"] is True
    assert not path.exists()

    stored = snapshot(stack.backend_client(), small.bucket)
    for key in keys:
        header = stored[key].header
        assert header is not None
        assert (header.org_key_version, header.dek_version) == (2, 2), key
        assert read(small, key) == small.data[key], key


def test_concurrent_overwrite_not_clobbered(
    stack: Stack, small_org: Callable[[list[str]], Small]
) -> None:
    keys = ["a0", "a1", "a2", "a3", "msg/late", "z-late"]
    small = small_org(keys)
    path = checkpoint_path(stack, small.org_id)

    # one object a second: the run reads every header at its start, and
    # the client replaces the last two objects after the first has moved
    process = start_reencrypt(stack, small.name, "--rate", "1", "--json")
    wait_for_checkpoint(path, lambda saved: saved["key"] == "a0", process)
    newer = {"msg/late": b"newer message", "z-late": b"newer file body"}
    for key, body in newer.items():
        put(small.client, small.bucket, key, body)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr

    summary = json.loads(stdout)
    assert summary["changed"] == 2
    assert summary["reencrypt"] == 4
    assert summary["rewrap"] == 0
    for key, body in newer.items():
        assert read(small, key) == body, key
    for key in ("a0", "a1", "a2", "a3"):
        assert read(small, key) == small.data[key], key


def test_rate_spaces_moves(
    stack: Stack, small_org: Callable[[list[str]], Small]
) -> None:
    small = small_org(["a0", "a1", "a2"])
    started = time.monotonic()
    summary = summary_of(
        run_command(stack, reencrypt, small.name, "--rate", "4", "--json")
    )
    elapsed = time.monotonic() - started
    assert summary["reencrypt"] == 3
    # three moves at four a second need at least two quarter-second gaps
    assert elapsed >= 0.5


def test_purpose_and_version_filters(
    stack: Stack, small_org: Callable[[list[str]], Small]
) -> None:
    small = small_org(["a0", "msg/one"])
    newer_only = summary_of(
        run_command(stack, reencrypt, small.name, "--org-key-version", "2", "--json")
    )
    assert newer_only["not_selected"] == 2
    assert newer_only["examined"] == 2

    messages = summary_of(
        run_command(stack, reencrypt, small.name, "--purpose", "messages", "--json")
    )
    assert messages["rewrap"] == 1
    assert messages["not_selected"] == 1
    assert messages["reencrypt"] == 0
    stored = snapshot(stack.backend_client(), small.bucket)
    files_header, messages_header = stored["a0"].header, stored["msg/one"].header
    assert files_header is not None and messages_header is not None
    assert (files_header.org_key_version, files_header.dek_version) == (1, 1)
    assert (messages_header.org_key_version, messages_header.dek_version) == (2, 1)


def test_unknown_bucket_rejected(
    stack: Stack, small_org: Callable[[list[str]], Small]
) -> None:
    small = small_org(["a0"])
    result = run_command(stack, reencrypt, small.name, "--bucket", "not-this-one")
    assert result.exit_code == 2
    assert "'not-this-one' is not a bucket of" in result.stderr
    assert small.bucket in result.stderr


def test_revoked_organisation_rejected(stack: Stack) -> None:
    name = f"gone-{secrets.token_hex(4)}"
    stack.tenant(name)
    byok(stack.data_dir, "org", "revoke", name, "--yes")
    result = run_command(stack, reencrypt, name)
    assert result.exit_code == 1
    assert "revoked" in result.stderr
