"""A loopback TCP forwarder that counts what the backend sends the proxy.

A proxy started with the relay as its upstream URL reaches SeaweedFS only
through it. The relay splits the backend's byte stream into HTTP responses,
so it can tell response bodies (the object bytes fetched) from headers.
It runs its own event loop in a thread, so the bench's load client and
the relay never wait for each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

from bench.http1 import ProtocolError, RequestTracker, ResponseHead, ResponseParser

__all__ = ["CountingRelay", "RelayCounts"]

_READ_SIZE = 256 * 1024


@dataclass(frozen=True)
class RelayCounts:
    """Bytes the backend sent since the last reset."""

    total_bytes: int
    body_bytes: int
    responses: int
    parse_errors: int


class _Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0
        self._body = 0
        self._responses = 0
        self._errors = 0

    def add(self, total: int = 0, body: int = 0, responses: int = 0) -> None:
        with self._lock:
            self._total += total
            self._body += body
            self._responses += responses

    def error(self) -> None:
        with self._lock:
            self._errors += 1

    def take(self) -> RelayCounts:
        with self._lock:
            counts = RelayCounts(self._total, self._body, self._responses, self._errors)
            self._total = self._body = self._responses = self._errors = 0
        return counts


class CountingRelay:
    """Forward 127.0.0.1:port to the backend port and count the replies."""

    def __init__(self, backend_port: int) -> None:
        self._backend_port = backend_port
        self._counter = _Counter()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        """The URL to give the proxy as its upstream."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start listening on a free loopback port."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the counting relay did not start within 10 s")

    def take_counts(self) -> RelayCounts:
        """Return the counts since the previous call and reset them."""
        return self._counter.take()

    def stop(self) -> None:
        """Close the listener and every relayed connection, then stop the thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            self._loop.close()

    async def _relay(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            backend_reader, backend_writer = await asyncio.open_connection(
                "127.0.0.1", self._backend_port
            )
        except OSError:
            client_writer.close()
            return

        def on_complete(head: ResponseHead, size: int) -> None:
            self._counter.add(body=size, responses=1)

        parser = ResponseParser(lambda data: None, on_complete)
        tracker = RequestTracker(parser.expect)
        upstream = asyncio.create_task(
            self._pump(client_reader, backend_writer, tracker.feed, count=False)
        )
        try:
            await self._pump(backend_reader, client_writer, parser.feed, count=True)
        finally:
            upstream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upstream

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        observe: Callable[[memoryview], None],
        count: bool,
    ) -> None:
        parsing = True
        try:
            while data := await reader.read(_READ_SIZE):
                if count:
                    self._counter.add(total=len(data))
                if parsing:
                    try:
                        observe(memoryview(data))
                    except ProtocolError:
                        # Keep forwarding; only the body count is lost.
                        self._counter.error()
                        parsing = False
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
