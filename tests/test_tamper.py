"""Objects modified in the object store behind the proxy never read as other bytes.

Each test stores objects through the proxy, then rewrites them directly in
SeaweedFS with the same metadata (or with edited metadata) and reads them
back through the proxy. A read must fail, with an S3 error before the first
byte or with a connection cut mid-body, and whatever bytes arrived must be a
prefix of the original plaintext.

A rewritten body has a new ETag, so the proxy's catalogue has no record of
it. Tests marked `repoint` also move the catalogue's record to the new ETag,
as an attacker who could write the catalogue (or find an MD5 collision)
would, so that the segment checks themselves are reached.
"""

# TODO: an older version of an object, or a deleted one, put back into the
# object store under the same key still opens and is served as current:
# nothing records which stored version is the latest.

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError

from crypto.header import METADATA_KEY
from crypto.sizes import SEGMENT_SIZE, TAG_SIZE, part_stored_size, sealed_size
from tests.conftest import Stack, Tenant
from tests.payloads import put_multipart

S = SEGMENT_SIZE
SEALED = SEGMENT_SIZE + TAG_SIZE
# Four segments: three full ones and one with 100 bytes and the digest.
SIZE = 3 * S + 100
PART_SIZES = (5 * 1024 * 1024, 5 * 1024 * 1024, 1000)


@dataclass(frozen=True)
class Read:
    """What a client got from a GET: the body bytes and how the read ended."""

    data: bytes
    status: int
    code: str | None
    aborted: bool

    @property
    def failed(self) -> bool:
        """Whether the read ended with an S3 error or a cut connection."""
        return self.code is not None or self.aborted


@pytest.fixture(scope="module")
def client(stack: Stack, tenant: Tenant) -> Any:
    """A client that does not retry, so each read is one request."""
    return stack.client(tenant, config=Config(retries={"total_max_attempts": 1}))


def _read(client: Any, bucket: str, key: str, byte_range: str | None = None) -> Read:
    extra = {"Range": byte_range} if byte_range else {}
    try:
        response = client.get_object(Bucket=bucket, Key=key, **extra)
    except ClientError as error:
        return Read(
            b"",
            error.response["ResponseMetadata"]["HTTPStatusCode"],
            error.response["Error"]["Code"],
            aborted=False,
        )
    status = response["ResponseMetadata"]["HTTPStatusCode"]
    received = bytearray()
    try:
        # iter_chunks checks Content-Length at the end of the body
        for chunk in response["Body"].iter_chunks(S):
            received += chunk
    except (BotoCoreError, HTTPError, ConnectionError):
        return Read(bytes(received), status, None, aborted=True)
    return Read(bytes(received), status, None, aborted=False)


def _head_status(client: Any, bucket: str, key: str) -> int:
    try:
        response = client.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        return int(error.response["ResponseMetadata"]["HTTPStatusCode"])
    return int(response["ResponseMetadata"]["HTTPStatusCode"])


def _stored(backend_s3: Any, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
    got = backend_s3.get_object(Bucket=bucket, Key=key)
    return got["Body"].read(), dict(got["Metadata"])


def _store(
    backend_s3: Any, bucket: str, key: str, body: bytes, metadata: dict[str, str]
) -> str:
    """Write an object straight into the object store; return its ETag."""
    put = backend_s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata)
    return str(put["ETag"])


def _repoint(stack: Stack, bucket: str, key: str, backend_etag: str) -> None:
    """Point the catalogue's record of `key` at a rewritten object's ETag."""
    with sqlite3.connect(stack.data_dir / "catalogue.sqlite3") as db:
        cursor = db.execute(
            "UPDATE objects SET backend_etag = ? WHERE bucket = ? AND key = ?",
            (backend_etag, bucket, key),
        )
        assert cursor.rowcount == 1, f"no catalogue record of {bucket}/{key}"


def _flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    flipped = bytearray(data)
    flipped[offset] ^= mask
    return bytes(flipped)


def _assert_still_serving(client: Any, bucket: str) -> None:
    data = os.urandom(S + 3)
    client.put_object(Bucket=bucket, Key="control", Body=data)
    assert _read(client, bucket, "control").data == data


