"""Incremental HTTP/1.1 parsing for the load client and the counting relay.

Only what S3 traffic between two known programs needs: responses framed by
Content-Length, chunked transfer coding or connection close, and requests
framed by Content-Length. Bodies are handed on as views of the caller's
buffer, never copied, so a multi-GiB response costs no allocation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "MAX_HEAD",
    "ProtocolError",
    "RequestTracker",
    "ResponseHead",
    "ResponseParser",
]

MAX_HEAD = 64 * 1024
_END_OF_HEAD = b"\r\n\r\n"
_NO_BODY_STATUSES = frozenset({204, 304})
_MAX_LINE = 4096


class ProtocolError(Exception):
    """The peer sent bytes that are not the HTTP/1.1 this module parses."""


@dataclass
class ResponseHead:
    """Status line and headers of one response; header names in lower case."""

    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    size: int = 0

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request after this one."""
        return self.headers.get("connection", "").lower() != "close"


def parse_head(raw: bytes) -> ResponseHead:
    """Parse a status line and headers, without the final blank line."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ProtocolError(f"invalid status line {lines[0]!r}")
    head = ResponseHead(int(parts[1]), parts[2] if len(parts) > 2 else "")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        head.headers[name.strip().lower()] = value.strip()
    head.size = len(raw) + len(_END_OF_HEAD)
    return head


class _Dechunker:
    """Decode chunked transfer coding, passing chunk data to `on_data`."""

    def __init__(self, on_data: Callable[[memoryview], None]) -> None:
        self._on_data = on_data
        self._line = bytearray()
        self._remaining = 0
        self._state = "size"
        self.done = False

    def feed(self, data: memoryview) -> memoryview:
        """Consume `data`; return the bytes after the end of the body."""
        while data and not self.done:
            if self._state == "data":
                take = min(len(data), self._remaining)
                self._on_data(data[:take])
                self._remaining -= take
                data = data[take:]
                if self._remaining == 0:
                    self._state = "data-end"
                continue
            data = self._feed_line(data)
        return data

    def _feed_line(self, data: memoryview) -> memoryview:
        # Size and trailer lines are short, so a bounded window finds the end.
        end = bytes(data[:_MAX_LINE]).find(b"\n")
        if end < 0:
            self._line += data
            if len(self._line) > _MAX_LINE:
                raise ProtocolError(f"chunk line longer than {_MAX_LINE} bytes")
            return data[len(data) :]
        self._line += data[: end + 1]
        line = bytes(self._line).strip()
        self._line.clear()
        self._advance(line)
        return data[end + 1 :]

    def _advance(self, line: bytes) -> None:
        if self._state == "size":
            self._remaining = int(line.split(b";")[0], 16)
            self._state = "data" if self._remaining else "trailer"
        elif self._state == "data-end":
            self._state = "size"
        elif not line:
            # The blank line after the trailer fields ends the body.
            self.done = True


class ResponseParser:
    """Split a stream of response bytes into responses.

    Call `expect` once per request sent, in order, with whether it was a
    HEAD, because a HEAD response announces a length it does not send.
    `on_body` receives each piece of body and `on_complete` each finished
    response head with its body size.
    """

    def __init__(
        self,
        on_body: Callable[[memoryview], None],
        on_complete: Callable[[ResponseHead, int], None],
    ) -> None:
        self._on_body = on_body
        self._on_complete = on_complete
        self._expected: list[bool] = []
        self._head = bytearray()
        self._response: ResponseHead | None = None
        self._remaining = 0
        self._body_size = 0
        self._dechunker: _Dechunker | None = None
        self._until_close = False

    def expect(self, head_request: bool) -> None:
        """Announce a request whose response will follow."""
        self._expected.append(head_request)

    def feed(self, data: memoryview) -> None:
        """Consume received bytes."""
        while data:
            if self._response is None:
                data = self._feed_head(data)
            else:
                data = self._feed_body(data)

    def connection_closed(self) -> bool:
        """Finish a response framed by connection close; return whether one was."""
        if self._response is None or not self._until_close:
            return False
        self._finish()
        return True

    def _feed_head(self, data: memoryview) -> memoryview:
        if not self._expected:
            raise ProtocolError("response bytes arrived before any request")
        start = max(len(self._head) - 3, 0)
        self._head += data
        end = self._head.find(_END_OF_HEAD, start)
        if end < 0:
            if len(self._head) > MAX_HEAD:
                raise ProtocolError(f"response head longer than {MAX_HEAD} bytes")
            return data[len(data) :]
        consumed = end + len(_END_OF_HEAD) - (len(self._head) - len(data))
        head = parse_head(bytes(self._head[:end]))
        self._head.clear()
        if 100 <= head.status < 200:
            return data[consumed:]
        self._begin(head)
        return data[consumed:]

    def _begin(self, head: ResponseHead) -> None:
        head_request = self._expected[0]
        self._response = head
        self._body_size = 0
        self._dechunker = None
        self._until_close = False
        length = head.headers.get("content-length")
        if head_request or head.status in _NO_BODY_STATUSES:
            self._remaining = 0
        elif "chunked" in head.headers.get("transfer-encoding", "").lower():
            self._dechunker = _Dechunker(self._count_body)
        elif length is not None:
            self._remaining = int(length)
        else:
            self._until_close = True
        if self._dechunker is None and not self._until_close and not self._remaining:
            self._finish()

    def _feed_body(self, data: memoryview) -> memoryview:
        if self._dechunker is not None:
            rest = self._dechunker.feed(data)
            if self._dechunker.done:
                self._finish()
            return rest
        if self._until_close:
            self._count_body(data)
            return data[len(data) :]
        take = min(len(data), self._remaining)
        self._count_body(data[:take])
        self._remaining -= take
        if self._remaining == 0:
            self._finish()
        return data[take:]

    def _count_body(self, data: memoryview) -> None:
        self._body_size += len(data)
        self._on_body(data)

    def _finish(self) -> None:
        response = self._response
        assert response is not None
        self._response = None
        self._expected.pop(0)
        self._on_complete(response, self._body_size)


class RequestTracker:
    """Find request lines in a stream of request bytes sent to a server.

    It reports whether each request is a HEAD to a `ResponseParser` of the
    other direction. Request bodies must be framed by Content-Length, as
    the proxy's upstream requests are.
    """

    def __init__(self, on_request: Callable[[bool], None]) -> None:
        self._on_request = on_request
        self._head = bytearray()
        self._body_remaining = 0

    def feed(self, data: memoryview) -> None:
        """Consume bytes on their way to the server."""
        while data:
            if self._body_remaining:
                take = min(len(data), self._body_remaining)
                self._body_remaining -= take
                data = data[take:]
                continue
            data = self._feed_head(data)

    def _feed_head(self, data: memoryview) -> memoryview:
        start = max(len(self._head) - 3, 0)
        self._head += data
        end = self._head.find(_END_OF_HEAD, start)
        if end < 0:
            if len(self._head) > MAX_HEAD:
                raise ProtocolError(f"request head longer than {MAX_HEAD} bytes")
            return data[len(data) :]
        consumed = end + len(_END_OF_HEAD) - (len(self._head) - len(data))
        lines = bytes(self._head[:end]).decode("latin-1").split("\r\n")
        self._head.clear()
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise ProtocolError("chunked request bodies are not tracked")
        self._body_remaining = int(headers.get("content-length", "0"))
        self._on_request(lines[0].startswith("HEAD "))
        return data[consumed:]
