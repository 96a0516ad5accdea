"""The upstream S3 client: re-signs requests with the proxy's own credentials."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterable, Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

import aiohttp
from defusedxml import ElementTree
from yarl import URL

from proxy.addressing import encode_key
from proxy.errors import S3Error
from proxy.settings import Settings
from proxy.sigv4 import sign

__all__ = ["Body", "Upstream", "error_from_response"]

log = logging.getLogger("byok.upstream")

Body = bytes | AsyncIterable[bytes] | None

_ERROR_BODY_LIMIT = 64 * 1024
# Errors about the proxy's own signature: passing them on would blame the client.
_CREDENTIAL_ERRORS = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "RequestTimeTooSkewed",
        "AuthorizationHeaderMalformed",
    }
)
_STATUS_CODES = {
    304: "NotModified",
    400: "BadRequest",
    403: "AccessDenied",
    404: "NoSuchKey",
    405: "MethodNotAllowed",
    409: "Conflict",
    412: "PreconditionFailed",
    416: "InvalidRange",
    501: "NotImplemented",
    503: "SlowDown",
}


class Upstream:
    """One pooled HTTP session to the object store, for the app's lifetime."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the connection pool."""
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=300),
            connector=aiohttp.TCPConnector(limit=256, enable_cleanup_closed=True),
        )

    async def check(self) -> None:
        """Log whether the object store accepts the proxy's credentials.

        A failure is logged, not raised: the object store may still be
        starting, and every request reports its own error.
        """
        try:
            response = await self.request("GET")
        except S3Error:
            log.warning(
                "upstream.unreachable %s: requests fail until it responds",
                self._settings.upstream_base,
            )
            return
        async with response:
            if response.status == 200:
                log.info("upstream.ready %s", self._settings.upstream_base)
                return
            error = await error_from_response(response)
            log.error(
                "upstream.check_failed %s: HTTP %d %s",
                self._settings.upstream_base,
                response.status,
                error.code,
            )

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        bucket: str = "",
        key: str = "",
        *,
        query: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        body: Body = None,
    ) -> aiohttp.ClientResponse:
        """Send a signed request and return the response, body unread.

        A streamed body needs a Content-Length in `headers`; it is signed
        as UNSIGNED-PAYLOAD. The caller releases the response.
        """
        assert self._session is not None, "Upstream.start() was not awaited"
        url = self._url(bucket, key, query)
        signed = self._sign(method, url, dict(headers or {}), body)
        log.debug("upstream.started %s %s", method, url)
        try:
            return await self._session.request(
                method,
                URL(url, encoded=True),
                headers=signed,
                data=body,
                allow_redirects=False,
            )
        except aiohttp.ClientError as error:
            # a streamed body may fail on the client's side; its caller knows
            # which side failed and logs it
            if body is None or isinstance(body, bytes):
                log.warning("upstream.failed %s %s: %s", method, url, error)
            raise S3Error(
                "ServiceUnavailable",
                "The object store could not be reached; retry later",
                503,
            ) from error

    def _url(self, bucket: str, key: str, query: Sequence[tuple[str, str]]) -> str:
        path = "/"
        if bucket:
            path += quote(bucket, safe="")
            if key:
                path += "/" + encode_key(key)
        url = self._settings.upstream_base + path
        if query:
            url += "?" + "&".join(
                f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
                for name, value in query
            )
        return url

    def _sign(
        self, method: str, url: str, headers: dict[str, str], body: Body
    ) -> dict[str, str]:
        if body is None:
            payload_hash = hashlib.sha256(b"").hexdigest()
        elif isinstance(body, bytes):
            payload_hash = hashlib.sha256(body).hexdigest()
        else:
            payload_hash = "UNSIGNED-PAYLOAD"
        return sign(
            method,
            url,
            headers,
            payload_hash=payload_hash,
            access_key_id=self._settings.upstream_access_key,
            secret_key=self._settings.upstream_secret_key,
            region=self._settings.upstream_region,
            now=datetime.now(UTC),
        )


async def error_from_response(response: aiohttp.ClientResponse) -> S3Error:
    """Turn an upstream error response into the S3Error to return to the client."""
    code = _STATUS_CODES.get(response.status, "InternalError")
    message = f"The object store returned HTTP {response.status}"
    if response.method != "HEAD":
        body = await response.content.read(_ERROR_BODY_LIMIT)
        code, message = _parse_error(body, code, message)
    if code in _CREDENTIAL_ERRORS:
        log.error(
            "upstream.rejected_credentials %s %s: %s (%s); check the proxy's "
            "upstream access key, secret key, region and clock",
            response.method,
            response.url.path,
            code,
            message,
        )
        return S3Error(
            "InternalError",
            "The object store rejected the proxy's own credentials; the "
            "operator must check the proxy's upstream settings",
            502,
        )
    status = response.status if 300 <= response.status < 600 else 502
    return S3Error(code, message, status)


def _parse_error(body: bytes, code: str, message: str) -> tuple[str, str]:
    try:
        root = ElementTree.fromstring(body)
    except (ElementTree.ParseError, ValueError):
        # defusedxml raises ValueError subclasses for hostile XML
        return code, message
    return root.findtext("Code") or code, root.findtext("Message") or message
