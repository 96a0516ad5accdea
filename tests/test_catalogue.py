"""The catalogue's records: buckets, routes, uploads, parts and objects."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from crypto.header import Purpose
from proxy.catalogue import (
    BucketTaken,
    Catalogue,
    ObjectRecord,
    PartRecord,
    Route,
    UploadRecord,
)


@pytest.fixture
def catalogue(tmp_path: Path) -> Catalogue:
    return Catalogue(tmp_path / "catalogue.sqlite3")


def test_catalogue_object_round_trip(catalogue: Catalogue) -> None:
    record = ObjectRecord("b", "k", '"e"', 5, b"sealed", b"h", ((1, 5, b"s" * 16),))
    catalogue.record_object(record)
    assert catalogue.object("b", "k", '"e"') == record
    assert catalogue.object("b", "k", '"other"') is None


def test_catalogue_bucket_owner(catalogue: Catalogue) -> None:
    catalogue.claim_bucket("photos", b"a" * 16, 0.0)
    assert catalogue.bucket_owner("photos") == b"a" * 16
    with pytest.raises(BucketTaken):
        catalogue.claim_bucket("photos", b"b" * 16, 0.0)
    assert catalogue.buckets_of(b"a" * 16) == {"photos"}
    catalogue.release_bucket("photos")
    assert catalogue.bucket_owner("photos") is None


def test_catalogue_longest_route_wins(catalogue: Catalogue) -> None:
    catalogue.set_route(Route("media", "", Purpose.MESSAGES))
    catalogue.set_route(Route("media", "calls/", Purpose.RECORDINGS))
    catalogue.set_route(Route("media", "calls/text/", Purpose.TRANSCRIPTS))
    assert catalogue.purpose_for("media", "calls/text/1") is Purpose.TRANSCRIPTS
    assert catalogue.purpose_for("media", "calls/1.wav") is Purpose.RECORDINGS
    assert catalogue.purpose_for("media", "chat.json") is Purpose.MESSAGES
    assert catalogue.purpose_for("other", "calls/1.wav") is Purpose.FILES


def test_catalogue_resent_part_replaces(catalogue: Catalogue) -> None:
    catalogue.add_upload(UploadRecord("u1", "b", "k", b"o" * 16, b"h"), 0.0)
    catalogue.record_part("u1", PartRecord(1, b"a" * 16, 10, b"d1", '"e1"'))
    catalogue.record_part("u1", PartRecord(1, b"b" * 16, 20, b"d2", '"e2"'))
    assert catalogue.parts("u1") == {1: PartRecord(1, b"b" * 16, 20, b"d2", '"e2"')}
    catalogue.forget_upload("u1")
    assert catalogue.upload("u1") is None
    assert catalogue.parts("u1") == {}


def test_catalogue_shared_between_connections(tmp_path: Path) -> None:
    first = Catalogue(tmp_path / "catalogue.sqlite3")
    second = Catalogue(tmp_path / "catalogue.sqlite3")
    first.set_route(Route("media", "calls/", Purpose.RECORDINGS))
    assert second.purpose_for("media", "calls/x") is Purpose.RECORDINGS
    first.close()
    second.close()


_VERSION_1 = """
CREATE TABLE schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
INSERT INTO schema_version VALUES ('catalogue', 1);
CREATE TABLE buckets (
    name TEXT PRIMARY KEY, org_id BLOB NOT NULL, created_at REAL NOT NULL);
CREATE TABLE routes (
    bucket TEXT NOT NULL, prefix TEXT NOT NULL, purpose INTEGER NOT NULL,
    PRIMARY KEY (bucket, prefix));
CREATE TABLE uploads (
    upload_id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL,
    org_id BLOB NOT NULL, header BLOB NOT NULL, created_at REAL NOT NULL);
