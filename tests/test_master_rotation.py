"""Tests of platform master key rotation: rewrap, crash recovery, live processes.

Two key rings opened on the same data directory play two processes. A
failure injected between the steps of a rotation plays a crash, after which
a key ring opened on the files plays the next start.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config

import crypto.master
import crypto.masters
from crypto.audit import AuditLog
from crypto.errors import KeyUnavailable, MasterKeyError
from crypto.header import DataKey, Purpose
from crypto.keyring import KeyRing
from crypto.keystore import CredentialRecord, Organisation
from crypto.master import (
    MASTER_KEY_FILE,
    NEXT_KEY_FILE,
    FileMasterKey,
    MasterKey,
    MemoryMasterKey,
    key_fingerprint,
    rotation_lock,
)
from crypto.masters import MasterKeys, PlatformKey
from crypto.operations import KeyOperations
from crypto.sqlite_store import SqliteKeyStore
from tests.conftest import Stack, Tenant
from tests.load import AdminClient
from tests.stack import byok, start_proxy

# boto3 retries 5xx responses by default, which would hide a failed request.
NO_RETRIES = Config(retries={"total_max_attempts": 1})

# Upper bound for a rotation that waits for the lock to finish once the
# lock is released, so that a hang fails the test instead.
ROTATION_TIMEOUT = 30.0


@dataclass
class Process:
    """The keys of one simulated process on the shared data directory."""

    keyring: KeyRing
    masters: MasterKeys
    operations: KeyOperations

    def forget_caches(self) -> None:
        """Drop every unwrapped key and secret, as the TTL would."""
        self.keyring._org_keys.clear()
        self.keyring._deks.clear()
        self.keyring._current.clear()
        self.keyring._secrets.clear()


Start = Callable[..., Process]


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog.open(tmp_path) as log:
        yield log


@pytest.fixture
def start(tmp_path: Path, audit: AuditLog) -> Iterator[Start]:
    """Open the data directory's keys as a newly started process would."""
    started: list[Process] = []

    def open_process(hsm: MasterKey | None = None) -> Process:
        store = SqliteKeyStore.open(tmp_path)
        platform = PlatformKey.open(tmp_path, store.platform_key_id)
        opener = None if hsm is None else (lambda label: hsm)
        masters = MasterKeys(platform, opener)
        keyring = KeyRing(store, masters)
        process = Process(keyring, masters, KeyOperations(keyring, masters, audit))
        started.append(process)
        return process

    yield open_process
    for process in started:
        process.keyring.close()


@dataclass
class Written:
    """Keys and credentials created before a rotation, to read afterwards."""

    acme: Organisation
    beta: Organisation
    old_dek: DataKey
    new_dek: DataKey
    beta_dek: DataKey
    credentials: dict[str, str]


@pytest.fixture
def written(start: Start) -> Written:
    """Two platform organisations, one with a rotated organisation key."""
    process = start()
    keyring = process.keyring
    acme = keyring.create_organisation("acme")
    beta = keyring.create_organisation("beta")
    old_dek = keyring.current_dek(acme.id, Purpose.FILES)
    keyring.rotate_org_key(acme)
    keyring.rotate_dek(acme, Purpose.FILES)
    new_dek = keyring.current_dek(acme.id, Purpose.FILES)
    beta_dek = keyring.current_dek(beta.id, Purpose.MESSAGES)
    credentials = dict(keyring.create_credentials(org) for org in (acme, acme, beta))
    return Written(acme, beta, old_dek, new_dek, beta_dek, credentials)


def _reads_everything(keyring: KeyRing, written: Written) -> None:
    """Assert that every key and secret written before a rotation still opens."""
    for data_key in (written.old_dek, written.new_dek, written.beta_dek):
        opened = keyring.dek(
            data_key.org_id,
            data_key.purpose,
            data_key.org_key_version,
            data_key.dek_version,
            data_key.wrapped,
        )
        assert opened == data_key.key
    assert keyring.current_dek(written.acme.id, Purpose.FILES).key == (
        written.new_dek.key
    )
    for access_key_id, secret in written.credentials.items():
        assert keyring.credentials(access_key_id)[1] == secret


def _key_file_id(directory: Path, name: str = MASTER_KEY_FILE) -> str:
    return key_fingerprint((directory / name).read_bytes())


