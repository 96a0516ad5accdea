"""Throughput of a proxy with one worker process and with two.

One process of Python runs one thread of bytecode at a time, so a proxy
with `--workers 2` can use both cores of the machine. With only two cores,
the second worker competes with SeaweedFS and the load client, so the gain
here is a lower bound of what a larger machine shows. Each repetition runs
`worker_streams` concurrent streams straight to SeaweedFS, through the
main one-worker proxy and through a two-worker proxy on the same key store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bench.client import S3Client
from bench.many_streams import OPERATIONS, StreamSet
from bench.options import Options
from bench.payload import Pattern
from bench.results import MIB, Series
from bench.servers import Lab, supports_workers, worker_proxy

__all__ = ["SIDES", "WorkersResult", "measure_workers"]

log = logging.getLogger("bench.workers")

SIDES = ("direct", "1 worker", "2 workers")


@dataclass
class WorkersResult:
    """Aggregate MiB/s per operation and side, or why the row was skipped."""

    streams: int
    size: int
    skipped: str = ""
    mibps: dict[tuple[str, str], Series] = field(
        default_factory=lambda: {
            (operation, side): Series() for operation in OPERATIONS for side in SIDES
        }
    )


async def measure_workers(
    lab: Lab, options: Options, pattern: Pattern
) -> WorkersResult:
    """Compare one and two workers, or skip when `serve --workers` is missing."""
    result = WorkersResult(options.worker_streams, options.worker_size)
    if not supports_workers():
        result.skipped = (
            "skipped: this proxy's `serve` has no --workers option, so it runs "
            "one process only"
        )
        log.warning("workers: %s", result.skipped)
        return result
    with worker_proxy(lab, 2) as (_, endpoint):
        clients = {
            "direct": S3Client(lab.direct),
            "1 worker": S3Client(lab.via_proxy),
            "2 workers": S3Client(endpoint),
        }
        try:
            for repetition in range(options.repeat):
                await _repetition(clients, repetition, options, pattern, result)
        finally:
            for client in clients.values():
                await client.close()
    for (operation, side), series in result.mibps.items():
        log.info("workers %s %s: %s MiB/s", operation, side, series.text())
    return result


async def _repetition(
    clients: dict[str, S3Client],
    repetition: int,
    options: Options,
    pattern: Pattern,
    result: WorkersResult,
) -> None:
    sets = {
        side: StreamSet(
            client,
            f"bench-workers-{index}-{repetition}",
            options.worker_streams,
            options.worker_size,
            pattern,
        )
        for index, (side, client) in enumerate(clients.items())
    }
    for stream_set in sets.values():
        await stream_set.create()
    for operation in OPERATIONS:
        for side, stream_set in sets.items():
            transfer = await stream_set.transfer(operation, None)
            result.mibps[operation, side].add(transfer.mibps)
    if repetition == 0:
        for stream_set in sets.values():
            await stream_set.verify()
    for stream_set in sets.values():
        await stream_set.remove()


def describe(result: WorkersResult) -> str:
    """Return the workload in words, for the report."""
    return f"{result.streams} concurrent streams of {result.size // MIB} MiB"
