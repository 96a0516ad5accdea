"""The SQLite key store of one host: `keys.sqlite3` in the data directory.

Every proxy process and CLI command on the host opens its own connection in
WAL mode, in which readers and a writer do not block each other (SQLite
documentation, "Write-Ahead Logging"). Writers wait up to the busy timeout
for each other. Calls are short local queries, made on the event loop by
the proxy.

Other components may keep their tables in the same database file. They open
it with `connect`, record their schema in the `schema_version` table under
their own component name, and the key store ignores their tables.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from crypto.errors import (
    KeyRevoked,
    KeyStoreError,
    KeyUnavailable,
    OrganisationExists,
    UnknownOrganisation,
)
from crypto.header import Purpose
from crypto.keystore import (
    CredentialRecord,
    DekRecord,
    DekState,
    KeySource,
    Organisation,
    OrgKeyRecord,
    OrgKeyState,
    OrgState,
)

__all__ = [
    "KEYS_DATABASE",
    "SCHEMA_VERSION",
    "SqliteKeyStore",
    "connect",
    "schema_version",
]

KEYS_DATABASE = "keys.sqlite3"
SCHEMA_VERSION = 2
_COMPONENT = "keys"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS schema_version (
        component TEXT PRIMARY KEY,
        version INTEGER NOT NULL)""",
    # One row, incremented by every write transaction of the key store, so
    # another process can tell that the keys changed (see `revision`).
    """CREATE TABLE IF NOT EXISTS key_revision (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        revision INTEGER NOT NULL)""",
    "INSERT OR IGNORE INTO key_revision VALUES (1, 0)",
    """CREATE TABLE IF NOT EXISTS organisations (
        id BLOB PRIMARY KEY CHECK (length(id) = 16),
        name TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL CHECK (state IN ('active', 'revoked')),
        created_at REAL NOT NULL,
        revoked_at REAL,
        key_source TEXT NOT NULL DEFAULT 'platform'
            CHECK (key_source IN ('platform', 'imported', 'hsm')),
        hsm_key_label TEXT NOT NULL DEFAULT '',
        max_key_age REAL)""",
    """CREATE TABLE IF NOT EXISTS org_keys (
        org_id BLOB NOT NULL REFERENCES organisations (id),
        version INTEGER NOT NULL CHECK (version >= 1),
        wrapped BLOB,
        state TEXT NOT NULL CHECK (state IN ('active', 'rotated', 'destroyed')),
        master_key_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (org_id, version),
        CHECK ((state = 'destroyed') = (wrapped IS NULL)))""",
    """CREATE UNIQUE INDEX IF NOT EXISTS org_keys_one_active
        ON org_keys (org_id) WHERE state = 'active'""",
    """CREATE TABLE IF NOT EXISTS deks (
        org_id BLOB NOT NULL,
        purpose INTEGER NOT NULL CHECK (purpose BETWEEN 1 AND 255),
        version INTEGER NOT NULL CHECK (version >= 1),
        org_key_version INTEGER NOT NULL,
        wrapped BLOB NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('active', 'rotated')),
        created_at REAL NOT NULL,
        PRIMARY KEY (org_id, purpose, version),
        FOREIGN KEY (org_id, org_key_version) REFERENCES org_keys (org_id, version))""",
    """CREATE UNIQUE INDEX IF NOT EXISTS deks_one_active
        ON deks (org_id, purpose) WHERE state = 'active'""",
    """CREATE TABLE IF NOT EXISTS credentials (
        access_key_id TEXT PRIMARY KEY,
        org_id BLOB NOT NULL REFERENCES organisations (id),
        wrapped_secret BLOB,
        created_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS credentials_org ON credentials (org_id)",
    # The platform master key id, written by each platform key rotation. Older
    # stores gain the empty table on open, so it needs no schema version.
    """CREATE TABLE IF NOT EXISTS platform_master_key (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        key_id TEXT NOT NULL)""",
)

# Version 2 added the organisation's master key source and rotation policy.
_MIGRATIONS = {
    1: (
        "ALTER TABLE organisations ADD COLUMN key_source TEXT NOT NULL "
        "DEFAULT 'platform' CHECK (key_source IN ('platform', 'imported', 'hsm'))",
        "ALTER TABLE organisations ADD COLUMN hsm_key_label TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE organisations ADD COLUMN max_key_age REAL",
    ),
}

_ORGANISATION_COLUMNS = (
    "id, name, state, created_at, revoked_at, key_source, hsm_key_label, max_key_age"
)
_ORG_KEY_COLUMNS = "org_id, version, wrapped, state, master_key_id, created_at"
_DEK_COLUMNS = "org_id, purpose, version, org_key_version, wrapped, state, created_at"
_CREDENTIAL_COLUMNS = "access_key_id, org_id, wrapped_secret, created_at"


def connect(path: Path, *, busy_timeout: float = 5.0) -> sqlite3.Connection:
    """Open the database at `path` with the settings that its users share.

    The file is created with mode 0600, and SQLite gives its `-wal` and
    `-shm` files the same mode. The connection is in autocommit mode
    (`isolation_level=None`), so callers issue BEGIN and COMMIT themselves.
    It uses WAL, waits up to `busy_timeout` seconds for a lock, enforces
    foreign keys, syncs every commit to disk and overwrites deleted content
    with zeros (`secure_delete`).
    """
    if busy_timeout < 0:
        raise ValueError(f"busy timeout must be >= 0 seconds, got {busy_timeout}")
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    connection = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        (mode,) = connection.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode != "wal":
            raise KeyStoreError(
                f"database {path} cannot use WAL mode (got {mode!r}); keep the "
                "data directory on a local file system"
            )
        connection.execute(f"PRAGMA busy_timeout={round(busy_timeout * 1000)}")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA secure_delete=ON")
    except BaseException:
        connection.close()
        raise
    return connection


def schema_version(connection: sqlite3.Connection, component: str) -> int | None:
    """Return the schema version recorded for `component`, or None."""
    row = connection.execute(
        "SELECT version FROM schema_version WHERE component = ?", (component,)
    ).fetchone()
    return None if row is None else int(row[0])


class SqliteKeyStore:
    """The `crypto.keystore.KeyStore` protocol on one SQLite connection."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        self._path = path
        self._connection = connect(path, busy_timeout=busy_timeout)
        try:
            self._create_schema()
        except BaseException:
            self._connection.close()
            raise
        self._data_version: int | None = None
        self._revision = 0

    @classmethod
    def open(cls, data_dir: Path, *, busy_timeout: float = 5.0) -> SqliteKeyStore:
        """Open `keys.sqlite3` in `data_dir`, creating it on first start."""
        if not data_dir.is_dir():
            raise KeyStoreError(
                f"data directory {data_dir} does not exist; create it first"
            )
        return cls(data_dir / KEYS_DATABASE, busy_timeout=busy_timeout)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def connection(self) -> sqlite3.Connection:
        """The store's connection, in autocommit mode.

        Callers must not leave a transaction open on it. The store's next
        write would fail, and an open read also blocks the checkpoint that
        erases a revoked organisation's keys.
        """
        return self._connection

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()

    def revision(self) -> int:
        """Return the key revision, reread only when another connection committed.

        `PRAGMA data_version` changes when any other connection, in this
        process or another, committed to the database file. Only then does
        this read the revision row, which only key store writes increment.
        """
        (data_version,) = self._query_one("PRAGMA data_version")
        if data_version != self._data_version:
            (self._revision,) = self._query_one("SELECT revision FROM key_revision")
            self._data_version = data_version
        return self._revision

    # organisations

    def create_organisation(
        self,
        organisation: Organisation,
        org_key: OrgKeyRecord,
        deks: Sequence[DekRecord],
    ) -> None:
        """Insert an organisation, its first organisation key and its DEKs."""
        with self._write() as db:
            if self.organisation_named(organisation.name) is not None:
                raise OrganisationExists(
                    f"an organisation named {organisation.name!r} already "
                    "exists; choose another name"
                )
            if organisation.key_source == "platform":
                self._require_platform_key(org_key.master_key_id)
            db.execute(
                f"INSERT INTO organisations ({_ORGANISATION_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    organisation.id,
                    organisation.name,
                    organisation.state,
                    _timestamp(organisation.created_at),
                    _optional_timestamp(organisation.revoked_at),
                    organisation.key_source,
                    organisation.hsm_key_label,
                    organisation.max_key_age,
                ),
            )
            self._insert_org_key(org_key)
            for dek in deks:
                self._insert_dek(dek)

    def organisation(self, org_id: bytes) -> Organisation | None:
        """Return the organisation with that id."""
        row = self._query_optional(
            f"SELECT {_ORGANISATION_COLUMNS} FROM organisations WHERE id = ?",
            (org_id,),
        )
        return None if row is None else _organisation(row)

    def organisation_named(self, name: str) -> Organisation | None:
        """Return the organisation with that name."""
        row = self._query_optional(
            f"SELECT {_ORGANISATION_COLUMNS} FROM organisations WHERE name = ?",
            (name,),
        )
        return None if row is None else _organisation(row)

    def organisations(self) -> list[Organisation]:
        """Return every organisation, revoked ones included, ordered by name."""
        rows = self._connection.execute(
            f"SELECT {_ORGANISATION_COLUMNS} FROM organisations ORDER BY name"
        )
        return [_organisation(row) for row in rows]

    # organisation keys and DEKs

    def org_key(self, org_id: bytes, version: int) -> OrgKeyRecord | None:
        """Return one version of an organisation key."""
        row = self._query_optional(
            f"SELECT {_ORG_KEY_COLUMNS} FROM org_keys WHERE org_id = ? AND version = ?",
            (org_id, version),
        )
        return None if row is None else _org_key(row)

    def org_keys(self, org_id: bytes) -> list[OrgKeyRecord]:
        """Return every version of an organisation key, oldest first."""
        rows = self._connection.execute(
            f"SELECT {_ORG_KEY_COLUMNS} FROM org_keys WHERE org_id = ? "
            "ORDER BY version",
            (org_id,),
        )
        return [_org_key(row) for row in rows]

    def active_dek(self, org_id: bytes, purpose: Purpose) -> DekRecord | None:
        """Return the DEK that new writes of that purpose use."""
        row = self._query_optional(
            f"SELECT {_DEK_COLUMNS} FROM deks "
            "WHERE org_id = ? AND purpose = ? AND state = 'active'",
            (org_id, int(purpose)),
        )
        return None if row is None else _dek(row)

    def deks(self, org_id: bytes) -> list[DekRecord]:
        """Return every DEK of an organisation by purpose and version."""
        rows = self._connection.execute(
            f"SELECT {_DEK_COLUMNS} FROM deks WHERE org_id = ? "
            "ORDER BY purpose, version",
            (org_id,),
        )
        return [_dek(row) for row in rows]

    def rotate_org_key(
        self, org_id: bytes, org_key: OrgKeyRecord, rewrapped: Sequence[DekRecord]
    ) -> None:
        """Make `org_key` the active organisation key and store rewrapped DEKs."""
        with self._write() as db:
            organisation = self._require_active(org_id)
            self._require_next_org_key(org_id, org_key.version)
            self._require_all_active_deks(org_id, org_key.version, rewrapped)
            if organisation.key_source == "platform":
                self._require_platform_key(org_key.master_key_id)
            db.execute(
                "UPDATE org_keys SET state = 'rotated' "
                "WHERE org_id = ? AND state = 'active'",
                (org_id,),
            )
            self._insert_org_key(org_key)
            for dek in rewrapped:
                self._update_dek_wrapping(dek)

    def rotate_dek(self, dek: DekRecord) -> None:
        """Make `dek` the active DEK of its purpose and rotate the previous one."""
        with self._write() as db:
            self._require_active(dek.org_id)
            active_org_key = self._active_org_key_version(dek.org_id)
            if dek.org_key_version != active_org_key:
                raise _stale(f"organisation key version {active_org_key} is active")
            active = self.active_dek(dek.org_id, dek.purpose)
            active_version = 0 if active is None else active.version
            if dek.version != active_version + 1:
                raise _stale(f"DEK version {active_version} is active")
            db.execute(
                "UPDATE deks SET state = 'rotated' "
                "WHERE org_id = ? AND purpose = ? AND state = 'active'",
                (dek.org_id, int(dek.purpose)),
            )
            self._insert_dek(dek)

    def rewrap_org_keys(
        self, organisation: Organisation, rewrapped: Sequence[OrgKeyRecord]
    ) -> None:
        """Store every organisation key wrapped under a new master key."""
        org_id = organisation.id
        with self._write() as db:
            self._require_active(org_id)
            rows = db.execute(
                "SELECT version FROM org_keys WHERE org_id = ? AND wrapped IS NOT NULL",
                (org_id,),
            )
            kept = {int(version) for (version,) in rows}
            if kept != {record.version for record in rewrapped} or len(kept) != len(
                rewrapped
            ):
                raise _stale("the organisation key versions changed")
            for record in rewrapped:
                if record.org_id != org_id or record.wrapped is None:
                    raise ValueError("a rewrapped key must belong to the organisation")
                if organisation.key_source == "platform":
                    self._require_platform_key(record.master_key_id)
                db.execute(
                    "UPDATE org_keys SET wrapped = ?, master_key_id = ? "
                    "WHERE org_id = ? AND version = ?",
                    (record.wrapped, record.master_key_id, org_id, record.version),
                )
            db.execute(
                "UPDATE organisations SET key_source = ?, hsm_key_label = ? "
                "WHERE id = ?",
                (organisation.key_source, organisation.hsm_key_label, org_id),
            )

    # the platform master key

    def platform_key_id(self) -> str | None:
        """Return the id of the platform key, or None before its first rotation."""
        row = self._query_optional("SELECT key_id FROM platform_master_key", ())
        return None if row is None else str(row[0])

    def wrapped_secrets(self) -> list[CredentialRecord]:
        """Return every access key whose secret is not destroyed."""
        rows = self._connection.execute(
            f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials "
            "WHERE wrapped_secret IS NOT NULL ORDER BY access_key_id"
        )
        return [_credentials(row) for row in rows]

    def rewrap_platform(
        self,
        old_key_id: str,
        new_key_id: str,
        org_keys: Sequence[OrgKeyRecord],
        secrets: Sequence[CredentialRecord],
    ) -> None:
        """Store everything the platform key wraps, rewrapped under a new key."""
        with self._write() as db:
            self._require_platform_key(old_key_id)
            self._require_platform_rows(old_key_id, org_keys, secrets)
            for record in org_keys:
                if record.master_key_id != new_key_id or record.wrapped is None:
                    raise ValueError(
                        f"every rewrapped organisation key must name {new_key_id}"
                    )
                db.execute(
                    "UPDATE org_keys SET wrapped = ?, master_key_id = ? "
                    "WHERE org_id = ? AND version = ?",
                    (record.wrapped, new_key_id, record.org_id, record.version),
                )
            for credentials in secrets:
                db.execute(
                    "UPDATE credentials SET wrapped_secret = ? WHERE access_key_id = ?",
                    (credentials.wrapped_secret, credentials.access_key_id),
                )
            db.execute(
                "INSERT INTO platform_master_key (id, key_id) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET key_id = excluded.key_id",
                (new_key_id,),
            )

    # organisation policy

    def set_max_key_age(self, org_id: bytes, max_key_age: float | None) -> None:
        """Set the organisation's rotation policy: seconds, or None for none."""
        with self._write() as db:
            self._require_active(org_id)
            db.execute(
                "UPDATE organisations SET max_key_age = ? WHERE id = ?",
                (max_key_age, org_id),
            )

    def revoke_organisation(self, org_id: bytes, revoked_at: datetime) -> Organisation:
        """Mark the organisation revoked, erase its key material, return it.

        Raise KeyStoreError if the revocation committed but a reader kept the
        freed space from being overwritten. A repeated call retries the overwrite.
        """
        with self._write() as db:
            organisation = self._require_organisation(org_id)
            if organisation.active:
                db.execute(
                    "UPDATE organisations SET state = 'revoked', revoked_at = ? "
                    "WHERE id = ?",
                    (_timestamp(revoked_at), org_id),
                )
                db.execute(
                    "UPDATE org_keys SET wrapped = NULL, state = 'destroyed' "
                    "WHERE org_id = ?",
                    (org_id,),
                )
                db.execute("DELETE FROM deks WHERE org_id = ?", (org_id,))
                db.execute(
                    "UPDATE credentials SET wrapped_secret = NULL WHERE org_id = ?",
                    (org_id,),
                )
        self._erase_freed_space(org_id)
        return self._require_organisation(org_id)

    # credentials

    def add_credentials(
        self, credentials: CredentialRecord, *, master_key_id: str | None = None
    ) -> None:
        """Insert an access key of an active organisation.

        `master_key_id`, if given, must be the platform key id the store names.
        """
        with self._write() as db:
            self._require_active(credentials.org_id)
            if master_key_id is not None:
                self._require_platform_key(master_key_id)
            db.execute(
                f"INSERT INTO credentials ({_CREDENTIAL_COLUMNS}) VALUES (?, ?, ?, ?)",
                (
                    credentials.access_key_id,
                    credentials.org_id,
                    credentials.wrapped_secret,
                    _timestamp(credentials.created_at),
                ),
            )

    def credentials(self, access_key_id: str) -> CredentialRecord | None:
        """Return the access key with that id."""
        row = self._query_optional(
            f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE access_key_id = ?",
            (access_key_id,),
        )
        return None if row is None else _credentials(row)

    def credential_count(self, org_id: bytes) -> int:
        """Return the number of access keys of an organisation."""
        (count,) = self._query_one(
            "SELECT count(*) FROM credentials WHERE org_id = ?", (org_id,)
        )
        return int(count)

    # helpers that run inside a transaction

    def _insert_org_key(self, org_key: OrgKeyRecord) -> None:
        self._connection.execute(
            f"INSERT INTO org_keys ({_ORG_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (
                org_key.org_id,
                org_key.version,
                org_key.wrapped,
                org_key.state,
                org_key.master_key_id,
                _timestamp(org_key.created_at),
            ),
        )

    def _insert_dek(self, dek: DekRecord) -> None:
        self._connection.execute(
            f"INSERT INTO deks ({_DEK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                dek.org_id,
                int(dek.purpose),
                dek.version,
                dek.org_key_version,
                dek.wrapped,
                dek.state,
                _timestamp(dek.created_at),
            ),
        )

    def _update_dek_wrapping(self, dek: DekRecord) -> None:
        self._connection.execute(
            "UPDATE deks SET org_key_version = ?, wrapped = ? "
            "WHERE org_id = ? AND purpose = ? AND version = ? AND state = 'active'",
            (
                dek.org_key_version,
                dek.wrapped,
                dek.org_id,
                int(dek.purpose),
                dek.version,
            ),
        )

    def _require_organisation(self, org_id: bytes) -> Organisation:
        organisation = self.organisation(org_id)
        if organisation is None:
            raise UnknownOrganisation(f"no organisation has id {org_id.hex()}")
        return organisation

    def _require_active(self, org_id: bytes) -> Organisation:
        organisation = self._require_organisation(org_id)
        if not organisation.active:
            raise KeyRevoked(f"organisation {organisation.name!r} is revoked")
        return organisation

    def _active_org_key_version(self, org_id: bytes) -> int:
        row = self._query_optional(
            "SELECT version FROM org_keys WHERE org_id = ? AND state = 'active'",
            (org_id,),
        )
        if row is None:
            raise KeyStoreError(
                f"organisation {org_id.hex()} has no active organisation key"
            )
        return int(row[0])

    def _require_next_org_key(self, org_id: bytes, version: int) -> None:
        active = self._active_org_key_version(org_id)
        if version != active + 1:
            raise _stale(f"organisation key version {active} is active")

    def _require_platform_key(self, key_id: str) -> None:
        """Raise unless `key_id` is the platform key id that the store names."""
        recorded = self.platform_key_id()
        if recorded is not None and recorded != key_id:
            raise _stale(f"the platform master key is now {recorded}")

    def _require_platform_rows(
        self,
        old_key_id: str,
        org_keys: Sequence[OrgKeyRecord],
        secrets: Sequence[CredentialRecord],
    ) -> None:
        """Raise unless the records are exactly those the platform key wraps."""
        rows = self._connection.execute(
            "SELECT org_id, version FROM org_keys "
            "WHERE master_key_id = ? AND wrapped IS NOT NULL",
            (old_key_id,),
        )
        wrapped_versions = {(bytes(org_id), int(version)) for org_id, version in rows}
        rewrapped_versions = {(record.org_id, record.version) for record in org_keys}
        repeated = len(org_keys) != len(rewrapped_versions)
        if wrapped_versions != rewrapped_versions or repeated:
            raise _stale("the organisation keys under the platform key changed")
        rows = self._connection.execute(
            "SELECT access_key_id FROM credentials WHERE wrapped_secret IS NOT NULL"
        )
        wrapped_ids = {str(access_key_id) for (access_key_id,) in rows}
        rewrapped_ids = {credentials.access_key_id for credentials in secrets}
        if wrapped_ids != rewrapped_ids or len(rewrapped_ids) != len(secrets):
            raise _stale("the access keys changed")
        if any(credentials.wrapped_secret is None for credentials in secrets):
            raise ValueError("every rewrapped access key must have a wrapped secret")

    def _require_all_active_deks(
        self, org_id: bytes, org_key_version: int, rewrapped: Sequence[DekRecord]
    ) -> None:
        rows = self._connection.execute(
            "SELECT purpose, version FROM deks WHERE org_id = ? AND state = 'active'",
            (org_id,),
        )
        active = {(int(purpose), int(version)) for purpose, version in rows}
        rewrapped_versions = {(int(dek.purpose), dek.version) for dek in rewrapped}
        if rewrapped_versions != active or len(rewrapped_versions) != len(rewrapped):
            raise _stale("the set of active DEKs differs from the rewrapped DEKs")
        for dek in rewrapped:
            if dek.org_id != org_id or dek.org_key_version != org_key_version:
                raise ValueError(
                    "every rewrapped DEK must belong to the organisation and "
                    f"name organisation key version {org_key_version}"
                )

    # plumbing

    @contextmanager
    def _write(self, *, changes_keys: bool = True) -> Iterator[sqlite3.Connection]:
        """Run the block in one write transaction, all or nothing.

        A transaction that changes keys increments the revision, so other
        processes see the change in `revision`.
        """
        db = self._connection
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            if changes_keys:
                db.execute("UPDATE key_revision SET revision = revision + 1")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _erase_freed_space(self, org_id: bytes) -> None:
        """Overwrite deleted key material in the database and its WAL.

        `secure_delete` zeroes deleted cells, VACUUM rebuilds every page so
        no stale copy survives in unused page space, and a TRUNCATE
        checkpoint copies the WAL into the database and empties it.
        """
        # NOTE: this erases only the database files. Backups of the data
        # directory, file system snapshots and flash blocks that an SSD
        # remapped keep old copies, which the master key still opens.
        try:
            self._connection.execute("VACUUM")
            (busy, _, _) = self._query_one("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as error:
            raise _erase_failed(org_id, str(error)) from error
        if busy:
            raise _erase_failed(org_id, "another connection is reading")

    def _create_schema(self) -> None:
        with self._write(changes_keys=False) as db:
            version = self._migrate(db)
            for statement in _SCHEMA:
                db.execute(statement)
            if version is None:
                db.execute(
                    "INSERT INTO schema_version (component, version) VALUES (?, ?)",
                    (_COMPONENT, SCHEMA_VERSION),
                )
            elif version > SCHEMA_VERSION:
                raise KeyStoreError(
                    f"key store {self._path} has schema version {version}, but "
                    f"this byok-proxy supports up to {SCHEMA_VERSION}; upgrade "
                    "byok-proxy"
                )

    def _migrate(self, db: sqlite3.Connection) -> int | None:
        """Bring an older schema up to `SCHEMA_VERSION`; return the old version."""
        db.execute(_SCHEMA[0])
        version = schema_version(db, _COMPONENT)
        if version is None or version >= SCHEMA_VERSION:
            return version
        for step in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[step]:
                db.execute(statement)
        db.execute(
            "UPDATE schema_version SET version = ? WHERE component = ?",
            (SCHEMA_VERSION, _COMPONENT),
        )
        return SCHEMA_VERSION

    def _query_one(self, sql: str, parameters: tuple[Any, ...] = ()) -> Any:
        row = self._connection.execute(sql, parameters).fetchone()
        if row is None:
            raise KeyStoreError(f"query returned no row: {sql}")
        return row

    def _query_optional(self, sql: str, parameters: tuple[Any, ...]) -> Any:
        return self._connection.execute(sql, parameters).fetchone()


def _stale(reason: str) -> KeyUnavailable:
    return KeyUnavailable(
        f"the keys changed while this change was prepared ({reason}); retry it"
    )


def _erase_failed(org_id: bytes, reason: str) -> KeyStoreError:
    return KeyStoreError(
        f"organisation {org_id.hex()} is revoked, but old copies of its wrapped "
        f"keys may remain in the database files ({reason}); revoke it again to "
        "retry the erasure"
    )


def _organisation(row: Any) -> Organisation:
    return Organisation(
        id=bytes(row[0]),
        name=row[1],
        state=cast(OrgState, row[2]),
        created_at=_datetime(row[3]),
        revoked_at=None if row[4] is None else _datetime(row[4]),
        key_source=cast(KeySource, row[5]),
        hsm_key_label=row[6],
        max_key_age=row[7],
    )


def _org_key(row: Any) -> OrgKeyRecord:
    return OrgKeyRecord(
        org_id=bytes(row[0]),
        version=int(row[1]),
        wrapped=_optional_bytes(row[2]),
        state=cast(OrgKeyState, row[3]),
        master_key_id=row[4],
        created_at=_datetime(row[5]),
    )


def _credentials(row: Any) -> CredentialRecord:
    return CredentialRecord(
        access_key_id=row[0],
        org_id=bytes(row[1]),
        wrapped_secret=_optional_bytes(row[2]),
        created_at=_datetime(row[3]),
    )


def _dek(row: Any) -> DekRecord:
    return DekRecord(
        org_id=bytes(row[0]),
        purpose=Purpose(row[1]),
        version=int(row[2]),
        org_key_version=int(row[3]),
        wrapped=bytes(row[4]),
        state=cast(DekState, row[5]),
        created_at=_datetime(row[6]),
    )


def _optional_bytes(value: bytes | None) -> bytes | None:
    return None if value is None else bytes(value)


def _timestamp(moment: datetime) -> float:
    return moment.timestamp()


def _optional_timestamp(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
