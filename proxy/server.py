"""Run the application on uvloop, over TLS when a certificate is configured."""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from proxy.app import AccessLogger, create_app
from proxy.settings import ConfigError, Settings

__all__ = ["run", "tls_context"]

log = logging.getLogger("byok.server")


def run(settings: Settings, context: ssl.SSLContext | None) -> None:
    """Serve until SIGINT or SIGTERM, over TLS when `context` is given."""
    logging.getLogger("aiohttp.server").addFilter(_hide_request_bytes)
    address = f"{settings.scheme}://{settings.listen_host}:{settings.listen_port}"

    def listening(_: str) -> None:
        log.info(
            "server.listening %s upstream=%s data_dir=%s",
            address,
            settings.upstream_base,
            settings.data_dir,
        )

    web.run_app(
        create_app(settings),
        host=settings.listen_host,
        port=settings.listen_port,
        ssl_context=context,
        access_log=logging.getLogger("byok.access"),
        access_log_class=AccessLogger,
        print=listening,
        loop=_new_loop(),
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


# TODO: aiohttp itself sends the 400 response to malformed HTTP, as plain
# text instead of S3 XML, and it quotes the offending bytes back to the sender.
def _hide_request_bytes(record: logging.LogRecord) -> bool:
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