def _assert_no_wrong_bytes(read: Read, expected: bytes) -> None:
    assert read.failed, f"the read succeeded with status {read.status}"
    assert expected.startswith(read.data), "the read returned bytes not in the object"


def _covering_range(stored_offset: int) -> tuple[str, int, int]:
    """A plaintext range over the segment at `stored_offset` and the one before."""
    index = stored_offset // SEALED
    first = max(index * S - 5, 0)
    last = min(index * S + 5, SIZE - 1)
    return f"bytes={first}-{last}", first, last


def _put_original(client: Any, bucket: str, key: str, size: int = SIZE) -> bytes:
    data = os.urandom(size)
    client.put_object(Bucket=bucket, Key=key, Body=data)
    return data


# rewriting without a change


@pytest.mark.parametrize("repoint", [False, True])
def test_tamper_unchanged_rewrite_reads(
    stack: Stack, client: Any, backend_s3: Any, bucket: str, repoint: bool
) -> None:
    data = _put_original(client, bucket, "same")
    body, metadata = _stored(backend_s3, bucket, "same")
    etag = _store(backend_s3, bucket, "same", body, metadata)
    if repoint:
        _repoint(stack, bucket, "same", etag)
    assert _read(client, bucket, "same").data == data
    assert _read(client, bucket, "same", "bytes=70000-70009").data == data[70000:70010]


# the ciphertext of one segment

SEGMENT_FLIPS = {
    "first_segment": 10,
    "middle_segment": SEALED + 1000,
    "middle_tag": 2 * SEALED - 1,
    "last_segment": 3 * SEALED + 10,
    "last_tag": sealed_size(SIZE) - 1,
}


@pytest.mark.parametrize("repoint", [False, True])
@pytest.mark.parametrize("offset", SEGMENT_FLIPS.values(), ids=SEGMENT_FLIPS.keys())
def test_tamper_segment_byte_flip(
    stack: Stack,
    client: Any,
    backend_s3: Any,
    bucket: str,
    offset: int,
    repoint: bool,
) -> None:
    data = _put_original(client, bucket, "flip")
    body, metadata = _stored(backend_s3, bucket, "flip")
    etag = _store(backend_s3, bucket, "flip", _flip(body, offset), metadata)
    if repoint:
        _repoint(stack, bucket, "flip", etag)

    whole = _read(client, bucket, "flip")
    _assert_no_wrong_bytes(whole, data)
    spec, first, last = _covering_range(offset)
    ranged = _read(client, bucket, "flip", spec)
    _assert_no_wrong_bytes(ranged, data[first : last + 1])
    _assert_still_serving(client, bucket)


@pytest.mark.parametrize("repoint", [False, True])
def test_tamper_digest_segment_is_an_error(
    stack: Stack, client: Any, backend_s3: Any, bucket: str, repoint: bool
) -> None:
    """All the plaintext is in the first segment, the digest ends in the second.

    The damaged final segment contains no plaintext, so the whole body could be
    sent before the damage shows. The proxy must return an error instead.
    """
    data = _put_original(client, bucket, "digest", size=S - 15)
    body, metadata = _stored(backend_s3, bucket, "digest")
    etag = _store(backend_s3, bucket, "digest", _flip(body, len(body) - 1), metadata)
    if repoint:
        _repoint(stack, bucket, "digest", etag)

    read = _read(client, bucket, "digest")
    assert read.code == "DecryptionFailed"
    assert read.status == 400
    assert read.data == b""
    ranged = _read(client, bucket, "digest", f"bytes=0-{len(data) - 1}")
    if repoint:
        # A range opens only its own segments, and none of them was damaged.
        assert ranged.status == 206
        assert ranged.data == data
    else:
        # Without a record the ETag must come from the damaged digest.
        assert ranged.code == "DecryptionFailed"
    _assert_still_serving(client, bucket)


@pytest.mark.parametrize("repoint", [False, True])
def test_tamper_first_segment_no_bytes(
    stack: Stack, client: Any, backend_s3: Any, bucket: str, repoint: bool
) -> None:
    _put_original(client, bucket, "first")
    body, metadata = _stored(backend_s3, bucket, "first")
    etag = _store(backend_s3, bucket, "first", _flip(body, 100), metadata)
    if repoint:
        _repoint(stack, bucket, "first", etag)

    for read in (
        _read(client, bucket, "first"),
        _read(client, bucket, "first", "bytes=0-9"),
    ):
        assert read.code == "DecryptionFailed"
        assert read.status == 400
        assert read.data == b""


