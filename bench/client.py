"""A lean S3 client on raw asyncio connections, the same for backend and proxy.

The load it generates should cost as little CPU as possible, because the
client shares two cores with SeaweedFS and the proxy. So each request is
signed once with SigV4 and `UNSIGNED-PAYLOAD` (the proxy's own `sign`), so
no body is hashed. Bodies are written as views of a read-only buffer, and
each connection receives into one reusable buffer whose contents are
discarded unless a sink reads them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, cast
from urllib.parse import quote, urlsplit

from defusedxml import ElementTree

from bench.http1 import ProtocolError, ResponseHead, ResponseParser
from proxy.sigv4 import sign

__all__ = [
    "Body",
    "Endpoint",
    "RequestFailed",
    "Response",
    "S3Client",
    "Sink",
]

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_RECEIVE_BUFFER = 256 * 1024
# Enough of an error body to show its S3 error code and message.
_BODY_START = 16 * 1024
_S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"

Sink = Callable[[memoryview], None]


class Body(Protocol):
    """A request body of known size, produced as a sequence of chunks."""

    @property
    def size(self) -> int:
        """Length in bytes; sent as Content-Length."""
        ...

    def chunks(self) -> Iterator[bytes | memoryview]:
        """Yield the body. Chunks must not change after they are yielded."""
        ...


@dataclass(frozen=True)
class Endpoint:
    """An S3 service on loopback and the credentials to sign for it."""

    name: str
    host: str
    port: int
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str = "us-east-1"

    @classmethod
    def from_url(
        cls, name: str, url: str, access_key: str, secret_key: str
    ) -> Endpoint:
        """Build an endpoint from an `http://HOST:PORT` URL."""
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"expected http://HOST:PORT, got {url!r}")
        return cls(name, parts.hostname, parts.port, access_key, secret_key)


@dataclass(frozen=True)
class Response:
    """One completed response; `body` holds only its first bytes."""

    status: int
    headers: Mapping[str, str]
    body_size: int
    body: bytes
    seconds: float


class RequestFailed(Exception):
    """A request got an unexpected status, or its connection failed."""


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection that carries one request at a time."""

    def __init__(self) -> None:
        self._buffer = memoryview(bytearray(_RECEIVE_BUFFER))
        self._parser = ResponseParser(self._on_body, self._on_complete)
        self._transport: asyncio.Transport | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._waiter: asyncio.Future[tuple[ResponseHead, int]] | None = None
        self._sink: Sink | None = None
        self._body_start = bytearray()
        self.reusable = True

    # asyncio.BufferedProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        try:
            self._parser.feed(self._buffer[:nbytes])
        except ProtocolError as error:
            self._fail(RequestFailed(f"invalid response: {error}"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._writable.set()
        if not self._parser.connection_closed():
            reason = f": {exc}" if exc else ""
            self._fail(RequestFailed(f"connection closed before the response{reason}"))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # requests

    async def exchange(
        self,
        head: bytes,
        body: Iterable[bytes | memoryview],
        head_request: bool,
        sink: Sink | None,
    ) -> tuple[ResponseHead, int, bytes]:
        """Send a request and wait for its whole response."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise RequestFailed("connection is closed")
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._sink = sink
        self._body_start = bytearray()
        self._parser.expect(head_request)
        transport.write(head)
        for chunk in body:
            if waiter.done():
                # The server responded before the body ended, so the rest
                # of this connection's byte stream is out of step.
                self.reusable = False
                break
            if not self._writable.is_set():
                await self._writable.wait()
            transport.write(chunk)
        response, size = await waiter
        if not response.keep_alive:
            self.reusable = False
        return response, size, bytes(self._body_start)

    def close(self) -> None:
        """Close the connection."""
        self.reusable = False
        if self._transport is not None:
            self._transport.close()

    def _on_body(self, data: memoryview) -> None:
        if self._sink is not None:
            self._sink(data)
        missing = _BODY_START - len(self._body_start)
        if missing > 0:
            self._body_start += data[:missing]

    def _on_complete(self, head: ResponseHead, size: int) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((head, size))

    def _fail(self, error: Exception) -> None:
        self.reusable = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        if self._transport is not None:
            self._transport.close()


class S3Client:
    """Signed S3 requests to one endpoint over a pool of keep-alive connections.

    Concurrent callers each get a connection of their own, so the pool grows
    to the highest concurrency used.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._idle: list[_Connection] = []

    async def request(
        self,
        method: str,
        bucket: str,
        key: str = "",
        *,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
        sink: Sink | None = None,
        expect: Iterable[int] = (200,),
    ) -> Response:
        """Send one request; raise RequestFailed unless its status is in `expect`.

        `seconds` of the response runs from the first byte sent to the last
        byte received, signing excluded.
        """
        path = (
            "/" + quote(bucket, safe="") + ("/" + quote(key, safe="/~") if key else "")
        )
        target = path + ("?" + query if query else "")
        head = self._request_head(method, target, headers or {}, body)
        connection = await self._acquire()
        started = time.perf_counter()
        try:
            answer, size, body_start = await connection.exchange(
                head, body.chunks() if body else (), method == "HEAD", sink
            )
        except BaseException:
            connection.close()
            raise
        seconds = time.perf_counter() - started
        self._release(connection)
        response = Response(answer.status, answer.headers, size, body_start, seconds)
        if response.status not in tuple(expect):
            raise RequestFailed(
                f"{method} {target} on {self.endpoint.name} returned "
                f"{response.status}: {body_start[:500].decode('utf-8', 'replace')}"
            )
        return response

    async def create_bucket(self, bucket: str) -> None:
        """Create `bucket`."""
        await self.request("PUT", bucket, body=_EMPTY)

    async def delete_bucket(self, bucket: str, keys: Iterable[str]) -> None:
        """Delete `keys` in `bucket`, then the bucket."""
        for key in keys:
            await self.request("DELETE", bucket, key, expect=(204, 200, 404))
        await self.request("DELETE", bucket, expect=(204, 200))

    async def list_keys(self, bucket: str) -> list[str]:
        """Return the keys in `bucket`; the bench stores at most 1000 per bucket."""
        listing = bytearray()

        def collect(data: memoryview) -> None:
            listing.extend(data)

        await self.request("GET", bucket, query="list-type=2", sink=collect)
        root = ElementTree.fromstring(bytes(listing))
        namespace = {"s3": _S3_NAMESPACE}
        if root.findtext("s3:IsTruncated", "false", namespace) == "true":
            raise RequestFailed(
                f"bucket {bucket} has more than one listing page of keys, "
                "which list_keys does not page through"
            )
        return [
            element.text or ""
            for element in root.findall("s3:Contents/s3:Key", namespace)
        ]

    async def close(self) -> None:
        """Close every idle connection."""
        for connection in self._idle:
            connection.close()
        self._idle.clear()

    def _request_head(
        self, method: str, target: str, headers: Mapping[str, str], body: Body | None
    ) -> bytes:
        endpoint = self.endpoint
        unsigned = dict(headers)
        if body is not None:
            unsigned["content-length"] = str(body.size)
        signed = sign(
            method,
            f"http://{endpoint.host}:{endpoint.port}{target}",
            unsigned,
            payload_hash=UNSIGNED_PAYLOAD,
            access_key_id=endpoint.access_key,
            secret_key=endpoint.secret_key,
            region=endpoint.region,
            now=datetime.now(UTC),
        )
        lines = [f"{method} {target} HTTP/1.1"]
        lines.extend(f"{name}: {value}" for name, value in signed.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _acquire(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                return connection
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            _Connection, self.endpoint.host, self.endpoint.port
        )
        return connection

    def _release(self, connection: _Connection) -> None:
        if connection.reusable:
            self._idle.append(connection)
        else:
            connection.close()


@dataclass(frozen=True)
class _EmptyBody:
    size: int = 0

    def chunks(self) -> Iterator[bytes | memoryview]:
        return iter(())


_EMPTY = _EmptyBody()
