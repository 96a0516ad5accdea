"""Tests of the key ring: caching, rotation, revocation and credentials."""

import multiprocessing
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from crypto.errors import (
    DecryptionFailed,
    KeyRevoked,
    KeyStoreError,
    MasterKeyError,
    UnknownAccessKey,
    UnknownOrganisation,
)
from crypto.header import DataKey, Purpose
from crypto.keyring import KeyRing
from crypto.keystore import Organisation
from crypto.master import MemoryMasterKey
from crypto.sqlite_store import KEYS_DATABASE, SqliteKeyStore
from crypto.wrap import org_key_associated_data, unwrap_dek

# Generous upper bound for the other process to reply, so that a crashed
# child fails the test instead of hanging it.
CHILD_REPLY_TIMEOUT = 60.0


@pytest.fixture
def master() -> MemoryMasterKey:
    return MemoryMasterKey(secrets.token_bytes(32))


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[[], SqliteKeyStore]]:
    """Open as many connections to the test's key store as the test needs."""
    stores: list[SqliteKeyStore] = []

    def open_one() -> SqliteKeyStore:
        stores.append(SqliteKeyStore.open(tmp_path))
        return stores[-1]

    yield open_one
    for store in stores:
        store.close()


@pytest.fixture
def store(open_store: Callable[[], SqliteKeyStore]) -> SqliteKeyStore:
    return open_store()


@pytest.fixture
def keyring(store: SqliteKeyStore, master: MemoryMasterKey) -> KeyRing:
    return KeyRing(store, master)


@pytest.fixture
def acme(keyring: KeyRing) -> Organisation:
    return keyring.create_organisation("acme")


class Clock:
    """A settable timer for the TTL caches."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _trace(store: SqliteKeyStore) -> list[str]:
    """Record every SQL statement the store's connection runs from now on."""
    statements: list[str] = []
    store.connection.set_trace_callback(statements.append)
    return statements


def _read(keyring: KeyRing, data_key: DataKey) -> bytes:
    """Unwrap a DEK by the names an object header would carry."""
    return keyring.dek(
        data_key.org_id,
        data_key.purpose,
        data_key.org_key_version,
        data_key.dek_version,
        data_key.wrapped,
    )


def _rows(store: SqliteKeyStore) -> dict[str, list[tuple[Any, ...]]]:
    tables = ("organisations", "org_keys", "deks", "credentials")
    return {
        table: store.connection.execute(
            f"SELECT * FROM {table} ORDER BY rowid"
        ).fetchall()
        for table in tables
    }


def _raw_bytes(directory: Path) -> bytes:
    return b"".join(
        path.read_bytes() for path in sorted(directory.glob("keys.sqlite3*"))
    )


# data keys


def test_keyring_current_dek_round_trip(keyring: KeyRing, acme: Organisation) -> None:
    data_key = keyring.current_dek(acme.id, Purpose.FILES)

    assert data_key.org_id == acme.id
    assert data_key.purpose is Purpose.FILES
    assert (data_key.org_key_version, data_key.dek_version) == (1, 1)
    assert len(data_key.key) == 32
    assert _read(keyring, data_key) == data_key.key


def test_keyring_dek_opens_in_new_keyring(
    keyring: KeyRing,
    acme: Organisation,
    open_store: Callable[[], SqliteKeyStore],
    master: MemoryMasterKey,
) -> None:
    data_key = keyring.current_dek(acme.id, Purpose.MESSAGES)

    fresh = KeyRing(open_store(), master)

    assert _read(fresh, data_key) == data_key.key


def test_keyring_purposes_have_distinct_deks(
    keyring: KeyRing, acme: Organisation
) -> None:
    keys = {keyring.current_dek(acme.id, purpose).key for purpose in Purpose}

    assert len(keys) == 4


