"""Many large streams at once: aggregate throughput and the proxy's peak memory.

`concurrent_streams` PUTs of `concurrent_size` bytes start together, then
as many GETs of those objects. The proxy keeps a few segments per stream,
so its peak resident set should grow with the number of streams, not with
their size. The same helpers measure one proxy against another for the
worker-process comparison.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.client import S3Client
from bench.options import Options
from bench.payload import Pattern
from bench.procstat import PeakMemory, cpu_seconds, process_tree
from bench.results import GIB, MIB, Series
from bench.servers import Lab

__all__ = ["ConcurrentResult", "StreamSet", "measure_concurrent"]

log = logging.getLogger("bench.many_streams")

OPERATIONS = ("PUT", "GET")


@dataclass
class ConcurrentOperation:
    """Aggregate throughput on both sides, the proxy's peak memory and CPU."""

    direct_mibps: Series = field(default_factory=Series)
    proxy_mibps: Series = field(default_factory=Series)
    proxy_peak_mib: Series = field(default_factory=lambda: Series(digits=1))
    proxy_cpu_per_gib: Series = field(default_factory=lambda: Series(digits=2))


@dataclass
class ConcurrentResult:
    """Both operations."""

    streams: int
    size: int
    operations: dict[str, ConcurrentOperation] = field(
        default_factory=lambda: {name: ConcurrentOperation() for name in OPERATIONS}
    )


@dataclass(frozen=True)
class Transfer:
    """One concurrent PUT or GET of every stream: aggregate rate and proxy cost."""

    mibps: float
    peak_mib: float
    cpu_per_gib: float


class StreamSet:
    """Concurrent streams of one size against one bucket of one endpoint."""

    def __init__(
        self, client: S3Client, bucket: str, streams: int, size: int, pattern: Pattern
    ) -> None:
        self.client = client
        self.bucket = bucket
        self._streams = streams
        self._size = size
        self._pattern = pattern

    def keys(self) -> list[str]:
        """Return the object keys, one per stream."""
        return [f"stream-{index}" for index in range(self._streams)]

    async def create(self) -> None:
        """Create the bucket and warm up one connection per stream."""
        await self.client.create_bucket(self.bucket)
        await asyncio.gather(
            *(
                self.client.request("PUT", self.bucket, key, body=self._pattern.body(1))
                for key in self.keys()
            )
        )

    async def remove(self) -> None:
        """Delete the objects and the bucket."""
        await self.client.delete_bucket(self.bucket, self.keys())

    async def transfer(self, operation: str, watched_pid: int | None) -> Transfer:
        """Run every stream at once; measure `watched_pid` and its children."""
        if watched_pid is None:
            seconds = await self._run(operation)
            return Transfer(self._mibps(seconds), 0.0, 0.0)
        pids = process_tree(watched_pid)
        before = cpu_seconds(pids)
        with PeakMemory(watched_pid) as peak:
            seconds = await self._run(operation)
        used = cpu_seconds(pids) - before
        total = self._streams * self._size
        return Transfer(
            self._mibps(seconds), peak.peak_bytes / MIB, used / (total / GIB)
        )

    async def verify(self) -> None:
        """Check, untimed, that every stream reads back what was written."""
        for key in self.keys():
            checker = self._pattern.checker(self._size)
            await self.client.request("GET", self.bucket, key, sink=checker)
            checker.verify()

    def _mibps(self, seconds: float) -> float:
        return self._streams * self._size / seconds / MIB

    async def _run(self, operation: str) -> float:
        started = time.perf_counter()
        await asyncio.gather(*(self._one(operation, key) for key in self.keys()))
        return time.perf_counter() - started

    async def _one(self, operation: str, key: str) -> None:
        if operation == "PUT":
            body = self._pattern.body(self._size)
            await self.client.request("PUT", self.bucket, key, body=body)
            return
        response = await self.client.request("GET", self.bucket, key)
        if response.body_size != self._size:
            raise AssertionError(
                f"GET {self.bucket}/{key} returned {response.body_size} bytes, "
                f"expected {self._size}"
            )


async def measure_concurrent(
    lab: Lab, options: Options, pattern: Pattern
) -> ConcurrentResult:
    """Run the interleaved repetitions of all streams, direct then proxy."""
    result = ConcurrentResult(options.concurrent_streams, options.concurrent_size)
    direct, proxy = S3Client(lab.direct), S3Client(lab.via_proxy)
    try:
        for repetition in range(options.repeat):
            sets = [
                StreamSet(
                    client,
                    f"bench-many-{side}-{repetition}",
                    options.concurrent_streams,
                    options.concurrent_size,
                    pattern,
                )
                for side, client in (("d", direct), ("p", proxy))
            ]
            await _repetition(lab, sets, result)
            if repetition == 0:
                for stream_set in sets:
                    await stream_set.verify()
            for stream_set in sets:
                await stream_set.remove()
    finally:
        await direct.close()
        await proxy.close()
    _log(result)
    return result


async def _repetition(
    lab: Lab, sets: Sequence[StreamSet], result: ConcurrentResult
) -> None:
    direct_set, proxy_set = sets
    for stream_set in sets:
        await stream_set.create()
    for operation in OPERATIONS:
        measured = result.operations[operation]
        direct = await direct_set.transfer(operation, None)
        measured.direct_mibps.add(direct.mibps)
        proxy = await proxy_set.transfer(operation, lab.proxy_pid)
        measured.proxy_mibps.add(proxy.mibps)
        measured.proxy_peak_mib.add(proxy.peak_mib)
        measured.proxy_cpu_per_gib.add(proxy.cpu_per_gib)


def _log(result: ConcurrentResult) -> None:
    for name, measured in result.operations.items():
        log.info(
            "%d x %d MiB %s: direct %s MiB/s, proxy %s MiB/s, proxy peak %s MiB",
            result.streams,
            result.size // MIB,
            name,
            measured.direct_mibps.text(),
            measured.proxy_mibps.text(),
            measured.proxy_peak_mib.text(),
        )
