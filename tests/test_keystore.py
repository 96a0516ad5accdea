"""Tests of the SQLite key store: schema, rows, transactions, raw file bytes."""

import secrets
import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crypto.errors import (
    KeyStoreError,
    KeyUnavailable,
    OrganisationExists,
)
from crypto.header import Purpose
from crypto.keyring import KeyRing
from crypto.keystore import DekRecord, validate_organisation_name
from crypto.master import MemoryMasterKey
from crypto.sqlite_store import KEYS_DATABASE, SqliteKeyStore, connect, schema_version
from crypto.wrap import org_key_associated_data, secret_associated_data


@pytest.fixture
def master() -> MemoryMasterKey:
    return MemoryMasterKey(secrets.token_bytes(32))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteKeyStore]:
    store = SqliteKeyStore.open(tmp_path)
    try:
        yield store
    finally:
        store.close()


def _rows(store: SqliteKeyStore, table: str) -> list[tuple[object, ...]]:
    return store.connection.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()


def _raw_bytes(directory: Path) -> bytes:
    return b"".join(
        path.read_bytes() for path in sorted(directory.glob("keys.sqlite3*"))
    )


def test_keystore_schema_version_row(store: SqliteKeyStore) -> None:
    assert store.path.name == KEYS_DATABASE
    assert schema_version(store.connection, "keys") == 2
    assert _rows(store, "schema_version") == [("keys", 2)]


_VERSION_1_ORGANISATIONS = """CREATE TABLE organisations (
    id BLOB PRIMARY KEY CHECK (length(id) = 16),
    name TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('active', 'revoked')),
    created_at REAL NOT NULL,
    revoked_at REAL)"""


def test_keystore_migrates_version_1(tmp_path: Path) -> None:
    path = tmp_path / KEYS_DATABASE
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE schema_version (component TEXT PRIMARY KEY, "
            "version INTEGER NOT NULL)"
        )
        db.execute("INSERT INTO schema_version VALUES ('keys', 1)")
        db.execute(_VERSION_1_ORGANISATIONS)
        db.execute(
            "INSERT INTO organisations VALUES (?, 'old', 'active', 0, NULL)",
            (bytes(16),),
        )
    db.close()

    store = SqliteKeyStore(path)

    assert schema_version(store.connection, "keys") == 2
    old = store.organisation_named("old")
    assert old is not None
    assert (old.key_source, old.hsm_key_label, old.max_key_age) == (
        "platform",
        "",
        None,
    )
    store.close()


def test_keystore_connection_settings(store: SqliteKeyStore) -> None:
    db = store.connection

    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert db.execute("PRAGMA busy_timeout").fetchone() == (5000,)
    assert db.execute("PRAGMA secure_delete").fetchone() == (1,)
    assert db.execute("PRAGMA synchronous").fetchone() == (2,)


def test_keystore_file_mode_0600(tmp_path: Path, store: SqliteKeyStore) -> None:
    KeyRing(store, MemoryMasterKey(secrets.token_bytes(32))).create_organisation("acme")

    for name in (KEYS_DATABASE, f"{KEYS_DATABASE}-wal", f"{KEYS_DATABASE}-shm"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_keystore_open_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="does not exist"):
        SqliteKeyStore.open(tmp_path / "absent")


def test_keystore_ignores_other_components(tmp_path: Path) -> None:
    path = tmp_path / KEYS_DATABASE
    SqliteKeyStore(path).close()
    other = connect(path)
    other.execute("CREATE TABLE uploads (upload_id TEXT PRIMARY KEY)")
    other.execute("INSERT INTO schema_version VALUES ('catalogue', 7)")
    other.close()

    store = SqliteKeyStore(path)

    assert schema_version(store.connection, "keys") == 2
    assert schema_version(store.connection, "catalogue") == 7
    store.close()


def test_keystore_rejects_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / KEYS_DATABASE
    SqliteKeyStore(path).close()
    other = connect(path)
    other.execute("UPDATE schema_version SET version = 3 WHERE component = 'keys'")
    other.close()

    with pytest.raises(KeyStoreError, match=r"schema version 3.*upgrade byok-proxy"):
        SqliteKeyStore(path)


def test_keystore_org_creation_rows(
    store: SqliteKeyStore, master: MemoryMasterKey
) -> None:
    organisation = KeyRing(store, master).create_organisation("acme")

    assert store.organisations() == [organisation]
    org_keys = store.org_keys(organisation.id)
    assert [(k.version, k.state, k.master_key_id) for k in org_keys] == [
        (1, "active", master.key_id)
    ]
    assert org_keys[0].wrapped is not None
    assert len(org_keys[0].wrapped) == 60
    deks = store.deks(organisation.id)
    assert [(d.purpose, d.version, d.org_key_version, d.state) for d in deks] == [
        (purpose, 1, 1, "active") for purpose in Purpose
    ]
    assert all(len(d.wrapped) == 60 for d in deks)
    assert len({d.wrapped for d in deks}) == 4


