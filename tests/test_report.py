"""`byok-proxy report`: objects and bytes per key version, from headers alone.

`populate` writes objects of three purposes through the proxy, single and
multipart, empty and not, with an organisation key rotation and a files DEK
rotation in between, and puts one object into the bucket straight into the
object store. The commands run in-process through click's CliRunner against
the SeaweedFS and key store that the test proxy uses.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from crypto.audit import AuditLog
from crypto.sizes import part_stored_size, sealed_size
from proxy.cli_objects import report
from tests.conftest import Stack, Tenant, remove_bucket
from tests.payloads import MIB, put_multipart
from tests.stack import byok
from tests.test_versions import enable_versioning

UPSTREAM_VARIABLES = (
    "BYOK_PROXY_UPSTREAM_URL",
    "BYOK_PROXY_UPSTREAM_ACCESS_KEY",
    "BYOK_PROXY_UPSTREAM_SECRET_KEY",
)
FOREIGN_KEY = "raw/foreign.txt"
FOREIGN_BODY = b"written straight to the object store, never encrypted\n"


@dataclass(frozen=True)
class Written:
    """An object written through the proxy and the key versions it got."""

    key: str
    data: bytes
    purpose: str
    org_key_version: int
    dek_version: int
    part_sizes: tuple[int, ...] = ()

    @property
    def stored_size(self) -> int:
        if self.part_sizes:
            return sum(part_stored_size(size) for size in self.part_sizes)
        return sealed_size(len(self.data))


@dataclass
class Populated:
    """An organisation whose bucket contains objects under several key versions."""

    name: str
    org_id: str
    tenant: Tenant
    client: Any
    bucket: str
    objects: dict[str, Written]


def run_command(stack: Stack, command: click.Command, *args: str) -> Result:
    """Run a command in-process on the test proxy's data directory and store."""
    env = {name: stack.proxy.env[name] for name in UPSTREAM_VARIABLES}
    return CliRunner().invoke(
        command,
        [*args, "--data-dir", str(stack.data_dir)],
        env=env,
        catch_exceptions=False,
    )


def report_json(stack: Stack, name: str, *args: str) -> dict[str, Any]:
    result = run_command(stack, report, name, "--json", *args)
    assert result.exit_code == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def org_id_of(stack: Stack, name: str) -> str:
    for line in byok(stack.data_dir, "org", "list").splitlines():
        fields = line.split("\t")
        if fields[0] == name:
            return fields[2]
    raise AssertionError(f"organisation {name} is not listed")


def put(client: Any, bucket: str, key: str, data: bytes, **extra: Any) -> None:
    client.put_object(Bucket=bucket, Key=key, Body=data, **extra)


