"""Request bodies for the load client and the check of what comes back.

Every object body is the same 8 MiB of random bytes, repeated and cut to
size. Random bytes keep any compression on the path from helping, and
reusing one buffer means a 4 GiB PUT costs the client no memory and no
per-byte work beyond the socket write.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CHUNK_SIZE", "ContentMismatch", "FileBody", "Pattern", "PatternChecker"]

PATTERN_SIZE = 8 * 1024 * 1024
# A divisor of PATTERN_SIZE, so that no chunk wraps around the pattern.
CHUNK_SIZE = 256 * 1024


class ContentMismatch(Exception):
    """A GET returned other bytes, or another length, than the PUT sent."""


class Pattern:
    """The read-only random bytes that every body repeats."""

    def __init__(self, seed: int = 20240601) -> None:
        self.data = random.Random(seed).randbytes(PATTERN_SIZE)
        self.view = memoryview(self.data)

    def body(self, size: int) -> PatternBody:
        """Return a body of `size` bytes."""
        return PatternBody(self, size)

    def checker(self, size: int) -> PatternChecker:
        """Return a sink that checks a body of `size` bytes as it arrives."""
        return PatternChecker(self, size)

    def write_file(self, path: Path, size: int) -> None:
        """Write a body of `size` bytes to `path`."""
        with path.open("wb") as file:
            for chunk in self.body(size).chunks():
                file.write(chunk)


@dataclass(frozen=True)
class PatternBody:
    """`size` bytes of the pattern, repeated from its start."""

    pattern: Pattern
    size: int

    def chunks(self) -> Iterator[memoryview]:
        """Yield views of the pattern; they stay valid and unchanged."""
        view = self.pattern.view
        offset = 0
        while offset < self.size:
            start = offset % PATTERN_SIZE
            length = min(CHUNK_SIZE, self.size - offset)
            yield view[start : start + length]
            offset += length


class PatternChecker:
    """Compare received body pieces with the pattern, in order.

    Used as a response sink. It only records the first difference, because
    raising inside the protocol callback would break the connection.
    """

    def __init__(self, pattern: Pattern, size: int) -> None:
        self._pattern = pattern.view
        self._size = size
        self._offset = 0
        self._mismatch: int | None = None

    def __call__(self, data: memoryview) -> None:
        while data and self._mismatch is None:
            start = self._offset % PATTERN_SIZE
            length = min(len(data), PATTERN_SIZE - start)
            # Comparing two memoryviews goes element by element, and a copy
            # to bytes compares with memcmp, over 30 times faster.
            expected = self._pattern[start : start + length]
            if data[:length].tobytes() != expected.tobytes():
                self._mismatch = self._offset
            self._offset += length
            data = data[length:]

    def verify(self) -> None:
        """Raise ContentMismatch unless exactly the expected body arrived."""
        if self._mismatch is not None:
            raise ContentMismatch(f"received bytes differ from offset {self._mismatch}")
        if self._offset != self._size:
            raise ContentMismatch(f"received {self._offset} bytes, sent {self._size}")


@dataclass(frozen=True)
class FileBody:
    """A file on disk, read in fresh chunks so that none is changed after sending."""

    path: Path
    size: int

    def chunks(self) -> Iterator[bytes]:
        """Yield the file's bytes, one new bytes object per chunk."""
        with self.path.open("rb", buffering=0) as file:
            while chunk := file.read(CHUNK_SIZE):
                yield chunk
