"""Tests of per-organisation master keys: platform, imported, rotation policy."""

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crypto.errors import KeyRevoked, KeyUnavailable, MasterKeyError
from crypto.header import Purpose
from crypto.keyring import KeyRing
from crypto.keystore import Organisation
from crypto.master import MemoryMasterKey
from crypto.masters import MasterKeys
from crypto.sqlite_store import SqliteKeyStore


@pytest.fixture
def platform() -> MemoryMasterKey:
    return MemoryMasterKey(secrets.token_bytes(32))


@pytest.fixture
def customer() -> MemoryMasterKey:
    return MemoryMasterKey(secrets.token_bytes(32))


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[list[SqliteKeyStore]]:
    opened: list[SqliteKeyStore] = []
    yield opened
    for store in opened:
        store.close()


def _keyring(
    tmp_path: Path, stores: list[SqliteKeyStore], platform: MemoryMasterKey
) -> KeyRing:
    """A key ring as a freshly started process would open it."""
    stores.append(SqliteKeyStore.open(tmp_path))
    return KeyRing(stores[-1], MasterKeys(platform))


@pytest.fixture
def keyring(
    tmp_path: Path, stores: list[SqliteKeyStore], platform: MemoryMasterKey
) -> KeyRing:
    return _keyring(tmp_path, stores, platform)


@pytest.fixture
def acme(keyring: KeyRing) -> Organisation:
    return keyring.create_organisation("acme")


def test_new_organisation_uses_platform_key(
    keyring: KeyRing, acme: Organisation, platform: MemoryMasterKey
) -> None:
    assert acme.key_source == "platform"
    assert keyring.key_state(acme) == "active"
    assert {k.master_key_id for k in keyring._store.org_keys(acme.id)} == {
        platform.key_id
    }


def test_imported_key_rewraps_every_version(
    keyring: KeyRing, acme: Organisation, customer: MemoryMasterKey
) -> None:
    old_dek = keyring.current_dek(acme.id, Purpose.FILES)
    keyring.rotate_org_key(acme)

    moved = keyring.use_master(acme, customer, "imported")

    assert moved.key_source == "imported"
    records = keyring._store.org_keys(acme.id)
    assert [(r.version, r.state) for r in records] == [(1, "rotated"), (2, "active")]
    assert {r.master_key_id for r in records} == {customer.key_id}
    reopened = keyring.dek(
        acme.id, Purpose.FILES, old_dek.org_key_version, 1, old_dek.wrapped
    )
    assert reopened == old_dek.key


def test_imported_key_is_unavailable_after_restart(
    tmp_path: Path,
    stores: list[SqliteKeyStore],
    platform: MemoryMasterKey,
    keyring: KeyRing,
    acme: Organisation,
    customer: MemoryMasterKey,
) -> None:
    written = keyring.current_dek(acme.id, Purpose.FILES)
    keyring.use_master(acme, customer, "imported")

    restarted = _keyring(tmp_path, stores, platform)

    assert restarted.key_state(acme.id) == "unavailable"
    with pytest.raises(KeyUnavailable, match="supply it again after every restart"):
        restarted.current_dek(acme.id, Purpose.FILES)
    with pytest.raises(KeyUnavailable):
        restarted.dek(acme.id, Purpose.FILES, 1, 1, written.wrapped)

    restarted.supply_master(acme.id, MemoryMasterKey(customer.key))

    assert restarted.key_state(acme.id) == "active"
    assert restarted.current_dek(acme.id, Purpose.FILES).key == written.key


def test_supply_other_key_rejected(
    tmp_path: Path,
    stores: list[SqliteKeyStore],
    platform: MemoryMasterKey,
    keyring: KeyRing,
    acme: Organisation,
    customer: MemoryMasterKey,
) -> None:
    keyring.use_master(acme, customer, "imported")
    restarted = _keyring(tmp_path, stores, platform)
    impostor = MemoryMasterKey(secrets.token_bytes(32))

    with pytest.raises(MasterKeyError, match=impostor.key_id):
        restarted.supply_master(acme.id, impostor)
    assert restarted.key_state(acme.id) == "unavailable"


def test_supply_to_platform_organisation_rejected(
    keyring: KeyRing, acme: Organisation, customer: MemoryMasterKey
) -> None:
    with pytest.raises(MasterKeyError, match="does not use an imported"):
        keyring.supply_master(acme, customer)


def test_imported_key_rotates_to_another_and_back(
    keyring: KeyRing,
    acme: Organisation,
    customer: MemoryMasterKey,
    platform: MemoryMasterKey,
) -> None:
    written = keyring.current_dek(acme.id, Purpose.MESSAGES)
    keyring.use_master(acme, customer, "imported")
    second = MemoryMasterKey(secrets.token_bytes(32))
    keyring.use_master(acme, second, "imported")
    keyring.rotate_org_key(acme)

    records = keyring._store.org_keys(acme.id)
    assert {r.master_key_id for r in records} == {second.key_id}

    back = keyring.use_master(acme, platform, "platform")

    assert back.key_source == "platform"
    keyring._org_keys.clear()
    keyring._deks.clear()
    assert keyring.dek(acme.id, Purpose.MESSAGES, 1, 1, written.wrapped) == written.key


def test_revoked_state(keyring: KeyRing, acme: Organisation) -> None:
    keyring.revoke(acme)

    assert keyring.key_state(acme.id) == "revoked"
    with pytest.raises(KeyRevoked):
        keyring.use_master(acme, MemoryMasterKey(secrets.token_bytes(32)), "imported")


def test_rotation_policy_names_organisations_due(
    keyring: KeyRing, acme: Organisation
) -> None:
    other = keyring.create_organisation("other")
    keyring.set_max_key_age(acme, 3600)
    created = keyring._store.org_keys(acme.id)[0].created_at

    assert keyring.due_for_rotation(created + timedelta(minutes=59)) == []
    due = keyring.due_for_rotation(created + timedelta(hours=1))
    assert [o.name for o in due] == ["acme"]

    keyring.rotate_org_key(acme)
    assert keyring.due_for_rotation(datetime.now(UTC)) == []
    assert other.max_key_age is None


def test_rotation_policy_must_be_positive(keyring: KeyRing, acme: Organisation) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        keyring.set_max_key_age(acme, 0)