# the header in the metadata

# offset of each field in the 200-byte header (docs/format.md) and a bit mask
HEADER_FLIPS = {
    "version": (0, 0x01),
    "layout_unknown": (1, 0x01),
    "layout_multipart": (1, 0x03),
    "purpose": (2, 0x01),
    "reserved": (3, 0x01),
    "org_id": (4, 0x01),
    "org_key_version": (23, 0x01),
    "dek_version": (27, 0x01),
    "wrapped_dek_size": (28, 0x01),
    "wrapped_dek": (29 + 30, 0x01),
    "salt": (89 + 5, 0x01),
    "nonce_prefix": (121 + 3, 0x01),
    "plaintext_size": (135, 0x01),
    "plaintext_size_high": (129, 0x01),
    "commitment": (136 + 10, 0x01),
    "tag": (168 + 31, 0x80),
}


def _edit_header(metadata: dict[str, str], offset: int, mask: int) -> dict[str, str]:
    text = metadata[METADATA_KEY]
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    edited = base64.urlsafe_b64encode(_flip(raw, offset, mask)).rstrip(b"=")
    return {**metadata, METADATA_KEY: edited.decode("ascii")}


@pytest.mark.parametrize(
    ("offset", "mask"), HEADER_FLIPS.values(), ids=HEADER_FLIPS.keys()
)
def test_tamper_header_field_flip(
    client: Any, backend_s3: Any, bucket: str, offset: int, mask: int
) -> None:
    _put_original(client, bucket, "header")
    body, metadata = _stored(backend_s3, bucket, "header")
    _store(backend_s3, bucket, "header", body, _edit_header(metadata, offset, mask))

    for read in (
        _read(client, bucket, "header"),
        _read(client, bucket, "header", "bytes=0-9"),
        _read(client, bucket, "header", f"bytes={S}-{S + 9}"),
    ):
        assert read.code is not None, f"the read succeeded with {read.status}"
        assert read.status >= 400
        assert read.data == b""
    assert _head_status(client, bucket, "header") >= 400
    _assert_still_serving(client, bucket)


# metadata text and the error code it gets; None stands for the original
# header with padding appended
MANGLED_HEADERS: dict[str, tuple[str | None, str]] = {
    "not_base64": ("this is not base64!", "DecryptionFailed"),
    "padded": (None, "DecryptionFailed"),
    "too_short": ("AQID", "DecryptionFailed"),
    "standard_alphabet": ("+/+/", "DecryptionFailed"),
    # SeaweedFS drops an empty metadata value, so the object has no header
    "empty": ("", "InvalidObjectState"),
}


@pytest.mark.parametrize(
    ("text", "code"), MANGLED_HEADERS.values(), ids=MANGLED_HEADERS.keys()
)
def test_tamper_mangled_header_metadata(
    stack: Stack,
    client: Any,
    backend_s3: Any,
    bucket: str,
    text: str | None,
    code: str,
) -> None:
    _put_original(client, bucket, "mangled")
    body, metadata = _stored(backend_s3, bucket, "mangled")
    if text is None:
        text = metadata[METADATA_KEY] + "="
    log_start = stack.proxy.log.stat().st_size
    _store(backend_s3, bucket, "mangled", body, {**metadata, METADATA_KEY: text})

    for read in (
        _read(client, bucket, "mangled"),
        _read(client, bucket, "mangled", "bytes=0-9"),
    ):
        assert read.code == code
        assert read.status in (400, 403)
    assert _head_status(client, bucket, "mangled") in (400, 403)
    with stack.proxy.log.open("rb") as log:
        log.seek(log_start)
        assert b"Traceback" not in log.read()
    _assert_still_serving(client, bucket)


def test_tamper_object_without_header(
    client: Any, backend_s3: Any, bucket: str
) -> None:
    backend_s3.put_object(Bucket=bucket, Key="direct", Body=b"written around the proxy")

    for read in (
        _read(client, bucket, "direct"),
        _read(client, bucket, "direct", "bytes=0-3"),
    ):
        assert read.code == "InvalidObjectState"
        assert read.status == 403
        assert read.data == b""
    assert _head_status(client, bucket, "direct") == 403
    _assert_still_serving(client, bucket)


