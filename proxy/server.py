"""Run the application on uvloop, over TLS when a certificate is configured."""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import web

from proxy.app import AccessLogger, create_app
from proxy.settings import ConfigError, Settings

__all__ = ["run", "tls_context"]


def run(settings: Settings, context: ssl.SSLContext | None) -> None:
    """Serve until SIGINT or SIGTERM, over TLS when `context` is given."""
    loop = _new_loop()
    web.run_app(
        create_app(settings),
        host=settings.listen_host,
        port=settings.listen_port,
        ssl_context=context,
        access_log=logging.getLogger("byok.access"),
        access_log_class=AccessLogger,
        print=None,
        loop=loop,
    )


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


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop does not build on Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
