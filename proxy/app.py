"""The aiohttp application: lifecycle, error rendering, access log."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator

from aiohttp import HttpVersion11, web
from aiohttp.abc import AbstractAccessLogger

from crypto.errors import KeyRevoked, KeyUnavailable, UnknownOrganisation
from crypto.key_agent import KeyAgent
from proxy.addressing import parse_target
from proxy.auth import authenticate, key_revoked
from proxy.buckets import require_owner
from proxy.catalogue import Catalogue
from proxy.context import SERVICES, S3Request, Services
from proxy.dispatch import handler_for
from proxy.errors import S3Error
from proxy.keys import hsm_settings, open_keys
from proxy.post_object import is_form_upload, post_object
from proxy.settings import Settings
from proxy.streams import client_disconnected
from proxy.upstream import Upstream

__all__ = ["AccessLogger", "create_app"]

log = logging.getLogger("byok.server")

_DISCONNECTED = S3Error(
    "IncompleteBody", "The client closed the connection before the request ended"
)
_KEY_UNAVAILABLE = S3Error(
    "KeyUnavailable",
    "The organisation's key is not available right now; retry later",
    503,
)
_ACCESS_DENIED = S3Error("AccessDenied", "Access Denied", 403)
_INTERNAL_ERROR = S3Error(
    "InternalError", "We encountered an internal error. Retry.", 500
)
_AUTHORISED = web.RequestKey("authorised", S3Request)


def create_app(settings: Settings, agent: KeyAgent | None = None) -> web.Application:
    """Build the proxy application; services open when the app starts.

    A worker process passes the `agent` that lends it imported keys.
    """
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.cleanup_ctx.append(_services(settings, agent))
    app.router.add_route("*", "/{tail:.*}", _handle, expect_handler=_expect)
    app.on_response_prepare.append(_add_request_id)
    return app


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    request_id = request.get("request_id")
    if request_id is not None:
        response.headers["x-amz-request-id"] = request_id
        response.headers["x-amz-id-2"] = request_id


def _services(settings: Settings, agent: KeyAgent | None):  # type: ignore[no-untyped-def]
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = open_keys(
            settings.data_dir,
            ttl=settings.key_cache_ttl,
            hsm=hsm_settings(settings),
            agent=agent,
        )
        keyring = keys.keyring
        catalogue = Catalogue(settings.data_dir / "catalogue.sqlite3")
        upstream = Upstream(settings)
        await upstream.start()
        app[SERVICES] = Services(settings, keyring, catalogue, upstream, keys)
        await upstream.check()
        try:
            yield
        finally:
            await upstream.close()
            catalogue.close()
            keys.close()
            log.info("server.stopped")

    return lifecycle


async def _handle(request: web.Request) -> web.StreamResponse:
    request_id = _request_id(request)
    try:
        return await _serve(request, request_id)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        return _error_for(request, request_id, error)


async def _expect(request: web.Request) -> web.StreamResponse | None:
    """Send `100 Continue` only once the request is authorised.

    A rejected request gets its error instead of 100 and a closed
    connection, so its body is never read. A form upload gets 100 at once,
    because its signature is in the body. S3 ignores other expectations.
    """
    if request.headers.get("Expect", "").lower() != "100-continue":
        return None
    if _is_form_upload(request):
        await _send_continue(request)
        return None
    request_id = _request_id(request)
    try:
        s3 = _authorised(request, request_id)
    except Exception as error:
        # The client waits for 100 and sends no body, so waiting for one
        # would hold the connection; close it once the error is sent.
        response = _error_for(request, request_id, error)
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()
        return response
    request[_AUTHORISED] = s3
    await _send_continue(request)
    return None


async def _send_continue(request: web.Request) -> None:
    if request.version == HttpVersion11:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # the 100 is not part of the response that follows
        request.writer.output_size = 0


def _request_id(request: web.Request) -> str:
    if "request_id" not in request:
        request["request_id"] = secrets.token_hex(8).upper()
    request_id: str = request["request_id"]
    return request_id


def _error_for(request: web.Request, request_id: str, error: Exception) -> web.Response:
    """Turn any error a request raised into its S3 error response."""
    if isinstance(error, S3Error):
        return _error_response(error, request_id)
    if isinstance(error, KeyRevoked):
        return _error_response(key_revoked(), request_id)
    if isinstance(error, KeyUnavailable):
        return _error_response(_KEY_UNAVAILABLE, request_id)
    if isinstance(error, UnknownOrganisation):
        return _error_response(_ACCESS_DENIED, request_id)
    if isinstance(error, ConnectionError) and client_disconnected(request):
        # The response cannot reach the client, and aiohttp still logs the
        # access line when sending it fails.
        log.info("client.disconnected request=%s: %s", request_id, error)
        return _error_response(_DISCONNECTED, request_id)
    log.error("request.failed request=%s", request_id, exc_info=error)
    return _error_response(_INTERNAL_ERROR, request_id)


def _authorised(request: web.Request, request_id: str) -> S3Request:
    """Authenticate the request and check it may touch its bucket."""
    services = request.app[SERVICES]
    identity = authenticate(request, services.keyring)
    services.keyring.ensure_active(identity.org_id)
    request["org"] = identity.access_key_id
    target = parse_target(
        request.raw_path, request.headers.get("Host", ""), services.settings.domain
    )
    s3 = S3Request(request, services, identity, target, request.query, request_id)
    creates_bucket = request.method == "PUT" and not target.key and not request.query
    if target.bucket and not creates_bucket:
        require_owner(s3)
    return s3


def _is_form_upload(request: web.Request) -> bool:
    return is_form_upload(request, request.app[SERVICES].settings.domain)


async def _serve(request: web.Request, request_id: str) -> web.StreamResponse:
    # A form upload is signed by a policy in its body, not by a header.
    if _is_form_upload(request):
        return await post_object(request, request_id)
    s3 = request.get(_AUTHORISED) or _authorised(request, request_id)
    handler = handler_for(s3)
    return await handler(s3)


def _error_response(error: S3Error, request_id: str) -> web.Response:
    if error.status == 304:
        return web.Response(status=304, headers=error.headers)
    response = web.Response(
        status=error.status,
        body=error.to_xml(request_id),
        content_type="application/xml",
        headers=error.headers,
    )
    # a HEAD response has no body, so the code also travels in a header
    response.headers["x-amz-error-code"] = error.code
    return response


class AccessLogger(AbstractAccessLogger):
    """One line per request; the path without its query, which may hold a
    presigned signature."""

    def log(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> None:
        self.logger.info(
            "%s %s %s %d %d %.3fs request=%s key=%s",
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            time,
            request.get("request_id", "-"),
            request.get("org", "-"),
        )
