"""Several worker processes on one port, and a supervisor that keeps the keys.

Python runs one thread of bytecode per process, so the proxy uses more
than one core by running several processes. Each worker serves S3 on the
same address (SO_REUSEPORT, the kernel spreads connections). The
supervisor serves the admin API and applies rotation policies. A key
imported through the admin API therefore lands in the supervisor, which
lends it to the workers over private pipes (`crypto.key_agent`), so the
key exists in one process's memory only.

A worker that exits unexpectedly is started again.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess

from crypto.key_agent import KeyAgent, serve_agent
from proxy.keys import KeyServices, hsm_settings, open_keys
from proxy.settings import Settings

__all__ = ["supervise"]

log = logging.getLogger("byok.workers")

_CHECK_INTERVAL = 1.0
_STOP_TIMEOUT = 70.0  # beyond aiohttp's 60-second graceful shutdown


@dataclass
class _Worker:
    """One worker process and the supervisor's end of its key pipe."""

    process: SpawnProcess
    pipe: Connection


async def supervise(settings: Settings) -> None:
    """Run the workers, the admin API and the policies until SIGINT or SIGTERM."""
    from proxy.server import admin_listener, rotation_policies, until_stopped

    spawn = multiprocessing.get_context("spawn")
    keys = open_keys(
        settings.data_dir, ttl=settings.key_cache_ttl, hsm=hsm_settings(settings)
    )
    workers = [
        _start(spawn, settings, keys, index) for index in range(settings.workers)
    ]
    try:
        async with admin_listener(settings, keys), rotation_policies(settings, keys):
            watcher = asyncio.create_task(
                _restart_exited(spawn, settings, keys, workers)
            )
            await until_stopped()
            watcher.cancel()
    finally:
        _stop(workers)
        keys.close()


def _start(
    spawn: SpawnContext, settings: Settings, keys: KeyServices, index: int
) -> _Worker:
    supervisor_end, worker_end = spawn.Pipe()
    process = spawn.Process(
        target=_worker_main,
        args=(settings, worker_end, logging.getLogger().level),
        name=f"byok-proxy worker {index}",
    )
    process.start()
    worker_end.close()
    lender = threading.Thread(
        target=serve_agent, args=(supervisor_end, keys.masters), daemon=True
    )
    lender.start()
    log.info("worker.started index=%d pid=%s", index, process.pid)
    return _Worker(process, supervisor_end)


async def _restart_exited(
    spawn: SpawnContext, settings: Settings, keys: KeyServices, workers: list[_Worker]
) -> None:
    while True:
        await asyncio.sleep(_CHECK_INTERVAL)
        for index, worker in enumerate(workers):
            if worker.process.is_alive():
                continue
            log.error(
                "worker.exited index=%d pid=%s code=%s; starting it again",
                index,
                worker.process.pid,
                worker.process.exitcode,
            )
            worker.pipe.close()
            workers[index] = _start(spawn, settings, keys, index)


def _stop(workers: list[_Worker]) -> None:
    for worker in workers:
        if worker.process.is_alive():
            worker.process.terminate()
    for worker in workers:
        worker.process.join(_STOP_TIMEOUT)
        if worker.process.is_alive():
            log.error("worker.kill pid=%s: it did not stop in time", worker.process.pid)
            worker.process.kill()
            worker.process.join()
        worker.pipe.close()


def _worker_main(settings: Settings, pipe: Connection, log_level: int) -> None:
    """Serve S3 in a worker process until the supervisor stops it."""
    from proxy.server import (
        hide_request_bytes,
        run_loop,
        s3_listener,
        tls_context,
        until_stopped,
    )

    logging.getLogger("aiohttp.server").addFilter(hide_request_bytes)
    # the process id distinguishes the workers' lines in the shared log
    logging.basicConfig(
        level=log_level,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    agent = KeyAgent(pipe)

    async def serve() -> None:
        async with s3_listener(settings, tls_context(settings), agent):
            await until_stopped()

    log.info("worker.serving pid=%d", os.getpid())
    run_loop(serve())
