"""The proxy's catalogue: bucket owners, purpose routes, uploads and object facts.

It lives in `catalogue.sqlite3` in the data directory, beside the key store,
and every proxy process and CLI command on the host shares it. It contains no
key material, and digests are stored sealed under the object's own keys.

Calls are short local queries made on the event loop.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from crypto.header import Purpose

__all__ = [
    "FOREIGN_POLICIES",
    "BucketTaken",
    "Catalogue",
    "ObjectRecord",
    "PartRecord",
    "Route",
    "UploadRecord",
]

SCHEMA_VERSION = 2
# Policies for objects in a bucket that were not written through the proxy.
FOREIGN_POLICIES = ("refuse", "read")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    component TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY, org_id BLOB NOT NULL, created_at REAL NOT NULL,
    foreign_objects TEXT NOT NULL DEFAULT 'refuse');
CREATE INDEX IF NOT EXISTS buckets_org ON buckets (org_id);
CREATE TABLE IF NOT EXISTS routes (
    bucket TEXT NOT NULL, prefix TEXT NOT NULL, purpose INTEGER NOT NULL,
    PRIMARY KEY (bucket, prefix));
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL,
    org_id BLOB NOT NULL, header BLOB NOT NULL, created_at REAL NOT NULL,
    checksum TEXT NOT NULL DEFAULT '', completed_etag TEXT);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL REFERENCES uploads (upload_id) ON DELETE CASCADE,
    part_number INTEGER NOT NULL, part_salt BLOB NOT NULL,
    plaintext_size INTEGER NOT NULL, sealed_digest BLOB NOT NULL,
    backend_etag TEXT NOT NULL, sealed_checksum BLOB NOT NULL DEFAULT x'',
    PRIMARY KEY (upload_id, part_number));
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL, key TEXT NOT NULL, backend_etag TEXT NOT NULL,
    plaintext_size INTEGER NOT NULL, sealed_etag BLOB NOT NULL,
    parts TEXT NOT NULL, header BLOB NOT NULL,
    sealed_checksum BLOB NOT NULL DEFAULT x'',
    PRIMARY KEY (bucket, key, backend_etag));
"""

# Statements that bring a catalogue of the version in the key up to the next.
_MIGRATIONS = {
    1: """
ALTER TABLE buckets ADD COLUMN foreign_objects TEXT NOT NULL DEFAULT 'refuse';
ALTER TABLE uploads ADD COLUMN checksum TEXT NOT NULL DEFAULT '';
ALTER TABLE uploads ADD COLUMN completed_etag TEXT;
ALTER TABLE parts ADD COLUMN sealed_checksum BLOB NOT NULL DEFAULT x'';
ALTER TABLE objects ADD COLUMN sealed_checksum BLOB NOT NULL DEFAULT x'';
""",
}


class BucketTaken(Exception):
    """Another organisation already owns the bucket."""


@dataclass(frozen=True)
class Route:
    """Objects under `prefix` in `bucket` are encrypted under `purpose`."""

    bucket: str
    prefix: str
    purpose: Purpose


@dataclass(frozen=True)
class UploadRecord:
    """A multipart upload started through the proxy."""

    upload_id: str
    bucket: str
    key: str
    org_id: bytes
    header: bytes
    # "<algorithm>/<type>" of the object checksum the upload asked for, or ""
    checksum: str = ""
    # the stored ETag once the upload has completed, so that a repeated
    # CompleteMultipartUpload gets the same response as the first one
    completed_etag: str | None = None


@dataclass(frozen=True)
class PartRecord:
    """One uploaded part: what is needed to find and open it again."""

    part_number: int
    part_salt: bytes
    plaintext_size: int
    sealed_digest: bytes
    backend_etag: str
    sealed_checksum: bytes = b""


@dataclass(frozen=True)
class ObjectRecord:
    """Facts about a stored object that its metadata cannot carry.

    `parts` lists `(part_number, plaintext_size, part_salt)` of a multipart
    object in order, and is empty for a single stream. `header` is the
    object's encoded header, which listings need to open `sealed_etag`.
    `sealed_checksum` holds the object's S3 checksums, empty if it has none.
    An object the proxy did not write has an empty `header`.
    """

    bucket: str
    key: str
    backend_etag: str
    plaintext_size: int
    sealed_etag: bytes
    header: bytes
    parts: tuple[tuple[int, int, bytes], ...] = ()
    sealed_checksum: bytes = b""

    @property
    def is_foreign(self) -> bool:
        """Whether the object was not written through the proxy."""
        return not self.header