def test_keyring_dek_wrong_wrapped_misses_cache(
    keyring: KeyRing, acme: Organisation
) -> None:
    data_key = keyring.current_dek(acme.id, Purpose.FILES)
    assert _read(keyring, data_key) == data_key.key
    tampered = bytearray(data_key.wrapped)
    tampered[-1] ^= 0x01
    other = keyring.current_dek(acme.id, Purpose.RECORDINGS)

    with pytest.raises(DecryptionFailed):
        keyring.dek(acme.id, Purpose.FILES, 1, 1, bytes(tampered))
    with pytest.raises(DecryptionFailed):
        keyring.dek(acme.id, Purpose.FILES, 1, 1, other.wrapped)
    with pytest.raises(DecryptionFailed):
        keyring.dek(acme.id, Purpose.FILES, 1, 1, bytes(60))


def test_keyring_dek_wrong_names_fail(keyring: KeyRing, acme: Organisation) -> None:
    data_key = keyring.current_dek(acme.id, Purpose.FILES)
    wrapped = data_key.wrapped
    other = keyring.create_organisation("other")

    with pytest.raises(DecryptionFailed):
        keyring.dek(acme.id, Purpose.MESSAGES, 1, 1, wrapped)
    with pytest.raises(DecryptionFailed):
        keyring.dek(acme.id, Purpose.FILES, 1, 2, wrapped)
    with pytest.raises(DecryptionFailed, match="no organisation key version 2"):
        keyring.dek(acme.id, Purpose.FILES, 2, 1, wrapped)
    with pytest.raises(DecryptionFailed):
        keyring.dek(other.id, Purpose.FILES, 1, 1, wrapped)


def test_keyring_unknown_organisation(keyring: KeyRing) -> None:
    unknown = bytes(16)

    with pytest.raises(UnknownOrganisation):
        keyring.ensure_active(unknown)
    with pytest.raises(UnknownOrganisation):
        keyring.current_dek(unknown, Purpose.FILES)
    with pytest.raises(UnknownOrganisation):
        keyring.organisation("nobody")


def test_keyring_organisation_lookup(keyring: KeyRing, acme: Organisation) -> None:
    assert keyring.organisation("acme") == acme
    assert keyring.organisation(acme.id) == acme
    assert keyring.organisation(acme.id_hex) == acme
    assert keyring.organisations() == [acme]


# caching


def test_keyring_cache_hit_skips_store(
    store: SqliteKeyStore, keyring: KeyRing, acme: Organisation
) -> None:
    data_key = keyring.current_dek(acme.id, Purpose.FILES)
    _read(keyring, data_key)
    access_key_id, _ = keyring.create_credentials(acme)
    keyring.credentials(access_key_id)
    statements = _trace(store)

    keyring.ensure_active(acme.id)
    again = keyring.current_dek(acme.id, Purpose.FILES)
    key = _read(keyring, data_key)
    keyring.credentials(access_key_id)

    assert statements == []
    assert again == data_key
    assert key == data_key.key


def test_keyring_refresh_without_change_reads_one_pragma(
    store: SqliteKeyStore, keyring: KeyRing, acme: Organisation
) -> None:
    statements = _trace(store)

    changed = keyring.refresh()

    assert changed is False
    assert statements == ["PRAGMA data_version"]


def test_keyring_ttl_expiry(
    store: SqliteKeyStore, master: MemoryMasterKey, acme: Organisation
) -> None:
    clock = Clock()
    keyring = KeyRing(store, master, ttl=10.0, timer=clock)
    data_key = keyring.current_dek(acme.id, Purpose.FILES)
    statements = _trace(store)

    clock.now = 9.9
    keyring.current_dek(acme.id, Purpose.FILES)
    before_expiry = list(statements)
    clock.now = 10.0
    keyring.current_dek(acme.id, Purpose.FILES)

    assert before_expiry == []
    assert any("FROM deks" in statement for statement in statements)
    assert any("FROM org_keys" in statement for statement in statements)
    assert keyring.current_dek(acme.id, Purpose.FILES) == data_key


