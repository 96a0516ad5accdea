"""What a range read requests from the object store.

A second proxy reaches SeaweedFS through a relay that counts the backend's
responses and body bytes. A `bytes=first-last` or `bytes=first-` read of a
single stream takes one request for exactly the covering segments. A
suffix range takes two, and so does a multipart object, unless the first
request happens to contain the segments.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from bench.relay import CountingRelay, RelayCounts
from crypto.sizes import SEGMENT_SIZE, TAG_SIZE, sealed_size
from tests.conftest import Stack, Tenant
from tests.payloads import put_multipart
from tests.stack import start_proxy

S = SEGMENT_SIZE
SEALED_SEGMENT = SEGMENT_SIZE + TAG_SIZE
SIZE = 5 * S + 100


@dataclasses.dataclass(frozen=True)
class Relayed:
    relay: CountingRelay
    client: Any


@pytest.fixture(scope="module")
def relayed(
    stack: Stack, tenant: Tenant, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Relayed]:
    port = urlsplit(stack.backend.url).port
    assert port is not None
    relay = CountingRelay(port)
    relay.start()
    try:
        backend = dataclasses.replace(stack.backend, url=relay.url)
        log = tmp_path_factory.mktemp("relayed") / "proxy.log"
        proxy = start_proxy(stack.data_dir, backend, log)
        try:
            yield Relayed(relay, stack.client(tenant, url=proxy.url))
        finally:
            proxy.stop()
    finally:
        relay.stop()


def _read(relayed: Relayed, bucket: str, key: str, spec: str) -> RelayCounts:
    relayed.relay.take_counts()
    got = relayed.client.get_object(Bucket=bucket, Key=key, Range=spec)
    got["Body"].read()
    return relayed.relay.take_counts()


@pytest.mark.parametrize(
    ("spec", "segments"),
    [
        ("bytes=0-0", [0]),
        (f"bytes={S - 1}-{S}", [0, 1]),
        (f"bytes={4 * S}-", [4, 5]),
        (f"bytes={SIZE - 1}-{SIZE - 1}", [5]),
        (f"bytes={SIZE - 1}-{10 * S}", [5]),
        (f"bytes={2 * S + 5}-{3 * S - 1}", [2]),
    ],
)
def test_single_stream_range_takes_one_request(
    relayed: Relayed, s3: Any, bucket: str, spec: str, segments: list[int]
) -> None:
    data = os.urandom(SIZE)
    s3.put_object(Bucket=bucket, Key="single", Body=data)
    # the first read may also recover the ETag; the second shows the steady state
    _read(relayed, bucket, "single", spec)
    counts = _read(relayed, bucket, "single", spec)
    assert counts.responses == 1
    stored_end = min((segments[-1] + 1) * SEALED_SEGMENT, sealed_size(SIZE))
    assert counts.body_bytes == stored_end - segments[0] * SEALED_SEGMENT


def test_suffix_range_heads_first(relayed: Relayed, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="suffix", Body=os.urandom(SIZE))
    _read(relayed, bucket, "suffix", "bytes=-10")
    counts = _read(relayed, bucket, "suffix", "bytes=-10")
    assert counts.responses == 2  # a HEAD, then the last segment
    assert counts.body_bytes == sealed_size(SIZE) - 5 * SEALED_SEGMENT


@pytest.mark.parametrize(
    ("spec", "responses"),
    [("bytes=0-0", 2), (f"bytes={5 * S}-{5 * S + 1}", 2), (f"bytes={6 * S}-", 1)],
)
def test_multipart_range_reads_only_its_segments(
    relayed: Relayed, s3: Any, bucket: str, spec: str, responses: int
) -> None:
    parts = [os.urandom(5 * 1024 * 1024), os.urandom(S + 3)]
    put_multipart(s3, bucket, "mp", parts)
    data = b"".join(parts)
    got = relayed.client.get_object(Bucket=bucket, Key="mp", Range=spec)
    first = int(spec.removeprefix("bytes=").split("-")[0])
    last_text = spec.split("-")[1]
    last = int(last_text) if last_text else len(data) - 1
    assert got["Body"].read() == data[first : last + 1]
    counts = _read(relayed, bucket, "mp", spec)
    # The first GET shows that the object is multipart. A part's salt moves
    # its segments 16 bytes on, so a second GET fetches them, unless the
    # first one reaches to the end of the object and contains them already.
    assert counts.responses == responses
    assert counts.body_bytes <= 2 * (last // S - first // S + 2) * SEALED_SEGMENT
