"""Streaming PUT and GET of large objects, straight to SeaweedFS and through the proxy.

For each object size and repetition the order is: PUT direct, PUT proxy,
GET direct, GET proxy, so a slow moment of the machine hits both sides.
Each repetition writes into fresh buckets and deletes them afterwards,
because SeaweedFS frees the space of deleted objects only when their
bucket's collection goes. Around every proxy request the bench reads the
proxy's CPU time and peak resident set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bench.client import Response, S3Client
from bench.options import Options
from bench.payload import Pattern
from bench.procstat import PeakMemory, cpu_seconds, path_cpu_seconds
from bench.results import GIB, MIB, Series
from bench.servers import Lab

__all__ = [
    "OPERATIONS",
    "LargestObjects",
    "SizeResult",
    "StreamingResults",
    "measure_streaming",
]

log = logging.getLogger("bench.streaming")

OPERATIONS = ("PUT", "GET")
OBJECT_KEY = "stream/object"
# A first write into a new bucket makes SeaweedFS allocate its volumes;
# this small object takes that cost outside the timed requests.
WARM_UP_KEY = "stream/warm-up"


@dataclass
class OperationResult:
    """Throughput of one operation at one size, and the proxy's cost."""

    direct_mibps: Series = field(default_factory=Series)
    proxy_mibps: Series = field(default_factory=Series)
    proxy_cpu_per_gib: Series = field(default_factory=lambda: Series(digits=2))
    proxy_peak_mib: Series = field(default_factory=lambda: Series(digits=1))
    # CPU of SeaweedFS and the client, plus the proxy's on the proxy side
    direct_path_cpu_per_gib: Series = field(default_factory=lambda: Series(digits=2))
    proxy_path_cpu_per_gib: Series = field(default_factory=lambda: Series(digits=2))


@dataclass
class SizeResult:
    """Both operations at one object size."""

    size: int
    operations: dict[str, OperationResult] = field(
        default_factory=lambda: {name: OperationResult() for name in OPERATIONS}
    )


@dataclass
class StreamingResults:
    """All sizes, smallest first."""

    sizes: list[SizeResult] = field(default_factory=list)


@dataclass(frozen=True)
class LargestObjects:
    """The largest size's last objects, left for the range read and deleted after it."""

    size: int
    direct_bucket: str
    proxy_bucket: str
    key: str = OBJECT_KEY


@dataclass
class _Targets:
    direct: S3Client
    proxy: S3Client
    direct_bucket: str
    proxy_bucket: str

    def pairs(self) -> list[tuple[S3Client, str]]:
        return [(self.direct, self.direct_bucket), (self.proxy, self.proxy_bucket)]


async def measure_streaming(
    lab: Lab, options: Options, pattern: Pattern
) -> tuple[StreamingResults, LargestObjects]:
    """Measure every size; keep the last repetition's largest objects."""
    results = StreamingResults()
    direct, proxy = S3Client(lab.direct), S3Client(lab.via_proxy)
    largest = max(options.sizes)
    largest_objects: LargestObjects | None = None
    try:
        for size in sorted(options.sizes):
            result = SizeResult(size)
            for repetition in range(options.repeat):
                targets = _Targets(
                    direct,
                    proxy,
                    f"bench-d-{size}-{repetition}",
                    f"bench-p-{size}-{repetition}",
                )
                await _prepare(targets, pattern)
                await _repetition(lab, targets, pattern, result)
                if repetition == 0:
                    await _verify(targets, pattern, size)
                if size == largest and repetition == options.repeat - 1:
                    largest_objects = LargestObjects(
                        size, targets.direct_bucket, targets.proxy_bucket
                    )
                else:
                    await _remove(targets)
            _log_size(result)
            results.sizes.append(result)
    finally:
        await direct.close()
        await proxy.close()
    assert largest_objects is not None
    return results, largest_objects


async def remove_largest(lab: Lab, largest_objects: LargestObjects) -> None:
    """Delete the objects and buckets that `measure_streaming` left in place."""
    direct, proxy = S3Client(lab.direct), S3Client(lab.via_proxy)
    try:
        await _remove(
            _Targets(
                direct,
                proxy,
                largest_objects.direct_bucket,
                largest_objects.proxy_bucket,
            )
        )
    finally:
        await direct.close()
        await proxy.close()


async def _prepare(targets: _Targets, pattern: Pattern) -> None:
    for client, bucket in targets.pairs():
        await client.create_bucket(bucket)
        await client.request("PUT", bucket, WARM_UP_KEY, body=pattern.body(4096))


async def _remove(targets: _Targets) -> None:
    for client, bucket in targets.pairs():
        await client.delete_bucket(bucket, [WARM_UP_KEY, OBJECT_KEY])


async def _repetition(
    lab: Lab, targets: _Targets, pattern: Pattern, result: SizeResult
) -> None:
    size = result.size
    for operation in OPERATIONS:
        for client, bucket in targets.pairs():
            measured = result.operations[operation]
            side = "proxy" if client is targets.proxy else "direct"
            path = lab.path_pids(side)
            path_before = path_cpu_seconds(path)
            if side == "proxy":
                before = cpu_seconds([lab.proxy_pid])
                with PeakMemory(lab.proxy_pid) as peak:
                    response = await _transfer(client, operation, bucket, pattern, size)
                used = cpu_seconds([lab.proxy_pid]) - before
                measured.proxy_mibps.add(size / response.seconds / MIB)
                measured.proxy_cpu_per_gib.add(used / (size / GIB))
                measured.proxy_peak_mib.add(peak.peak_bytes / MIB)
                path_series = measured.proxy_path_cpu_per_gib
            else:
                response = await _transfer(client, operation, bucket, pattern, size)
                measured.direct_mibps.add(size / response.seconds / MIB)
                path_series = measured.direct_path_cpu_per_gib
            path_used = path_cpu_seconds(path) - path_before
            path_series.add(path_used / (size / GIB))


async def _transfer(
    client: S3Client, operation: str, bucket: str, pattern: Pattern, size: int
) -> Response:
    if operation == "PUT":
        return await client.request("PUT", bucket, OBJECT_KEY, body=pattern.body(size))
    response = await client.request("GET", bucket, OBJECT_KEY)
    if response.body_size != size:
        raise AssertionError(
            f"GET {bucket}/{OBJECT_KEY} returned {response.body_size} bytes, "
            f"expected {size}"
        )
    return response


async def _verify(targets: _Targets, pattern: Pattern, size: int) -> None:
    """Check, outside the timed requests, that each GET returns what PUT sent."""
    for client, bucket in targets.pairs():
        checker = pattern.checker(size)
        await client.request("GET", bucket, OBJECT_KEY, sink=checker)
        checker.verify()


def _log_size(result: SizeResult) -> None:
    for name, measured in result.operations.items():
        log.info(
            "%s %d MiB: direct %s MiB/s, proxy %s MiB/s, proxy peak %s MiB",
            name,
            result.size // MIB,
            measured.direct_mibps.text(),
            measured.proxy_mibps.text(),
            measured.proxy_peak_mib.text(),
        )
