"""Tests of audited key operations: one record per operation, none with keys."""

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from crypto.audit import AuditLog
from crypto.errors import KeyRevoked, OrganisationExists
from crypto.header import Purpose
from crypto.keyring import KeyRing
from crypto.master import MemoryMasterKey
from crypto.masters import MasterKeys
from crypto.operations import KeyOperations
from crypto.sqlite_store import SqliteKeyStore


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog.open(tmp_path) as log:
        yield log


@pytest.fixture
def operations(tmp_path: Path, audit: AuditLog) -> Iterator[KeyOperations]:
    store = SqliteKeyStore.open(tmp_path)
    masters = MasterKeys(MemoryMasterKey(secrets.token_bytes(32)))

    def observe(org_id: bytes, version: int, key_id: str, outcome: str) -> None:
        keys = {"org_key_version": version, "master_key_id": key_id}
        audit.append("proxy:test", "org_key.unwrap", org_id.hex(), keys, outcome)

    keyring = KeyRing(store, masters, on_unwrap=observe)
    yield KeyOperations(keyring, masters, audit)
    keyring.close()


def _actions(audit: AuditLog) -> list[tuple[str, str, str]]:
    return [(r.actor, r.action, r.outcome) for r in audit.records()]


def test_each_operation_is_recorded(operations: KeyOperations, audit: AuditLog) -> None:
    organisation = operations.create_organisation("cli:ana", "acme")
    operations.create_credentials("cli:ana", "acme")
    operations.rotate_org_key("cli:ana", "acme")
    operations.rotate_dek("cli:ana", "acme", Purpose.FILES)
    operations.set_max_key_age("cli:ana", "acme", 86400)
    operations.revoke("cli:ana", "acme")

    assert _actions(audit) == [
        ("cli:ana", "org.create", "ok"),
        ("cli:ana", "credentials.create", "ok"),
        ("proxy:test", "org_key.unwrap", "ok"),
        ("cli:ana", "org_key.rotate", "ok"),
        # the new organisation key version is not cached yet
        ("proxy:test", "org_key.unwrap", "ok"),
        ("cli:ana", "dek.rotate", "ok"),
        ("cli:ana", "policy.set", "ok"),
        ("cli:ana", "org.revoke", "ok"),
    ]
    records = audit.records(organisation.id_hex)
    assert len(records) == 8
    assert records[3].keys["org_key_version"] == 2
    assert records[5].keys == {"purpose": "files", "dek_version": 2}
    assert audit.verify().ok


def test_failed_operation_is_recorded(
    operations: KeyOperations, audit: AuditLog
) -> None:
    operations.create_organisation("cli:ana", "acme")
    operations.revoke("cli:ana", "acme")

    with pytest.raises(OrganisationExists):
        operations.create_organisation("cli:ana", "acme")
    with pytest.raises(KeyRevoked):
        operations.rotate_org_key("cli:ana", "acme")

    assert _actions(audit)[-2:] == [
        ("cli:ana", "org.create", "failed: OrganisationExists"),
        ("cli:ana", "org_key.rotate", "failed: KeyRevoked"),
    ]


def test_failed_unwrap_is_recorded(operations: KeyOperations, audit: AuditLog) -> None:
    operations.create_organisation("cli:ana", "acme")
    stranger = MemoryMasterKey(secrets.token_bytes(32))
    operations.keyring.use_master("acme", stranger, "imported")
    operations._masters.forget(stranger.key_id)
    operations.keyring._org_keys.clear()

    assert operations.keyring.key_state("acme") == "unavailable"
    assert _actions(audit)[-1] == (
        "proxy:test",
        "org_key.unwrap",
        "failed: KeyUnavailable",
    )


def test_records_hold_no_key_material(
    tmp_path: Path, operations: KeyOperations, audit: AuditLog
) -> None:
    operations.create_organisation("cli:ana", "acme")
    _, secret = operations.create_credentials("cli:ana", "acme")
    data_key = operations.keyring.current_dek(
        operations.keyring.organisation("acme").id, Purpose.FILES
    )

    raw = (tmp_path / "audit.sqlite3").read_bytes()
    for path in tmp_path.glob("audit.sqlite3-*"):
        raw += path.read_bytes()
    assert secret.encode() not in raw
    assert data_key.key not in raw
    assert data_key.key.hex().encode() not in raw


def test_rotate_due_follows_policy(operations: KeyOperations, audit: AuditLog) -> None:
    operations.create_organisation("cli:ana", "acme")
    operations.create_organisation("cli:ana", "other")
    operations.set_max_key_age("cli:ana", "acme", 1)
    created = operations.keyring.org_key_records(
        operations.keyring.organisation("acme").id
    )[0].created_at

    rotated = operations.rotate_due("proxy:policy", created + timedelta(seconds=2))

    assert rotated == ["acme"]
    assert _actions(audit)[-1] == ("proxy:policy", "org_key.rotate", "ok")
