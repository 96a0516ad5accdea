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
    "BucketTaken",
    "Catalogue",
    "ObjectRecord",
    "PartRecord",
    "Route",
    "UploadRecord",
]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    component TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY, org_id BLOB NOT NULL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS buckets_org ON buckets (org_id);
CREATE TABLE IF NOT EXISTS routes (
    bucket TEXT NOT NULL, prefix TEXT NOT NULL, purpose INTEGER NOT NULL,
    PRIMARY KEY (bucket, prefix));
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL,
    org_id BLOB NOT NULL, header BLOB NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL REFERENCES uploads (upload_id) ON DELETE CASCADE,
    part_number INTEGER NOT NULL, part_salt BLOB NOT NULL,
    plaintext_size INTEGER NOT NULL, sealed_digest BLOB NOT NULL,
    backend_etag TEXT NOT NULL, PRIMARY KEY (upload_id, part_number));
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL, key TEXT NOT NULL, backend_etag TEXT NOT NULL,
    plaintext_size INTEGER NOT NULL, sealed_etag BLOB NOT NULL,
    parts TEXT NOT NULL, header BLOB NOT NULL,
    PRIMARY KEY (bucket, key, backend_etag));
"""


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


@dataclass(frozen=True)
class PartRecord:
    """One uploaded part: what is needed to find and open it again."""

    part_number: int
    part_salt: bytes
    plaintext_size: int
    sealed_digest: bytes
    backend_etag: str


@dataclass(frozen=True)
class ObjectRecord:
    """Facts about a stored object that its metadata cannot carry.

    `parts` lists `(part_number, plaintext_size, part_salt)` of a multipart
    object in order, and is empty for a single stream. `header` is the
    object's encoded header, which listings need to open `sealed_etag`.
    """

    bucket: str
    key: str
    backend_etag: str
    plaintext_size: int
    sealed_etag: bytes
    header: bytes
    parts: tuple[tuple[int, int, bytes], ...] = ()


class Catalogue:
    """SQLite-backed catalogue; one connection per process."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO schema_version VALUES ('catalogue', ?)",
            (SCHEMA_VERSION,),
        )
        (version,) = self._db.execute(
            "SELECT version FROM schema_version WHERE component = 'catalogue'"
        ).fetchone()
        if version != SCHEMA_VERSION:
            raise RuntimeError(
                f"catalogue schema version {version} is not supported by this "
                f"proxy (expects {SCHEMA_VERSION})"
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
                "INSERT INTO buckets VALUES (?, ?, ?)", (bucket, org_id, now)
            )
        except sqlite3.IntegrityError as error:
            raise BucketTaken(bucket) from error

    def release_bucket(self, bucket: str) -> None:
        """Forget the owner of a deleted bucket and its object facts."""
        with self._transaction():
            self._db.execute("DELETE FROM buckets WHERE name = ?", (bucket,))
            self._db.execute("DELETE FROM objects WHERE bucket = ?", (bucket,))

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
            "INSERT INTO uploads VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.upload_id,
                record.bucket,
                record.key,
                record.org_id,
                record.header,
                now,
            ),
        )

    def upload(self, upload_id: str) -> UploadRecord | None:
        """Return the upload with that id, if the proxy started it."""
        row = self._db.execute(
            "SELECT upload_id, bucket, key, org_id, header FROM uploads "
            "WHERE upload_id = ?",
            (upload_id,),
        ).fetchone()
        if row is None:
            return None
        return UploadRecord(row[0], row[1], row[2], bytes(row[3]), bytes(row[4]))

    def record_part(self, upload_id: str, part: PartRecord) -> None:
        """Store an uploaded part; a resent part number replaces the old one."""
        self._db.execute(
            "INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?, ?, ?)",
            (
                upload_id,
                part.part_number,
                part.part_salt,
                part.plaintext_size,
                part.sealed_digest,
                part.backend_etag,
            ),
        )

    def parts(self, upload_id: str) -> dict[int, PartRecord]:
        """Return the recorded parts of an upload by part number."""
        rows = self._db.execute(
            "SELECT part_number, part_salt, plaintext_size, sealed_digest, "
            "backend_etag FROM parts WHERE upload_id = ?",
            (upload_id,),
        )
        return {
            number: PartRecord(number, bytes(salt), size, bytes(digest), etag)
            for number, salt, size, digest, etag in rows
        }

    def forget_upload(self, upload_id: str) -> None:
        """Drop a completed or aborted upload and its parts."""
        self._db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))

    # objects

    def record_object(self, record: ObjectRecord) -> None:
        """Store the facts of an object written through the proxy."""
        parts = json.dumps([[n, size, salt.hex()] for n, size, salt in record.parts])
        self._db.execute(
            "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.bucket,
                record.key,
                record.backend_etag,
                record.plaintext_size,
                record.sealed_etag,
                parts,
                record.header,
            ),
        )

    def object(self, bucket: str, key: str, backend_etag: str) -> ObjectRecord | None:
        """Return the facts of one stored version of an object, if recorded."""
        row = self._db.execute(
            "SELECT plaintext_size, sealed_etag, parts, header FROM objects "
            "WHERE bucket = ? AND key = ? AND backend_etag = ?",
            (bucket, key, backend_etag),
        ).fetchone()
        if row is None:
            return None
        parts = tuple(
            (n, size, bytes.fromhex(salt)) for n, size, salt in json.loads(row[2])
        )
        return ObjectRecord(
            bucket, key, backend_etag, row[0], bytes(row[1]), bytes(row[3]), parts
        )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