def populate(stack: Stack, backend_s3: Any, prefix: str) -> Populated:
    """Write objects before and after an org key and a files DEK rotation."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    tenant = stack.tenant(name)
    client = stack.client(tenant)
    bucket = f"{prefix}-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=bucket)
    byok(stack.data_dir, "route", "set", bucket, "msg/", "messages")
    byok(stack.data_dir, "route", "set", bucket, "rec/", "recordings")
    objects: list[Written] = []

    def single(key: str, purpose: str, versions: tuple[int, int], size: int) -> None:
        data = os.urandom(size)
        extra: dict[str, Any] = {}
        if key == "files/small":
            extra = {"ContentType": "text/csv", "Metadata": {"owner": "ana"}}
            extra["Tagging"] = "team=blue"
        if key == "msg/one":
            extra = {"Metadata": {"thread": "42"}, "Tagging": "stage=draft"}
        if key == "files/segments":
            extra = {"ChecksumAlgorithm": "CRC32"}
        put(client, bucket, key, data, **extra)
        objects.append(Written(key, data, purpose, *versions))

    def multipart(key: str, purpose: str, sizes: Sequence[int]) -> None:
        parts = [os.urandom(size) for size in sizes]
        put_multipart(client, bucket, key, parts)
        objects.append(Written(key, b"".join(parts), purpose, 1, 1, tuple(sizes)))

    single("files/empty", "files", (1, 1), 0)
    single("files/small", "files", (1, 1), 1000)
    single("files/segments", "files", (1, 1), 200_000)
    multipart("files/multi", "files", [5 * MIB + 10, 70_000])
    single("msg/one", "messages", (1, 1), 70_000)
    multipart("msg/multi", "messages", [5 * MIB, 1000])
    single("rec/empty", "recordings", (1, 1), 0)
    backend_s3.put_object(Bucket=bucket, Key=FOREIGN_KEY, Body=FOREIGN_BODY)

    byok(stack.data_dir, "org", "rotate", name)
    single("files/after-org", "files", (2, 1), 3000)
    single("msg/after-org", "messages", (2, 1), 3000)
    byok(stack.data_dir, "org", "rotate-dek", name, "files")
    single("files/after-dek", "files", (2, 2), 5000)
    return Populated(
        name,
        org_id_of(stack, name),
        tenant,
        client,
        bucket,
        {written.key: written for written in objects},
    )


def expected_versions(populated: Populated) -> list[dict[str, Any]]:
    """The report's by_key_version rows for what `populate` wrote."""
    active = {"files": (2, 2), "messages": (2, 1), "recordings": (2, 1)}
    rows: dict[tuple[str, int, int], list[Written]] = {}
    for written in populated.objects.values():
        group = (written.purpose, written.org_key_version, written.dek_version)
        rows.setdefault(group, []).append(written)
    purpose_order = {"messages": 1, "files": 2, "recordings": 3}
    return [
        {
            "purpose": purpose,
            "org_key_version": org_key,
            "dek_version": dek,
            "current": active[purpose] == (org_key, dek),
            "objects": len(group),
            "bytes": sum(w.stored_size for w in group),
        }
        for (purpose, org_key, dek), group in sorted(
            rows.items(), key=lambda row: (purpose_order[row[0][0]], *row[0][1:])
        )
    ]


@pytest.fixture(scope="module")
def populated(stack: Stack, backend_s3: Any) -> Iterator[Populated]:
    populated = populate(stack, backend_s3, "report")
    yield populated
    remove_bucket(populated.client, populated.bucket)


def test_report_counts_each_key_version(stack: Stack, populated: Populated) -> None:
    document = report_json(stack, populated.name)
    assert document["by_key_version"] == expected_versions(populated)
    sizes = {w.key: w.stored_size for w in populated.objects.values()}
    by_purpose = {
        purpose: {
            "objects": len(keys),
            "bytes": sum(sizes[key] for key in keys),
        }
        for purpose in ("messages", "files", "recordings")
        if (keys := [w.key for w in populated.objects.values() if w.purpose == purpose])
    }
    assert document["by_purpose"] == by_purpose
    v1 = [w for w in populated.objects.values() if w.org_key_version == 1]
    v2 = [w for w in populated.objects.values() if w.org_key_version == 2]
    assert document["by_org_key_version"] == [
        {
            "org_key_version": 1,
            "active": False,
            "objects": 7,
            "bytes": sum(w.stored_size for w in v1),
        },
        {
            "org_key_version": 2,
            "active": True,
            "objects": 3,
            "bytes": sum(w.stored_size for w in v2),
        },
    ]
    assert document["encrypted"] == {"objects": 10, "bytes": sum(sizes.values())}


def test_report_counts_foreign_objects(stack: Stack, populated: Populated) -> None:
    document = report_json(stack, populated.name)
    foreign = {"objects": 1, "bytes": len(FOREIGN_BODY)}
    assert document["not_written_by_proxy"] == foreign
    assert document["invalid_headers"] == {"objects": 0, "bytes": 0}
    assert document["revocation"]["stays_readable"] == foreign


def test_report_names_active_versions(stack: Stack, populated: Populated) -> None:
    document = report_json(stack, populated.name)
    assert document["organisation"] == {
        "name": populated.name,
        "id": populated.org_id,
        "state": "active",
    }
    assert document["buckets"] == [populated.bucket]
    assert document["active"] == {
        "org_key_version": 2,
        "dek_versions": {
            "messages": 1,
            "files": 2,
            "recordings": 1,
            "transcripts": 1,
        },
    }


