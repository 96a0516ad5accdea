"""Hostile and edge-case byte ranges on GetObject, through the proxy.

A `bytes=first-last` or `bytes=first-` range is read with one upstream GET
of the segments that would contain it in a single stream, chosen before the
object's size is known. These tests aim at the edges of that guess, and
compare each response with what S3 returns for the same request. A damaged
object must fail instead of returning wrong bytes.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError

from crypto.sizes import SEGMENT_SIZE, TAG_SIZE
from proxy.catalogue import Catalogue, ObjectRecord
from tests.conftest import Stack, Tenant, remove_bucket
from tests.payloads import MIB, put_multipart
from tests.stack import byok

S = SEGMENT_SIZE
SEALED = SEGMENT_SIZE + TAG_SIZE
# Sizes around every segment boundary. With S - 16 the MD5 digest that ends a
# stream fills the first segment exactly, and with S - 15 it spills one byte.
SIZES = (0, 1, 15, 16, 17, S - 16, S - 15, S - 1, S, S + 1, 2 * S + 5)
PARTS = (5 * MIB, 5 * MIB, 1000)
MULTIPART_SIZE = sum(PARTS)
# Four segments: three full ones and one with 100 bytes and the digest.
TAMPER_SIZE = 3 * S + 100


@dataclass(frozen=True)
class GetResult:
    """The outcome of one GET: status, error code, headers and body received."""

    status: int
    code: str | None
    headers: dict[str, str]
    body: bytes
    aborted: bool = False


def _get(client: Any, bucket: str, key: str, **extra: Any) -> GetResult:
    try:
        response = client.get_object(Bucket=bucket, Key=key, **extra)
    except ClientError as error:
        metadata = error.response["ResponseMetadata"]
        code = error.response["Error"]["Code"]
        return GetResult(metadata["HTTPStatusCode"], code, metadata["HTTPHeaders"], b"")
    metadata = response["ResponseMetadata"]
    received = bytearray()
    aborted = False
    try:
        # iter_chunks checks Content-Length at the end of the body
        for chunk in response["Body"].iter_chunks(S):
            received += chunk
    except (BotoCoreError, HTTPError, ConnectionError):
        aborted = True
    status, headers = metadata["HTTPStatusCode"], metadata["HTTPHeaders"]
    return GetResult(status, None, headers, bytes(received), aborted)


def _spec(first: int, last: int | None) -> str:
    return f"bytes={first}-" if last is None else f"bytes={first}-{last}"


def _check_range(result: GetResult, data: bytes, first: int, last: int | None) -> None:
    """Assert the S3 response to `bytes=first-last` (or `first-`) on `data`."""
    size = len(data)
    spec = _spec(first, last)
    if first >= size:
        assert result.status == 416, spec
        assert result.code == "InvalidRange", spec
        assert result.headers.get("content-range") == f"bytes */{size}", spec
        return
    end = size - 1 if last is None else min(last, size - 1)
    assert result.status == 206, spec
    assert not result.aborted, spec
    assert result.headers["content-range"] == f"bytes {first}-{end}/{size}", spec
    assert result.body == data[first : end + 1], spec


def _check_suffix(result: GetResult, data: bytes, length: int) -> None:
    if length == 0 or not data:
        assert (result.status, result.code) == (416, "InvalidRange"), length
    else:
        assert result.status == 206, length
        assert result.body == data[-length:], length


def _edges(size: int) -> list[int]:
    """Offsets at and next to every segment boundary and the end of `size`."""
    points = {0, 1, size - 2, size - 1, size, size + 1}
    for boundary in range(S, size + S + 1, S):
        points |= {boundary - 1, boundary, boundary + 1}
    return sorted(point for point in points if point >= 0)


def _assert_no_wrong_bytes(result: GetResult, expected: bytes) -> None:
    if result.status == 206 and not result.aborted:
        assert result.body == expected, "a damaged object read as other bytes"
    else:
        assert result.code is not None or result.aborted, result.status
        assert expected.startswith(result.body), "bytes not in the object arrived"


@pytest.fixture(scope="module")
def shared(s3: Any) -> Iterator[str]:
    """One bucket for the tests that only read what they wrote."""
    name = "ranges-" + secrets.token_hex(6)
    s3.create_bucket(Bucket=name)
    yield name
    remove_bucket(s3, name)


@pytest.fixture(scope="module")
def objects(s3: Any, shared: str) -> dict[str, bytes]:
    """A single-stream object and a multipart one in `shared`, by key."""
    single = os.urandom(2 * S + 5)
    s3.put_object(
        Bucket=shared,
        Key="single",
        Body=single,
        ContentType="text/plain",
        ChecksumAlgorithm="SHA256",
    )
    parts = [os.urandom(size) for size in PARTS]
    put_multipart(s3, shared, "multipart", parts)
    return {"single": single, "multipart": b"".join(parts)}


@pytest.fixture(scope="module")
def client(stack: Stack, tenant: Tenant) -> Any:
    """A client that does not retry, so each read is one request."""
    return stack.client(tenant, config=Config(retries={"total_max_attempts": 1}))


# ranges at the edges of segments and of the object


@pytest.mark.parametrize("size", SIZES)
def test_range_edges_single_stream(s3: Any, shared: str, size: int) -> None:
    data = os.urandom(size)
    key = f"edges-{size}"
    s3.put_object(Bucket=shared, Key=key, Body=data)
    edges = _edges(size)
    for first in edges:
        for last in [None, *(point for point in edges if point >= first)]:
            result = _get(s3, shared, key, Range=_spec(first, last))
            _check_range(result, data, first, last)
    for length in edges:
        _check_suffix(_get(s3, shared, key, Range=f"bytes=-{length}"), data, length)


def test_range_edges_multipart(s3: Any, shared: str, objects: dict[str, bytes]) -> None:
    boundaries = (0, S, PARTS[0], PARTS[0] + S, PARTS[0] + PARTS[1], MULTIPART_SIZE)
    edges = sorted({p + d for p in boundaries for d in (-2, -1, 0, 1)} - {-2, -1})
    for first in edges:
        lasts = [point for point in edges if first <= point <= first + 2 * S + 2]
        for last in [None, *lasts]:
            result = _get(s3, shared, "multipart", Range=_spec(first, last))
            _check_range(result, objects["multipart"], first, last)


# (Range header, first, last) of the plaintext served. A first of None means
# that S3 ignores the header and returns the whole object with 200.
ODD_RANGES = {
    "huge open start": ("bytes=99999999999999999999-", 2**70, None),
    "huge closed": ("bytes=99999999999999999999-99999999999999999999", 2**70, None),
    "int64 max start": ("bytes=9223372036854775807-", 2**63 - 1, None),
    "2**62 start": (f"bytes={2**62}-", 2**62, None),
    "huge last": ("bytes=0-99999999999999999999", 0, None),
    "int64 max last": ("bytes=0-9223372036854775807", 0, None),
    "2**62 last": (f"bytes={S + 1}-{2**62}", S + 1, None),
    "uint64 overflow last": ("bytes=5-18446744073709551616", 5, None),
    "leading zeros": (f"bytes=000{S - 1}-000{S}", S - 1, S),
    "last before first": ("bytes=7-3", None, None),
}


@pytest.mark.parametrize("key", ["single", "multipart"])
def test_range_odd_headers(
    s3: Any, shared: str, objects: dict[str, bytes], key: str
) -> None:
    for header, first, last in ODD_RANGES.values():
        result = _get(s3, shared, key, Range=header)
        if first is not None:
            _check_range(result, objects[key], first, last)
            continue
        assert result.status == 200, header
        assert result.body == objects[key], header


# conditions, response overrides and versions

DISPOSITION = 'attachment; filename="part.bin"'
ERROR_CODES = {400: "InvalidRequest", 412: "PreconditionFailed"}


def _extras(etag: str, modified: Any) -> dict[str, tuple[dict[str, Any], int]]:
    """Request parameters to combine with a range, and the status S3 returns."""
    day = timedelta(days=1)
    wrong = '"' + "0" * 32 + '"'
    overrides = {
        "ResponseContentType": "application/x-attack",
        "ResponseContentDisposition": DISPOSITION,
    }
    return {
        "if-match": ({"IfMatch": etag}, 206),
        "if-match wrong": ({"IfMatch": wrong}, 412),
        "if-match star": ({"IfMatch": "*"}, 206),
        "if-none-match": ({"IfNoneMatch": etag}, 304),
        "if-none-match wrong": ({"IfNoneMatch": wrong}, 206),
        "if-modified-since now": ({"IfModifiedSince": modified}, 304),
        "if-modified-since before": ({"IfModifiedSince": modified - day}, 206),
        "if-unmodified-since before": ({"IfUnmodifiedSince": modified - day}, 412),
        "if-unmodified-since now": ({"IfUnmodifiedSince": modified}, 206),
        "if-match wins": ({"IfMatch": etag, "IfUnmodifiedSince": modified - day}, 206),
        "overrides": (overrides, 206),
        "overrides if-match": ({**overrides, "IfMatch": etag}, 206),
        # S3 returns checksums only for a whole object or part, never a range
        "checksum mode": ({"ChecksumMode": "ENABLED"}, 206),
        "part number": ({"PartNumber": 1}, 400),
    }


@pytest.mark.parametrize(
    ("key", "first", "last"),
    [
        ("single", 1, 5),
        ("single", S - 3, S + 3),
        ("single", 2 * S, None),
        ("multipart", PARTS[0] - 3, PARTS[0] + 3),
        ("multipart", MULTIPART_SIZE - 5, None),
    ],
)
def test_range_with_conditions_and_overrides(
    s3: Any,
    shared: str,
    objects: dict[str, bytes],
    key: str,
    first: int,
    last: int | None,
) -> None:
    head = s3.head_object(Bucket=shared, Key=key)
    extras = _extras(head["ETag"], head["LastModified"])
    for name, (extra, status) in extras.items():
        result = _get(s3, shared, key, Range=_spec(first, last), **extra)
        assert result.status == status, name
        if status in ERROR_CODES:
            assert result.code == ERROR_CODES[status], name
        if status != 206:
            continue
        _check_range(result, objects[key], first, last)
        assert result.headers["etag"] == head["ETag"], name
        content_type = extra.get("ResponseContentType", head["ContentType"])
        assert result.headers["content-type"] == content_type, name
        if "ResponseContentDisposition" in extra:
            assert result.headers["content-disposition"] == DISPOSITION, name
        checksums = [h for h in result.headers if h.startswith("x-amz-checksum-")]
        assert checksums == [], name
    whole = s3.head_object(Bucket=shared, Key="single", ChecksumMode="ENABLED")
    # the object has a checksum, so the "checksum mode" case above can fail
    assert "ChecksumSHA256" in whole


def test_range_named_version(s3: Any, bucket: str) -> None:
    versioning = {"Status": "Enabled"}
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=versioning)
    parts = [os.urandom(5 * MIB), os.urandom(S + 3)]
    first_version = put_multipart(s3, bucket, "doc", parts)["VersionId"]
    old, new = b"".join(parts), os.urandom(2 * S + 5)
    second_version = s3.put_object(Bucket=bucket, Key="doc", Body=new)["VersionId"]
    spans = [(0, 0), (S - 1, S + 1), (5 * MIB - 2, 5 * MIB + 2), (2 * S + 4, None)]
    spans += [(len(old) - 1, None), (len(old), None)]
    for version, data in ((first_version, old), (second_version, new)):
        for first, last in spans:
            spec = _spec(first, last)
            result = _get(s3, bucket, "doc", VersionId=version, Range=spec)
            _check_range(result, data, first, last)
            if result.status == 206:
                assert result.headers["x-amz-version-id"] == version, spec

    s3.delete_object(Bucket=bucket, Key="doc")
    latest = _get(s3, bucket, "doc", Range="bytes=0-9")
    assert (latest.status, latest.code) == (404, "NoSuchKey")
    old_read = _get(s3, bucket, "doc", VersionId=first_version, Range="bytes=5-9")
    _check_range(old_read, old, 5, 9)


# objects the proxy did not write

FOREIGN_SIZE = S + 9
# For first = S + 1 the covering GET starts at stored offset S + 16, past the
# end of this object, so it gets 416 and the read falls back to a HEAD.
FOREIGN_SPANS = [(0, None), (3, 7), (S + 1, S + 5), (S + 8, None)]


def _put_foreign(stack: Stack, backend_s3: Any, bucket: str, policy: str) -> bytes:
    data = os.urandom(FOREIGN_SIZE)
    backend_s3.put_object(Bucket=bucket, Key="foreign", Body=data)
    byok(stack.data_dir, "bucket", "foreign-objects", bucket, policy)
    return data


@pytest.mark.parametrize("policy", ["refuse", "read"])
def test_range_foreign_object(
    stack: Stack, s3: Any, backend_s3: Any, bucket: str, policy: str
) -> None:
    data = _put_foreign(stack, backend_s3, bucket, policy)
    for first, last in [*FOREIGN_SPANS, (FOREIGN_SIZE, None)]:
        result = _get(s3, bucket, "foreign", Range=_spec(first, last))
        if policy == "refuse":
            assert (result.status, result.code) == (403, "InvalidObjectState")
            assert "content-range" not in result.headers
        elif first < FOREIGN_SIZE:
            _check_range(result, data, first, last)
        else:
            assert (result.status, result.code) == (416, "InvalidRange")


# NOTE: both cases fail. The foreign path forwards Range to SeaweedFS 4.48,
# which returns 416 for bytes=0-99999999999999999999, and error_from_response
# drops the Content-Range that SeaweedFS sends with a 416.
@pytest.mark.parametrize(
    ("first", "last"),
    [(FOREIGN_SIZE, None), (0, 99999999999999999999)],
    ids=["unsatisfiable", "huge last"],
)
def test_range_foreign_read_like_s3(
    stack: Stack, s3: Any, backend_s3: Any, bucket: str, first: int, last: int
) -> None:
    data = _put_foreign(stack, backend_s3, bucket, "read")
    _check_range(
        _get(s3, bucket, "foreign", Range=_spec(first, last)), data, first, last
    )


# damaged objects


def _flip(offset: int) -> Callable[[bytes], bytes]:
    def edit(body: bytes) -> bytes:
        flipped = bytearray(body)
        flipped[offset] ^= 0x01
        return bytes(flipped)

    return edit


# Each read is (first, last, whether it must fail before the first byte).
# Every changed stored size fails the size check against the header.
RESIZED_READS = [(0, 9, True), (S, None, True), (TAMPER_SIZE, None, True)]
DAMAGE: dict[str, tuple[Callable[[bytes], bytes], list[Any]]] = {
    "flip segment": (
        _flip(SEALED + 100),
        [(S + 10, S + 20, True), (S + 10, None, True), (S - 10, S + 10, False)],
    ),
    "flip tag": (_flip(2 * SEALED - 1), [(S, S, True), (0, S - 1, False)]),
    "flip digest": (_flip(3 * SEALED + 110), [(0, 9, False), (3 * S, None, True)]),
    "flip other segment": (_flip(2 * SEALED + 5), [(0, 9, False)]),
    "drop last segment": (lambda body: body[: 3 * SEALED], RESIZED_READS),
    "drop last byte": (lambda body: body[:-1], RESIZED_READS),
    "drop first segment": (lambda body: body[SEALED:], RESIZED_READS),
    "append tag": (lambda body: body + bytes(TAG_SIZE), RESIZED_READS),
    "append segment": (lambda body: body + body[:SEALED], RESIZED_READS),
}


@pytest.mark.parametrize(("edit", "reads"), DAMAGE.values(), ids=DAMAGE)
def test_range_damaged_object(
    client: Any,
    backend_s3: Any,
    bucket: str,
    edit: Callable[[bytes], bytes],
    reads: list[tuple[int, int | None, bool]],
) -> None:
    data = os.urandom(TAMPER_SIZE)
    client.put_object(Bucket=bucket, Key="damaged", Body=data)
    stored = backend_s3.get_object(Bucket=bucket, Key="damaged")
    body, metadata = edit(stored["Body"].read()), stored["Metadata"]
    backend_s3.put_object(Bucket=bucket, Key="damaged", Body=body, Metadata=metadata)
    for first, last, fails_first in reads:
        spec = _spec(first, last)
        result = _get(client, bucket, "damaged", Range=spec)
        end = len(data) if last is None else last + 1
        _assert_no_wrong_bytes(result, data[first:end])
        if fails_first:
            assert (result.status, result.code) == (400, "DecryptionFailed"), spec
            assert result.body == b"", spec


# other organisations

OTHER_RANGES = ("bytes=0-", "bytes=0-9", f"bytes={S}-", "bytes=999999999-", "bytes=-5")


@pytest.fixture(scope="module")
def other_s3(stack: Stack) -> Any:
    other = stack.tenant("ranges-" + secrets.token_hex(4))
    return stack.client(other, config=Config(retries={"total_max_attempts": 1}))


@pytest.mark.parametrize("planted", [False, True], ids=["their bucket", "planted"])
def test_range_other_organisation(
    s3: Any,
    other_s3: Any,
    backend_s3: Any,
    bucket: str,
    new_bucket: Callable[..., str],
    planted: bool,
) -> None:
    """Reads of another organisation's object are denied and leak no size.

    `planted` copies an object of the other organisation, header and all,
    into the reader's own bucket straight through the object store.
    """
    reader, writer = (s3, other_s3) if planted else (other_s3, s3)
    written = new_bucket(writer)
    writer.put_object(Bucket=written, Key="private", Body=os.urandom(2 * S + 5))
    read_bucket = written
    if planted:
        stored = backend_s3.get_object(Bucket=written, Key="private")
        body, metadata = stored["Body"].read(), stored["Metadata"]
        backend_s3.put_object(
            Bucket=bucket, Key="private", Body=body, Metadata=metadata
        )
        read_bucket = bucket
    for header in OTHER_RANGES:
        result = _get(reader, read_bucket, "private", Range=header)
        assert (result.status, result.code) == (403, "AccessDenied"), header
        assert "content-range" not in result.headers, header


# overwrites during reads


def test_range_during_overwrites(client: Any, bucket: str) -> None:
    """Each read returns a slice of one version, or 500 InternalError to retry."""
    parts = [os.urandom(5 * MIB), os.urandom(S + 3)]
    versions = [b"".join(parts), os.urandom(5 * MIB + S + 3)]
    part_digests = b"".join(hashlib.md5(part).digest() for part in parts)
    etags = [f'"{hashlib.md5(part_digests).hexdigest()}-2"']
    etags.append(f'"{hashlib.md5(versions[1]).hexdigest()}"')
    client.put_object(Bucket=bucket, Key="busy", Body=versions[1])

    def overwrite() -> None:
        for _ in range(4):
            put_multipart(client, bucket, "busy", parts)
            client.put_object(Bucket=bucket, Key="busy", Body=versions[1])

    writer = threading.Thread(target=overwrite)
    writer.start()
    spans = [(5 * MIB - 3, 5 * MIB + 3), (0, 0), (5 * MIB + S, None), (S - 1, S)]
    served: set[int] = set()
    reads = 0
    while writer.is_alive():
        first, last = spans[reads % len(spans)]
        reads += 1
        spec = _spec(first, last)
        result = _get(client, bucket, "busy", Range=spec)
        if result.code is not None:
            assert (result.status, result.code) == (500, "InternalError"), spec
            continue
        slices = [v[first : None if last is None else last + 1] for v in versions]
        assert result.body in slices, f"mixed bytes for {spec}"
        index = slices.index(result.body)
        assert result.headers["etag"] == etags[index], spec
        served.add(index)
    writer.join()
    assert served == {0, 1}, f"{reads} reads saw only versions {served}"


# the catalogue's lazy commit


@pytest.mark.parametrize(
    "record",
    [
        ObjectRecord(None, "k", '"e"', 5, b"sealed", b"h"),  # type: ignore[arg-type]
        ObjectRecord("b", "k", '"e"', object(), b"sealed", b"h"),  # type: ignore[arg-type]
    ],
    ids=["constraint", "binding"],
)
def test_catalogue_lazy_failure_restores_full(
    tmp_path: Path, record: ObjectRecord
) -> None:
    catalogue = Catalogue(tmp_path / "catalogue.sqlite3")
    executed: list[str] = []
    catalogue._db.set_trace_callback(executed.append)
    with pytest.raises(sqlite3.Error):
        catalogue.record_object(record)
    catalogue._db.set_trace_callback(None)
    # the failure happened inside the lazy block, after the switch to NORMAL
    assert executed[0] == "PRAGMA synchronous=NORMAL"
    assert executed[-1] == "PRAGMA synchronous=FULL"
    (mode,) = catalogue._db.execute("PRAGMA synchronous").fetchone()
    assert mode == 2  # FULL
    durable = ObjectRecord("b", "k", '"e"', 5, b"sealed", b"h", ((1, 5, b"s" * 16),))
    catalogue.record_object(durable)
    assert catalogue.object("b", "k", '"e"') == durable