def _store_dump(keyring: KeyRing) -> list[str]:
    """Every row of the key store as SQL text, to compare or search."""
    connection = keyring._store.connection
    assert isinstance(connection, sqlite3.Connection)
    return list(connection.iterdump())


def _platform_ids(keyring: KeyRing, organisation: Organisation) -> set[str]:
    return {
        record.master_key_id
        for record in keyring.org_key_records(organisation.id)
        if record.wrapped is not None
    }


# rotation in one process


def test_rotation_replaces_key_file(
    tmp_path: Path, start: Start, written: Written
) -> None:
    process = start()
    old_id = _key_file_id(tmp_path)

    rotation = process.keyring.rotate_platform_master()

    assert rotation.old_key_id == old_id
    assert rotation.new_key_id != old_id
    assert _key_file_id(tmp_path) == rotation.new_key_id
    assert stat.S_IMODE((tmp_path / MASTER_KEY_FILE).stat().st_mode) == 0o600
    assert not (tmp_path / NEXT_KEY_FILE).exists()
    assert process.masters.platform.key_id == rotation.new_key_id
    assert (rotation.org_keys, rotation.secrets) == (3, 3)
    assert not rotation.resumed


def test_rotation_rewraps_every_platform_record(start: Start, written: Written) -> None:
    process = start()
    old_id = process.masters.platform.key_id

    rotation = process.keyring.rotate_platform_master()

    records = process.keyring.org_key_records(written.acme.id)
    assert [(r.version, r.state) for r in records] == [(1, "rotated"), (2, "active")]
    for organisation in (written.acme, written.beta):
        assert _platform_ids(process.keyring, organisation) == {rotation.new_key_id}
    assert process.keyring._store.platform_key_id() == rotation.new_key_id
    assert not any(old_id in line for line in _store_dump(process.keyring))
    process.forget_caches()
    _reads_everything(process.keyring, written)


def test_rotation_changes_wrapped_secrets(start: Start, written: Written) -> None:
    process = start()
    store = process.keyring._store
    before = {
        access_key_id: store.credentials(access_key_id)
        for access_key_id in written.credentials
    }

    process.keyring.rotate_platform_master()

    for access_key_id, record in before.items():
        after = store.credentials(access_key_id)
        assert record is not None
        assert after is not None
        assert after.wrapped_secret != record.wrapped_secret


def test_rotation_is_audited(start: Start, written: Written, audit: AuditLog) -> None:
    process = start()

    rotation = process.operations.rotate_platform_master("cli:ana")

    record = audit.records()[-1]
    assert (record.actor, record.action, record.outcome) == (
        "cli:ana",
        "master.rotate",
        "ok",
    )
    assert record.organisation == ""
    assert record.keys["old_master_key_id"] == rotation.old_key_id
    assert record.keys["new_master_key_id"] == rotation.new_key_id
    assert record.keys["source"] == "platform"
    assert (record.keys["org_keys"], record.keys["secrets"]) == (3, 3)
    assert audit.verify().ok


def test_failed_rotation_is_audited(
    tmp_path: Path, start: Start, written: Written, audit: AuditLog
) -> None:
    process = start()
    (tmp_path / NEXT_KEY_FILE).write_bytes(secrets.token_bytes(32))
    (tmp_path / NEXT_KEY_FILE).chmod(0o644)

    with pytest.raises(MasterKeyError, match="mode 0644"):
        process.operations.rotate_platform_master("cli:ana")

    record = audit.records()[-1]
    assert (record.action, record.outcome) == (
        "master.rotate",
        "failed: MasterKeyError",
    )
    assert record.keys["old_master_key_id"] == process.masters.platform.key_id


def test_rotation_leaves_imported_and_hsm_keys(start: Start, written: Written) -> None:
    token_key = MemoryMasterKey(secrets.token_bytes(32))
    customer = MemoryMasterKey(secrets.token_bytes(32))
    process = start(hsm=token_key)
    keyring = process.keyring
    imported = keyring.create_organisation("imported-co")
    in_token = keyring.create_organisation("token-co")
    keyring.use_master(imported, customer, "imported")
    keyring.use_master(in_token, token_key, "hsm", "token-label")
    imported_access, imported_secret = keyring.create_credentials(imported)
    token_dek = keyring.current_dek(in_token.id, Purpose.FILES)
    before = {org.id: keyring.org_key_records(org.id) for org in (imported, in_token)}

    rotation = keyring.rotate_platform_master()

    assert rotation.org_keys == 3
    for org_id, records in before.items():
        assert keyring.org_key_records(org_id) == records
    assert keyring.organisation("imported-co").key_source == "imported"
    assert keyring.organisation("token-co").hsm_key_label == "token-label"
    process.forget_caches()
    assert keyring.credentials(imported_access)[1] == imported_secret
    reopened = keyring.dek(in_token.id, Purpose.FILES, 1, 1, token_dek.wrapped)
    assert reopened == token_dek.key
    assert keyring.key_state("imported-co") == "active"


