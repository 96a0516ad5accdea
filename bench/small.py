"""Small objects (4 KiB) with 32 concurrent clients: requests per second and latency.

Each client is one keep-alive connection that sends its next request as
soon as the previous one completed, for a fixed time. A repetition runs
PUT direct, PUT proxy, GET direct, GET proxy; the GETs read the objects
that the same repetition's PUTs wrote. All clients share the bench's one
event loop and core, so the direct figures are a floor: a faster client
could get more out of SeaweedFS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.client import S3Client
from bench.options import Options
from bench.payload import Pattern, PatternBody
from bench.procstat import cpu_seconds, path_cpu_seconds
from bench.results import Series, percentile
from bench.servers import Lab

__all__ = ["SmallResult", "measure_small"]

log = logging.getLogger("bench.small")

OPERATIONS = ("PUT", "GET")


@dataclass
class SmallSide:
    """One side (direct or proxy) of one operation."""

    requests_per_second: Series = field(default_factory=Series)
    p50_ms: Series = field(default_factory=lambda: Series(digits=2))
    p99_ms: Series = field(default_factory=lambda: Series(digits=2))
    cpu_ms_per_request: Series = field(default_factory=lambda: Series(digits=2))
    # CPU of SeaweedFS and the client, plus the proxy's on the proxy side
    path_cpu_ms_per_request: Series = field(default_factory=lambda: Series(digits=2))


@dataclass
class SmallResult:
    """Both operations on both sides."""

    sides: dict[tuple[str, str], SmallSide] = field(
        default_factory=lambda: {
            (operation, side): SmallSide()
            for operation in OPERATIONS
            for side in ("direct", "proxy")
        }
    )


async def measure_small(lab: Lab, options: Options, pattern: Pattern) -> SmallResult:
    """Run the interleaved repetitions; the buckets stay until the lab stops."""
    result = SmallResult()
    clients = {"direct": S3Client(lab.direct), "proxy": S3Client(lab.via_proxy)}
    buckets = {"direct": "bench-small-d", "proxy": "bench-small-p"}
    body = pattern.body(options.small_size)
    try:
        for side, client in clients.items():
            await client.create_bucket(buckets[side])
            await _warm_up(client, buckets[side], options, body)
        for repetition in range(options.repeat):
            written: dict[str, list[int]] = {}
            for operation in OPERATIONS:
                for side, client in clients.items():
                    run = _Run(client, buckets[side], f"r{repetition}", options, body)
                    path = lab.path_pids(side)
                    before = cpu_seconds([lab.proxy_pid])
                    path_before = path_cpu_seconds(path)
                    if operation == "PUT":
                        written[side] = await run.put()
                    else:
                        await run.get(written[side])
                    used = cpu_seconds([lab.proxy_pid]) - before
                    path_used = path_cpu_seconds(path) - path_before
                    run.record(
                        result.sides[operation, side],
                        used if side == "proxy" else None,
                        path_used,
                    )
    finally:
        for client in clients.values():
            await client.close()
    _log(result)
    return result


async def _warm_up(
    client: S3Client, bucket: str, options: Options, body: PatternBody
) -> None:
    """Open every connection once, so that no timed request pays for a handshake."""
    await asyncio.gather(
        *(
            client.request("PUT", bucket, f"warm-up/{index}", body=body)
            for index in range(options.small_clients)
        )
    )


class _Run:
    """One timed run of `small_clients` concurrent request loops."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str,
        options: Options,
        body: PatternBody,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self._options = options
        self._body = body
        self._latencies: list[float] = []
        self._elapsed = 0.0

    async def put(self) -> list[int]:
        """Write new objects; return how many each loop wrote."""
        return await self._loops(self._put_loop)

    async def get(self, written: list[int]) -> None:
        """Read, in turn, the objects each loop wrote in `put`."""

        async def loop(index: int, deadline: float) -> int:
            return await self._get_loop(index, deadline, written[index])

        await self._loops(loop)

    def record(self, side: SmallSide, proxy_cpu: float | None, path_cpu: float) -> None:
        """Add this run's rate, latency percentiles and CPU times to `side`."""
        side.requests_per_second.add(len(self._latencies) / self._elapsed)
        if proxy_cpu is not None:
            side.cpu_ms_per_request.add(proxy_cpu / len(self._latencies) * 1000)
        side.path_cpu_ms_per_request.add(path_cpu / len(self._latencies) * 1000)
        side.p50_ms.add(percentile(self._latencies, 0.50) * 1000)
        side.p99_ms.add(percentile(self._latencies, 0.99) * 1000)

    async def _loops(self, loop: Callable[[int, float], Awaitable[int]]) -> list[int]:
        started = time.perf_counter()
        deadline = started + self._options.small_seconds
        counts = await asyncio.gather(
            *(loop(index, deadline) for index in range(self._options.small_clients))
        )
        self._elapsed = time.perf_counter() - started
        return list(counts)

    async def _put_loop(self, index: int, deadline: float) -> int:
        count = 0
        while time.perf_counter() < deadline:
            key = f"{self._prefix}/{index}/{count}"
            response = await self._client.request(
                "PUT", self._bucket, key, body=self._body
            )
            self._latencies.append(response.seconds)
            count += 1
        return count

    async def _get_loop(self, index: int, deadline: float, available: int) -> int:
        count = 0
        while time.perf_counter() < deadline:
            key = f"{self._prefix}/{index}/{count % available}"
            response = await self._client.request("GET", self._bucket, key)
            if response.body_size != self._body.size:
                raise AssertionError(
                    f"GET {self._bucket}/{key} returned {response.body_size} "
                    f"bytes, expected {self._body.size}"
                )
            self._latencies.append(response.seconds)
            count += 1
        return count


def _log(result: SmallResult) -> None:
    for (operation, side), measured in result.sides.items():
        log.info(
            "small %s %s: %s requests/s, p50 %s ms, p99 %s ms",
            operation,
            side,
            measured.requests_per_second.text(),
            measured.p50_ms.text(),
            measured.p99_ms.text(),
        )
