"""The HTTP Range header of a GET, resolved against a plaintext size."""

from __future__ import annotations

import re

from proxy.errors import S3Error

__all__ = ["parse_range", "range_from_start"]

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.ASCII)


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """Return the inclusive byte range `(first, last)` that `value` selects.

    None means the whole object: no header, a header S3 would ignore
    (another unit, several ranges, bad syntax), or a range that covers the
    object anyway is still returned as a range. An unsatisfiable range
    raises 416 InvalidRange, as S3 does.
    """
    if value is None:
        return None
    match = _RANGE.match(value)
    if match is None:
        return None
    start_text, end_text = match.groups()
    if not start_text and not end_text:
        return None
    if not start_text:
        return _suffix(int(end_text), size)
    first = int(start_text)
    last = int(end_text) if end_text else size - 1
    if end_text and last < first:
        return None
    if first >= size:
        raise _unsatisfiable(size)
    return first, min(last, size - 1)


def range_from_start(value: str) -> tuple[int, int | None] | None:
    """Return `(first, last)` of a `bytes=first-last` or `bytes=first-` header.

    `last` is None for the open form. Suffix ranges, which need the
    object's size, and headers that `parse_range` ignores give None.
    """
    match = _RANGE.match(value)
    if match is None or not match.group(1):
        return None
    first = int(match.group(1))
    if not match.group(2):
        return first, None
    last = int(match.group(2))
    if last < first:
        return None
    return first, last


def _suffix(length: int, size: int) -> tuple[int, int]:
    if length == 0 or size == 0:
        raise _unsatisfiable(size)
    return max(size - length, 0), size - 1


def _unsatisfiable(size: int) -> S3Error:
    return S3Error(
        "InvalidRange",
        "The requested range is not satisfiable",
        416,
        headers={"Content-Range": f"bytes */{size}"},
    )