def test_rotation_skips_revoked_organisations(start: Start, written: Written) -> None:
    process = start()
    process.keyring.revoke(written.beta)

    rotation = process.keyring.rotate_platform_master()

    assert (rotation.org_keys, rotation.secrets) == (2, 2)
    records = process.keyring.org_key_records(written.beta.id)
    assert {(r.state, r.wrapped) for r in records} == {("destroyed", None)}


def test_rotation_twice_then_fresh_start(start: Start, written: Written) -> None:
    process = start()

    first = process.keyring.rotate_platform_master()
    second = process.keyring.rotate_platform_master()

    assert second.old_key_id == first.new_key_id
    assert len({first.old_key_id, first.new_key_id, second.new_key_id}) == 3
    restarted = start()
    assert restarted.masters.platform.key_id == second.new_key_id
    _reads_everything(restarted.keyring, written)


def test_rotation_of_memory_key_rejected(tmp_path: Path) -> None:
    store = SqliteKeyStore.open(tmp_path)
    keyring = KeyRing(store, MemoryMasterKey(secrets.token_bytes(32)))
    try:
        keyring.create_organisation("acme")
        before = _store_dump(keyring)

        with pytest.raises(MasterKeyError, match="no key file to rotate"):
            keyring.rotate_platform_master()

        assert _store_dump(keyring) == before
    finally:
        keyring.close()


def test_rotation_of_empty_store(start: Start) -> None:
    process = start()

    rotation = process.keyring.rotate_platform_master()

    assert (rotation.org_keys, rotation.secrets) == (0, 0)
    assert not rotation.resumed
    assert process.keyring._store.platform_key_id() == rotation.new_key_id
    organisation = process.keyring.create_organisation("acme")
    assert _platform_ids(process.keyring, organisation) == {rotation.new_key_id}


def test_rotation_waits_for_lock(tmp_path: Path, written: Written) -> None:
    old_id = _key_file_id(tmp_path)
    outcome: list[str] = []

    def rotate() -> None:
        store = SqliteKeyStore.open(tmp_path)
        platform = PlatformKey.open(tmp_path, store.platform_key_id)
        keyring = KeyRing(store, MasterKeys(platform))
        try:
            outcome.append(keyring.rotate_platform_master().new_key_id)
        finally:
            keyring.close()

    with rotation_lock(tmp_path):
        worker = threading.Thread(target=rotate)
        worker.start()
        time.sleep(0.3)
        assert worker.is_alive()
        assert _key_file_id(tmp_path) == old_id
    worker.join(ROTATION_TIMEOUT)

    assert not worker.is_alive()
    assert outcome == [_key_file_id(tmp_path)]


# another process that loaded the old key


def test_other_process_follows_rotation(start: Start, written: Written) -> None:
    rotating, other = start(), start()
    _reads_everything(other.keyring, written)

    rotation = rotating.keyring.rotate_platform_master()

    assert other.masters.platform.key_id == rotation.old_key_id
    other.keyring.refresh()
    _reads_everything(other.keyring, written)
    other.forget_caches()
    _reads_everything(other.keyring, written)
    assert other.masters.platform.key_id == rotation.new_key_id


def test_other_process_wraps_under_new_key(start: Start, written: Written) -> None:
    rotating, other = start(), start()

    rotation = rotating.keyring.rotate_platform_master()
    organisation = other.keyring.create_organisation("gamma")
    access_key_id, secret = other.keyring.create_credentials(organisation)

    assert _platform_ids(other.keyring, organisation) == {rotation.new_key_id}
    assert other.keyring.status().master_key_id == rotation.new_key_id
    restarted = start()
    assert restarted.keyring.credentials(access_key_id) == (organisation.id, secret)
    assert restarted.keyring.key_state("gamma") == "active"