CREATE TABLE parts (
    upload_id TEXT NOT NULL REFERENCES uploads (upload_id) ON DELETE CASCADE,
    part_number INTEGER NOT NULL, part_salt BLOB NOT NULL,
    plaintext_size INTEGER NOT NULL, sealed_digest BLOB NOT NULL,
    backend_etag TEXT NOT NULL, PRIMARY KEY (upload_id, part_number));
CREATE TABLE objects (
    bucket TEXT NOT NULL, key TEXT NOT NULL, backend_etag TEXT NOT NULL,
    plaintext_size INTEGER NOT NULL, sealed_etag BLOB NOT NULL,
    parts TEXT NOT NULL, header BLOB NOT NULL,
    PRIMARY KEY (bucket, key, backend_etag));
INSERT INTO buckets VALUES ('b', x'01', 0);
INSERT INTO objects VALUES ('b', 'k', '"e"', 5, x'aa', '[]', x'bb');
"""


def test_catalogue_migrates_version_1(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(_VERSION_1)
    catalogue = Catalogue(path)
    assert catalogue.object("b", "k", '"e"') == ObjectRecord(
        "b", "k", '"e"', 5, b"\xaa", b"\xbb", (), b""
    )
    assert catalogue.foreign_objects("b") == "refuse"
    catalogue.add_upload(UploadRecord("u", "b", "k", b"o", b"h", "crc32/COMPOSITE"), 0)
    assert catalogue.upload("u") == UploadRecord(
        "u", "b", "k", b"o", b"h", "crc32/COMPOSITE"
    )
    catalogue.close()
    with sqlite3.connect(path) as db:
        (version,) = db.execute("SELECT version FROM schema_version").fetchone()
    assert version == 2


def test_catalogue_refuses_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.sqlite3"
    Catalogue(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(RuntimeError, match="newer"):
        Catalogue(path)


def test_finished_upload_keeps_its_etag(catalogue: Catalogue) -> None:
    catalogue.add_upload(UploadRecord("u", "b", "k", b"o", b"h"), 0.0)
    catalogue.record_part("u", PartRecord(1, b"a" * 16, 10, b"d", '"e1"', b"c"))
    catalogue.finish_upload("u", '"stored-2"')
    upload = catalogue.upload("u")
    assert upload is not None and upload.completed_etag == '"stored-2"'
    assert catalogue.parts("u") == {}


def _statements(catalogue: Catalogue, record: ObjectRecord) -> list[str]:
    executed: list[str] = []
    catalogue._db.set_trace_callback(executed.append)
    catalogue.record_object(record)
    catalogue._db.set_trace_callback(None)
    return [" ".join(statement.split()[:3]) for statement in executed]


def test_rebuildable_record_skips_the_fsync(catalogue: Catalogue) -> None:
    single = ObjectRecord("b", "k", '"e"', 5, b"sealed", b"h")
    assert _statements(catalogue, single) == [
        "PRAGMA synchronous=NORMAL",
        "INSERT OR REPLACE",
        "PRAGMA synchronous=FULL",
    ]
    (mode,) = catalogue._db.execute("PRAGMA synchronous").fetchone()
    assert mode == 2  # FULL again for the writes that follow


@pytest.mark.parametrize(
    "record",
    [
        ObjectRecord("b", "k", '"e"', 5, b"sealed", b"h", ((1, 5, b"s" * 16),)),
        ObjectRecord("b", "k", '"e"', 5, b"sealed", b"h", sealed_checksum=b"c"),
    ],
    ids=["part table", "checksum"],
)
def test_record_only_the_catalogue_holds_waits_for_disk(
    catalogue: Catalogue, record: ObjectRecord
) -> None:
    assert _statements(catalogue, record) == ["INSERT OR REPLACE"]


def test_rebuildable_record_inside_transaction(catalogue: Catalogue) -> None:
    single = ObjectRecord("b", "k", '"e"', 5, b"sealed", b"h")
    catalogue._db.execute("BEGIN")
    catalogue.record_object(single)
    catalogue._db.execute("COMMIT")
    assert catalogue.object("b", "k", '"e"') == single
