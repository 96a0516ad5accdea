"""Run the application on uvloop."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from proxy.app import AccessLogger, create_app
from proxy.settings import Settings

__all__ = ["run"]


def run(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM."""
    loop = _new_loop()
    web.run_app(
        create_app(settings),
        host=settings.listen_host,
        port=settings.listen_port,
        access_log=logging.getLogger("byok.access"),
        access_log_class=AccessLogger,
        print=None,
        loop=loop,
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop does not build on Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
