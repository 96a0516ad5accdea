"""The catalogue's records: buckets, routes, uploads, parts and objects."""

from __future__ import annotations

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