# the length of the body and the order of segments


def _swap_segments(body: bytes) -> bytes:
    """Exchange the second and third segments."""
    second = body[SEALED : 2 * SEALED]
    third = body[2 * SEALED : 3 * SEALED]
    return body[:SEALED] + third + second + body[3 * SEALED :]


BODY_EDITS: dict[str, Callable[[bytes], bytes]] = {
    "truncate_at_segment_boundary": lambda body: body[: 2 * SEALED],
    "truncate_mid_segment": lambda body: body[: 2 * SEALED + 777],
    "truncate_last_tag": lambda body: body[:-TAG_SIZE],
    "drop_last_byte": lambda body: body[:-1],
    "drop_middle_segment": lambda body: body[:SEALED] + body[2 * SEALED :],
    "append_bytes": lambda body: body + b"\x00" * 32,
    "append_segment": lambda body: body + body[SEALED : 2 * SEALED],
    "swap_segments": _swap_segments,
    "repeat_segment": lambda body: body[:SEALED] + body[:SEALED] + body[2 * SEALED :],
}


@pytest.mark.parametrize("repoint", [False, True])
@pytest.mark.parametrize("edit", BODY_EDITS.values(), ids=BODY_EDITS.keys())
def test_tamper_body_edit(
    stack: Stack,
    client: Any,
    backend_s3: Any,
    bucket: str,
    edit: Callable[[bytes], bytes],
    repoint: bool,
) -> None:
    data = _put_original(client, bucket, "edited")
    body, metadata = _stored(backend_s3, bucket, "edited")
    etag = _store(backend_s3, bucket, "edited", edit(body), metadata)
    if repoint:
        _repoint(stack, bucket, "edited", etag)

    _assert_no_wrong_bytes(_read(client, bucket, "edited"), data)
    ranged = _read(client, bucket, "edited", f"bytes={S - 3}-{2 * S + 3}")
    _assert_no_wrong_bytes(ranged, data[S - 3 : 2 * S + 4])
    _assert_still_serving(client, bucket)


# objects exchanged or moved


def test_tamper_swap_bodies(client: Any, backend_s3: Any, bucket: str) -> None:
    one = _put_original(client, bucket, "one")
    two = _put_original(client, bucket, "two")
    body_one, metadata_one = _stored(backend_s3, bucket, "one")
    body_two, metadata_two = _stored(backend_s3, bucket, "two")
    _store(backend_s3, bucket, "one", body_two, metadata_one)
    _store(backend_s3, bucket, "two", body_one, metadata_two)

    for key, original in (("one", one), ("two", two)):
        whole = _read(client, bucket, key)
        assert whole.code == "DecryptionFailed"
        assert whole.data == b""
        _assert_no_wrong_bytes(
            _read(client, bucket, key, f"bytes={S}-{S + 9}"), original
        )
    _assert_still_serving(client, bucket)


def test_tamper_swap_headers(client: Any, backend_s3: Any, bucket: str) -> None:
    _put_original(client, bucket, "one")
    _put_original(client, bucket, "two")
    body_one, metadata_one = _stored(backend_s3, bucket, "one")
    body_two, metadata_two = _stored(backend_s3, bucket, "two")
    _store(backend_s3, bucket, "one", body_one, metadata_two)
    _store(backend_s3, bucket, "two", body_two, metadata_one)

    for key in ("one", "two"):
        for read in (
            _read(client, bucket, key),
            _read(client, bucket, key, "bytes=0-9"),
        ):
            assert read.code == "DecryptionFailed"
            assert read.data == b""
        assert _head_status(client, bucket, key) == 400
    _assert_still_serving(client, bucket)


def test_tamper_swap_whole_objects(client: Any, backend_s3: Any, bucket: str) -> None:
    _put_original(client, bucket, "one")
    _put_original(client, bucket, "two")
    body_one, metadata_one = _stored(backend_s3, bucket, "one")
    body_two, metadata_two = _stored(backend_s3, bucket, "two")
    _store(backend_s3, bucket, "one", body_two, metadata_two)
    _store(backend_s3, bucket, "two", body_one, metadata_one)

    for key in ("one", "two"):
        read = _read(client, bucket, key)
        assert read.code == "DecryptionFailed"
        assert read.data == b""
    _assert_still_serving(client, bucket)


