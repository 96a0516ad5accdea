"""Listings learn the plaintext ETag of objects the catalogue does not know."""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

from tests.conftest import Stack


def _forget_objects(stack: Stack, bucket: str) -> None:
    with sqlite3.connect(stack.data_dir / "catalogue.sqlite3") as db:
        db.execute("DELETE FROM objects WHERE bucket = ?", (bucket,))


def _recorded(stack: Stack, bucket: str) -> set[str]:
    with sqlite3.connect(stack.data_dir / "catalogue.sqlite3") as db:
        rows = db.execute("SELECT key FROM objects WHERE bucket = ?", (bucket,))
        return {key for (key,) in rows}


def test_listing_learns_unknown_objects(stack: Stack, s3: Any, bucket: str) -> None:
    bodies = {f"doc-{n}": b"%d" % n * (1000 * n + 1) for n in range(12)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    _forget_objects(stack, bucket)
    assert _recorded(stack, bucket) == set()

    for version in (1, 2):
        if version == 1:
            listed = s3.list_objects(Bucket=bucket)["Contents"]
        else:
            listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
        assert {e["Key"]: e["ETag"] for e in listed} == {
            key: f'"{hashlib.md5(body).hexdigest()}"' for key, body in bodies.items()
        }
        assert {e["Key"]: e["Size"] for e in listed} == {
            key: len(body) for key, body in bodies.items()
        }
    assert _recorded(stack, bucket) == set(bodies)


def test_version_listing_learns_unknown_versions(
    stack: Stack, s3: Any, bucket: str
) -> None:
    s3.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"first")
    second = s3.put_object(Bucket=bucket, Key="k", Body=b"second body")
    _forget_objects(stack, bucket)
    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert {v["VersionId"]: (v["ETag"], v["Size"]) for v in versions} == {
        first["VersionId"]: (first["ETag"], 5),
        second["VersionId"]: (second["ETag"], 11),
    }
