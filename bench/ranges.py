"""A one-byte range read near the end of the largest object.

Two questions: how many bytes the proxy fetches from the backend for it
(counted by the relay, between the relayed proxy and SeaweedFS), and how
long it takes compared with the same range read straight from SeaweedFS
(measured on the main proxy, which has no relay in its path).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bench.client import S3Client
from bench.options import Options
from bench.procstat import cpu_seconds
from bench.results import Series
from bench.servers import Lab
from bench.streaming import LargestObjects

__all__ = ["RangeResult", "measure_range"]

log = logging.getLogger("bench.ranges")

# How far before the end the byte is; inside the last full segment of an
# object whose size is a multiple of 64 KiB.
DISTANCE_FROM_END = 100


@dataclass
class RangeResult:
    """Bytes fetched and latency of the one-byte range read."""

    object_size: int
    offset: int
    body_bytes: Series = field(default_factory=Series)
    total_bytes: Series = field(default_factory=Series)
    responses: Series = field(default_factory=Series)
    direct_ms: Series = field(default_factory=lambda: Series(digits=2))
    proxy_ms: Series = field(default_factory=lambda: Series(digits=2))
    # the main proxy's CPU time per timed read, one value per repetition
    proxy_cpu_ms: Series = field(default_factory=lambda: Series(digits=2))


async def measure_range(
    lab: Lab, options: Options, objects: LargestObjects
) -> RangeResult:
    """Count the relayed bytes, then time the range read on both sides."""
    offset = max(objects.size - DISTANCE_FROM_END, 0)
    result = RangeResult(objects.size, offset)
    headers = {"range": f"bytes={offset}-{offset}"}
    await _count_fetched(lab, options, objects, headers, result)

    direct, proxy = S3Client(lab.direct), S3Client(lab.via_proxy)
    try:
        # One untimed read each opens the connections and fills the key cache.
        for client, bucket in (
            (direct, objects.direct_bucket),
            (proxy, objects.proxy_bucket),
        ):
            await client.request(
                "GET", bucket, objects.key, headers=headers, expect=(206,)
            )
        for _ in range(options.repeat):
            proxy_cpu = 0.0
            for _ in range(options.range_samples):
                for client, bucket, series in (
                    (direct, objects.direct_bucket, result.direct_ms),
                    (proxy, objects.proxy_bucket, result.proxy_ms),
                ):
                    before = cpu_seconds([lab.proxy_pid])
                    response = await client.request(
                        "GET", bucket, objects.key, headers=headers, expect=(206,)
                    )
                    if client is proxy:
                        proxy_cpu += cpu_seconds([lab.proxy_pid]) - before
                    _check_one_byte(response.body_size)
                    series.add(response.seconds * 1000)
            result.proxy_cpu_ms.add(proxy_cpu / options.range_samples * 1000)
    finally:
        await direct.close()
        await proxy.close()
    log.info(
        "range read: %s body bytes fetched, direct %s ms, proxy %s ms",
        result.body_bytes.text(),
        result.direct_ms.text(),
        result.proxy_ms.text(),
    )
    return result


def _check_one_byte(body_size: int) -> None:
    if body_size != 1:
        raise AssertionError(f"range read returned {body_size} bytes, expected 1")


async def _count_fetched(
    lab: Lab,
    options: Options,
    objects: LargestObjects,
    headers: dict[str, str],
    result: RangeResult,
) -> None:
    client = S3Client(lab.via_relay)
    try:
        # The relayed proxy is a process of its own with a cold key cache.
        await client.request(
            "GET", objects.proxy_bucket, objects.key, headers=headers, expect=(206,)
        )
        for _ in range(options.repeat):
            lab.relay.take_counts()
            await client.request(
                "GET", objects.proxy_bucket, objects.key, headers=headers, expect=(206,)
            )
            counts = lab.relay.take_counts()
            if counts.parse_errors:
                raise RuntimeError("the relay could not parse the backend's responses")
            result.body_bytes.add(counts.body_bytes)
            result.total_bytes.add(counts.total_bytes)
            result.responses.add(counts.responses)
    finally:
        await client.close()