def test_keystore_holds_no_plaintext_keys(
    tmp_path: Path, store: SqliteKeyStore, master: MemoryMasterKey
) -> None:
    keyring = KeyRing(store, master)
    organisation = keyring.create_organisation("acme")
    access_key_id, secret = keyring.create_credentials(organisation)
    keyring.rotate_org_key(organisation)
    keyring.rotate_dek(organisation, Purpose.FILES)
    org_keys = [
        master.unwrap(k.wrapped, org_key_associated_data(organisation.id, k.version))
        for k in store.org_keys(organisation.id)
        if k.wrapped is not None
    ]
    deks = [keyring.current_dek(organisation.id, purpose) for purpose in Purpose]
    record = store.credentials(access_key_id)
    assert record is not None
    assert record.wrapped_secret is not None
    store.close()

    raw = _raw_bytes(tmp_path)

    assert len(org_keys) == 2
    for key in org_keys:
        assert key not in raw
    for data_key in deks:
        assert data_key.key not in raw
        assert data_key.wrapped in raw
    assert secret.encode() not in raw
    assert record.wrapped_secret in raw
    assert master.key not in raw
    assert (
        master.unwrap(record.wrapped_secret, secret_associated_data(access_key_id))
        == secret.encode()
    )


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a",
        "-acme",
        "Acme",
        "acme_corp",
        "acme corp",
        "acme.corp",
        "acmé",
        "a" * 64,
        "0123456789abcdef0123456789abcdef",
    ],
)
def test_keystore_rejects_invalid_name(name: str) -> None:
    with pytest.raises(ValueError, match="organisation name"):
        validate_organisation_name(name)


@pytest.mark.parametrize("name", ["ab", "acme", "acme-corp", "0rg", "a" * 63, "a-"])
def test_keystore_accepts_valid_name(name: str) -> None:
    validate_organisation_name(name)


def test_keystore_invalid_name_writes_nothing(
    store: SqliteKeyStore, master: MemoryMasterKey
) -> None:
    with pytest.raises(ValueError, match="use 2 to 63 lowercase letters"):
        KeyRing(store, master).create_organisation("Acme")

    assert store.organisations() == []


def test_keystore_name_unique(store: SqliteKeyStore, master: MemoryMasterKey) -> None:
    keyring = KeyRing(store, master)
    first = keyring.create_organisation("acme")

    with pytest.raises(OrganisationExists, match="'acme' already exists"):
        keyring.create_organisation("acme")

    assert store.organisations() == [first]
    assert len(_rows(store, "org_keys")) == 1
    assert len(_rows(store, "deks")) == 4


def test_keystore_create_rolls_back(
    store: SqliteKeyStore, master: MemoryMasterKey
) -> None:
    store.connection.execute(
        "CREATE TEMP TRIGGER fail_third_dek BEFORE INSERT ON deks "
        "WHEN NEW.purpose = 3 BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )

    with pytest.raises(sqlite3.IntegrityError, match="injected failure"):
        KeyRing(store, master).create_organisation("acme")

    assert _rows(store, "organisations") == []
    assert _rows(store, "org_keys") == []
    assert _rows(store, "deks") == []
    assert not store.connection.in_transaction


def test_keystore_revision_sees_other_connection(tmp_path: Path) -> None:
    store = SqliteKeyStore.open(tmp_path)
    other = SqliteKeyStore.open(tmp_path)
    keyring = KeyRing(other, MemoryMasterKey(secrets.token_bytes(32)))
    before = store.revision()

    unchanged = store.revision()
    keyring.create_organisation("acme")
    changed = store.revision()

    assert unchanged == before
    assert changed != before
    store.close()
    other.close()


def test_keystore_rotate_dek_rejects_stale_version(
    store: SqliteKeyStore, master: MemoryMasterKey
) -> None:
    organisation = KeyRing(store, master).create_organisation("acme")
    current = store.active_dek(organisation.id, Purpose.FILES)
    assert current is not None
    # Version 3 skips version 2, as if another process rotated in between.
    stale = DekRecord(
        organisation.id,
        Purpose.FILES,
        3,
        1,
        secrets.token_bytes(60),
        "active",
        datetime.now(UTC),
    )

    with pytest.raises(KeyUnavailable, match="DEK version 1 is active"):
        store.rotate_dek(stale)

    assert store.active_dek(organisation.id, Purpose.FILES) == current


def test_keystore_rotate_org_key_rejects_missing_dek(
    store: SqliteKeyStore, master: MemoryMasterKey
) -> None:
    organisation = KeyRing(store, master).create_organisation("acme")
    org_key = store.org_key(organisation.id, 1)
    assert org_key is not None
    deks_before = store.deks(organisation.id)
    new_key = type(org_key)(
        organisation.id, 2, secrets.token_bytes(60), "active", "id", datetime.now(UTC)
    )
    rewrapped = [
        DekRecord(d.org_id, d.purpose, d.version, 2, d.wrapped, d.state, d.created_at)
        for d in deks_before[:3]
    ]

    with pytest.raises(KeyUnavailable, match="set of active DEKs"):
        store.rotate_org_key(organisation.id, new_key, rewrapped)

    assert store.org_keys(organisation.id) == [org_key]
    assert store.deks(organisation.id) == deks_before
