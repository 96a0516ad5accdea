"""Run the application on uvloop, over TLS when a certificate is configured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from crypto.key_agent import KeyAgent
from proxy.admin_api import create_admin_app
from proxy.admin_token import load_or_create_token
from proxy.allocator import keep_buffers_in_heap
from proxy.app import AccessLogger, create_app
from proxy.context import SERVICES
from proxy.keys import KeyServices
from proxy.settings import ConfigError, Settings

__all__ = [
    "admin_listener",
    "hide_request_bytes",
    "rotation_policies",
    "run",
    "run_loop",
    "s3_listener",
    "tls_context",
    "until_stopped",
]

log = logging.getLogger("byok.server")


def run(settings: Settings, context: ssl.SSLContext | None) -> None:
    """Serve until SIGINT or SIGTERM, over TLS when `context` is given.

    With one worker, the S3 listener and the admin API share one event loop,
    so a key imported through the admin API is in the memory that serves
    S3. With several, `proxy.workers` lends imported keys to the workers.
    """
    logging.getLogger("aiohttp.server").addFilter(hide_request_bytes)
    if settings.workers > 1:
        from proxy.workers import supervise

        run_loop(supervise(settings))
        return
    run_loop(_serve_alone(settings, context))


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on a new uvloop event loop, then close the loop."""
    keep_buffers_in_heap()
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _serve_alone(settings: Settings, context: ssl.SSLContext | None) -> None:
    async with (
        s3_listener(settings, context) as keys,
        admin_listener(settings, keys),
        rotation_policies(settings, keys),
    ):
        await until_stopped()


@contextlib.asynccontextmanager
async def s3_listener(
    settings: Settings,
    context: ssl.SSLContext | None,
    agent: KeyAgent | None = None,
) -> AsyncIterator[KeyServices]:
    """Serve S3 on the listen address; yield the keys the application opened.

    A worker passes the `agent` of its supervisor and shares the port with
    the other workers (SO_REUSEPORT).
    """
    app = create_app(settings, agent)
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("byok.access"),
        access_log_class=AccessLogger,
    )
    await runner.setup()
    try:
        await web.TCPSite(
            runner,
            settings.listen_host,
            settings.listen_port,
            ssl_context=context,
            reuse_port=agent is not None or None,
        ).start()
        log.info(
            "server.listening %s://%s:%d upstream=%s data_dir=%s",
            settings.scheme,
            settings.listen_host,
            settings.listen_port,
            settings.upstream_base,
            settings.data_dir,
        )
        yield app[SERVICES].keys
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def admin_listener(settings: Settings, keys: KeyServices) -> AsyncIterator[None]:
    """Serve the admin API on its own listener, loopback unless configured."""
    token = load_or_create_token(settings.admin_token_path)
    runner = web.AppRunner(create_admin_app(keys.operations, keys.audit, token))
    await runner.setup()
    try:
        site = web.TCPSite(
            runner, settings.admin_listen_host, settings.admin_listen_port
        )
        await site.start()
        log.info(
            "admin.listening http://%s:%d",
            settings.admin_listen_host,
            settings.admin_listen_port,
        )
        yield
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def rotation_policies(
    settings: Settings, keys: KeyServices
) -> AsyncIterator[None]:
    """Apply the organisations' rotation policies while the block runs."""
    task = asyncio.create_task(_apply_policies(keys, settings.policy_interval))
    try:
        yield
    finally:
        task.cancel()


async def _apply_policies(keys: KeyServices, interval: float) -> None:
    """Rotate organisation keys older than their policy, every `interval` seconds.

    Several proxies may find the same key due at once. The key store lets
    one rotation win and fails the others as stale, so each key rotates once.
    """
    actor = f"proxy:{os.getpid()}"
    while True:
        await asyncio.sleep(interval)
        keys.keyring.refresh()
        for name in keys.operations.rotate_due(actor):
            log.info("policy.rotated organisation=%s", name)


async def until_stopped() -> None:
    """Return once the process receives SIGINT or SIGTERM."""
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stopped.set)
    await stopped.wait()
    log.info("server.stopping")


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Build the listener's TLS context (TLS 1.2 or newer), if configured."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            f"cannot load the TLS certificate {settings.tls_cert} and key "
            f"{settings.tls_key}: {error}"
        ) from error
    return context


# TODO: aiohttp itself sends the 400 response to malformed HTTP, as plain
# text instead of S3 XML, and it quotes the offending bytes back to the sender.
def hide_request_bytes(record: logging.LogRecord) -> bool:
    """Log a malformed request in one line, without the bytes it contained.

    aiohttp logs a request it cannot parse with an exception whose message
    quotes the raw bytes, which may be a client's plaintext, so that
    exception is replaced by its class and status code.
    """
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, HttpProcessingError):
        message = record.getMessage()
        record.msg = "%s: malformed HTTP rejected with %s (%s)"
        record.args = (message, error.code, type(error).__name__)
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop does not build on Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