def test_report_text_states_revocation(stack: Stack, populated: Populated) -> None:
    result = run_command(stack, report, populated.name)
    assert result.exit_code == 0, result.stderr
    total = sum(w.stored_size for w in populated.objects.values())
    assert total > 1024 * 1024
    lines = result.stdout.splitlines()
    assert lines[-1].startswith(
        f"Revoking {populated.name} makes 10 objects ({total / MIB:.1f} MiB) "
        "unreadable for good: every object encrypted under its keys. The 1 "
        f"object ({len(FOREIGN_BODY)} B) not written through the proxy is "
        "stored unencrypted and stays readable in the object store."
    )
    rows = {line.split("  ")[1].strip(): line for line in lines if " DEK v" in line}
    assert not rows["files org v1 DEK v1"].endswith("current")
    assert rows["files org v2 DEK v2"].endswith("current")
    assert rows["messages org v2 DEK v1"].endswith("current")


def test_report_progress_goes_to_stderr(stack: Stack, populated: Populated) -> None:
    result = run_command(stack, report, populated.name, "--json")
    assert result.exit_code == 0
    assert "scanning" in result.stderr
    assert "scanning" not in result.stdout


def test_report_is_audited(stack: Stack, populated: Populated) -> None:
    report_json(stack, populated.name)
    with AuditLog.open(stack.data_dir) as audit:
        records = audit.records(populated.org_id)
    runs = [record for record in records if record.action == "report.run"]
    assert runs, "no report.run record"
    last = runs[-1]
    assert last.outcome == "ok"
    assert last.actor.startswith("cli:")
    assert last.keys["objects"] == 10
    assert last.keys["foreign_objects"] == 1
    assert last.keys["versions"] is False


def test_report_versions_counts_older_versions(stack: Stack, backend_s3: Any) -> None:
    name = f"versions-{secrets.token_hex(4)}"
    client = stack.client(stack.tenant(name))
    bucket = f"versions-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=bucket)
    try:
        enable_versioning(client, bucket)
        put(client, bucket, "doc", b"first version")
        byok(stack.data_dir, "org", "rotate", name)
        put(client, bucket, "doc", b"second version, longer")

        current = report_json(stack, name)
        every = report_json(stack, name, "--versions")
    finally:
        remove_bucket(client, bucket)
    assert current["all_versions"] is False
    assert [
        (row["org_key_version"], row["objects"]) for row in current["by_key_version"]
    ] == [(2, 1)]
    assert every["all_versions"] is True
    assert [
        (row["org_key_version"], row["objects"], row["bytes"])
        for row in every["by_key_version"]
    ] == [
        (1, 1, sealed_size(len(b"first version"))),
        (2, 1, sealed_size(len(b"second version, longer"))),
    ]


def test_report_revoked_organisation(stack: Stack, backend_s3: Any) -> None:
    name = f"revoked-{secrets.token_hex(4)}"
    client = stack.client(stack.tenant(name))
    bucket = f"revoked-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=bucket)
    put(client, bucket, "a", b"alpha")
    put(client, bucket, "b", b"")
    byok(stack.data_dir, "org", "revoke", name, "--yes")
    try:
        document = report_json(stack, name)
    finally:
        remove_bucket(backend_s3, bucket)
    assert document["organisation"]["state"] == "revoked"
    assert document["encrypted"] == {
        "objects": 2,
        "bytes": sealed_size(5) + sealed_size(0),
    }
    assert document["active"] == {"org_key_version": None, "dek_versions": {}}
    assert document["revocation"]["statement"].startswith(
        f"{name} is revoked: its 2 objects"
    )


def test_report_unknown_organisation(stack: Stack) -> None:
    result = run_command(stack, report, "no-such-organisation")
    assert result.exit_code == 1
    assert "no-such-organisation" in result.stderr
    assert result.stdout == ""
