"""The Range header parser, by table and by property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import S3Error
from proxy.ranges import parse_range, range_from_start


@pytest.mark.parametrize(
    ("value", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=4-7", 11, (4, 7)),
        ("bytes=4-", 11, (4, 10)),
        ("bytes=-7", 11, (4, 10)),
        ("bytes=-100", 11, (0, 10)),
        ("bytes=0-1000", 11, (0, 10)),
        ("bytes = 2 - 3", 11, (2, 3)),
        ("bytes=5-2", 11, None),
        ("bytes=-", 11, None),
        ("bytes=0-1,4-5", 11, None),
        ("items=0-1", 11, None),
        ("garbage", 11, None),
        ("bytes=1x-2", 11, None),
    ],
)
def test_parse_range_table(
    value: str | None, size: int, expected: tuple[int, int] | None
) -> None:
    assert parse_range(value, size) == expected


@pytest.mark.parametrize(
    ("value", "size"),
    [("bytes=40-50", 11), ("bytes=11-", 11), ("bytes=-0", 11), ("bytes=0-", 0)],
)
def test_parse_range_unsatisfiable(value: str, size: int) -> None:
    with pytest.raises(S3Error) as error:
        parse_range(value, size)
    assert error.value.code == "InvalidRange"
    assert error.value.status == 416
    assert error.value.headers["Content-Range"] == f"bytes */{size}"


@given(st.text(max_size=40), st.integers(min_value=0, max_value=2**40))
def test_parse_range_any_text(value: str, size: int) -> None:
    try:
        result = parse_range(value, size)
    except S3Error as error:
        assert error.code == "InvalidRange"
        return
    if result is not None:
        first, last = result
        assert 0 <= first <= last < size


@given(
    st.integers(min_value=1, max_value=2**40),
    st.integers(min_value=0, max_value=2**41),
    st.integers(min_value=0, max_value=2**41),
)
def test_parse_range_within_object(size: int, first: int, length: int) -> None:
    last = first + length
    try:
        result = parse_range(f"bytes={first}-{last}", size)
    except S3Error:
        assert first >= size
        return
    assert result == (first, min(last, size - 1))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-0", (0, 0)),
        ("bytes=4-7", (4, 7)),
        ("bytes=4-", (4, None)),
        ("bytes = 2 - 3", (2, 3)),
        ("bytes=-7", None),
        ("bytes=5-2", None),
        ("bytes=0-1,4-5", None),
        ("items=0-1", None),
    ],
)
def test_range_from_start_table(
    value: str, expected: tuple[int, int | None] | None
) -> None:
    assert range_from_start(value) == expected


RANGE_LIKE = st.from_regex(r"\s?bytes\s?=\s?\d{0,13}\s?-\s?\d{0,13}\s?", fullmatch=True)


@given(RANGE_LIKE | st.text(max_size=40), st.integers(min_value=1, max_value=2**40))
def test_range_from_start_agrees_with_parse_range(value: str, size: int) -> None:
    """Where it returns a range, parse_range returns it cut to the object."""
    start = range_from_start(value)
    if start is None:
        return
    first, last = start
    try:
        parsed = parse_range(value, size)
    except S3Error:
        assert first >= size
        return
    assert parsed == (first, size - 1 if last is None else min(last, size - 1))