def test_keyring_lru_eviction(
    keyring: KeyRing,
    acme: Organisation,
    open_store: Callable[[], SqliteKeyStore],
    master: MemoryMasterKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data_keys = [
        keyring.current_dek(acme.id, purpose)
        for purpose in (Purpose.MESSAGES, Purpose.FILES, Purpose.RECORDINGS)
    ]
    small = KeyRing(open_store(), master, maxsize=2)
    unwrapped: list[int] = []

    def counting_unwrap(*args: Any, **kwargs: Any) -> bytes:
        unwrapped.append(kwargs["purpose"])
        return unwrap_dek(*args, **kwargs)

    monkeypatch.setattr("crypto.keyring.unwrap_dek", counting_unwrap)
    messages, files, recordings = data_keys
    _read(small, messages)
    _read(small, files)
    _read(small, messages)  # now files is the least recently used
    _read(small, recordings)  # evicts files
    unwrapped.clear()

    _read(small, messages)
    _read(small, recordings)
    hits = list(unwrapped)
    _read(small, files)

    assert hits == []
    assert unwrapped == [Purpose.FILES]
    assert small.status().cached_deks == 2


def test_keyring_rejects_bad_cache_settings(
    store: SqliteKeyStore, master: MemoryMasterKey
) -> None:
    with pytest.raises(ValueError, match="TTL must be positive"):
        KeyRing(store, master, ttl=0)
    with pytest.raises(ValueError, match="maxsize must be at least 1"):
        KeyRing(store, master, maxsize=0)


# rotation


def test_keyring_rotate_org_key_keeps_old_deks(
    store: SqliteKeyStore,
    keyring: KeyRing,
    acme: Organisation,
    open_store: Callable[[], SqliteKeyStore],
    master: MemoryMasterKey,
) -> None:
    before = [keyring.current_dek(acme.id, purpose) for purpose in Purpose]

    version = keyring.rotate_org_key(acme)

    after = [keyring.current_dek(acme.id, purpose) for purpose in Purpose]
    fresh = KeyRing(open_store(), master)
    assert version == 2
    for old, new in zip(before, after, strict=True):
        assert _read(fresh, old) == old.key
        assert (new.org_key_version, new.dek_version) == (2, 1)
        assert new.key == old.key
        assert new.wrapped != old.wrapped
        assert _read(fresh, new) == new.key
    assert [(k.version, k.state) for k in store.org_keys(acme.id)] == [
        (1, "rotated"),
        (2, "active"),
    ]
    assert {d.org_key_version for d in store.deks(acme.id)} == {2}


def test_keyring_rotate_dek_keeps_old_readable(
    store: SqliteKeyStore,
    keyring: KeyRing,
    acme: Organisation,
    open_store: Callable[[], SqliteKeyStore],
    master: MemoryMasterKey,
) -> None:
    old = keyring.current_dek(acme.id, Purpose.FILES)
    untouched = keyring.current_dek(acme.id, Purpose.MESSAGES)

    version = keyring.rotate_dek(acme, Purpose.FILES)

    new = keyring.current_dek(acme.id, Purpose.FILES)
    fresh = KeyRing(open_store(), master)
    assert version == 2
    assert (new.org_key_version, new.dek_version) == (1, 2)
    assert new.key != old.key
    assert _read(fresh, old) == old.key
    assert _read(fresh, new) == new.key
    assert keyring.current_dek(acme.id, Purpose.MESSAGES) == untouched
    files = [d for d in store.deks(acme.id) if d.purpose is Purpose.FILES]
    assert [(d.version, d.state) for d in files] == [(1, "rotated"), (2, "active")]


def test_keyring_rotations_keep_every_header_readable(
    keyring: KeyRing,
    acme: Organisation,
    open_store: Callable[[], SqliteKeyStore],
    master: MemoryMasterKey,
) -> None:
    headers = [keyring.current_dek(acme.id, Purpose.FILES)]
    for rotate in ("org", "dek", "org", "dek", "dek"):
        if rotate == "org":
            keyring.rotate_org_key(acme)
        else:
            keyring.rotate_dek(acme, Purpose.FILES)
        headers.append(keyring.current_dek(acme.id, Purpose.FILES))

    fresh = KeyRing(open_store(), master)

    assert [(h.org_key_version, h.dek_version) for h in headers] == [
        (1, 1),
        (2, 1),
        (2, 2),
        (3, 2),
        (3, 3),
        (3, 4),
    ]
    for header in headers:
        assert _read(fresh, header) == header.key


def test_keyring_rotate_org_key_failure_changes_nothing(
    store: SqliteKeyStore, keyring: KeyRing, acme: Organisation
) -> None:
    before = _rows(store)
    data_key = keyring.current_dek(acme.id, Purpose.FILES)
    # Fails the third of four DEK rewraps, after the org key rows changed.
    store.connection.execute(
        "CREATE TEMP TRIGGER fail_rewrap BEFORE UPDATE OF wrapped ON deks "
        "WHEN NEW.purpose = 3 BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )

    with pytest.raises(sqlite3.IntegrityError, match="injected failure"):
        keyring.rotate_org_key(acme)

    assert _rows(store) == before
    assert keyring.current_dek(acme.id, Purpose.FILES) == data_key
    store.connection.execute("DROP TRIGGER fail_rewrap")
    assert keyring.rotate_org_key(acme) == 2


def test_keyring_rotate_dek_failure_changes_nothing(
    store: SqliteKeyStore, keyring: KeyRing, acme: Organisation
) -> None:
    before = _rows(store)
    store.connection.execute(
        "CREATE TEMP TRIGGER fail_insert BEFORE INSERT ON deks "
        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )

    with pytest.raises(sqlite3.IntegrityError, match="injected failure"):
        keyring.rotate_dek(acme, Purpose.FILES)

    assert _rows(store) == before
    assert keyring.current_dek(acme.id, Purpose.FILES).dek_version == 1


def test_keyring_rotation_seen_by_other_keyring(
    keyring: KeyRing,
    acme: Organisation,
    open_store: Callable[[], SqliteKeyStore],
    master: MemoryMasterKey,
) -> None:
    other = KeyRing(open_store(), master)
    assert other.current_dek(acme.id, Purpose.FILES).dek_version == 1

    keyring.rotate_dek(acme, Purpose.FILES)

    assert other.refresh() is True
    assert other.current_dek(acme.id, Purpose.FILES).dek_version == 2


# revocation


def test_keyring_revoke_blocks_every_use(
    store: SqliteKeyStore, keyring: KeyRing, acme: Organisation
) -> None:
    data_key = keyring.current_dek(acme.id, Purpose.FILES)
    access_key_id, _ = keyring.create_credentials(acme)

    revoked = keyring.revoke(acme)

    assert revoked.state == "revoked"
    assert revoked.revoked_at is not None
    with pytest.raises(KeyRevoked, match=r"'acme'.*is revoked"):
        keyring.ensure_active(acme.id)
    with pytest.raises(KeyRevoked):
        keyring.current_dek(acme.id, Purpose.FILES)
    with pytest.raises(KeyRevoked):
        _read(keyring, data_key)
    with pytest.raises(KeyRevoked):
        keyring.credentials(access_key_id)
    with pytest.raises(KeyRevoked):
        keyring.create_credentials(acme)
    with pytest.raises(KeyRevoked):
        keyring.rotate_org_key(acme)
    with pytest.raises(KeyRevoked):
        keyring.rotate_dek(acme, Purpose.FILES)
    status = keyring.status()
    assert (status.cached_org_keys, status.cached_deks) == (0, 0)
    assert (status.cached_current_deks, status.cached_secrets) == (0, 0)


def test_keyring_revoke_destroys_rows(
    store: SqliteKeyStore, keyring: KeyRing, acme: Organisation
) -> None:
    other = keyring.create_organisation("other")
    keyring.create_credentials(acme)
    keyring.rotate_org_key(acme)
    other_rows = {
        "org_keys": store.org_keys(other.id),
        "deks": store.deks(other.id),
    }

    keyring.revoke(acme)

    assert [(k.version, k.state, k.wrapped) for k in store.org_keys(acme.id)] == [
        (1, "destroyed", None),
        (2, "destroyed", None),
    ]
    assert store.deks(acme.id) == []
    assert store.connection.execute(
        "SELECT wrapped_secret FROM credentials WHERE org_id = ?", (acme.id,)
    ).fetchall() == [(None,)]
    assert store.org_keys(other.id) == other_rows["org_keys"]
    assert store.deks(other.id) == other_rows["deks"]
    assert keyring.organisation("other").active


def test_keyring_revoke_erases_raw_bytes(
    tmp_path: Path,
    store: SqliteKeyStore,
    keyring: KeyRing,
    acme: Organisation,
    master: MemoryMasterKey,
) -> None:
    # Enough other organisations that the tables span several pages.
    others = [keyring.create_organisation(f"other-{i}") for i in range(50)]
    wrapped: list[bytes] = []
    unwrapped: list[bytes] = []

    def collect() -> None:
        for org_key in store.org_keys(acme.id):
            assert org_key.wrapped is not None
            wrapped.append(org_key.wrapped)
            associated_data = org_key_associated_data(acme.id, org_key.version)
            unwrapped.append(master.unwrap(org_key.wrapped, associated_data))
        for purpose in Purpose:
            data_key = keyring.current_dek(acme.id, purpose)
            wrapped.append(data_key.wrapped)
            unwrapped.append(data_key.key)

    access_key_id, secret = keyring.create_credentials(acme)
    record = store.credentials(access_key_id)
    assert record is not None
    assert record.wrapped_secret is not None
    wrapped.append(record.wrapped_secret)
    collect()
    keyring.rotate_org_key(acme)
    collect()
    keyring.rotate_dek(acme, Purpose.FILES)
    collect()
    raw_before = _raw_bytes(tmp_path)
    assert all(value in raw_before for value in wrapped)
    other_wrapped = [d.wrapped for o in others for d in store.deks(o.id)]

    keyring.revoke(acme)

    # Scanned while the connection is open, so the WAL file still exists.
    raw = _raw_bytes(tmp_path)
    assert (tmp_path / f"{KEYS_DATABASE}-wal").stat().st_size == 0
    for value in wrapped + unwrapped:
        assert value not in raw
    assert secret.encode() not in raw
    assert all(value in raw for value in other_wrapped)


def test_keyring_revoke_unrecoverable_with_master(
    keyring: KeyRing,
    acme: Organisation,
    open_store: Callable[[], SqliteKeyStore],
    master: MemoryMasterKey,
) -> None:
    data_key = keyring.current_dek(acme.id, Purpose.FILES)
    keyring.revoke(acme)

    store = open_store()
    fresh = KeyRing(store, master)

    with pytest.raises(KeyRevoked):
        _read(fresh, data_key)
    assert all(k.wrapped is None for k in store.org_keys(acme.id))
    assert store.deks(acme.id) == []
    # No wrapped value of the organisation is left to give the master key.
    db = store.connection
    org_keys = db.execute("SELECT wrapped FROM org_keys WHERE org_id = ?", (acme.id,))
    assert org_keys.fetchall() == [(None,)]
    deks = db.execute("SELECT count(*) FROM deks WHERE org_id = ?", (acme.id,))
    assert deks.fetchone() == (0,)


def test_keyring_revoke_twice_retries_erasure(
    keyring: KeyRing, acme: Organisation
) -> None:
    first = keyring.revoke(acme)

    second = keyring.revoke(acme)

    assert second == first


def test_keyring_revoke_reports_blocked_erasure(
    tmp_path: Path, master: MemoryMasterKey
) -> None:
    store = SqliteKeyStore.open(tmp_path, busy_timeout=0.05)
    keyring = KeyRing(store, master)
    acme = keyring.create_organisation("acme")
    wrapped = [d.wrapped for d in store.deks(acme.id)]
    reader = sqlite3.connect(tmp_path / KEYS_DATABASE, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM deks").fetchone()

    with pytest.raises(KeyStoreError, match="revoke it again to retry"):
        keyring.revoke(acme)

    with pytest.raises(KeyRevoked):
        keyring.ensure_active(acme.id)
    reader.execute("COMMIT")
    reader.close()
    keyring.revoke(acme)
    store.close()
    raw = _raw_bytes(tmp_path)
    assert all(value not in raw for value in wrapped)


def _revocation_child(
    path: Path, master_key: bytes, org_id: bytes, wrapped: bytes, pipe: Connection
) -> None:
    """Warm a key ring's caches, wait for the revocation, then use the keys."""
    store = SqliteKeyStore(path)
    keyring = KeyRing(store, MemoryMasterKey(master_key))
    access_key_id = pipe.recv()
    keyring.refresh()
    keyring.ensure_active(org_id)
    keyring.current_dek(org_id, Purpose.FILES)
    keyring.dek(org_id, Purpose.FILES, 1, 1, wrapped)
    keyring.credentials(access_key_id)
    warm = keyring.status()
    pipe.send((warm.cached_deks, warm.cached_current_deks, warm.cached_secrets))

    pipe.recv()  # the parent has revoked the organisation
    results: dict[str, str] = {"refresh": str(keyring.refresh())}
    calls: dict[str, Callable[[], object]] = {
        "ensure_active": lambda: keyring.ensure_active(org_id),
        "dek": lambda: keyring.dek(org_id, Purpose.FILES, 1, 1, wrapped),
        "current_dek": lambda: keyring.current_dek(org_id, Purpose.FILES),
        "credentials": lambda: keyring.credentials(access_key_id),
    }
    for name, call in calls.items():
        try:
            call()
            results[name] = "ok"
        except KeyRevoked:
            results[name] = "KeyRevoked"
    status = keyring.status()
    results["cached"] = str(
        (status.cached_org_keys, status.cached_deks, status.cached_secrets)
    )
    pipe.send(results)
    store.close()


def test_keyring_revoke_seen_by_other_process(
    tmp_path: Path, keyring: KeyRing, acme: Organisation, master: MemoryMasterKey
) -> None:
    data_key = keyring.current_dek(acme.id, Purpose.FILES)
    access_key_id, _ = keyring.create_credentials(acme)
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    child = context.Process(
        target=_revocation_child,
        args=(
            tmp_path / KEYS_DATABASE,
            master.key,
            acme.id,
            data_key.wrapped,
            child_end,
        ),
    )
    child.start()
    try:
        parent_end.send(access_key_id)
        assert parent_end.poll(CHILD_REPLY_TIMEOUT)
        assert parent_end.recv() == (1, 1, 1)

        keyring.revoke(acme)
        parent_end.send("revoked")
        assert parent_end.poll(CHILD_REPLY_TIMEOUT)
        results = parent_end.recv()
    finally:
        child.join(CHILD_REPLY_TIMEOUT)
        if child.is_alive():
            child.kill()
            child.join()

    assert child.exitcode == 0
    assert results == {
        "refresh": "True",
        "ensure_active": "KeyRevoked",
        "dek": "KeyRevoked",
        "current_dek": "KeyRevoked",
        "credentials": "KeyRevoked",
        "cached": "(0, 0, 0)",
    }


# credentials


def test_keyring_credentials_round_trip(
    keyring: KeyRing,
    acme: Organisation,
    open_store: Callable[[], SqliteKeyStore],
    master: MemoryMasterKey,
) -> None:
    access_key_id, secret = keyring.create_credentials(acme)

    fresh = KeyRing(open_store(), master)

    assert re.fullmatch(r"BYOK[A-Z2-7]{16}", access_key_id)
    assert re.fullmatch(r"[A-Za-z0-9]{40}", secret)
    assert keyring.credentials(access_key_id) == (acme.id, secret)
    assert fresh.credentials(access_key_id) == (acme.id, secret)


def test_keyring_credentials_stored_wrapped(
    store: SqliteKeyStore, keyring: KeyRing, acme: Organisation
) -> None:
    access_key_id, secret = keyring.create_credentials(acme)

    record = store.credentials(access_key_id)

    assert record is not None
    assert record.org_id == acme.id
    assert record.wrapped_secret is not None
    assert secret.encode() not in record.wrapped_secret
    assert store.credential_count(acme.id) == 1


@pytest.mark.parametrize("access_key_id", ["BYOKAAAAAAAAAAAAAAAA", "AKIAEXAMPLE", ""])
def test_keyring_credentials_unknown_id(
    keyring: KeyRing, acme: Organisation, access_key_id: str
) -> None:
    keyring.create_credentials(acme)

    with pytest.raises(UnknownAccessKey, match="no credentials have access key id"):
        keyring.credentials(access_key_id)


def test_keyring_credentials_revoked_org(
    keyring: KeyRing,
    acme: Organisation,
    open_store: Callable[[], SqliteKeyStore],
    master: MemoryMasterKey,
) -> None:
    access_key_id, _ = keyring.create_credentials(acme)
    keyring.credentials(access_key_id)

    keyring.revoke(acme)

    with pytest.raises(KeyRevoked):
        keyring.credentials(access_key_id)
    with pytest.raises(KeyRevoked):
        KeyRing(open_store(), master).credentials(access_key_id)


# master key and status


def test_keyring_wrong_master_key(
    keyring: KeyRing, acme: Organisation, open_store: Callable[[], SqliteKeyStore]
) -> None:
    wrong = MemoryMasterKey(secrets.token_bytes(32))
    fresh = KeyRing(open_store(), wrong)

    with pytest.raises(MasterKeyError, match="loaded master key is a different one"):
        fresh.current_dek(acme.id, Purpose.FILES)


def test_keyring_status_has_no_key_material(
    store: SqliteKeyStore, keyring: KeyRing, acme: Organisation, master: MemoryMasterKey
) -> None:
    data_key = keyring.current_dek(acme.id, Purpose.FILES)
    keyring.rotate_dek(acme, Purpose.FILES)
    keyring.create_credentials(acme)

    status = keyring.status()

    assert status.master_key_id == master.key_id
    (summary,) = status.organisations
    assert (summary.name, summary.state, summary.id_hex) == (
        "acme",
        "active",
        acme.id_hex,
    )
    assert summary.org_keys == ((1, "active"),)
    assert summary.active_deks == (
        ("messages", 1),
        ("files", 2),
        ("recordings", 1),
        ("transcripts", 1),
    )
    assert summary.credentials == 1
    assert (status.cached_org_keys, status.cached_deks) == (1, 1)
    text = repr(status)
    for secret in (master.key, data_key.key, data_key.wrapped):
        assert secret.hex() not in text
        assert repr(secret) not in text


def test_keyring_status_as_dict(keyring: KeyRing, acme: Organisation) -> None:
    summary = keyring.status().as_dict()

    (organisation,) = summary["organisations"]
    assert organisation["name"] == "acme"
    assert organisation["id_hex"] == acme.id_hex
    assert organisation["org_keys"] == ((1, "active"),)


def test_keyring_close_forgets_keys(
    store: SqliteKeyStore, keyring: KeyRing, acme: Organisation
) -> None:
    keyring.current_dek(acme.id, Purpose.FILES)

    keyring.close()

    status_counts = (
        len(keyring._org_keys),
        len(keyring._deks),
        len(keyring._current),
        len(keyring._secrets),
    )
    assert status_counts == (0, 0, 0, 0)
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        store.organisations()