def test_other_process_moves_org_to_new_key(start: Start, written: Written) -> None:
    customer = MemoryMasterKey(secrets.token_bytes(32))
    rotating, other = start(), start()
    other.keyring.use_master(written.beta, customer, "imported")

    rotation = rotating.keyring.rotate_platform_master()
    other.operations.use_platform("cli:ana", written.beta.id)

    assert _platform_ids(other.keyring, written.beta) == {rotation.new_key_id}
    other.forget_caches()
    _reads_everything(other.keyring, written)


def test_other_process_rotates_org_key_after(start: Start, written: Written) -> None:
    rotating, other = start(), start()
    other.keyring.current_dek(written.beta.id, Purpose.FILES)

    rotation = rotating.keyring.rotate_platform_master()
    version = other.keyring.rotate_org_key(written.beta)

    records = other.keyring.org_key_records(written.beta.id)
    assert records[-1].version == version
    assert records[-1].master_key_id == rotation.new_key_id


def test_unknown_key_id_is_master_key_error(
    tmp_path: Path, start: Start, written: Written
) -> None:
    rotating, other = start(), start()
    rotating.keyring.rotate_platform_master()
    # a master.key restored from the wrong backup
    (tmp_path / MASTER_KEY_FILE).write_bytes(secrets.token_bytes(32))
    other.forget_caches()

    with pytest.raises(MasterKeyError, match="no key file contains"):
        other.keyring.credentials(next(iter(written.credentials)))
    with pytest.raises(MasterKeyError, match="different one"):
        other.keyring.current_dek(written.acme.id, Purpose.FILES)


def test_store_rejects_stale_platform_key(start: Start, written: Written) -> None:
    process = start()
    old_id = process.masters.platform.key_id
    process.keyring.rotate_platform_master()
    store = process.keyring._store
    record = CredentialRecord(
        "BYOK" + "A" * 16,
        written.acme.id,
        secrets.token_bytes(60),
        written.acme.created_at,
    )

    with pytest.raises(KeyUnavailable, match="platform master key is now"):
        store.add_credentials(record, master_key_id=old_id)

    assert store.credentials(record.access_key_id) is None


def test_store_rejects_changed_platform_rows(start: Start, written: Written) -> None:
    process = start()
    store = process.keyring._store
    old_id = process.masters.platform.key_id
    before = _store_dump(process.keyring)

    with pytest.raises(KeyUnavailable, match="organisation keys under the platform"):
        store.rewrap_platform(old_id, "0" * 16, [], store.wrapped_secrets())
    with pytest.raises(KeyUnavailable, match="access keys changed"):
        store.rewrap_platform(old_id, "0" * 16, _org_keys_named(store, old_id), [])

    assert _store_dump(process.keyring) == before


def _org_keys_named(store: SqliteKeyStore, key_id: str) -> list[Any]:
    return [
        record
        for organisation in store.organisations()
        for record in store.org_keys(organisation.id)
        if record.master_key_id == key_id and record.wrapped is not None
    ]


# crashes between the steps


def _crash(*args: object) -> None:
    raise RuntimeError("simulated crash")


# Where the crash happens: once master.key.next is linked, before the fsync
# of its directory, or once the file is complete, before the store commits.
_BEFORE_COMMIT = [
    (crypto.master, "_fsync_directory"),
    (SqliteKeyStore, "rewrap_platform"),
]