@pytest.mark.parametrize("other_bucket", [False, True])
def test_tamper_object_moved(
    client: Any,
    backend_s3: Any,
    bucket: str,
    new_bucket: Callable[..., str],
    other_bucket: bool,
) -> None:
    _put_original(client, bucket, "origin")
    target = new_bucket() if other_bucket else bucket
    body, metadata = _stored(backend_s3, bucket, "origin")
    _store(backend_s3, target, "moved", body, metadata)

    for read in (
        _read(client, target, "moved"),
        _read(client, target, "moved", "bytes=0-9"),
    ):
        assert read.code == "DecryptionFailed"
        assert read.data == b""
    assert _head_status(client, target, "moved") == 400
    _assert_still_serving(client, bucket)


def test_tamper_other_organisation_object(
    stack: Stack,
    client: Any,
    backend_s3: Any,
    bucket: str,
    new_bucket: Callable[..., str],
) -> None:
    intruder = stack.tenant("tamper-intruder")
    intruder_s3 = stack.client(
        intruder, config=Config(retries={"total_max_attempts": 1})
    )
    intruder_bucket = new_bucket(intruder_s3)
    intruder_s3.put_object(Bucket=intruder_bucket, Key="planted", Body=b"x" * 1000)
    body, metadata = _stored(backend_s3, intruder_bucket, "planted")
    _store(backend_s3, bucket, "planted", body, metadata)

    read = _read(client, bucket, "planted")
    assert read.code == "AccessDenied"
    assert read.data == b""
    _assert_still_serving(client, bucket)


# multipart objects


def _put_multipart(client: Any, bucket: str, key: str) -> list[bytes]:
    parts = [os.urandom(size) for size in PART_SIZES]
    put_multipart(client, bucket, key, parts)
    return parts


def _split_parts(body: bytes) -> list[bytes]:
    pieces = []
    for size in PART_SIZES:
        stored = part_stored_size(size)
        pieces.append(body[:stored])
        body = body[stored:]
    assert body == b""
    return pieces


MULTIPART_EDITS: dict[str, Callable[[list[bytes]], bytes]] = {
    "swap_first_parts": lambda p: p[1] + p[0] + p[2],
    "swap_last_parts": lambda p: p[0] + p[2] + p[1],
    "drop_middle_part": lambda p: p[0] + p[2],
    "drop_last_part": lambda p: p[0] + p[1],
    "flip_part_salt": lambda p: p[0] + _flip(p[1], 3) + p[2],
    "flip_last_part": lambda p: p[0] + p[1] + _flip(p[2], 40),
}


@pytest.mark.parametrize("repoint", [False, True])
@pytest.mark.parametrize("edit", MULTIPART_EDITS.values(), ids=MULTIPART_EDITS.keys())
def test_tamper_multipart_parts(
    stack: Stack,
    client: Any,
    backend_s3: Any,
    bucket: str,
    edit: Callable[[list[bytes]], bytes],
    repoint: bool,
) -> None:
    parts = _put_multipart(client, bucket, "mp")
    data = b"".join(parts)
    body, metadata = _stored(backend_s3, bucket, "mp")
    etag = _store(backend_s3, bucket, "mp", edit(_split_parts(body)), metadata)
    if repoint:
        _repoint(stack, bucket, "mp", etag)

    whole = _read(client, bucket, "mp")
    first = PART_SIZES[0] - 10
    last = PART_SIZES[0] + PART_SIZES[1] + 10
    ranged = _read(client, bucket, "mp", f"bytes={first}-{last}")
    if edit is MULTIPART_EDITS["flip_part_salt"] and repoint:
        # The reader takes part salts from the catalogue and skips the stored
        # copy, so this edit changes no byte that a read opens.
        assert whole.data == data
        assert ranged.data == data[first : last + 1]
    else:
        _assert_no_wrong_bytes(whole, data)
        _assert_no_wrong_bytes(ranged, data[first : last + 1])
    _assert_still_serving(client, bucket)
