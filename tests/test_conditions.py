"""Conditional GET and HEAD headers against the plaintext ETag."""

from __future__ import annotations

import pytest

from proxy.conditions import check_conditions
from proxy.errors import S3Error

ETAG = '"37b51d194a7513e45b56f6524f2d51f2"'
MODIFIED = "Wed, 02 Dec 2026 10:00:00 GMT"
EARLIER = "Tue, 01 Dec 2026 10:00:00 GMT"
LATER = "Thu, 03 Dec 2026 10:00:00 GMT"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"If-Match": ETAG},
        {"If-Match": "37b51d194a7513e45b56f6524f2d51f2"},
        {"If-Match": '"other", ' + ETAG},
        {"If-Match": "*"},
        {"If-None-Match": '"other"'},
        {"If-Modified-Since": EARLIER},
        {"If-Unmodified-Since": LATER},
        {"If-Match": ETAG, "If-Unmodified-Since": EARLIER},
        {"If-Modified-Since": "not a date"},
    ],
)
def test_check_conditions_pass(headers: dict[str, str]) -> None:
    check_conditions(headers, ETAG, MODIFIED)


@pytest.mark.parametrize(
    "headers",
    [
        {"If-Match": '"other"'},
        {"If-Unmodified-Since": EARLIER},
    ],
)
def test_check_conditions_precondition_failed(headers: dict[str, str]) -> None:
    with pytest.raises(S3Error) as error:
        check_conditions(headers, ETAG, MODIFIED)
    assert error.value.status == 412
    assert error.value.code == "PreconditionFailed"


@pytest.mark.parametrize(
    "headers",
    [
        {"If-None-Match": ETAG},
        {"If-None-Match": "*"},
        {"If-Modified-Since": LATER},
        {"If-Modified-Since": MODIFIED},
        {"If-None-Match": ETAG, "If-Modified-Since": EARLIER},
    ],
)
def test_check_conditions_not_modified(headers: dict[str, str]) -> None:
    with pytest.raises(S3Error) as error:
        check_conditions(headers, ETAG, MODIFIED)
    assert error.value.status == 304
    assert error.value.headers["ETag"] == ETAG


def test_check_conditions_none_match_overrides_modified_since() -> None:
    check_conditions(
        {"If-None-Match": '"other"', "If-Modified-Since": LATER}, ETAG, MODIFIED
    )