@pytest.mark.parametrize(("owner", "name"), _BEFORE_COMMIT)
def test_crash_before_commit(
    tmp_path: Path,
    start: Start,
    written: Written,
    monkeypatch: pytest.MonkeyPatch,
    owner: object,
    name: str,
) -> None:
    process = start()
    old_id = process.masters.platform.key_id
    before = _store_dump(process.keyring)

    with monkeypatch.context() as patch:
        patch.setattr(owner, name, _crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            process.keyring.rotate_platform_master()

    next_id = _key_file_id(tmp_path, NEXT_KEY_FILE)
    assert stat.S_IMODE((tmp_path / NEXT_KEY_FILE).stat().st_mode) == 0o600
    assert _key_file_id(tmp_path) == old_id
    assert _store_dump(process.keyring) == before

    restarted = start()
    assert restarted.masters.platform.key_id == old_id
    assert (tmp_path / NEXT_KEY_FILE).exists()
    _reads_everything(restarted.keyring, written)

    rotation = restarted.keyring.rotate_platform_master()

    assert rotation.new_key_id == next_id
    assert not rotation.resumed
    assert _key_file_id(tmp_path) == next_id
    assert not (tmp_path / NEXT_KEY_FILE).exists()
    _reads_everything(start().keyring, written)


def test_crash_inside_transaction(
    tmp_path: Path, start: Start, written: Written
) -> None:
    process = start()
    old_id = process.masters.platform.key_id
    before = _store_dump(process.keyring)
    connection = process.keyring._store.connection
    # The last statement of the transaction fails, after every row was updated.
    connection.execute(
        "CREATE TRIGGER crash BEFORE INSERT ON platform_master_key "
        "BEGIN SELECT RAISE(ABORT, 'simulated crash inside the transaction'); END"
    )
    trigger = [line for line in _store_dump(process.keyring) if "TRIGGER" in line]

    with pytest.raises(sqlite3.IntegrityError, match="simulated crash"):
        process.keyring.rotate_platform_master()

    assert [line for line in _store_dump(process.keyring) if line not in trigger] == (
        before
    )
    assert _key_file_id(tmp_path) == old_id
    connection.execute("DROP TRIGGER crash")
    restarted = start()
    _reads_everything(restarted.keyring, written)
    rotation = restarted.keyring.rotate_platform_master()
    assert rotation.new_key_id == _key_file_id(tmp_path)
    _reads_everything(start().keyring, written)


def _crash_before_replace(process: Process, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(directory: Path, key_id: str) -> None:
        raise RuntimeError("simulated crash before the replace")

    with monkeypatch.context() as patch:
        patch.setattr(crypto.masters, "install_next_key", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            process.keyring.rotate_platform_master()


def test_crash_before_replace_start_finishes(
    tmp_path: Path, start: Start, written: Written, monkeypatch: pytest.MonkeyPatch
) -> None:
    process, other = start(), start()
    old_id = process.masters.platform.key_id

    _crash_before_replace(process, monkeypatch)

    next_id = _key_file_id(tmp_path, NEXT_KEY_FILE)
    assert _key_file_id(tmp_path) == old_id
    assert process.keyring._store.platform_key_id() == next_id
    # both running processes follow the committed key from master.key.next
    for running in (process, other):
        running.forget_caches()
        _reads_everything(running.keyring, written)
        assert running.masters.platform.key_id == next_id

    restarted = start()

    assert restarted.masters.platform.key_id == next_id
    assert _key_file_id(tmp_path) == next_id
    assert not (tmp_path / NEXT_KEY_FILE).exists()
    _reads_everything(restarted.keyring, written)


def test_crash_before_replace_rotate_finishes(
    tmp_path: Path, start: Start, written: Written, monkeypatch: pytest.MonkeyPatch
) -> None:
    process = start()
    old_id = process.masters.platform.key_id
    _crash_before_replace(process, monkeypatch)
    next_id = _key_file_id(tmp_path, NEXT_KEY_FILE)

    rotation = process.keyring.rotate_platform_master()

    assert (rotation.old_key_id, rotation.new_key_id) == (old_id, next_id)
    assert rotation.resumed
    assert _key_file_id(tmp_path) == next_id
    assert not (tmp_path / NEXT_KEY_FILE).exists()
    _reads_everything(start().keyring, written)


def test_crash_after_replace(
    tmp_path: Path, start: Start, written: Written, monkeypatch: pytest.MonkeyPatch
) -> None:
    process, other = start(), start()

    def replace_then_crash(directory: Path, key_id: str) -> None:
        os.replace(directory / NEXT_KEY_FILE, directory / MASTER_KEY_FILE)
        raise RuntimeError("simulated crash before the directory fsync")

    with monkeypatch.context() as patch:
        patch.setattr(crypto.masters, "install_next_key", replace_then_crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            process.keyring.rotate_platform_master()

    new_id = process.keyring._store.platform_key_id()
    assert _key_file_id(tmp_path) == new_id
    assert not (tmp_path / NEXT_KEY_FILE).exists()
    for running in (process, other):
        running.forget_caches()
        _reads_everything(running.keyring, written)
    restarted = start()
    assert restarted.masters.platform.key_id == new_id
    _reads_everything(restarted.keyring, written)


def test_rotation_rejects_unsafe_next_file(
    tmp_path: Path, start: Start, written: Written
) -> None:
    process = start()
    old_id = process.masters.platform.key_id
    before = _store_dump(process.keyring)
    (tmp_path / NEXT_KEY_FILE).write_bytes(secrets.token_bytes(16))
    (tmp_path / NEXT_KEY_FILE).chmod(0o600)

    with pytest.raises(MasterKeyError, match="exactly 32 bytes"):
        process.keyring.rotate_platform_master()

    assert _key_file_id(tmp_path) == old_id
    assert _store_dump(process.keyring) == before


def test_start_keeps_uncommitted_next_file(tmp_path: Path) -> None:
    master = FileMasterKey.load_or_create(tmp_path / MASTER_KEY_FILE)
    upcoming = FileMasterKey.load_or_create(tmp_path / NEXT_KEY_FILE)

    loaded = crypto.master.load_platform_key(tmp_path, lambda: None)

    assert loaded.key_id == master.key_id
    assert _key_file_id(tmp_path, NEXT_KEY_FILE) == upcoming.key_id


# end to end, with the session's proxy running


def _put_objects(s3: Any, bucket: str) -> dict[str, bytes]:
    objects = {
        "small": b"written before the rotation",
        "large": secrets.token_bytes(3 * 1024 * 1024 + 17),
    }
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    return objects


def _assert_objects(s3: Any, bucket: str, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body


def test_rotation_with_running_proxy(
    stack: Stack,
    s3: Any,
    tenant: Tenant,
    new_bucket: Callable[..., str],
    tmp_path: Path,
) -> None:
    bucket = new_bucket()
    objects = _put_objects(s3, bucket)
    # an organisation that the running proxy has not used, so nothing cached
    unused = stack.tenant("rotation-" + secrets.token_hex(4))
    old_id = _key_file_id(stack.data_dir)

    output = byok(stack.data_dir, "master", "rotate")

    new_id = _key_file_id(stack.data_dir)
    assert new_id != old_id
    assert f"now {new_id} (was {old_id})" in output
    strict_s3 = stack.client(tenant, config=NO_RETRIES)
    _assert_objects(strict_s3, bucket, objects)
    strict_s3.put_object(Bucket=bucket, Key="after", Body=b"written after the rotation")
    objects["after"] = b"written after the rotation"
    _assert_objects(strict_s3, bucket, objects)
    for late in (unused, stack.tenant("rotation-" + secrets.token_hex(4))):
        late_s3 = stack.client(late, config=NO_RETRIES)
        late_bucket = new_bucket(late_s3)
        late_s3.put_object(Bucket=late_bucket, Key="k", Body=b"late tenant")
        assert late_s3.get_object(Bucket=late_bucket, Key="k")["Body"].read() == (
            b"late tenant"
        )
    status = json.loads(byok(stack.data_dir, "status", "--json"))
    assert status["master_key_id"] == new_id

    fresh = start_proxy(stack.data_dir, stack.backend, tmp_path / "fresh.log")
    try:
        fresh_s3 = stack.client(tenant, url=fresh.url, config=NO_RETRIES)
        _assert_objects(fresh_s3, bucket, objects)
        fresh_s3.put_object(Bucket=bucket, Key="fresh", Body=b"from a new proxy")
        objects["fresh"] = b"from a new proxy"
        _assert_objects(fresh_s3, bucket, objects)
    finally:
        fresh.stop()
    _assert_objects(strict_s3, bucket, objects)


def test_rotation_through_admin_api(
    stack: Stack, s3: Any, tenant: Tenant, new_bucket: Callable[..., str]
) -> None:
    bucket = new_bucket()
    objects = _put_objects(s3, bucket)
    admin = AdminClient.of(stack.proxy)
    old_id = _key_file_id(stack.data_dir)

    answer = admin.ok("POST", "/v1/master/rotate")

    assert answer["old_master_key_id"] == old_id
    assert answer["master_key_id"] == _key_file_id(stack.data_dir)
    assert answer["resumed"] is False
    assert answer["org_keys_rewrapped"] >= 1
    _assert_objects(stack.client(tenant, config=NO_RETRIES), bucket, objects)
    assert admin.ok("GET", "/v1/status")["master_key_id"] == answer["master_key_id"]
    records = admin.ok("GET", "/v1/audit")["records"]
    rotations = [r for r in records if r["action"] == "master.rotate"]
    assert rotations[-1]["actor"] == "admin-api"
    assert rotations[-1]["outcome"] == "ok"
    assert rotations[-1]["keys"]["new_master_key_id"] == answer["master_key_id"]