class Catalogue:
    """SQLite-backed catalogue; one connection per process."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO schema_version VALUES ('catalogue', ?)",
            (SCHEMA_VERSION,),
        )
        self._migrate()

    def _migrate(self) -> None:
        (version,) = self._db.execute(
            "SELECT version FROM schema_version WHERE component = 'catalogue'"
        ).fetchone()
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"catalogue schema version {version} is newer than this proxy "
                f"supports ({SCHEMA_VERSION}); upgrade byok-proxy"
            )
        while version < SCHEMA_VERSION:
            with self._transaction():
                for statement in _MIGRATIONS[version].strip().split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                version += 1
                self._db.execute(
                    "UPDATE schema_version SET version = ? "
                    "WHERE component = 'catalogue'",
                    (version,),
                )

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    # buckets

    def bucket_owner(self, bucket: str) -> bytes | None:
        """Return the id of the organisation owning `bucket`, if any."""
        row = self._db.execute(
            "SELECT org_id FROM buckets WHERE name = ?", (bucket,)
        ).fetchone()
        return bytes(row[0]) if row else None

    def claim_bucket(self, bucket: str, org_id: bytes, now: float) -> None:
        """Record `org_id` as the owner of `bucket`; BucketTaken if owned."""
        try:
            self._db.execute(
                "INSERT INTO buckets (name, org_id, created_at) VALUES (?, ?, ?)",
                (bucket, org_id, now),
            )
        except sqlite3.IntegrityError as error:
            raise BucketTaken(bucket) from error

    def release_bucket(self, bucket: str) -> None:
        """Forget the owner of a deleted bucket and its object facts."""
        with self._transaction():
            self._db.execute("DELETE FROM buckets WHERE name = ?", (bucket,))
            self._db.execute("DELETE FROM objects WHERE bucket = ?", (bucket,))

    def foreign_objects(self, bucket: str) -> str:
        """Return how `bucket` treats objects the proxy did not write.

        "refuse" rejects them with an error, "read" passes them through
        unchanged.
        """
        row = self._db.execute(
            "SELECT foreign_objects FROM buckets WHERE name = ?", (bucket,)
        ).fetchone()
        return str(row[0]) if row else "refuse"

    def set_foreign_objects(self, bucket: str, policy: str) -> bool:
        """Set the policy for objects the proxy did not write; False if unknown."""
        if policy not in FOREIGN_POLICIES:
            raise ValueError(f"unknown policy {policy!r}")
        cursor = self._db.execute(
            "UPDATE buckets SET foreign_objects = ? WHERE name = ?", (policy, bucket)
        )
        return cursor.rowcount > 0

    def buckets_of(self, org_id: bytes) -> set[str]:
        """Return the names of the buckets owned by `org_id`."""
        rows = self._db.execute("SELECT name FROM buckets WHERE org_id = ?", (org_id,))
        return {name for (name,) in rows}

    # routes

    def set_route(self, route: Route) -> None:
        """Add or replace the purpose route for a bucket and key prefix."""
        self._db.execute(
            "INSERT OR REPLACE INTO routes VALUES (?, ?, ?)",
            (route.bucket, route.prefix, int(route.purpose)),
        )

    def remove_route(self, bucket: str, prefix: str) -> bool:
        """Remove a route; return whether it existed."""
        cursor = self._db.execute(
            "DELETE FROM routes WHERE bucket = ? AND prefix = ?", (bucket, prefix)
        )
        return cursor.rowcount > 0

    def routes(self) -> list[Route]:
        """Return every route, ordered by bucket and prefix."""
        rows = self._db.execute(
            "SELECT bucket, prefix, purpose FROM routes ORDER BY bucket, prefix"
        )
        return [Route(b, p, Purpose(purpose)) for b, p, purpose in rows]

    def purpose_for(self, bucket: str, key: str) -> Purpose:
        """Return the purpose of the longest matching route, or `files`."""
        rows = self._db.execute(
            "SELECT prefix, purpose FROM routes WHERE bucket = ?", (bucket,)
        )
        best: tuple[int, Purpose] = (-1, Purpose.FILES)
        for prefix, purpose in rows:
            if key.startswith(prefix) and len(prefix) > best[0]:
                best = (len(prefix), Purpose(purpose))
        return best[1]

    # multipart uploads

    def add_upload(self, record: UploadRecord, now: float) -> None:
        """Remember a new multipart upload and its header."""
        self._db.execute(
            "INSERT INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
            (
                record.upload_id,
                record.bucket,
                record.key,
                record.org_id,
                record.header,
                now,
                record.checksum,
            ),
        )

    def upload(self, upload_id: str) -> UploadRecord | None:
        """Return the upload with that id, if the proxy started it."""
        row = self._db.execute(
            "SELECT upload_id, bucket, key, org_id, header, checksum, "
            "completed_etag FROM uploads WHERE upload_id = ?",
            (upload_id,),
        ).fetchone()
        if row is None:
            return None
        return UploadRecord(
            row[0], row[1], row[2], bytes(row[3]), bytes(row[4]), row[5], row[6]
        )

    def record_part(self, upload_id: str, part: PartRecord) -> None:
        """Store an uploaded part; a resent part number replaces the old one."""
        self._db.execute(
            "INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                upload_id,
                part.part_number,
                part.part_salt,
                part.plaintext_size,
                part.sealed_digest,
                part.backend_etag,
                part.sealed_checksum,
            ),
        )

    def parts(self, upload_id: str) -> dict[int, PartRecord]:
        """Return the recorded parts of an upload by part number."""
        rows = self._db.execute(
            "SELECT part_number, part_salt, plaintext_size, sealed_digest, "
            "backend_etag, sealed_checksum FROM parts WHERE upload_id = ?",
            (upload_id,),
        )
        return {
            row[0]: PartRecord(
                row[0], bytes(row[1]), row[2], bytes(row[3]), row[4], bytes(row[5])
            )
            for row in rows
        }

    def finish_upload(self, upload_id: str, backend_etag: str) -> None:
        """Mark an upload completed as the stored object `backend_etag`.

        The upload's parts are dropped; the upload row stays so that a
        repeated CompleteMultipartUpload finds the object it made.
        """
        with self._transaction():
            self._db.execute(
                "UPDATE uploads SET completed_etag = ? WHERE upload_id = ?",
                (backend_etag, upload_id),
            )
            self._db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))

    def forget_upload(self, upload_id: str) -> None:
        """Drop an aborted upload and its parts."""
        self._db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))

    # objects

    def record_object(self, record: ObjectRecord) -> None:
        """Store the facts of an object written through the proxy.

        A record that the object itself can rebuild, a single stream without
        checksums, is committed without waiting for the disk: after a power
        loss its ETag is read again from the sealed digest. Part tables and
        checksums exist only here, so their commit waits for the disk.
        """
        parts = json.dumps([[n, size, salt.hex()] for n, size, salt in record.parts])
        rebuildable = not record.parts and not record.sealed_checksum
        with self._lazy_sync(rebuildable):
            self._db.execute(
                "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.bucket,
                    record.key,
                    record.backend_etag,
                    record.plaintext_size,
                    record.sealed_etag,
                    parts,
                    record.header,
                    record.sealed_checksum,
                ),
            )

    def object(self, bucket: str, key: str, backend_etag: str) -> ObjectRecord | None:
        """Return the facts of one stored version of an object, if recorded."""
        row = self._db.execute(
            "SELECT plaintext_size, sealed_etag, parts, header, sealed_checksum "
            "FROM objects "
            "WHERE bucket = ? AND key = ? AND backend_etag = ?",
            (bucket, key, backend_etag),
        ).fetchone()
        if row is None:
            return None
        parts = tuple(
            (n, size, bytes.fromhex(salt)) for n, size, salt in json.loads(row[2])
        )
        return ObjectRecord(
            bucket,
            key,
            backend_etag,
            row[0],
            bytes(row[1]),
            bytes(row[3]),
            parts,
            bytes(row[4]),
        )

    @contextmanager
    def _lazy_sync(self, lazy: bool) -> Iterator[None]:
        """Skip the fsync of the commits inside, when `lazy`.

        In WAL mode a lazy commit is still atomic and survives a crash of
        the process; only a power loss can drop it. The next full commit
        syncs it along with its own. Inside a transaction, which SQLite lets
        no one change the setting of, the commit keeps its fsync.
        """
        if not lazy or self._db.in_transaction:
            yield
            return
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
